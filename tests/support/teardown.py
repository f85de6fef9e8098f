"""The teardown handlers' world in moto: SageMaker with the stop calls moto lacks, a stubbed CloudFormation, the
resources a deployment leaves, and the Provider framework's events (tests/infra/test_teardown.py, the IAM tests)."""

from __future__ import annotations

import json

import boto3
from botocore.exceptions import ClientError
from botocore.stub import Stubber
from moto.core import DEFAULT_ACCOUNT_ID
from moto.sagemaker.models import sagemaker_backends

import stackfacts as facts
from infra import sagemaker_requests as req
from infra.teardown import RESOURCE_TYPE

REGION = facts.LOCAL_REGION
ROLE = f"arn:aws:iam::{DEFAULT_ACCOUNT_ID}:role/sagemaker"
IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.6-cpu-py312"
STACK_UUID = "1b2c3d4e-0000-4000-8000-123456789abc"
TAGS = [{"Key": "project", "Value": "imgclf"}, {"Key": req.STACK_TAG, "Value": STACK_UUID}]
STACK_ID = f"arn:aws:cloudformation:{REGION}:{DEFAULT_ACCOUNT_ID}:stack/ImageClassifier/{STACK_UUID}"

# --- the template --------------------------------------------------------------------------------------------


class TeardownSageMaker:
    """moto's client plus the two stop calls moto lacks, behaving like SageMaker: InProgress -> Stopping, and a
    ValidationException for a job that is not InProgress."""

    def __init__(self, client) -> None:
        self._client = client
        self.stopped: list[str] = []

    def __getattr__(self, name):
        return getattr(self._client, name)

    def _backend(self):
        return sagemaker_backends[DEFAULT_ACCOUNT_ID][REGION]

    def _stop(self, job, attribute: str, name: str) -> None:
        if getattr(job, attribute) != "InProgress":
            raise ClientError({"Error": {"Code": "ValidationException",
                                         "Message": f"The job {name} is not in progress"}}, "Stop")
        setattr(job, attribute, "Stopping")
        self.stopped.append(name)

    def stop_training_job(self, TrainingJobName: str) -> None:
        self._stop(self._backend().training_jobs[TrainingJobName], "training_job_status", TrainingJobName)

    def stop_hyper_parameter_tuning_job(self, HyperParameterTuningJobName: str) -> None:
        job = self._backend().hyper_parameter_tuning_jobs[HyperParameterTuningJobName]
        self._stop(job, "hyper_parameter_tuning_job_status", HyperParameterTuningJobName)


def deployment(sm, name: str, tags=TAGS) -> None:
    sm.create_model(ModelName=name, ExecutionRoleArn=ROLE, PrimaryContainer={"Image": IMAGE}, Tags=tags)
    sm.create_endpoint_config(EndpointConfigName=name, Tags=tags, ProductionVariants=[{
        "VariantName": req.VARIANT_NAME, "ModelName": name, "InstanceType": "ml.m5.large",
        "InitialInstanceCount": 1}])


def training_job(sm, name: str, status: str, tags=TAGS) -> None:
    sm.create_training_job(
        TrainingJobName=name, RoleArn=ROLE, Tags=tags,
        AlgorithmSpecification={"TrainingImage": IMAGE, "TrainingInputMode": "File"},
        OutputDataConfig={"S3OutputPath": "s3://bucket/training/"},
        ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 10},
        StoppingCondition={"MaxRuntimeInSeconds": 600})
    sm._backend().training_jobs[name].training_job_status = status


def state_machine(sfn) -> str:
    arn = sfn.create_state_machine(name="imgclf-train-deploy", roleArn=ROLE, definition=json.dumps(
        {"StartAt": "W", "States": {"W": {"Type": "Wait", "Seconds": 600, "End": True}}}))["stateMachineArn"]
    sfn.start_execution(stateMachineArn=arn, name="run-1")
    return arn


def cloudformation(*statuses: str):
    client = boto3.client("cloudformation", region_name=REGION)
    stubber = Stubber(client)
    for status in statuses:
        stubber.add_response("describe_stacks", {"Stacks": [{
            "StackName": "ImageClassifier", "StackId": STACK_ID, "StackStatus": status,
            "CreationTime": "2026-01-01T00:00:00Z"}]}, {"StackName": STACK_ID})
    stubber.activate()
    return client, stubber


def teardown_event(kind: str, arn: str | None = None) -> dict:
    return {"RequestType": kind, "StackId": STACK_ID, "RequestId": "r1", "LogicalResourceId": "Teardown",
            "PhysicalResourceId": "imgclf-teardown", "ResourceType": RESOURCE_TYPE,
            "ResourceProperties": {"Prefix": "imgclf", "StateMachineArn": arn, "OwnerTagKey": req.STACK_TAG,
                                   "OwnerTagValue": STACK_UUID}}


def resource_names(sm) -> dict[str, list[str]]:
    return {"endpoints": sorted(e["EndpointName"] for e in sm.list_endpoints()["Endpoints"]),
            "configs": sorted(c["EndpointConfigName"] for c in sm.list_endpoint_configs()["EndpointConfigs"]),
            "models": sorted(m["ModelName"] for m in sm.list_models()["Models"])}
