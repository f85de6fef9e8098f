"""A scripted SageMaker for running the synthesized definition without training anything: answers that follow
botocore's shapes and SageMaker's messages, every call recorded (tests/infra/test_pipeline_runs.py, the IAM tests)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import stackfacts as facts
from awsshapes import s3_uri
from local.engine import ExecutionResult, run_definition
from local.sagemaker import SageMakerError
from local.sagemaker.service import DEBUGGER_REFUSED
from ml import contract

ACCOUNT_ARN = f"arn:aws:sagemaker:{facts.LOCAL_REGION}:{facts.LOCAL_ACCOUNT}"
NOT_FOUND = 'Could not find endpoint "{arn}".'  # SageMaker's DescribeEndpoint answer (a ValidationException)


class ScriptedSageMaker:
    """What the engine needs of a stand-in (`call`), answering from a script; records every call."""

    def __init__(self, **answers: Callable[[dict], dict]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, dict]] = []

    def call(self, operation: str, params: dict) -> dict:
        self.calls.append((operation, copy.deepcopy(params)))
        answer = self.answers.get(operation)
        if answer is None:
            raise SageMakerError("ValidationException", f"scripted SageMaker: unexpected {operation}")
        return answer(params)

    def ops(self, operation: str) -> list[dict]:
        return [p for op, p in self.calls if op == operation]


def run_scripted(definition: dict, input: Any, sm: ScriptedSageMaker, **kwargs: Any) -> ExecutionResult:
    """run_definition against scripted answers: nothing needs real time to pass between them, so every Wait state
    and Retry interval takes a hundredth of its time (the history is the same)."""
    return run_definition(definition, input, sm, poll_interval=0.05, time_scale=0.01, **kwargs)  # type: ignore[arg-type]


def endpoint_missing(params: dict) -> dict:
    raise SageMakerError("ValidationException",
                         NOT_FOUND.format(arn=f"{ACCOUNT_ARN}:endpoint/{params['EndpointName']}"))


def training_description(name: str, *, metrics: list[dict] | None = None, rules: bool = False) -> dict:
    out: dict[str, Any] = {
        "TrainingJobName": name, "TrainingJobArn": f"{ACCOUNT_ARN}:training-job/{name}",
        "TrainingJobStatus": "Completed", "SecondaryStatus": "Completed",
        "ModelArtifacts": {"S3ModelArtifacts": s3_uri("bucket", facts.job_output_key("training", name,
                                                                                   facts.MODEL_ARCHIVE))},
    }
    if metrics is not None:
        out["FinalMetricDataList"] = metrics
    if rules:
        out["DebugRuleEvaluationStatuses"] = [{"RuleConfigurationName": r, "RuleEvaluationStatus": "NoIssuesFound"}
                                              for r in ("VanishingGradient", "Overfit", "Overtraining",
                                                        "LossNotDecreasing", "PoorWeightInitialization")]
        out["ProfilerRuleEvaluationStatuses"] = [{"RuleConfigurationName": r, "RuleEvaluationStatus": "NoIssuesFound"}
                                                 for r in (facts.PROFILER_REPORT_RULE, "LowGPUUtilization")]
    return out


GOOD_METRICS = [{"MetricName": contract.TEST_ACCURACY, "Value": 0.93},
                {"MetricName": contract.HEALTH_ISSUES, "Value": 0.0}, {"MetricName": "valid_loss", "Value": 0.2}]


class Endpoint:
    """DescribeEndpoint/CreateEndpoint/UpdateEndpoint of one endpoint that becomes InService with what it got."""

    def __init__(self, *, exists: bool = False, serverless: bool = False, failures: list[SageMakerError] = (),
                 status: str = "InService", instances: int = 1, instance_type: str = "ml.m5.large"):
        self.config = "previous-config" if exists else None
        self.serverless = serverless
        self.failures = list(failures)
        self.status = status
        self.instances = instances  # the live variant's CurrentInstanceCount
        self.instance_type = instance_type  # the live config's variant InstanceType

    def describe(self, params: dict) -> dict:
        if self.failures:
            raise self.failures.pop(0)
        if self.config is None:
            endpoint_missing(params)
        variant: dict[str, Any] = {"VariantName": facts.VARIANT_NAME}
        if self.serverless:
            variant["CurrentServerlessConfig"] = {"MemorySizeInMB": 3072, "MaxConcurrency": 5}
        else:
            variant["CurrentInstanceCount"] = self.instances
        return {"EndpointName": params["EndpointName"], "EndpointArn": f"{ACCOUNT_ARN}:endpoint/x",
                "EndpointConfigName": self.config, "EndpointStatus": self.status, "ProductionVariants": [variant]}

    def describe_config(self, params: dict) -> dict:
        """DescribeEndpointConfig of the live config (the only one this scripted endpoint knows)."""
        if params["EndpointConfigName"] != self.config:
            raise SageMakerError("ValidationException", f'Could not find endpoint configuration "{ACCOUNT_ARN}:'
                                                        f'endpoint-config/{params["EndpointConfigName"]}".')
        variant: dict[str, Any] = {"VariantName": facts.VARIANT_NAME, "ModelName": "previous-model"}
        if self.serverless:
            variant["ServerlessConfig"] = {"MemorySizeInMB": 3072, "MaxConcurrency": 5}
        else:
            variant.update({"InstanceType": self.instance_type, "InitialInstanceCount": 1})
        return {"EndpointConfigName": self.config, "EndpointConfigArn": f"{ACCOUNT_ARN}:endpoint-config/x",
                "ProductionVariants": [variant], "CreationTime": "2026-01-01T00:00:00Z"}

    def deploy(self, params: dict) -> dict:
        self.config = params["EndpointConfigName"]
        self.status = "InService"
        return {"EndpointArn": f"{ACCOUNT_ARN}:endpoint/{params['EndpointName']}"}


def scripted(endpoint: Endpoint, **more: Callable[[dict], dict]) -> ScriptedSageMaker:
    return ScriptedSageMaker(**{
        "DescribeEndpoint": endpoint.describe, "CreateEndpoint": endpoint.deploy, "UpdateEndpoint": endpoint.deploy,
        "DescribeEndpointConfig": endpoint.describe_config,
        "CreateModel": lambda p: {"ModelArn": f"{ACCOUNT_ARN}:model/{p['ModelName']}"},
        "CreateEndpointConfig": lambda p: {"EndpointConfigArn": f"{ACCOUNT_ARN}:endpoint-config/x"}, **more})


def scripted_trainer(debugger_available: bool, *, metrics: list[dict] | None = GOOD_METRICS):
    jobs: dict[str, dict] = {}

    def create(p: dict) -> dict:
        debugging = [m for m in ("DebugHookConfig", "DebugRuleConfigurations", "ProfilerRuleConfigurations")
                     if m in p]
        if debugging and not debugger_available:
            raise SageMakerError("ValidationException", DEBUGGER_REFUSED.format(members=", ".join(debugging)))
        jobs[p["TrainingJobName"]] = p
        return {"TrainingJobArn": f"{ACCOUNT_ARN}:training-job/{p['TrainingJobName']}"}

    def describe(p: dict) -> dict:
        name = p["TrainingJobName"]
        return training_description(name, metrics=metrics, rules="DebugRuleConfigurations" in jobs[name])

    return {"CreateTrainingJob": create, "DescribeTrainingJob": describe}


def validating(sm: ScriptedSageMaker) -> ScriptedSageMaker:
    """Every request is checked against botocore's model first (types, lengths, patterns, enums), as SageMaker
    would: a violation refuses the call (and fails the run) with the member named."""
    from local.sagemaker.api import validate_request

    call = sm.call

    def checked(operation: str, params: dict) -> dict:
        validate_request(operation, params)
        return call(operation, params)
    sm.call = checked
    return sm


def full_run_sagemaker() -> ScriptedSageMaker:
    objective = {"Type": "Maximize", "MetricName": contract.OBJECTIVE_METRIC, "Value": 0.91}
    tuning: dict[str, dict] = {}

    def create_tuning(p: dict) -> dict:
        tuning[p["HyperParameterTuningJobName"]] = p
        return {"HyperParameterTuningJobArn": f"{ACCOUNT_ARN}:hyper-parameter-tuning-job/x"}

    def describe_tuning(p: dict) -> dict:
        name = p["HyperParameterTuningJobName"]
        if name not in tuning:  # the warm-start parent, from an earlier execution ("Check warm-start parent")
            return {"HyperParameterTuningJobName": name, "HyperParameterTuningJobStatus": "Completed"}
        return {"HyperParameterTuningJobName": name, "HyperParameterTuningJobStatus": "Completed",
                "BestTrainingJob": {"TrainingJobName": f"{name}-001-abcdef12", "TunedHyperParameters": {
                    r["Name"]: r.get("MaxValue") or r["Values"][0]
                    for kind in tuning[name]["HyperParameterTuningJobConfig"]["ParameterRanges"].values()
                    for r in kind},
                    "FinalHyperParameterTuningJobObjectiveMetric": objective}}
    return validating(scripted(Endpoint(), CreateHyperParameterTuningJob=create_tuning,
                                 DescribeHyperParameterTuningJob=describe_tuning,
                                 **scripted_trainer(debugger_available=True)))
