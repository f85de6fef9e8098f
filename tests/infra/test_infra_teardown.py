"""`cdk destroy` removes what the state machine created: the custom resource and its handler (against moto)."""

from __future__ import annotations

import json

import boto3
import pytest
from moto import mock_aws

from infra.teardown import RESOURCE_TYPE
from infra.teardown_handler import handler

ROLE = "arn:aws:iam::123456789012:role/sagemaker"
IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.6-cpu-py312"


def test_custom_resource_is_wired_to_the_state_machine(cloud, variant):
    resource = cloud.one(RESOURCE_TYPE)
    props = resource["Properties"]
    assert props["Prefix"] == cloud.config.prefix
    assert props["StateMachineArn"] == {"Ref": next(iter(cloud.resources("AWS::StepFunctions::StateMachine")))}
    assert "Fn::GetAtt" in props["ServiceToken"]
    fn = [f["Properties"] for f in cloud.resources("AWS::Lambda::Function").values()
          if f["Properties"]["Handler"] == "handler.handler"]
    assert fn and fn[0]["Runtime"] == "python3.14"
    assert len(variant.resources(RESOURCE_TYPE)) == 1


@pytest.fixture
def aws(monkeypatch):
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    with mock_aws():
        yield boto3.client("sagemaker"), boto3.client("stepfunctions")


def _deployments(sm, names):
    for name in names:
        sm.create_model(ModelName=name, ExecutionRoleArn=ROLE, PrimaryContainer={"Image": IMAGE})
        sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[{
            "VariantName": "AllTraffic", "ModelName": name, "InstanceType": "ml.m5.large",
            "InitialInstanceCount": 1}])


def test_teardown_removes_only_the_prefix(aws):
    sm, sfn = aws
    _deployments(sm, ["imgclf-aaaaaaaaaaaa", "imgclf-bbbbbbbbbbbb", "other-cccccccccccc", "imgclfx-dddddddddddd"])
    sm.create_endpoint(EndpointName="imgclf-endpoint", EndpointConfigName="imgclf-bbbbbbbbbbbb")
    sm.create_endpoint(EndpointName="other-endpoint", EndpointConfigName="other-cccccccccccc")
    machine = sfn.create_state_machine(name="imgclf-train-deploy", roleArn=ROLE, definition=json.dumps(
        {"StartAt": "W", "States": {"W": {"Type": "Wait", "Seconds": 600, "End": True}}}))["stateMachineArn"]
    sfn.start_execution(stateMachineArn=machine, name="run-1")

    removed = handler.teardown("imgclf", machine, sm, sfn)

    assert removed["endpoints"] == ["imgclf-endpoint"]
    assert sorted(removed["endpoint_configs"]) == ["imgclf-aaaaaaaaaaaa", "imgclf-bbbbbbbbbbbb"]
    assert sorted(removed["models"]) == ["imgclf-aaaaaaaaaaaa", "imgclf-bbbbbbbbbbbb"]
    assert removed["executions"] == ["run-1"]
    assert [e["EndpointName"] for e in sm.list_endpoints()["Endpoints"]] == ["other-endpoint"]
    assert sorted(m["ModelName"] for m in sm.list_models()["Models"]) == ["imgclf" + "x-dddddddddddd",
                                                                         "other-cccccccccccc"]
    assert handler.teardown("imgclf", machine, sm, sfn)["models"] == []  # idempotent


class _Response:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def read(self):
        return b""


def _event(kind: str) -> dict:
    return {"RequestType": kind, "ResponseURL": "https://cloudformation-custom-resource-response.example/x",
            "StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/s/1", "RequestId": "r1",
            "LogicalResourceId": "Teardown", "ResourceProperties": {"Prefix": "imgclf"}}


@pytest.mark.parametrize(("kind", "fails", "status"), [
    ("Create", False, "SUCCESS"), ("Update", False, "SUCCESS"), ("Delete", False, "SUCCESS"),
    ("Delete", True, "FAILED")])
def test_handler_always_answers_cloudformation(monkeypatch, kind, fails, status):
    sent = []
    monkeypatch.setattr(handler.urllib.request, "urlopen",
                        lambda request, timeout: sent.append(json.loads(request.data)) or _Response())

    def teardown(prefix, arn):
        if fails:
            raise RuntimeError("boom")
        return {"endpoints": ["imgclf-endpoint"]}

    monkeypatch.setattr(handler, "teardown", teardown)
    handler.handler(_event(kind), None)
    (body,) = sent
    assert body["Status"] == status
    assert body["PhysicalResourceId"] == "imgclf-teardown"
    if fails:
        assert "boom" in body["Reason"]
