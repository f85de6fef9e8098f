"""The SageMaker stand-in makes its S3 calls with the job's role (RoleArn) or the model's (ExecutionRoleArn), as
SageMaker does: a denied call fails the job or the endpoint the way SageMaker reports it, before anything trains
(a hand-written role here; tests/infra/test_infra_pipeline_iam.py runs the synthesized one)."""

from __future__ import annotations

import copy

import pytest

from infra.definition import Resolver
from local.iam import TemplateIAM
from local.sagemaker import LocalSageMaker
from ml import contract
from tests.support.local import BUCKET, FAKE_TRAIN, ROLE, sourcedir, training_request

ACCOUNT = ROLE.split(":")[4]
BUCKET_ARN = f"arn:aws:s3:::{BUCKET}"
GRANTS = {  # Sid -> (actions, resources, condition)
    "List": (["s3:ListBucket"], [BUCKET_ARN], {"StringLike": {"s3:prefix": ["data/*", "checkpoints/*"]}}),
    "ReadData": (["s3:GetObject"], [f"{BUCKET_ARN}/data/*"], None),
    "ReadCode": (["s3:GetObject"], [f"{BUCKET_ARN}/code/*"], None),
    "Output": (["s3:PutObject"], [f"{BUCKET_ARN}/output/*"], None),
    "Checkpoints": (["s3:GetObject", "s3:PutObject"], [f"{BUCKET_ARN}/checkpoints/*"], None),
}


def _template(without: str | None = None) -> dict:
    statements = [{"Sid": sid, "Effect": "Allow", "Action": actions, "Resource": resources,
                   **({"Condition": condition} if condition else {})}
                  for sid, (actions, resources, condition) in GRANTS.items() if sid != without]
    return {"Resources": {
        "Role": {"Type": "AWS::IAM::Role", "Properties": {"RoleName": ROLE.rsplit("/", 1)[1]}},
        "Policy": {"Type": "AWS::IAM::Policy", "Properties": {"Roles": [{"Ref": "Role"}], "PolicyDocument": {
            "Version": "2012-10-17", "Statement": statements}}}}}


def _iam(without: str | None = None) -> TemplateIAM:
    return TemplateIAM(Resolver(_template(without), region="us-east-1", account=ACCOUNT))


@pytest.fixture
def sm(tmp_path):
    iam = _iam()
    with LocalSageMaker(tmp_path / "sagemaker", s3_root=tmp_path / "s3", authorize_s3=iam.sagemaker_s3,
                        stop_grace_seconds=1.0) as standin:
        standin.iam = iam  # for the assertions
        for channel in contract.CHANNELS:
            image = standin.s3.root / BUCKET / "data" / channel / "a" / "0.png"
            image.parent.mkdir(parents=True)
            image.write_bytes(b"not read by the fake script")
        sourcedir(standin.s3.root, {"train.py": FAKE_TRAIN})
        yield standin


def _request(name: str) -> dict:
    return training_request(name, f"s3://{BUCKET}/data", hyperparameters={"epochs": "1"})


@pytest.mark.parametrize("without, action, operation, resource", [
    ("List", "s3:ListBucket", "ListObjectsV2", BUCKET_ARN),
    ("ReadData", "s3:GetObject", "GetObject", f"{BUCKET_ARN}/data/train/a/0.png"),
    ("ReadCode", "s3:GetObject", "GetObject", f"{BUCKET_ARN}/code/sourcedir.tar.gz"),
    ("Checkpoints", "s3:PutObject", "PutObject", f"{BUCKET_ARN}/checkpoints/denied/"),
    ("Output", "s3:PutObject", "PutObject", f"{BUCKET_ARN}/output/denied/output/model.tar.gz"),
])
def test_a_denied_transfer_fails_the_job_before_it_trains(sm, without, action, operation, resource):
    sm.s3.authorize = _iam(without).sagemaker_s3
    sm.create_training_job(**_request("denied"))
    d = sm.wait_for_training_job("denied", timeout=120)
    assert d["TrainingJobStatus"] == "Failed"
    reason = d["FailureReason"]
    assert reason.startswith("ClientError: ") and f"An error occurred (AccessDenied) when calling the {operation} " \
        "operation: User: arn:aws:sts::123456789012:assumed-role/sagemaker/SageMaker is not authorized to perform: " \
        f"{action} on resource: {resource} because" in reason, reason
    assert [t["Status"] for t in d["SecondaryStatusTransitions"]] == ["Starting", "Downloading", "Failed"]
    assert "TrainingStartTime" not in d  # the script never started
    assert not (sm.s3.root / BUCKET / "output" / "denied" / "output" / "model.tar.gz").exists()


def test_an_endpoint_whose_role_may_not_read_the_model_fails(sm):
    model = sm.s3.root / BUCKET / "output" / "m" / "model.tar.gz"
    model.parent.mkdir(parents=True)
    model.write_bytes(b"")
    sm.create_model(ModelName="m", ExecutionRoleArn=ROLE, PrimaryContainer={
        "Image": "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.6-cpu-py312",
        "ModelDataUrl": f"s3://{BUCKET}/output/m/model.tar.gz"})
    sm.create_endpoint_config(EndpointConfigName="c", ProductionVariants=[
        {"VariantName": "AllTraffic", "ModelName": "m", "InstanceType": "ml.m5.large", "InitialInstanceCount": 1}])
    sm.create_endpoint(EndpointName="e", EndpointConfigName="c")
    d = sm.wait_for_endpoint("e", timeout=120)
    assert d["EndpointStatus"] == "Failed"
    assert d["FailureReason"].startswith("ClientError: Failed to download model data for container \"container_1\" "
                                         f"from URL: \"s3://{BUCKET}/output/m/model.tar.gz\"")
    assert f"perform: s3:GetObject on resource: {BUCKET_ARN}/output/m/model.tar.gz" in d["FailureReason"]
    assert not list((sm.work_dir / "endpoints").glob("e/*.log"))  # no server was started


@pytest.mark.slow
def test_a_job_within_its_roles_grants_completes(sm):
    request = copy.deepcopy(_request("granted"))
    sm.create_training_job(**request)
    d = sm.wait_for_training_job("granted", timeout=300)
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    assert (sm.s3.root / BUCKET / "output" / "granted" / "output" / "model.tar.gz").is_file()
    assert sm.iam.role(ROLE).used == {"s3:ListBucket", "s3:GetObject", "s3:PutObject"}
    assert sm.iam.denied == []


@pytest.mark.parametrize("destination, written", [("output/capture", True), ("data/capture", False)])
def test_data_capture_is_written_with_the_models_role(sm, destination, written):
    """Each captured request is a PutObject by the model's execution role; a denied one is dropped (the invocation
    has been answered already), as SageMaker drops captures it cannot write."""
    from types import SimpleNamespace

    sm.hosting.models["m"] = {"ModelName": "m", "ExecutionRoleArn": ROLE}
    sm.hosting.configs["c"] = {"EndpointConfigName": "c", "DataCaptureConfig": {
        "EnableCapture": True, "InitialSamplingPercentage": 100, "DestinationS3Uri": f"s3://{BUCKET}/{destination}",
        "CaptureOptions": [{"CaptureMode": "Input"}]}}
    sm._runtime.capture(SimpleNamespace(name="e", config_name="c"), SimpleNamespace(variant="AllTraffic",
                                                                                     model_name="m"),
                        "application/x-image", b"img", "application/json", b"{}")
    captured = list((sm.s3.root / BUCKET / destination).rglob("*.jsonl"))
    assert bool(captured) is written
    assert [d.action for d in sm.iam.denied] == ([] if written else ["s3:PutObject"])
