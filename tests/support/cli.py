"""One pipeline run described as AWS would answer it, served two ways: in-memory fake clients (for recording a local
run with write_recording) and botocore Stubbers on real boto3 clients (for the AWS path). No tests live here.

Every response the fakes give is checked against botocore's output shape with botocore's own validator, and the
Stubber checks its responses the same way, so neither path can drift from the real API.
"""

from __future__ import annotations

import copy
import datetime as dt
import functools
import io
import json
import tarfile
from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.exceptions import ClientError
from botocore.response import StreamingBody
from botocore.stub import ANY, Stubber
from botocore.validate import ParamValidator

import awsshapes
import stackfacts as facts
from awsshapes import join_key, s3_uri
from cli import config
from cli.model import metric_queries
from ml import contract

REGION, ACCOUNT = facts.LOCAL_REGION, facts.LOCAL_ACCOUNT
STACK = config.DEFAULT_STACK_NAME  # "ImageClassifier", as infra/ names it
BUCKET = f"imgclf-artifacts-{ACCOUNT}"
DATASET = f"s3://{BUCKET}/{facts.DATA_PREFIX}"  # the stack's DatasetUri output
JOBS = "jobs"  # the jobs' OutputDataConfig.S3OutputPath: s3://BUCKET/jobs
RUN = f"{facts.RESOURCE_PREFIX}-0a1b2c3d4e5f"  # what the state machine names a run's resources: <prefix>-<run id>
PROFILER_RULES = (facts.PROFILER_REPORT_RULE, "LowGPUUtilization")
STATE_MACHINE = f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:imgclf-train-deploy"
API_URL = f"https://abc123def4.execute-api.{REGION}.amazonaws.com/prod/predict"
DASHBOARD_URL = f"https://{REGION}.console.aws.amazon.com/cloudwatch/home?region={REGION}#dashboards:name=imgclf-{STACK}"
T0 = dt.datetime(2025, 3, 1, 9, 0, 0, tzinfo=dt.UTC)


def sm_arn(kind: str, name: str) -> str:
    return f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:{kind}/{name.lower()}"


@dataclass
class TrialSpec:
    batch_size: str
    lr: str
    epochs: str
    objective: float | None  # None: the trial failed
    start_min: int  # minutes after the tuning job started
    minutes: int


TRIALS = [
    TrialSpec("64", "0.0012", "4", 0.9442, 1, 3),
    TrialSpec("128", "0.0071", "3", 0.9628, 1, 2),
    TrialSpec("32", "0.0031324", "5", 0.9851, 5, 4),
    TrialSpec("128", "0.00055", "6", None, 5, 1),
    TrialSpec("64", "0.0046", "6", 0.9777, 10, 4),
    TrialSpec("32", "0.0089", "3", 0.9516, 10, 3),
]


@dataclass
class Scenario:
    """A finished execution: tuning (6 trials, one failed), the final Debugger-enabled job, the endpoint."""

    # As the state machine names them: every resource "<prefix>-<run id>", the endpoint stable.
    execution_name: str = "run-0001"
    tuning_job: str = RUN
    final_job: str = RUN
    endpoint: str = f"{facts.RESOURCE_PREFIX}-endpoint"
    endpoint_config: str = RUN
    model: str = RUN
    trials: list[TrialSpec] = field(default_factory=lambda: list(TRIALS))
    with_history: bool = True  # output.tar.gz with history.json for every completed job
    endpoint_instances: int = 3  # scaled out: CurrentInstanceCount above the config's InitialInstanceCount
    status: str = "SUCCEEDED"

    # --- names -----------------------------------------------------------------------------------------------
    @property
    def execution_arn(self) -> str:
        return STATE_MACHINE.replace(":stateMachine:", ":execution:") + ":" + self.execution_name

    def trial_name(self, i: int) -> str:
        return f"{self.tuning_job}-{i + 1:03d}-{0xabc00 + i:08x}"

    @property
    def trial_names(self) -> list[str]:
        return [self.trial_name(i) for i in range(len(self.trials))]

    @property
    def best_index(self) -> int:
        scored = [(t.objective, i) for i, t in enumerate(self.trials) if t.objective is not None]
        return max(scored)[1]

    @property
    def best_name(self) -> str:
        return self.trial_name(self.best_index)

    # --- curves ------------------------------------------------------------------------------------------------
    @staticmethod
    def epochs_of(spec: TrialSpec) -> list[dict]:
        n = int(spec.epochs)
        final = spec.objective or 0.5
        rows = []
        for e in range(1, n + 1):
            acc = final - (n - e) * 0.02
            rows.append({"epoch": e, contract.TRAIN_LOSS: round(1.8 / (e + 0.5), 5),
                         contract.VALID_LOSS: round(1.6 / (e + 0.7), 5), contract.VALID_ACCURACY: round(acc, 5),
                         contract.THROUGHPUT: 400.0 + e})
        return rows

    @property
    def final_spec(self) -> TrialSpec:
        best = self.trials[self.best_index]
        return TrialSpec(best.batch_size, best.lr, best.epochs, 0.988, 20, 5)

    test_accuracy: float = 0.9812
    test_loss: float = 0.0712

    # --- SageMaker responses -----------------------------------------------------------------------------------
    def describe_tuning(self) -> dict:
        best = self.best_index
        spec = self.trials[best]
        failed = sum(t.objective is None for t in self.trials)
        return {
            "HyperParameterTuningJobName": self.tuning_job,
            "HyperParameterTuningJobArn": sm_arn("hyper-parameter-tuning-job", self.tuning_job),
            "HyperParameterTuningJobConfig": {
                "Strategy": "Bayesian",
                "HyperParameterTuningJobObjective": {"Type": "Maximize", "MetricName": contract.OBJECTIVE_METRIC},
                "ResourceLimits": {"MaxNumberOfTrainingJobs": len(self.trials), "MaxParallelTrainingJobs": 2},
                "ParameterRanges": {
                    "CategoricalParameterRanges": [{"Name": contract.BATCH_SIZE, "Values": ["32", "64", "128"]}],
                    "ContinuousParameterRanges": [{"Name": contract.LR, "MinValue": "0.0005", "MaxValue": "0.01",
                                                   "ScalingType": "Logarithmic"}],
                    "IntegerParameterRanges": [{"Name": contract.EPOCHS, "MinValue": "3", "MaxValue": "6",
                                                "ScalingType": "Linear"}]},
            },
            "TrainingJobDefinition": {
                "AlgorithmSpecification": {"TrainingImage": f"763104351884.dkr.ecr.{REGION}.amazonaws.com/pytorch:2.1",
                                           "TrainingInputMode": "File"},
                "RoleArn": f"arn:aws:iam::{ACCOUNT}:role/imgclf-sagemaker",
                "OutputDataConfig": {"S3OutputPath": s3_uri(BUCKET, JOBS)},
                "ResourceConfig": {"InstanceType": "ml.g4dn.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30},
                "StoppingCondition": {"MaxRuntimeInSeconds": 3600}},
            "HyperParameterTuningJobStatus": "Completed",
            "CreationTime": T0, "HyperParameterTuningEndTime": T0 + dt.timedelta(minutes=16),
            "LastModifiedTime": T0 + dt.timedelta(minutes=16),
            "TrainingJobStatusCounters": {"Completed": len(self.trials) - failed, "InProgress": 0,
                                          "RetryableError": 0, "NonRetryableError": failed, "Stopped": 0},
            "ObjectiveStatusCounters": {"Succeeded": len(self.trials) - failed, "Pending": 0, "Failed": failed},
            "BestTrainingJob": self.summary(best) | {"TunedHyperParameters": self.tuned(spec)},
        }

    @staticmethod
    def tuned(spec: TrialSpec) -> dict[str, str]:
        return {contract.BATCH_SIZE: f'"{spec.batch_size}"', contract.LR: spec.lr, contract.EPOCHS: spec.epochs}

    def summary(self, i: int) -> dict:
        spec = self.trials[i]
        start = T0 + dt.timedelta(minutes=spec.start_min)
        item = {
            "TrainingJobName": self.trial_name(i), "TrainingJobArn": sm_arn("training-job", self.trial_name(i)),
            "TuningJobName": self.tuning_job, "CreationTime": start - dt.timedelta(seconds=30),
            "TrainingStartTime": start, "TrainingEndTime": start + dt.timedelta(minutes=spec.minutes),
            "TrainingJobStatus": "Completed" if spec.objective is not None else "Failed",
            "TunedHyperParameters": self.tuned(spec),
        }
        if spec.objective is not None:
            item["FinalHyperParameterTuningJobObjectiveMetric"] = {"MetricName": contract.OBJECTIVE_METRIC,
                                                                   "Value": spec.objective}
            item["ObjectiveStatus"] = "Succeeded"
        else:
            item["FailureReason"] = "AlgorithmError: loss became NaN"
            item["ObjectiveStatus"] = "Failed"
        return item

    def list_trials(self) -> list[dict]:
        # AWS lists by name by default; the CLI must order by creation itself.
        return [self.summary(i) for i in reversed(range(len(self.trials)))]

    def describe_job(self, name: str) -> dict:
        final = name == self.final_job
        spec = self.final_spec if final else self.trials[self.trial_names.index(name)]
        start = T0 + dt.timedelta(minutes=spec.start_min)
        end = start + dt.timedelta(minutes=spec.minutes)
        completed = spec.objective is not None
        d: dict[str, Any] = {
            "TrainingJobName": name, "TrainingJobArn": sm_arn("training-job", name),
            "ModelArtifacts": {"S3ModelArtifacts": s3_uri(BUCKET, self.model_key(name))},
            "TrainingJobStatus": "Completed" if completed else "Failed",
            "SecondaryStatus": "Completed" if completed else "Failed",
            "HyperParameters": {contract.BATCH_SIZE: spec.batch_size, contract.LR: spec.lr,
                                contract.EPOCHS: spec.epochs, "backbone": "resnet18",
                                "sagemaker_program": "train.py", "sagemaker_submit_directory": f"s3://{BUCKET}/src.tgz"},
            "AlgorithmSpecification": {"TrainingImage": f"763104351884.dkr.ecr.{REGION}.amazonaws.com/pytorch:2.1",
                                       "TrainingInputMode": "File",
                                       "MetricDefinitions": [{"Name": m.name, "Regex": m.regex}
                                                             for m in contract.METRICS]},
            "RoleArn": f"arn:aws:iam::{ACCOUNT}:role/imgclf-sagemaker",
            "InputDataConfig": [{"ChannelName": c, "DataSource": {"S3DataSource": {
                "S3DataType": "S3Prefix", "S3Uri": DATASET + c}}} for c in contract.CHANNELS],
            "OutputDataConfig": {"S3OutputPath": s3_uri(BUCKET, JOBS)},
            "ResourceConfig": {"InstanceType": "ml.g4dn.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30},
            "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
            "CreationTime": start - dt.timedelta(seconds=30), "TrainingStartTime": start, "TrainingEndTime": end,
            "LastModifiedTime": end, "TrainingTimeInSeconds": spec.minutes * 60,
            # The final job ran on managed spot: billed for 30% of its seconds (what DescribeTrainingJob reports).
            "BillableTimeInSeconds": spec.minutes * 60 * (3 if final else 10) // 10,
            "SecondaryStatusTransitions": [{"Status": "Starting", "StartTime": start - dt.timedelta(seconds=30),
                                            "EndTime": start},
                                           {"Status": "Training", "StartTime": start, "EndTime": end}],
        }
        if not final:
            d["TuningJobArn"] = sm_arn("hyper-parameter-tuning-job", self.tuning_job)
        if completed:
            last = self.epochs_of(spec)[-1]
            metrics = {k: v for k, v in last.items() if k != "epoch"}
            if final:
                metrics |= {contract.TEST_ACCURACY: self.test_accuracy, contract.TEST_LOSS: self.test_loss,
                            contract.HEALTH_ISSUES: 1.0}
            d["FinalMetricDataList"] = [{"MetricName": k, "Value": float(v), "Timestamp": end}
                                        for k, v in metrics.items()]
        else:
            d["FailureReason"] = "AlgorithmError: loss became NaN"
        if final:
            verdicts = {"VanishingGradient": "NoIssuesFound", "Overfit": "NoIssuesFound",
                        "LossNotDecreasing": "IssuesFound", "PoorWeightInitialization": "NoIssuesFound"}
            d["DebugHookConfig"] = {"S3OutputPath": f"s3://{BUCKET}/debug"}
            d["DebugRuleConfigurations"] = [{"RuleConfigurationName": r, "RuleEvaluatorImage": "rules:latest",
                                             "RuleParameters": {"rule_to_invoke": r}} for r in verdicts]
            d["DebugRuleEvaluationStatuses"] = [
                {"RuleConfigurationName": r, "RuleEvaluationJobArn": sm_arn("processing-job", f"{name}-{r}"[:60]),
                 "RuleEvaluationStatus": v, **({"StatusDetails": "train loss 2.3 -> 2.29 (-0.4%)"}
                                               if v == "IssuesFound" else {}), "LastModifiedTime": end}
                for r, v in verdicts.items()]
            d["ProfilerConfig"] = {"S3OutputPath": f"s3://{BUCKET}/profiler"}
            d["ProfilerRuleConfigurations"] = [{"RuleConfigurationName": r, "RuleEvaluatorImage": "rules:latest",
                                                "RuleParameters": {"rule_to_invoke": r}}
                                               for r in PROFILER_RULES]
            d["ProfilerRuleEvaluationStatuses"] = [
                {"RuleConfigurationName": r, "RuleEvaluationStatus": "NoIssuesFound", "LastModifiedTime": end}
                for r in PROFILER_RULES]
            d["ProfilingStatus"] = "Enabled"
        return d

    @property
    def job_names(self) -> list[str]:
        return [*self.trial_names, self.final_job]

    def health(self) -> dict:
        checks = {c: {"status": "NoIssuesFound", "detail": f"{c} fine"} for c in contract.HEALTH_CHECKS}
        checks["LossNotDecreasing"] = {"status": "IssuesFound", "detail": "train loss 2.3 -> 2.29 (-0.4%)"}
        return {"checks": checks, "issues": ["LossNotDecreasing"], "epochs": []}

    def output_archive(self, name: str) -> bytes | None:
        """output.tar.gz of a job, as SageMaker packs SM_OUTPUT_DATA_DIR (None: the job wrote none)."""
        spec = self.final_spec if name == self.final_job else self.trials[self.trial_names.index(name)]
        if spec.objective is None or not self.with_history:
            return None
        history = {"epochs": self.epochs_of(spec), "skipped_images": []}
        if name == self.final_job:
            history["test"] = {contract.TEST_LOSS: self.test_loss, contract.TEST_ACCURACY: self.test_accuracy}
        return make_tar({contract.HISTORY_FILE: json.dumps(history).encode(),
                         contract.HEALTH_FILE: json.dumps(self.health()).encode()})

    @staticmethod
    def model_key(name: str) -> str:
        return facts.job_output_key(JOBS, name, facts.MODEL_ARCHIVE)

    @staticmethod
    def output_key(name: str) -> str:
        """Where SageMaker puts a job's output.tar.gz, beside its model.tar.gz."""
        return facts.job_output_key(JOBS, name, facts.OUTPUT_ARCHIVE)

    @property
    def profiler_report_key(self) -> str:
        return facts.profiler_report_key(join_key(JOBS, self.final_job, facts.RULE_OUTPUT_DIR))

    def s3_objects(self) -> dict[tuple[str, str], bytes]:
        objects = {}
        for name in self.job_names:
            if (data := self.output_archive(name)) is not None:
                objects[(BUCKET, self.output_key(name))] = data
        objects[(BUCKET, self.profiler_report_key)] = b"<html><body>profiler report</body></html>"
        return objects

    def describe_endpoint(self) -> dict:
        return {"EndpointName": self.endpoint, "EndpointArn": sm_arn("endpoint", self.endpoint),
                "EndpointConfigName": self.endpoint_config, "EndpointStatus": "InService",
                "ProductionVariants": [{"VariantName": facts.VARIANT_NAME, "CurrentWeight": 1.0, "DesiredWeight": 1.0,
                                        "CurrentInstanceCount": self.endpoint_instances,
                                        "DesiredInstanceCount": self.endpoint_instances}],
                "CreationTime": T0 + dt.timedelta(minutes=27), "LastModifiedTime": T0 + dt.timedelta(minutes=31)}

    def describe_endpoint_config(self) -> dict:
        return {"EndpointConfigName": self.endpoint_config,
                "EndpointConfigArn": sm_arn("endpoint-config", self.endpoint_config),
                "ProductionVariants": [{"VariantName": facts.VARIANT_NAME, "ModelName": self.model,
                                        "InitialInstanceCount": 1, "InstanceType": "ml.m5.large",
                                        "InitialVariantWeight": 1.0}],
                "CreationTime": T0 + dt.timedelta(minutes=26)}

    def list_endpoints(self) -> dict:
        return {"Endpoints": [{k: self.describe_endpoint()[k] for k in (
            "EndpointName", "EndpointArn", "CreationTime", "LastModifiedTime", "EndpointStatus")},
            {"EndpointName": "someone-elses-endpoint", "EndpointArn": sm_arn("endpoint", "someone-elses-endpoint"),
             "CreationTime": T0, "LastModifiedTime": T0, "EndpointStatus": "InService"}]}

    def list_endpoint_configs(self) -> dict:
        return {"EndpointConfigs": [{"EndpointConfigName": self.endpoint_config, "CreationTime": T0,
                                     "EndpointConfigArn": sm_arn("endpoint-config", self.endpoint_config)}]}

    def list_models(self) -> dict:
        return {"Models": [{"ModelName": self.model, "ModelArn": sm_arn("model", self.model), "CreationTime": T0}]}

    # --- Step Functions responses ------------------------------------------------------------------------------
    def describe_execution(self) -> dict:
        d = {"executionArn": self.execution_arn, "stateMachineArn": STATE_MACHINE, "name": self.execution_name,
             "status": self.status, "startDate": T0 - dt.timedelta(seconds=5),
             "input": json.dumps({facts.INPUT_DATASET: DATASET}),
             "output": json.dumps({"endpoint": self.endpoint})}
        if self.status != "RUNNING":
            d["stopDate"] = T0 + dt.timedelta(minutes=32)
        return d

    def events(self) -> list[dict]:
        events: list[dict] = []
        t = T0

        def add(kind: str, details_key: str | None = None, details: dict | None = None) -> None:
            event = {"timestamp": t + dt.timedelta(seconds=len(events)), "type": kind, "id": len(events) + 1,
                     "previousEventId": len(events)}
            if details_key:
                event[details_key] = details
            events.append(event)

        add("ExecutionStarted", "executionStartedEventDetails", {"input": "{}", "roleArn": "arn:aws:iam::1:role/x"})

        def task(state: str, resource_type: str, resource: str, params: dict) -> None:
            add("TaskStateEntered", "stateEnteredEventDetails", {"name": state, "input": "{}"})
            add("TaskScheduled", "taskScheduledEventDetails", {"resourceType": resource_type, "resource": resource,
                                                               "region": REGION, "parameters": json.dumps(params)})
            add("TaskStarted", "taskStartedEventDetails", {"resourceType": resource_type, "resource": resource})
            add("TaskSucceeded", "taskSucceededEventDetails", {"resourceType": resource_type, "resource": resource,
                                                               "output": "{}"})
            add("TaskStateExited", "stateExitedEventDetails", {"name": state, "output": "{}"})

        task("Tune", "sagemaker", "createHyperParameterTuningJob.sync",
             {"HyperParameterTuningJobName": self.tuning_job})
        task("Train", "sagemaker", "createTrainingJob.sync", {"TrainingJobName": self.final_job})
        task("CreateModel", "sagemaker", "createModel", {"ModelName": self.model})
        task("CreateEndpointConfig", "sagemaker", "createEndpointConfig",
             {"EndpointConfigName": self.endpoint_config})
        task("CreateOrUpdate", "aws-sdk:sagemaker", "describeEndpoint", {"EndpointName": self.endpoint})
        task("UpdateEndpoint", "sagemaker", "updateEndpoint", {"EndpointName": self.endpoint,
                                                              "EndpointConfigName": self.endpoint_config})
        if self.status == "SUCCEEDED":
            add("ExecutionSucceeded", "executionSucceededEventDetails", {"output": "{}"})
        elif self.status == "FAILED":
            add("ExecutionFailed", "executionFailedEventDetails", {"error": "RulesFoundIssues",
                                                                   "cause": "LossNotDecreasing: IssuesFound"})
        return events

    def list_executions(self) -> list[dict]:
        older = {"executionArn": self.execution_arn[:-4] + "0000", "stateMachineArn": STATE_MACHINE,
                 "name": "run-0000", "status": "FAILED", "startDate": T0 - dt.timedelta(days=1),
                 "stopDate": T0 - dt.timedelta(days=1, minutes=-5)}
        this = {k: v for k, v in self.describe_execution().items() if k not in ("input", "output")}
        return [this, older]

    def describe_stacks(self, outputs: dict[str, str] | None = None) -> dict:
        outputs = outputs if outputs is not None else {
            facts.OUTPUT_BUCKET: BUCKET, facts.OUTPUT_DATASET: DATASET,
            facts.OUTPUT_STATE_MACHINE: STATE_MACHINE, facts.OUTPUT_API_URL: API_URL,
            facts.OUTPUT_ENDPOINT: self.endpoint, facts.OUTPUT_DASHBOARD: DASHBOARD_URL}
        return {"Stacks": [{"StackName": STACK, "StackId": f"arn:aws:cloudformation:{REGION}:{ACCOUNT}:stack/"
                                                          f"{STACK}/1a2b3c", "CreationTime": T0 - dt.timedelta(days=2),
                            "StackStatus": "UPDATE_COMPLETE",
                            "Outputs": [{"OutputKey": k, "OutputValue": v} for k, v in outputs.items()]}]}

    # --- CloudWatch --------------------------------------------------------------------------------------------
    def metric_data(self, name: str) -> dict:
        spec = self.final_spec if name == self.final_job else self.trials[self.trial_names.index(name)]
        start = T0 + dt.timedelta(minutes=spec.start_min)
        epochs = self.epochs_of(spec) if spec.objective is not None else []
        results = []
        for q in metric_queries(name):
            metric = q["MetricStat"]["Metric"]["MetricName"]
            results.append({"Id": q["Id"], "Label": metric,
                            "Timestamps": [start + dt.timedelta(minutes=e["epoch"]) for e in epochs],
                            "Values": [e[metric] for e in epochs], "StatusCode": "Complete"})
        return {"MetricDataResults": results, "Messages": []}


def make_tar(files: dict[str, bytes]) -> bytes:
    import gzip

    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as archive:
        for name, data in files.items():  # deterministic bytes: fixed mtimes
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


# --- in-memory fake clients (any object with boto3's methods) ---------------------------------------------------
def _checked(service: str, operation: str, response: dict) -> dict:
    shape = awsshapes.operation_model(service, operation).output_shape
    report = ParamValidator().validate(response, shape)
    assert not report.has_errors(), f"{service}.{operation}: {report.generate_report()}"
    return copy.deepcopy(response)


def _missing(code: str, operation: str, message: str = "not found") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, operation)


def _paged(items: list, key: str, token_in: str | None, size: int, token_out: str = "NextToken") -> dict:
    start = int(token_in or 0)
    page = {key: items[start:start + size]}
    if start + size < len(items):
        page[token_out] = str(start + size)
    return page


class _FakeClient:
    """A client of one service answering from a Scenario; every answer checked against botocore's output shape."""

    service = ""

    def __init__(self, scenario: Scenario) -> None:
        self.s = scenario

    def _answer(self, operation: str, response: dict) -> dict:
        return _checked(self.service, operation, response)


class FakeSageMaker(_FakeClient):
    service = "sagemaker"

    def describe_hyper_parameter_tuning_job(self, HyperParameterTuningJobName: str) -> dict:
        if HyperParameterTuningJobName != self.s.tuning_job:
            raise _missing("ResourceNotFound", "DescribeHyperParameterTuningJob")
        return self._answer("DescribeHyperParameterTuningJob", self.s.describe_tuning())

    def list_training_jobs_for_hyper_parameter_tuning_job(self, HyperParameterTuningJobName: str,
                                                           NextToken: str | None = None, **_: Any) -> dict:
        return self._answer("ListTrainingJobsForHyperParameterTuningJob",
                            _paged(self.s.list_trials(), "TrainingJobSummaries", NextToken, 4))

    def describe_training_job(self, TrainingJobName: str) -> dict:
        if TrainingJobName not in self.s.job_names:
            raise _missing("ValidationException", "DescribeTrainingJob", "Requested resource not found.")
        return self._answer("DescribeTrainingJob", self.s.describe_job(TrainingJobName))

    def describe_endpoint(self, EndpointName: str) -> dict:
        return self._answer("DescribeEndpoint", self.s.describe_endpoint())

    def describe_endpoint_config(self, EndpointConfigName: str) -> dict:
        if EndpointConfigName != self.s.endpoint_config:
            raise _missing("ValidationException", "DescribeEndpointConfig", "Could not find endpoint configuration.")
        return self._answer("DescribeEndpointConfig", self.s.describe_endpoint_config())

    def list_endpoints(self, **_: Any) -> dict:
        return self._answer("ListEndpoints", self.s.list_endpoints())

    def list_endpoint_configs(self, **_: Any) -> dict:
        return self._answer("ListEndpointConfigs", self.s.list_endpoint_configs())

    def list_models(self, **_: Any) -> dict:
        return self._answer("ListModels", self.s.list_models())


class FakeStepFunctions(_FakeClient):
    service = "stepfunctions"

    def describe_execution(self, executionArn: str) -> dict:
        if executionArn != self.s.execution_arn:
            raise _missing("ExecutionDoesNotExist", "DescribeExecution")
        return self._answer("DescribeExecution", self.s.describe_execution())

    def get_execution_history(self, executionArn: str, nextToken: str | None = None, **_: Any) -> dict:
        return self._answer("GetExecutionHistory", _paged(self.s.events(), "events", nextToken, 7, "nextToken"))

    def list_executions(self, stateMachineArn: str, nextToken: str | None = None, **_: Any) -> dict:
        return self._answer("ListExecutions", _paged(self.s.list_executions(), "executions", nextToken, 1, "nextToken"))


class FakeS3:
    def __init__(self, objects: dict[tuple[str, str], bytes]) -> None:
        self.objects = objects

    def get_object(self, Bucket: str, Key: str) -> dict:
        if (Bucket, Key) not in self.objects:
            raise _missing("NoSuchKey", "GetObject")
        data = self.objects[(Bucket, Key)]
        return {"Body": StreamingBody(io.BytesIO(data), len(data)), "ContentLength": len(data)}

    def list_objects_v2(self, Bucket: str, Prefix: str = "", **_: Any) -> dict:
        keys = sorted(k for b, k in self.objects if b == Bucket and k.startswith(Prefix))
        return {"Contents": [{"Key": k, "Size": len(self.objects[(Bucket, k)])} for k in keys],
                "IsTruncated": False, "KeyCount": len(keys)}


class FakeCloudWatch(_FakeClient):
    service = "cloudwatch"

    def get_metric_data(self, MetricDataQueries: list[dict], **_: Any) -> dict:
        host = MetricDataQueries[0]["MetricStat"]["Metric"]["Dimensions"][0]["Value"]
        return self._answer("GetMetricData", self.s.metric_data(host.split("/")[0]))


# --- real boto3 clients behind Stubbers -----------------------------------------------------------------------
AWS_ENV = {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "secret", "AWS_DEFAULT_REGION": REGION,
           "AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": "/dev/null",
           "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}


@functools.cache
def _stub_session() -> boto3.Session:
    # One session: its loader caches the service models, so each test's clients are cheap to make.
    return boto3.Session(aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="secret", region_name=REGION)


@dataclass
class Stubs:
    """Stubbed clients for the Backend; `expect_*` queue responses in the order the CLI makes its calls."""

    scenario: Scenario
    clients: dict[str, Any] = field(default_factory=dict)
    stubbers: dict[str, Stubber] = field(default_factory=dict)

    def __post_init__(self) -> None:
        session = _stub_session()
        for service in ("sagemaker", "stepfunctions", "cloudformation", "cloudwatch", "s3"):
            client = session.client(service)
            self.clients[service] = client
            self.stubbers[service] = Stubber(client)
            self.stubbers[service].activate()

    def backend(self):
        from cli.backend import Backend

        c = self.clients
        return Backend(sagemaker=c["sagemaker"], stepfunctions=c["stepfunctions"], cloudformation=c["cloudformation"],
                       cloudwatch=c["cloudwatch"], s3=c["s3"], region=REGION, stack_name=STACK)

    def add(self, service: str, method: str, response: dict, params: dict | None = None) -> None:
        self.stubbers[service].add_response(method, copy.deepcopy(response), params)

    def error(self, service: str, method: str, code: str, message: str = "", status: int = 400,
              params: dict | None = None) -> None:
        self.stubbers[service].add_client_error(method, code, message, status, expected_params=params)

    def assert_done(self) -> None:
        for stubber in self.stubbers.values():
            stubber.assert_no_pending_responses()

    # --- call sequences -----------------------------------------------------------------------------------------
    def expect_stack(self) -> None:
        self.add("cloudformation", "describe_stacks", self.scenario.describe_stacks(), {"StackName": STACK})

    def expect_latest_execution(self) -> None:
        s = self.scenario
        self.add("stepfunctions", "list_executions", {"executions": s.list_executions()[:1], "nextToken": "t1"},
                 {"stateMachineArn": STATE_MACHINE, "maxResults": 20})

    def expect_execution(self) -> None:
        s = self.scenario
        self.add("stepfunctions", "describe_execution", s.describe_execution(), {"executionArn": s.execution_arn})
        events = s.events()
        self.add("stepfunctions", "get_execution_history", {"events": events[:10], "nextToken": "p2"},
                 {"executionArn": s.execution_arn, "maxResults": 1000})
        self.add("stepfunctions", "get_execution_history", {"events": events[10:]},
                 {"executionArn": s.execution_arn, "maxResults": 1000, "nextToken": "p2"})

    def expect_tuning(self, with_trials: bool = True, newest: int | None = None) -> None:
        """DescribeHyperParameterTuningJob, then every page of trials, or (newest=N, what `status` reads) the
        newest N trials in one call."""
        s = self.scenario
        self.add("sagemaker", "describe_hyper_parameter_tuning_job", s.describe_tuning(),
                 {"HyperParameterTuningJobName": s.tuning_job})
        if with_trials and newest is not None:
            trials = sorted(s.list_trials(), key=lambda t: t["CreationTime"], reverse=True)[:newest]
            self.add("sagemaker", "list_training_jobs_for_hyper_parameter_tuning_job",
                     {"TrainingJobSummaries": trials},
                     {"HyperParameterTuningJobName": s.tuning_job, "SortBy": "CreationTime",
                      "SortOrder": "Descending", "MaxResults": newest})
        elif with_trials:
            trials = s.list_trials()
            self.add("sagemaker", "list_training_jobs_for_hyper_parameter_tuning_job",
                     {"TrainingJobSummaries": trials[:4], "NextToken": "n2"},
                     {"HyperParameterTuningJobName": s.tuning_job, "MaxResults": 100})
            self.add("sagemaker", "list_training_jobs_for_hyper_parameter_tuning_job",
                     {"TrainingJobSummaries": trials[4:]},
                     {"HyperParameterTuningJobName": s.tuning_job, "MaxResults": 100, "NextToken": "n2"})

    def expect_job(self, name: str) -> None:
        self.add("sagemaker", "describe_training_job", self.scenario.describe_job(name), {"TrainingJobName": name})

    def expect_endpoint(self) -> None:
        self.add("sagemaker", "describe_endpoint", self.scenario.describe_endpoint(),
                 {"EndpointName": self.scenario.endpoint})
        self.add("sagemaker", "describe_endpoint_config", self.scenario.describe_endpoint_config(),
                 {"EndpointConfigName": self.scenario.endpoint_config})

    def expect_output(self, name: str, cloudwatch: bool = True) -> None:
        """output.tar.gz of a job; when the job has none, the CloudWatch fallback (if it has a start time)."""
        data = self.scenario.output_archive(name)
        key = self.scenario.output_key(name)
        if data is not None:
            self.add("s3", "get_object", {"Body": StreamingBody(io.BytesIO(data), len(data)),
                                          "ContentLength": len(data)}, {"Bucket": BUCKET, "Key": key})
            return
        self.error("s3", "get_object", "NoSuchKey", "The specified key does not exist.", 404,
                   {"Bucket": BUCKET, "Key": key})
        if cloudwatch:
            self.add("cloudwatch", "get_metric_data", self.scenario.metric_data(name),
                     {"MetricDataQueries": metric_queries(name), "StartTime": ANY, "EndTime": ANY,
                      "ScanBy": "TimestampAscending"})


def record(root, scenario: Scenario, **kwargs: Any) -> list:
    """A recorded local run of `scenario` under root, written by the real write_recording over the fakes."""
    from cli.recording.writer import write_recording

    return write_recording(root, sagemaker=FakeSageMaker(scenario), stepfunctions=FakeStepFunctions(scenario),
                           execution_arn=scenario.execution_arn, s3=FakeS3(scenario.s3_objects()), **kwargs)


# --- a stand-in for the prediction API (POST /predict), recording what it receives ------------------------------
@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


class StubApi:
    """An HTTP server on 127.0.0.1 that answers like the project's API and keeps every request."""

    def __init__(self, status: int = 200, payload: dict | None = None) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.received: list[Received] = []
        self.status = status
        self.payload = payload or {"predictions": [{"label": "3", "score": 0.91}, {"label": "8", "score": 0.05}],
                                   "model": "imgclf-endpoint"}
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                stub.received.append(Received(self.path, dict(self.headers.items()), self.rfile.read(length)))
                body = json.dumps(stub.payload).encode()
                self.send_response(stub.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> StubApi:
        self.thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


def png_bytes(size: int = 16, value: int = 200) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (size, size), (value, value, value)).save(out, format="PNG")
    return out.getvalue()


def make_dataset(root, classes=("0", "1", "2"), per_class: int = 2) -> None:
    """A tiny ImageFolder dataset with train/valid/test splits."""
    for split in contract.CHANNELS:
        for n, c in enumerate(classes):
            folder = root / split / c
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                (folder / f"{i}.png").write_bytes(png_bytes(8, 40 * n + i))
