"""IAM enforced in local mode (local/iam.py): the state machine role's synthesized policies authorize every
SageMaker Task call of an offline run (scripted SageMaker, nothing trains); removing a statement fails the run at
the state that needs it with AccessDeniedException naming the action; what the role grants and no call uses is
listed."""

from __future__ import annotations

import contextlib
import copy
import json

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber

from infra import load_config_for
from infra import sagemaker_requests as req
from infra.api import FORWARDER_HANDLER
from infra.definition import Resolver
from infra.pipeline import S
from local.iam import AccessDenied, ClientAuthorizer, TemplateIAM, function_authorizer, state_machine_authorizer
from ml import contract
from stackfacts import LOCAL_ACCOUNT as ACCOUNT
from tests.support.forwarder import all_classes, call, error_of, event, forwarder_as_deployed, ok_response
from tests.support.local import BUCKET as STAGING_BUCKET
from tests.support.local import FAKE_TRAIN, sourcedir, wait_until
from tests.support.scripted import (
    ACCOUNT_ARN,
    Endpoint,
    ScriptedSageMaker,
    full_run_sagemaker,
    run_scripted,
    scripted,
)
from tests.support.teardown import TAGS as TEARDOWN_TAGS
from tests.support.teardown import TeardownSageMaker as _TeardownSageMaker
from tests.support.teardown import deployment as _deployment
from tests.support.teardown import teardown_event as _teardown_event
from tests.support.teardown import training_job as _training_job


def _run(template: dict):
    resolver = Resolver(template, region="us-east-1", account=ACCOUNT)
    authorize = state_machine_authorizer(resolver)
    result = run_scripted(resolver.definition(), {}, full_run_sagemaker(), timeout=300, authorize=authorize)
    return result, authorize


def _without(template: dict, action: str) -> tuple[dict, list[str]]:
    """The template with the state machine role's statement that grants `action` removed, and that statement's
    actions."""
    template = copy.deepcopy(template)
    role = Resolver(template).template["Resources"]
    for resource in role.values():
        if resource["Type"] != "AWS::IAM::Policy":
            continue
        statements = resource["Properties"]["PolicyDocument"]["Statement"]
        kept = [s for s in statements if action not in ([s["Action"]] if isinstance(s["Action"], str)
                                                       else s["Action"])]
        if len(kept) < len(statements):
            resource["Properties"]["PolicyDocument"]["Statement"] = kept
            (removed,) = [s["Action"] for s in statements if s not in kept]
            return template, [removed] if isinstance(removed, str) else removed
    raise AssertionError(f"no statement grants {action}")


def test_the_synthesized_policies_authorize_a_whole_run(local):
    result, authorize = _run(local.template)
    assert result.succeeded, (result.failed_state, result.cause)
    used = authorize.policies.used
    assert {"sagemaker:CreateHyperParameterTuningJob", "sagemaker:CreateTrainingJob", "sagemaker:CreateModel",
            "sagemaker:CreateEndpointConfig", "sagemaker:CreateEndpoint", "iam:PassRole", "events:PutRule"} <= used
    # Granted but never authorized by a call of this run: each listed, each with its reason.
    unused = authorize.policies.granted() - used
    assert unused == {
        "sagemaker:StopHyperParameterTuningJob", "sagemaker:StopTrainingJob",  # only when a .sync state is stopped
        "sagemaker:UpdateEndpoint",  # the update path (an endpoint exists)
        "application-autoscaling:DeregisterScalableTarget",  # ... which first deregisters the autoscaled variant
        # checked by Application Auto Scaling on the endpoint's current config, which its requests do not name
        "sagemaker:DescribeEndpointConfig",
        # Step Functions' own logging to CloudWatch Logs, not a Task call (what CDK grants for LogOptions:
        # https://docs.aws.amazon.com/step-functions/latest/dg/cw-logs.html#cloudwatch-iam-policy)
        "logs:CreateLogDelivery", "logs:GetLogDelivery", "logs:UpdateLogDelivery", "logs:DeleteLogDelivery",
        "logs:ListLogDeliveries", "logs:PutResourcePolicy", "logs:DescribeResourcePolicies", "logs:DescribeLogGroups",
        # X-Ray tracing of the state machine, not a Task call (https://docs.aws.amazon.com/step-functions/latest/dg/xray-iam.html)
        "xray:PutTraceSegments", "xray:PutTelemetryRecords", "xray:GetSamplingRules", "xray:GetSamplingTargets",
    }, sorted(unused)


@pytest.mark.parametrize("action, state", [
    ("sagemaker:CreateModel", S.CREATE_MODEL),
    ("iam:PassRole", S.TUNE),
    ("events:PutRule", S.TUNE),
    ("sagemaker:CreateEndpoint", S.CREATE_ENDPOINT),
    ("application-autoscaling:RegisterScalableTarget", S.REGISTER_SCALING),
])
def test_a_missing_statement_fails_the_run_where_aws_would(local, action, state):
    template, removed = _without(local.template, action)
    result, _ = _run(template)
    assert not result.succeeded
    # The expected "not found" of Find endpoint is a TaskFailed too: the denial is the one naming AccessDenied.
    denied = [e for e in result.events if e["type"] == "TaskFailed"
              and "AccessDeniedException" in e["taskFailedEventDetails"]["cause"]]
    # One denial (its state's Retry, where it has one, meets the same denial again: the same cause each time).
    assert denied and len({e["taskFailedEventDetails"]["cause"].split(" (Service:")[0] for e in denied}) == 1, \
        result.states()
    cause = denied[0]["taskFailedEventDetails"]["cause"]
    named = cause.split("not authorized to perform: ", 1)[1].split(" ", 1)[0]
    assert named in removed and "on resource: arn:aws:" in cause, cause  # the first of the statement's actions
    assert "assumed-role/" in cause  # names the role
    entered = [e["stateEnteredEventDetails"]["name"] for e in result.events[:result.events.index(denied[0])]
               if "stateEnteredEventDetails" in e]
    assert entered[-1] == state, result.states()[-3:]


def test_resource_arns_are_built_as_aws_builds_them(local):
    """SageMaker ARNs carry the lower-cased name (Service Authorization Reference, SageMaker resource types);
    PassRole is checked with iam:PassedToService; AddTags only when the request tags."""
    authorize = state_machine_authorizer(Resolver(local.template, region="us-east-1", account=ACCOUNT))
    role = f"arn:aws:iam::{ACCOUNT}:role/x"
    calls = authorize.calls("sagemaker:createModel", {"ModelName": "imgclf-ABC", "ExecutionRoleArn": role})
    assert calls == [("sagemaker:CreateModel", f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:model/imgclf-abc", {}),
                     ("sagemaker:ListTags", f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:model/imgclf-abc", {}),
                     ("iam:PassRole", role, {"iam:PassedToService": "sagemaker.amazonaws.com"})]
    tagged = authorize.calls("sagemaker:createModel", {"ModelName": "m", "Tags": [{"Key": "k", "Value": "v"}]})
    assert ("sagemaker:AddTags", f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:model/m", {}) in tagged
    with pytest.raises(AccessDenied, match=r"not authorized to perform: sagemaker:CreateModel on resource: "
                                        rf"arn:aws:sagemaker:us-east-1:{ACCOUNT}:model/other-name"):
        authorize("arn:aws:states:::sagemaker:createModel", {"ModelName": "other-name"})  # outside the prefix


# --- Stop* of a stopped .sync state ------------------------------------------------------------------------------
def _without_action(template: dict, action: str) -> dict:
    """The template with `action` taken out of the statement that grants it (the rest of the statement stays)."""
    template = copy.deepcopy(template)
    for resource in template["Resources"].values():
        if resource["Type"] != "AWS::IAM::Policy":
            continue
        for statement in resource["Properties"]["PolicyDocument"]["Statement"]:
            actions = [statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"]
            if action in actions:
                statement["Action"] = [a for a in actions if a != action]
                return template
    raise AssertionError(f"no statement grants {action}")


def _tuning_never_ends() -> ScriptedSageMaker:
    """A scripted SageMaker whose tuning job runs until it is stopped."""
    def describe(p: dict) -> dict:
        status = "Stopping" if sm.ops("StopHyperParameterTuningJob") else "InProgress"
        return {"HyperParameterTuningJobName": p["HyperParameterTuningJobName"],
                "HyperParameterTuningJobStatus": status}

    sm = scripted(Endpoint(), CreateHyperParameterTuningJob=lambda p: {
        "HyperParameterTuningJobArn": f"{ACCOUNT_ARN}:hyper-parameter-tuning-job/{p['HyperParameterTuningJobName']}"},
        DescribeHyperParameterTuningJob=describe, StopHyperParameterTuningJob=lambda p: {})
    return sm


@pytest.mark.parametrize("granted", [True, False])
def test_a_stopped_sync_state_stops_its_job_with_the_roles_permission(local, granted):
    """sagemaker-iam.html: the .sync integrations call Stop* when the execution is stopped or times out; without
    the permission the job is not stopped (it runs on, and bills, on AWS) and the denial is recorded."""
    template = local.template if granted else _without_action(local.template, "sagemaker:StopHyperParameterTuningJob")
    resolver = Resolver(template, region="us-east-1", account=ACCOUNT)
    iam = TemplateIAM(resolver)
    authorize = state_machine_authorizer(resolver, iam)
    sm = _tuning_never_ends()
    result = run_scripted(resolver.definition(), {}, sm, timeout=6, authorize=authorize)
    assert result.status == "ABORTED", result.states()
    assert result.failed_state == S.TUNE
    if granted:
        assert [p["HyperParameterTuningJobName"] for p in sm.ops("StopHyperParameterTuningJob")] == \
            [sm.ops("CreateHyperParameterTuningJob")[0]["HyperParameterTuningJobName"]]
        assert "sagemaker:StopHyperParameterTuningJob" in authorize.policies.used
        assert iam.denied == []
    else:
        assert sm.ops("StopHyperParameterTuningJob") == []
        (denied,) = iam.denied
        assert denied.action == "sagemaker:StopHyperParameterTuningJob"
        assert denied.resource.endswith(":hyper-parameter-tuning-job/"
                                        + sm.ops("CreateHyperParameterTuningJob")[0]["HyperParameterTuningJobName"])


# --- the Lambda's role: InvokeEndpoint ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def forwarder():
    """lambda/forwarder.py as the local API loads it (fake credentials, no endpoint URL)."""
    yield from forwarder_as_deployed()


@pytest.mark.parametrize("case", ["granted", "other endpoint", "statement removed"])
def test_the_forwarder_invokes_the_endpoint_as_its_role(local, forwarder, monkeypatch, case):
    """The local API's Lambda calls InvokeEndpoint through a client that IAM-checks it against the forwarder role's
    synthesized policy (the endpoint's ARN); a denial is the Lambda's 5xx with the contract's JSON."""
    template = _without_action(local.template, "sagemaker:InvokeEndpoint") if case == "statement removed" \
        else local.template
    resolver = Resolver(template, region="us-east-1", account=ACCOUNT)
    endpoint = resolver.outputs()["EndpointName"] if case != "other endpoint" else "imgclf-other"
    authorizer = function_authorizer(resolver, FORWARDER_HANDLER)
    client = authorizer.install(forwarder.make_client())
    monkeypatch.setattr(forwarder, "sagemaker_runtime", client)
    monkeypatch.setenv("ENDPOINT_NAME", endpoint)
    with Stubber(client) as stubber:
        stubber.add_response("invoke_endpoint", ok_response(all_classes()))
        status, payload = call(forwarder, event())
    if case == "granted":
        assert status == 200 and len(payload["predictions"]) == contract.DEFAULT_TOP_K
        assert authorizer.policies.used == {"sagemaker:InvokeEndpoint"}
        return
    assert error_of(status, payload) == (contract.MODEL_ERROR.status, contract.MODEL_ERROR.code)
    assert status >= 500
    (denied,) = authorizer.iam.denied
    assert denied.action == "sagemaker:InvokeEndpoint"
    assert denied.resource == f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:endpoint/{endpoint}"
    assert f":assumed-role/{authorizer.policies.role_arn.rsplit('/', 1)[1]}/{authorizer.session} " in denied.message


# --- the teardown function's role ----------------------------------------------------------------------------------
TEARDOWN_HANDLER = "handler.is_complete"


class _AuthorizedSageMaker(_TeardownSageMaker):
    """The teardown test's moto SageMaker (with the Stop* calls moto lacks), each call authorized as the role."""

    def __init__(self, client, authorizer: ClientAuthorizer) -> None:
        super().__init__(authorizer.install(client))
        self._authorizer = authorizer

    def stop_training_job(self, TrainingJobName: str) -> None:
        self._authorizer.check("sagemaker:StopTrainingJob", {"TrainingJobName": TrainingJobName})
        super().stop_training_job(TrainingJobName)

    def stop_hyper_parameter_tuning_job(self, HyperParameterTuningJobName: str) -> None:
        self._authorizer.check("sagemaker:StopHyperParameterTuningJob",
                               {"HyperParameterTuningJobName": HyperParameterTuningJobName})
        super().stop_hyper_parameter_tuning_job(HyperParameterTuningJobName)


def _teardown(template: dict, monkeypatch) -> tuple[ClientAuthorizer, Exception | None]:
    """A stack deletion's teardown, every call of the handlers authorized against the teardown role's synthesized
    policy: what it stopped, deleted and left, or the error that failed it."""
    from moto import mock_aws

    from infra.teardown_handler import handler

    resolver = Resolver(template, region="us-east-1", account=ACCOUNT, stack_name="ImageClassifier")
    authorizer = function_authorizer(resolver, TEARDOWN_HANDLER)
    cfg = load_config_for({})
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    with mock_aws():
        sm = _AuthorizedSageMaker(boto3.client("sagemaker"), authorizer)
        sfn = authorizer.install(boto3.client("stepfunctions"))
        aas = authorizer.install(boto3.client("application-autoscaling"))
        stack_id = resolver.pseudo["AWS::StackId"]
        cfn = authorizer.install(boto3.client("cloudformation"))
        stubber = Stubber(cfn)
        for _ in range(2):
            stubber.add_response("describe_stacks", {"Stacks": [{
                "StackName": "ImageClassifier", "StackId": stack_id, "StackStatus": "DELETE_IN_PROGRESS",
                "CreationTime": "2026-01-01T00:00:00Z"}]}, {"StackName": stack_id})
        stubber.activate()
        # What a run leaves (set up without the role's checks: these are the state machine's own calls).
        setup = _TeardownSageMaker(boto3.client("sagemaker"))
        _deployment(setup, "imgclf-aaaaaaaaaaaa")
        setup.create_endpoint(EndpointName=cfg.endpoint_name, EndpointConfigName="imgclf-aaaaaaaaaaaa",
                              Tags=TEARDOWN_TAGS)
        _training_job(setup, "imgclf-bbbbbbbbbbbb", "InProgress")
        tuning = "imgclf-cccccccccccc"
        setup.create_hyper_parameter_tuning_job(
            HyperParameterTuningJobName=tuning, Tags=TEARDOWN_TAGS, HyperParameterTuningJobConfig={
                "Strategy": "Random", "ResourceLimits": {"MaxNumberOfTrainingJobs": 2, "MaxParallelTrainingJobs": 2}},
            TrainingJobDefinition={
                "RoleArn": f"arn:aws:iam::{ACCOUNT}:role/x", "OutputDataConfig": {"S3OutputPath": "s3://b/tuning/"},
                "AlgorithmSpecification": {"TrainingImage": "image", "TrainingInputMode": "File"},
                "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 10},
                "StoppingCondition": {"MaxRuntimeInSeconds": 600}})
        setup._backend().hyper_parameter_tuning_jobs[tuning].hyper_parameter_tuning_job_status = "InProgress"
        boto3.client("application-autoscaling").register_scalable_target(**req.register_scalable_target(cfg))
        plain_sfn = boto3.client("stepfunctions")
        machine = plain_sfn.create_state_machine(
            name=cfg.state_machine_name, roleArn=f"arn:aws:iam::{ACCOUNT}:role/x", definition=json.dumps(
                {"StartAt": "W", "States": {"W": {"Type": "Wait", "Seconds": 600, "End": True}}}))["stateMachineArn"]
        plain_sfn.start_execution(stateMachineArn=machine, name="run-1")
        clients = handler.Clients(sm, sfn, cfn, aas)
        event = {**_teardown_event("Delete", machine), "StackId": stack_id}
        try:
            polled = {**event, **handler.on_event(event, None, clients)}
            for _ in range(6):
                if handler.is_complete(polled, None, clients)["IsComplete"]:
                    break
                setup._backend().training_jobs["imgclf-bbbbbbbbbbbb"].training_job_status = "Stopped"
                setup._backend().hyper_parameter_tuning_jobs[tuning].hyper_parameter_tuning_job_status = "Stopped"
            else:
                raise AssertionError("the teardown did not complete")
        except ClientError as exc:
            return authorizer, exc
    return authorizer, None


def test_the_teardown_role_allows_every_call_its_handlers_make(cloud, monkeypatch):
    authorizer, error = _teardown(cloud.template, monkeypatch)
    assert error is None, error
    assert authorizer.iam.denied == []
    # Granted and not called by the handlers: the Lambda runtime's own logging (not an API call of the code).
    assert authorizer.policies.granted() - authorizer.policies.used == {
        "logs:CreateLogStream", "logs:PutLogEvents", "xray:PutTraceSegments", "xray:PutTelemetryRecords"}


def _teardown_statements(template: dict) -> list[dict]:
    """The teardown role's statements, its Lambda's own logging aside."""
    (logical_id,) = [k for k, r in template["Resources"].items() if r["Type"] == "AWS::Lambda::Function"
                     and r["Properties"].get("Handler") == TEARDOWN_HANDLER]
    role = template["Resources"][logical_id]["Properties"]["Role"]["Fn::GetAtt"][0]
    return [s for p in template["Resources"].values() if p["Type"] == "AWS::IAM::Policy"
            and {"Ref": role} in p["Properties"]["Roles"] for s in p["Properties"]["PolicyDocument"]["Statement"]
            if s.get("Sid") != "Logs" and "xray:PutTraceSegments" not in s["Action"]]


def test_removing_any_teardown_statement_fails_the_teardown_at_its_call(cloud, monkeypatch):
    """Each statement in turn: the teardown fails with AccessDenied naming one of its actions (CloudFormation would
    report the custom resource FAILED), so no statement is there for nothing."""
    statements = _teardown_statements(cloud.template)
    assert {"StackStatus", "List", "Delete", "ReadTags", "StopJobs", "DescribeScaling", "DeregisterScaling",
            "ScalingAlarms",
            "ListExecutions", "StopExecutions"} == {s["Sid"] for s in statements}
    for statement in statements:
        template = copy.deepcopy(cloud.template)
        for resource in template["Resources"].values():
            if resource["Type"] == "AWS::IAM::Policy":
                document = resource["Properties"]["PolicyDocument"]
                document["Statement"] = [s for s in document["Statement"] if s != statement]
        _, error = _teardown(template, monkeypatch)
        sid = statement["Sid"]
        assert error is not None, f"the teardown completed without statement {sid}"
        assert error.response["Error"]["Code"] in ("AccessDeniedException", "AccessDenied"), (sid, error)
        named = error.response["Error"]["Message"].split("not authorized to perform: ", 1)[1].split(" ", 1)[0]
        actions = statement["Action"]
        assert named in ([actions] if isinstance(actions, str) else actions), (sid, named)


# --- the SageMaker execution role: every S3 call of a job or endpoint ------------------------------------------
EXECUTION_ROLE_SIDS = ("ListProjectPrefixes", "ReadDatasets", "ReadWriteArtifacts", "ReadTrainingSource")
# Granted and used by no S3 call the stand-in makes, each with its reason (least privilege, the other way round).
EXECUTION_ROLE_UNUSED = {
    # SageMaker's own calls that the stand-in has no counterpart for: it pulls no image (ECR) and writes its logs
    # and metrics to files, not to CloudWatch (sagemaker-roles.html, "CreateTrainingJob API: Execution Role
    # Permissions": ecr:*, logs:*, cloudwatch:PutMetricData; s3:GetBucketLocation).
    "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability", "ecr:GetAuthorizationToken",
    "logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams",
    "cloudwatch:PutMetricData", "s3:GetBucketLocation",
    # checkpoint sync deletes objects the job deleted locally; the stand-in's jobs write the S3 folder directly
    "s3:DeleteObject",
    # the blue/green update's rollback alarms (GUARDRAILS): the stand-in does not watch CloudWatch alarms
    "cloudwatch:DescribeAlarms",
}
# What the fake job writes into the model: a model the endpoint server loads at once (no torch).
_FAKE_MODEL = FAKE_TRAIN + (
    "\nos.makedirs(os.path.join(os.environ['SM_MODEL_DIR'], 'code'), exist_ok=True)\n"
    "open(os.path.join(os.environ['SM_MODEL_DIR'], 'code', 'inference.py'), 'w').write(CODE)\n")


def _pipeline_requests(template: dict) -> dict[str, dict]:
    """The SageMaker requests the synthesized state machine makes in a whole run (scripted answers)."""
    scripted = full_run_sagemaker()
    result = run_scripted(Resolver(template, region="us-east-1", account=ACCOUNT).definition(), {}, scripted,
                          timeout=300)
    assert result.succeeded, result.cause
    return {op: params for op, params in scripted.calls if op.startswith("Create")}


def _replay(template: dict, requests: dict[str, dict], tmp_path) -> tuple[TemplateIAM, dict, dict | None]:
    """Run the state machine's training job, then its endpoint, on the real stand-in with the template's IAM: the
    job's description and the endpoint's (None when the job failed)."""
    from local.sagemaker import LocalSageMaker
    from tests.support.serve import TOY_INFERENCE

    iam = TemplateIAM(Resolver(template, region="us-east-1", account=ACCOUNT))
    request = copy.deepcopy(requests["CreateTrainingJob"])
    with LocalSageMaker(tmp_path / "sagemaker", s3_root=tmp_path / "s3", authorize_s3=iam.sagemaker_s3,
                        stop_grace_seconds=1.0, endpoint_startup_timeout=120) as sm:
        for channel in request["InputDataConfig"]:  # the dataset, as `imgclf` uploads it
            image = sm.s3.path(channel["DataSource"]["S3DataSource"]["S3Uri"]) / "a" / "0.png"
            image.parent.mkdir(parents=True)
            image.write_bytes(b"not read by the fake script")
        bundle = sm.s3.path(request["HyperParameters"]["sagemaker_submit_directory"])  # as `cdk deploy` publishes
        script = _FAKE_MODEL.replace("CODE", repr(TOY_INFERENCE))
        key = sourcedir(tmp_path / "staging", {"train.py": script}).split("/", 3)[3]
        bundle.parent.mkdir(parents=True)
        bundle.write_bytes((tmp_path / "staging" / STAGING_BUCKET / key).read_bytes())
        sm.create_training_job(**request)
        job = sm.wait_for_training_job(request["TrainingJobName"], timeout=600, rules=True)
        if job["TrainingJobStatus"] != "Completed":
            return iam, job, None
        model = copy.deepcopy(requests["CreateModel"])
        model["PrimaryContainer"]["ModelDataUrl"] = job["ModelArtifacts"]["S3ModelArtifacts"]
        sm.create_model(**model)
        sm.create_endpoint_config(**requests["CreateEndpointConfig"])
        sm.create_endpoint(**requests["CreateEndpoint"])
        endpoint = sm.wait_for_endpoint(requests["CreateEndpoint"]["EndpointName"], timeout=300)
        if endpoint["EndpointStatus"] == "InService":  # one prediction: data capture writes with the model's role
            runtime = boto3.client("sagemaker-runtime", region_name="us-east-1", endpoint_url=sm.runtime_url,
                                   aws_access_key_id="x", aws_secret_access_key="x")
            runtime.invoke_endpoint(EndpointName=endpoint["EndpointName"], Body=b"x",
                                    ContentType="application/x-image")
            capture = requests["CreateEndpointConfig"]["DataCaptureConfig"]["DestinationS3Uri"]

            def captured() -> list[str]:
                return sorted(p.name for p in sm.s3.path(capture).rglob("*.jsonl"))
            # The capture is written after the answer (as SageMaker's is): wait for it, a few seconds at most.
            with contextlib.suppress(AssertionError):
                wait_until(captured, timeout=10)
            endpoint["captured"] = captured()
        return iam, job, endpoint


@pytest.mark.slow
def test_the_execution_role_authorizes_every_s3_call_of_a_run(local, tmp_path):
    iam, job, endpoint = _replay(local.template, _pipeline_requests(local.template), tmp_path)
    assert job["TrainingJobStatus"] == "Completed", job.get("FailureReason")
    rules = job["DebugRuleEvaluationStatuses"] + job["ProfilerRuleEvaluationStatuses"]
    assert not [r for r in rules if "AccessDenied" in r.get("StatusDetails", "")], rules
    assert endpoint is not None and endpoint["EndpointStatus"] == "InService", endpoint
    assert endpoint["captured"], "data capture wrote nothing"
    assert iam.denied == []
    role = iam.role(job["RoleArn"])
    assert role.used == {"s3:ListBucket", "s3:GetObject", "s3:PutObject"}
    assert role.granted() - role.used == EXECUTION_ROLE_UNUSED, sorted(role.granted() - role.used)


@pytest.mark.slow
@pytest.mark.parametrize("sid", EXECUTION_ROLE_SIDS)
def test_a_missing_execution_role_statement_fails_the_job_as_sagemaker_reports_it(local, tmp_path, sid):
    requests = _pipeline_requests(local.template)
    template = copy.deepcopy(local.template)
    removed = None
    for resource in template["Resources"].values():
        if resource["Type"] == "AWS::IAM::Policy":
            statements = resource["Properties"]["PolicyDocument"]["Statement"]
            removed = removed or next((s for s in statements if s.get("Sid") == sid
                                       and "SageMakerExecution" in json.dumps(resource["Properties"]["Roles"])), None)
            resource["Properties"]["PolicyDocument"]["Statement"] = [s for s in statements if s is not removed]
    assert removed is not None
    _, job, endpoint = _replay(template, requests, tmp_path)
    assert job["TrainingJobStatus"] == "Failed" and endpoint is None
    reason = job["FailureReason"]
    assert reason.startswith("ClientError: ") and "An error occurred (AccessDenied)" in reason, reason
    named = reason.split("not authorized to perform: ", 1)[1].split(" ", 1)[0]
    assert named in ([removed["Action"]] if isinstance(removed["Action"], str) else removed["Action"]), reason
    assert f"assumed-role/{job['RoleArn'].rsplit('/', 1)[1]}/SageMaker " in reason
    assert "TrainingStartTime" not in job  # failed while downloading, before anything trained


# --- the state machine role, every statement -------------------------------------------------------------------
# Statements no Task call needs: Step Functions' own log delivery and X-Ray tracing (see the whole-run test).
NOT_TASK_ACTIONS = {"logs:CreateLogDelivery", "xray:PutTraceSegments"}


def _state_machine_statements(template: dict) -> list[dict]:
    from infra.definition import state_machine_resource

    role = state_machine_resource(template)["Properties"]["RoleArn"]["Fn::GetAtt"][0]
    return [s for p in template["Resources"].values() if p["Type"] == "AWS::IAM::Policy"
            and {"Ref": role} in p["Properties"]["Roles"] for s in p["Properties"]["PolicyDocument"]["Statement"]]


def _denial(result) -> str | None:
    for e in result.events:
        cause = (e.get("taskFailedEventDetails") or {}).get("cause", "")
        if e["type"] == "TaskFailed" and "AccessDenied" in cause:
            return cause.split("not authorized to perform: ", 1)[1].split(" ", 1)[0]
    return None


@pytest.mark.slow
def test_every_state_machine_statement_is_needed_by_a_run(local):
    """Each statement removed in turn: the create path or the update path (an endpoint exists) of the offline run
    ends in AccessDenied naming one of its actions, unless no Task call needs it (logging, tracing)."""
    statements = _state_machine_statements(local.template)
    assert len(statements) >= 10
    for statement in statements:
        actions = [statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"]
        if NOT_TASK_ACTIONS & set(actions):
            continue
        template = copy.deepcopy(local.template)
        for resource in template["Resources"].values():
            if resource["Type"] == "AWS::IAM::Policy":
                document = resource["Properties"]["PolicyDocument"]
                document["Statement"] = [s for s in document["Statement"] if s != statement]
        resolver = Resolver(template, region="us-east-1", account=ACCOUNT)
        named = None
        for exists in (False, True):
            scripted = full_run_sagemaker()
            if exists:  # the update path: DescribeEndpoint finds the endpoint
                endpoint = Endpoint(exists=True)
                scripted.answers.update(DescribeEndpoint=endpoint.describe, UpdateEndpoint=endpoint.deploy)
            result = run_scripted(resolver.definition(), {}, scripted, timeout=300,
                                  authorize=state_machine_authorizer(resolver))
            named = _denial(result)
            if named:
                break
            assert result.succeeded, (statement.get("Sid"), result.failed_state, result.cause)
        assert named in actions, (statement.get("Sid"), actions, named)
