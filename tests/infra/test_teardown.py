"""`cdk destroy` removes what the state machine created: the Provider-framework custom resource and its handlers.

SageMaker and Step Functions run in moto; CloudFormation's DescribeStacks is a botocore Stubber (its StackStatus is
what decides whether anything is touched). moto has no StopTrainingJob / StopHyperParameterTuningJob, so a thin
wrapper flips moto's own job status the way SageMaker does (InProgress -> Stopping).
"""

from __future__ import annotations

import json

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID

from infra import load_config_for
from infra import sagemaker_requests as req
from infra.teardown import RESOURCE_TYPE, TOTAL_TIMEOUT, owner_tag
from infra.teardown_handler import handler
from tests.support.teardown import (
    IMAGE,
    REGION,
    ROLE,
    STACK_ID,
    STACK_UUID,
    TAGS,
    TeardownSageMaker,
    cloudformation,
    deployment,
    resource_names,
    state_machine,
    teardown_event,
    training_job,
)


def test_custom_resource_runs_on_the_provider_framework(cloud, variant):
    resource = cloud.one(RESOURCE_TYPE)
    props = resource["Properties"]
    assert props["Prefix"] == cloud.config.prefix
    (pipeline,) = [k for k, r in cloud.template["Resources"].items() if r is cloud.state_machine]
    assert props["StateMachineArn"] == {"Ref": pipeline}
    # The service token is the Provider framework's onEvent function, not a handler answering by hand.
    token = props["ServiceToken"]["Fn::GetAtt"][0]
    framework = cloud.template["Resources"][token]["Properties"]
    assert framework["Handler"] == "framework.onEvent"
    handlers = {f["Properties"]["Handler"]: f["Properties"] for f in cloud.resources("AWS::Lambda::Function").values()}
    assert handlers["handler.on_event"]["Runtime"] == handlers["handler.is_complete"]["Runtime"] == "python3.14"
    assert "framework.isComplete" in handlers and "framework.onTimeout" in handlers  # completion polling
    waiter = [m["Properties"] for k, m in cloud.resources("AWS::StepFunctions::StateMachine").items()
              if "Teardown" in k]
    assert len(waiter) == 1 and waiter[0]["LoggingConfiguration"]["Level"] == "ALL"
    assert TOTAL_TIMEOUT.to_seconds() < 3600  # inside a custom resource's one-hour answer window
    assert len(variant.resources(RESOURCE_TYPE)) == 1


def test_owner_tag_is_what_every_create_request_sets(cloud):
    """The teardown trusts a tag: each Create* request of the state machine must carry it, with the value the
    custom resource matches: the stack's own UUID (review item 8), resolved the same way on both sides."""
    from infra.definition import Resolver

    props = cloud.one(RESOURCE_TYPE)["Properties"]
    resolver = Resolver(cloud.template, region=REGION, account=DEFAULT_ACCOUNT_ID)
    resolver.pseudo["AWS::StackId"] = STACK_ID
    key, value = props["OwnerTagKey"], resolver(props["OwnerTagValue"])
    assert (key, value) == (req.STACK_TAG, STACK_UUID)
    assert owner_tag(cloud.config)[0] == key
    definition = resolver.definition({"Bucket": "b", "SageMakerRoleArn": ROLE})
    creates = {name: s for name, s in definition["States"].items()
               if s["Type"] == "Task" and ":create" in s["Resource"].lower()}
    assert len(creates) >= 5  # tuning (cold/warm), training, model, endpoint config, endpoint
    for name, state in creates.items():
        tags = state["Parameters"].get("Tags", [])
        assert {"Key": key, "Value": value} in tags, name


def test_teardown_role_can_check_the_stack_status_and_read_tags(cloud):
    (role_id,) = [k for k, r in cloud.resources("AWS::IAM::Role").items() if k.startswith("TeardownRole")]
    policy = next(p["Properties"]["PolicyDocument"] for p in cloud.resources("AWS::IAM::Policy").values()
                  if {"Ref": role_id} in p["Properties"]["Roles"])
    by_sid = {s["Sid"]: s for s in policy["Statement"] if "Sid" in s}
    assert by_sid["StackStatus"]["Action"] == "cloudformation:DescribeStacks"
    assert by_sid["StackStatus"]["Resource"] == {"Ref": "AWS::StackId"}
    assert by_sid["ReadTags"]["Action"] == "sagemaker:ListTags"


# --- the handlers --------------------------------------------------------------------------------------------
@pytest.fixture
def aws(monkeypatch):
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": REGION}.items():
        monkeypatch.setenv(key, value)
    with mock_aws():
        yield TeardownSageMaker(boto3.client("sagemaker")), boto3.client("stepfunctions")


def _run(event: dict, clients: handler.Clients, max_polls: int = 10) -> int:
    """What the Provider framework does: on_event once, then is_complete until it says done."""
    result = handler.on_event(event, None, clients)
    polled = {**event, **result}
    for poll in range(1, max_polls + 1):
        if handler.is_complete(polled, None, clients)["IsComplete"]:
            return poll
    raise AssertionError(f"not complete after {max_polls} polls")


@pytest.mark.parametrize("status", ["UPDATE_COMPLETE_CLEANUP_IN_PROGRESS", "UPDATE_ROLLBACK_IN_PROGRESS",
                                    "ROLLBACK_IN_PROGRESS", "UPDATE_ROLLBACK_COMPLETE_CLEANUP_IN_PROGRESS"])
def test_leaving_the_template_touches_nothing(aws, status):
    """Removing/renaming the resource, or rolling back the update that added it, keeps the live endpoint."""
    sm, sfn = aws
    deployment(sm, "imgclf-aaaaaaaaaaaa")
    sm.create_endpoint(EndpointName="imgclf-endpoint", EndpointConfigName="imgclf-aaaaaaaaaaaa", Tags=TAGS)
    machine = state_machine(sfn)
    cfn, stubber = cloudformation(status)
    before = resource_names(sm)

    assert _run(teardown_event("Delete", machine), handler.Clients(sm, sfn, cfn)) == 1

    stubber.assert_no_pending_responses()
    assert resource_names(sm) == before
    assert sfn.list_executions(stateMachineArn=machine)["executions"][0]["status"] == "RUNNING"


@pytest.mark.parametrize("kind", ["Create", "Update"])
def test_create_and_update_do_nothing(aws, kind):
    sm, sfn = aws
    deployment(sm, "imgclf-aaaaaaaaaaaa")
    cfn, _ = cloudformation()  # no DescribeStacks call expected: the stubber would raise
    assert _run(teardown_event(kind), handler.Clients(sm, sfn, cfn)) == 1
    assert resource_names(sm)["models"] == ["imgclf-aaaaaaaaaaaa"]


def test_stack_deletion_removes_only_what_the_stack_made(aws):
    sm, sfn = aws
    deployment(sm, "imgclf-aaaaaaaaaaaa")
    deployment(sm, "imgclf-bbbbbbbbbbbb")
    deployment(sm, "imgclf-handmade0000", tags=[])  # the prefix, but not made by the state machine
    # The prefix and the project tag, but another stack's (an older stack, the CLI, a notebook): review item 8.
    deployment(sm, "imgclf-otherstack00", tags=[{"Key": "project", "Value": "imgclf"},
                                                 {"Key": req.STACK_TAG, "Value": "another-stack-uuid"}])
    deployment(sm, "other-cccccccccccc", tags=[{"Key": "project", "Value": "imgclf"}])
    deployment(sm, "imgclfx-dddddddddddd", tags=[{"Key": "project", "Value": "imgclfx"}])
    sm.create_endpoint(EndpointName="imgclf-endpoint", EndpointConfigName="imgclf-bbbbbbbbbbbb", Tags=TAGS)
    sm.create_endpoint(EndpointName="other-endpoint", EndpointConfigName="other-cccccccccccc", Tags=TAGS)
    aas = boto3.client("application-autoscaling")
    for endpoint in ("imgclf-endpoint", "other-endpoint"):  # as the state machine registers them
        cfg = load_config_for({"serving.endpoint_name": endpoint} if endpoint.startswith("imgclf-") else {})
        register = req.register_scalable_target(cfg) | {"ResourceId": f"endpoint/{endpoint}/variant/AllTraffic"}
        aas.register_scalable_target(**register)
        aas.put_scaling_policy(**req.put_scaling_policy(cfg) | {"ResourceId": register["ResourceId"]})
    machine = state_machine(sfn)
    cfn, _ = cloudformation("DELETE_IN_PROGRESS")

    _run(teardown_event("Delete", machine), handler.Clients(sm, sfn, cfn, aas))

    # The endpoint's scalable target went with it (AWS deletes a deregistered target's policies too; moto keeps
    # them, so they are not asserted here); another endpoint's stayed.
    left = aas.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
    assert [t["ResourceId"] for t in left] == ["endpoint/other-endpoint/variant/AllTraffic"]

    kept = ["imgclf-handmade0000", "imgclf-otherstack00", "imgclfx-dddddddddddd", "other-cccccccccccc"]
    assert resource_names(sm) == {"endpoints": ["other-endpoint"], "configs": kept, "models": kept}
    assert sfn.list_executions(stateMachineArn=machine)["executions"][0]["status"] == "ABORTED"


def test_running_jobs_are_stopped_and_waited_for(aws):
    """Stopping/Stopped jobs (a trial stopped by its tuning job) never fail the teardown; it waits until no job
    of ours is InProgress or Stopping, and leaves other jobs alone."""
    sm, sfn = aws
    training_job(sm, "imgclf-aaaaaaaaaaaa", "InProgress")
    training_job(sm, "imgclf-bbbbbbbbbbbb-001-1a2b3c4d", "Stopping")  # a trial its tuning job is stopping
    training_job(sm, "imgclf-cccccccccccc", "Stopped")
    training_job(sm, "imgclf-handmade0000", "InProgress", tags=[])
    cfn, _ = cloudformation("DELETE_IN_PROGRESS")
    clients = handler.Clients(sm, sfn, cfn)
    result = handler.on_event(teardown_event("Delete"), None, clients)

    first = handler.teardown_step(handler.Owner(teardown_event("Delete")["ResourceProperties"]), clients)
    assert sm.stopped == ["imgclf-aaaaaaaaaaaa"]
    assert sorted(first["pending"]) == ["training job imgclf-aaaaaaaaaaaa (InProgress)",
                                        "training job imgclf-bbbbbbbbbbbb-001-1a2b3c4d (Stopping)"]
    assert not handler.is_complete({**teardown_event("Delete"), **result}, None, clients)["IsComplete"]
    for name in ("imgclf-aaaaaaaaaaaa", "imgclf-bbbbbbbbbbbb-001-1a2b3c4d"):
        sm._backend().training_jobs[name].training_job_status = "Stopped"
    assert handler.is_complete({**teardown_event("Delete"), **result}, None, clients)["IsComplete"]
    assert sm._backend().training_jobs["imgclf-handmade0000"].training_job_status == "InProgress"


def test_a_creating_endpoint_is_waited_for_then_deleted(aws):
    sm, sfn = aws
    deployment(sm, "imgclf-aaaaaaaaaaaa")
    sm.create_endpoint(EndpointName="imgclf-endpoint", EndpointConfigName="imgclf-aaaaaaaaaaaa", Tags=TAGS)
    endpoint = sm._backend().endpoints["imgclf-endpoint"]
    endpoint.endpoint_status = "Creating"
    cfn, _ = cloudformation("DELETE_IN_PROGRESS")
    clients = handler.Clients(sm, sfn, cfn)
    event = {**teardown_event("Delete"), **handler.on_event(teardown_event("Delete"), None, clients)}

    assert not handler.is_complete(event, None, clients)["IsComplete"]
    assert resource_names(sm)["endpoints"] == ["imgclf-endpoint"]  # not deleted while Creating
    assert resource_names(sm)["models"] == ["imgclf-aaaaaaaaaaaa"]  # nor what it is being created from
    endpoint.endpoint_status = "InService"
    assert not handler.is_complete(event, None, clients)["IsComplete"]  # DeleteEndpoint sent: Deleting
    assert handler.is_complete(event, None, clients)["IsComplete"]
    assert resource_names(sm) == {"endpoints": [], "configs": [], "models": []}


def test_an_unexpected_error_fails_the_event(aws):
    """The Provider framework reports FAILED to CloudFormation when a handler raises: nothing is swallowed."""
    sm, sfn = aws
    cfn, stubber = cloudformation()
    stubber.add_client_error("describe_stacks", "AccessDenied", "not allowed", 403, {"StackName": STACK_ID})
    with pytest.raises(ClientError, match="AccessDenied"):
        handler.on_event(teardown_event("Delete"), None, handler.Clients(sm, sfn, cfn))


def test_a_running_tuning_job_is_stopped_with_its_trials(aws):
    sm, sfn = aws
    spec = {"ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 10},
            "AlgorithmSpecification": {"TrainingImage": IMAGE, "TrainingInputMode": "File"},
            "RoleArn": ROLE, "OutputDataConfig": {"S3OutputPath": "s3://bucket/tuning/"},
            "StoppingCondition": {"MaxRuntimeInSeconds": 600}}
    config = {"Strategy": "Random", "ResourceLimits": {"MaxNumberOfTrainingJobs": 2, "MaxParallelTrainingJobs": 2}}
    for name, tags in (("imgclf-aaaaaaaaaaaa", TAGS), ("imgclf-handmade0000", [])):
        sm.create_hyper_parameter_tuning_job(HyperParameterTuningJobName=name, HyperParameterTuningJobConfig=config,
                                             TrainingJobDefinition=spec, Tags=tags)
        sm._backend().hyper_parameter_tuning_jobs[name].hyper_parameter_tuning_job_status = "InProgress"
    cfn, _ = cloudformation("DELETE_IN_PROGRESS")
    clients = handler.Clients(sm, sfn, cfn)
    event = {**teardown_event("Delete"), **handler.on_event(teardown_event("Delete"), None, clients)}

    assert not handler.is_complete(event, None, clients)["IsComplete"]
    assert sm.stopped == ["imgclf-aaaaaaaaaaaa"]
    assert not handler.is_complete(event, None, clients)["IsComplete"]  # Stopping: its trials are still stopping
    assert sm.stopped == ["imgclf-aaaaaaaaaaaa"]  # asked once
    sm._backend().hyper_parameter_tuning_jobs["imgclf-aaaaaaaaaaaa"].hyper_parameter_tuning_job_status = "Stopped"
    assert handler.is_complete(event, None, clients)["IsComplete"]
    other = sm._backend().hyper_parameter_tuning_jobs["imgclf-handmade0000"]
    assert other.hyper_parameter_tuning_job_status == "InProgress"


def test_the_role_allows_every_call_the_handlers_make(aws, cloud):
    """The IAM actions the teardown needs are derived from the calls its handlers make (botocore's operation names),
    not listed by hand: each must be in the teardown role's policy."""
    sm, sfn = aws
    deployment(sm, "imgclf-aaaaaaaaaaaa")
    sm.create_endpoint(EndpointName="imgclf-endpoint", EndpointConfigName="imgclf-aaaaaaaaaaaa", Tags=TAGS)
    training_job(sm, "imgclf-bbbbbbbbbbbb", "InProgress")
    machine = state_machine(sfn)
    cfn, _ = cloudformation("DELETE_IN_PROGRESS")
    aas = boto3.client("application-autoscaling")
    cfg = load_config_for({})
    aas.register_scalable_target(**req.register_scalable_target(cfg))
    called: set[str] = set()
    for prefix, client in (("sagemaker", sm._client), ("states", sfn), ("cloudformation", cfn),
                           ("application-autoscaling", aas)):
        client.meta.events.register("before-parameter-build.*.*", lambda model, prefix=prefix, **_: called.add(
            f"{prefix}:{model.name}"))
    clients = handler.Clients(sm, sfn, cfn, aas)
    event = {**teardown_event("Delete", machine), **handler.on_event(teardown_event("Delete", machine), None, clients)}
    handler.is_complete(event, None, clients)
    sm._backend().training_jobs["imgclf-bbbbbbbbbbbb"].training_job_status = "Stopped"
    for _ in range(3):
        handler.is_complete(event, None, clients)
    called |= {"sagemaker:StopTrainingJob", "sagemaker:StopHyperParameterTuningJob"}  # moto lacks them (wrapper)

    (role_id,) = [k for k in cloud.resources("AWS::IAM::Role") if k.startswith("TeardownRole")]
    policy = next(p["Properties"]["PolicyDocument"] for p in cloud.resources("AWS::IAM::Policy").values()
                  if {"Ref": role_id} in p["Properties"]["Roles"])
    allowed = {a for s in policy["Statement"] for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    assert {"sagemaker:DeleteEndpoint", "sagemaker:ListTags", "states:StopExecution",
            "cloudformation:DescribeStacks", "application-autoscaling:DeregisterScalableTarget"} <= called
    assert called <= allowed, called - allowed


def test_a_resource_gone_before_its_tags_are_read_is_not_ours(aws):
    """Review item 9: ListTags on something deleted since it was listed answers 'not found': not ours, no error."""
    sm, _ = aws
    owner = handler.Owner(teardown_event("Delete")["ResourceProperties"])
    arn = f"arn:aws:sagemaker:{REGION}:{DEFAULT_ACCOUNT_ID}:endpoint/imgclf-endpoint"
    stubber = Stubber(sm._client)
    stubber.add_client_error("list_tags", "ValidationException", f"Could not find endpoint \"{arn}\".", 400)
    stubber.add_client_error("list_tags", "AccessDeniedException", "not allowed", 400)
    with stubber:
        assert owner.tagged(sm, arn) is False
        with pytest.raises(ClientError, match="AccessDenied"):
            owner.tagged(sm, arn)


def test_an_updating_endpoint_is_asked_to_go_at_once(aws):
    """Review item 7: DeleteEndpoint is sent to an endpoint that is Updating (a long blue/green update must not hold
    `cdk destroy`); a refusal (ValidationException) only keeps it pending."""
    sm, sfn = aws
    deployment(sm, "imgclf-aaaaaaaaaaaa")
    sm.create_endpoint(EndpointName="imgclf-endpoint", EndpointConfigName="imgclf-aaaaaaaaaaaa", Tags=TAGS)
    sm._backend().endpoints["imgclf-endpoint"].endpoint_status = "Updating"
    cfn, _ = cloudformation("DELETE_IN_PROGRESS")
    clients = handler.Clients(sm, sfn, cfn)
    event = {**teardown_event("Delete"), **handler.on_event(teardown_event("Delete"), None, clients)}
    assert not handler.is_complete(event, None, clients)["IsComplete"]  # DeleteEndpoint sent: Deleting
    assert handler.is_complete(event, None, clients)["IsComplete"]
    assert resource_names(sm) == {"endpoints": [], "configs": [], "models": []}


def test_the_longest_update_the_config_allows_fits_the_teardown():
    from infra.config import TEARDOWN_AFTER_UPDATE_S, TEARDOWN_TOTAL_S, ConfigError

    cfg = load_config_for({})
    assert cfg.serving.max_execution_s + TEARDOWN_AFTER_UPDATE_S <= TEARDOWN_TOTAL_S == TOTAL_TIMEOUT.to_seconds()
    with pytest.raises(ConfigError, match="max_execution_s"):
        load_config_for({"serving.max_execution_s": 14400})
    assert load_config_for({"serving.max_execution_s": 14400, "teardown_on_destroy": False})


def test_teardown_role_may_delete_the_target_tracking_alarms(cloud):
    """Item 8: deregistering a target deletes its policy's alarms with the caller's CloudWatch permissions."""
    (role_id,) = [k for k, r in cloud.resources("AWS::IAM::Role").items() if k.startswith("TeardownRole")]
    policy = next(p["Properties"]["PolicyDocument"] for p in cloud.resources("AWS::IAM::Policy").values()
                  if {"Ref": role_id} in p["Properties"]["Roles"])
    by_sid = {s["Sid"]: s for s in policy["Statement"] if "Sid" in s}
    assert sorted(by_sid["ScalingAlarms"]["Action"]) == ["cloudwatch:DeleteAlarms", "cloudwatch:DescribeAlarms"]
    assert f":alarm:TargetTracking-endpoint/{cloud.config.prefix}-*" in json.dumps(by_sid["ScalingAlarms"])
