"""IAM enforced in local mode (local/iam.py): the state machine role's synthesized policies authorize every
SageMaker Task call of an offline run (scripted SageMaker, nothing trains); removing a statement fails the run at
the state that needs it with AccessDeniedException naming the action; what the role grants and no call uses is
listed."""

from __future__ import annotations

import copy
import json

import pytest

from infra.definition import Resolver
from infra.pipeline import S
from local.engine import run_definition
from local.iam import AccessDenied, state_machine_authorizer
from tests.infra.conftest import ACCOUNT
from tests.infra.test_infra_pipeline_runs import _full_run_sagemaker


def _run(template: dict):
    resolver = Resolver(template, region="us-east-1", account=ACCOUNT)
    authorize = state_machine_authorizer(resolver)
    result = run_definition(resolver.definition(), {}, _full_run_sagemaker(), poll_interval=0.05, timeout=300,
                            authorize=authorize)
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
    assert entered[-1] == state, json.dumps(result.states()[-3:])


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
