"""What an execution did, read through boto3-shaped calls: the execution and its history, the tuning job and its
trials, the training jobs (rule verdicts, metrics), their output archives in S3, the endpoint.

Every function takes a Backend and only calls client methods, so AWS and a recorded local run read the same way.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

import stackfacts as facts
from cli.aws import collect, join_key, pages, parse_s3_uri, s3_uri
from cli.backend import Backend
from cli.errors import CliError, describe_aws_error, is_not_found
from ml import contract

log = logging.getLogger(__name__)

TERMINAL_EXECUTION = frozenset({"SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"})
TERMINAL_JOB = frozenset({"Completed", "Failed", "Stopped"})
CURVE_METRICS = (contract.TRAIN_LOSS, contract.VALID_LOSS, contract.VALID_ACCURACY)

# SageMaker tasks of the state machine -> (what they create, the request member that names it).
_SAGEMAKER_TASKS = {
    "createHyperParameterTuningJob": ("tuning_jobs", "HyperParameterTuningJobName"),
    "createTrainingJob": ("training_jobs", "TrainingJobName"),
    "createModel": ("models", "ModelName"),
    "createEndpointConfig": ("endpoint_configs", "EndpointConfigName"),
    "createEndpoint": ("endpoints", "EndpointName"),
    "updateEndpoint": ("endpoints", "EndpointName"),
    "describeEndpoint": ("endpoints", "EndpointName"),
}


# --- the execution ---------------------------------------------------------------------------------------------
@dataclass
class Refs:
    """Names of the SageMaker resources an execution created, in the order it scheduled them."""

    tuning_jobs: list[str] = field(default_factory=list)
    training_jobs: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    endpoint_configs: list[str] = field(default_factory=list)
    endpoints: list[str] = field(default_factory=list)

    def add(self, kind: str, name: Any) -> None:
        items = getattr(self, kind)
        if isinstance(name, str) and name and name not in items:
            items.append(name)


def _json(text: str | None) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def _scan(document: Any, refs: Refs, under_best: bool = False) -> None:
    """Names in an execution's input/output JSON, for histories that do not show task parameters."""
    if isinstance(document, dict):
        for key, value in document.items():
            if key == "HyperParameterTuningJobName":
                refs.add("tuning_jobs", value)
            elif key == "TrainingJobName" and not under_best:
                refs.add("training_jobs", value)
            elif key == "EndpointName":
                refs.add("endpoints", value)
            _scan(value, refs, under_best or key in ("BestTrainingJob", "TrainingJobSummaries",
                                                     "OverallBestTrainingJob"))
    elif isinstance(document, list):
        for item in document:
            _scan(item, refs, under_best)


def execution_refs(events: Iterable[dict], documents: Iterable[Any] = ()) -> Refs:
    """The SageMaker resources of an execution, from its TaskScheduled events (optimised and aws-sdk tasks)."""
    refs = Refs()
    for event in events:
        details = event.get("taskScheduledEventDetails")
        if not details or "sagemaker" not in details.get("resourceType", "").lower():
            continue
        resource = details.get("resource", "").split(".")[0]
        resource = resource[:1].lower() + resource[1:]
        if resource in _SAGEMAKER_TASKS and isinstance(params := _json(details.get("parameters")), dict):
            kind, member = _SAGEMAKER_TASKS[resource]
            refs.add(kind, params.get(member))
    found = Refs()
    for document in documents:
        _scan(document, found)
    for kind in ("tuning_jobs", "training_jobs", "endpoints"):
        if not getattr(refs, kind):
            for name in getattr(found, kind):
                refs.add(kind, name)
    return refs


@dataclass
class Execution:
    arn: str
    name: str
    status: str
    state_machine_arn: str
    started: dt.datetime | None
    stopped: dt.datetime | None
    input: Any
    output: Any
    error: str | None
    cause: str | None
    current_state: str | None
    last_state: str | None
    refs: Refs
    state_seconds: dict[str, float] = field(default_factory=dict)  # per state, all its visits (loops) summed

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_EXECUTION

    @property
    def tuning_job(self) -> str | None:
        return self.refs.tuning_jobs[-1] if self.refs.tuning_jobs else None

    @property
    def training_job(self) -> str | None:
        return self.refs.training_jobs[-1] if self.refs.training_jobs else None

    @property
    def endpoint(self) -> str | None:
        return self.refs.endpoints[-1] if self.refs.endpoints else None


def execution_arn_for(state_machine_arn: str, name: str) -> str:
    """arn:aws:states:r:a:stateMachine:SM + NAME -> arn:aws:states:r:a:execution:SM:NAME."""
    if ":stateMachine:" not in state_machine_arn:
        raise CliError(f"not a state machine ARN: {state_machine_arn}")
    return state_machine_arn.replace(":stateMachine:", ":execution:", 1) + ":" + name


def resolve_execution(backend: Backend, execution: str | None) -> str:
    """An execution ARN from an ARN, a name of the stack's state machine, or None (the newest execution)."""
    if execution and execution.startswith("arn:"):
        if ":execution:" not in execution:
            raise CliError(f"not an execution ARN: {execution}")
        return execution
    state_machine = backend.output(facts.OUTPUT_STATE_MACHINE, "to find executions")
    if execution:
        return execution_arn_for(state_machine, execution)
    for page in pages(backend.stepfunctions, "stepfunctions", "list_executions", stateMachineArn=state_machine,
                      maxResults=20):
        for item in page.get("executions", []):
            return item["executionArn"]
        break
    raise CliError(f"the state machine {state_machine.rsplit(':', 1)[-1]} has no executions yet "
                   "(start one with `imgclf start`)")


def load_execution(backend: Backend, arn: str) -> Execution:
    described = backend.stepfunctions.describe_execution(executionArn=arn)
    history = collect(backend.stepfunctions, "stepfunctions", "get_execution_history", executionArn=arn,
                      maxResults=1000)
    return execution_from(described, history["events"])


def execution_from(described: dict, events: list[dict]) -> Execution:
    current = last = None
    error, cause = described.get("error"), described.get("cause")
    entered: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    for event in events:
        if details := event.get("stateEnteredEventDetails"):
            current = last = details.get("name")
            entered[current] = event.get("timestamp")
        elif details := event.get("stateExitedEventDetails"):
            name = details.get("name")
            start, end = entered.pop(name, None), event.get("timestamp")
            if isinstance(start, dt.datetime) and isinstance(end, dt.datetime):
                seconds[name] = seconds.get(name, 0.0) + (end - start).total_seconds()
            if name == current:
                current = None
        for key in ("executionFailedEventDetails", "executionTimedOutEventDetails", "executionAbortedEventDetails"):
            if details := event.get(key):
                error, cause = details.get("error") or error, details.get("cause") or cause
    status = described["status"]
    input_doc, output_doc = _json(described.get("input")), _json(described.get("output"))
    return Execution(
        arn=described["executionArn"], name=described.get("name") or described["executionArn"].rsplit(":", 1)[-1],
        status=status, state_machine_arn=described.get("stateMachineArn", ""), started=described.get("startDate"),
        stopped=described.get("stopDate"), input=input_doc, output=output_doc, error=error, cause=cause,
        current_state=current if status == "RUNNING" else None, last_state=last,
        refs=execution_refs(events, [input_doc, output_doc]), state_seconds=seconds)


# --- tuning ----------------------------------------------------------------------------------------------------
def _seconds(start: dt.datetime | None, end: dt.datetime | None) -> float | None:
    return (end - start).total_seconds() if start and end else None


@dataclass
class Trial:
    name: str
    status: str
    hyperparameters: dict[str, str]
    objective: float | None
    objective_status: str | None
    created: dt.datetime | None
    started: dt.datetime | None
    ended: dt.datetime | None
    failure_reason: str | None = None
    best: bool = False

    @property
    def duration_s(self) -> float | None:
        return _seconds(self.started, self.ended)

    def hyperparameter(self, name: str) -> float | None:
        try:
            return float(self.hyperparameters[name].strip('"'))
        except (KeyError, ValueError):
            return None


@dataclass
class Tuning:
    name: str
    status: str
    strategy: str | None
    objective_name: str
    objective_type: str
    max_jobs: int | None
    max_parallel: int | None
    counters: dict[str, int]
    best_job: str | None
    best_objective: float | None
    best_hyperparameters: dict[str, str]
    tuned: list[str]
    trials: list[Trial]
    created: dt.datetime | None
    ended: dt.datetime | None
    failure_reason: str | None
    instance_type: str | None = None  # TrainingJobDefinition.ResourceConfig: what every trial runs on

    @property
    def launched(self) -> int:
        """Trials launched so far (TrainingJobStatusCounters), whether or not `trials` holds them all."""
        counted = sum(v for v in self.counters.values() if isinstance(v, int))
        return max(counted, len(self.trials))

    @property
    def best(self) -> Trial | None:
        return next((t for t in self.trials if t.best), None)


def trial_number(trial: str, tuning_job: str) -> int | None:
    """3 for <tuning job>-003-1d0347bf, the number SageMaker gives a tuning job's trials in launch order."""
    number = trial[len(tuning_job) + 1:].split("-", 1)[0] if trial.startswith(tuning_job + "-") else ""
    return int(number) if number.isdigit() else None


def load_tuning(backend: Backend, name: str, with_trials: bool = True, newest: int | None = None) -> Tuning:
    """The tuning job and its trials: all of them (every page), none, or only the `newest` few and the best,
    in one ListTrainingJobsForHyperParameterTuningJob call whatever the number of trials (what `status` shows).
    SortBy/SortOrder/MaxResults (at most 100): botocore's sagemaker ListTrainingJobsForHyperParameterTuningJob
    input shape, https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_ListTrainingJobsForHyperParameterTuningJob.html
    """
    described = backend.sagemaker.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)
    if not with_trials:
        return tuning_from(described, [])
    if newest is None:
        summaries = collect(backend.sagemaker, "sagemaker", "list_training_jobs_for_hyper_parameter_tuning_job",
                            HyperParameterTuningJobName=name, MaxResults=100)["TrainingJobSummaries"]
        return tuning_from(described, summaries)
    summaries = backend.sagemaker.list_training_jobs_for_hyper_parameter_tuning_job(
        HyperParameterTuningJobName=name, SortBy="CreationTime", SortOrder="Descending",
        MaxResults=max(1, min(newest, 100)))["TrainingJobSummaries"]
    best = described.get("BestTrainingJob")  # the same summary shape as the list's items
    if best and all(s["TrainingJobName"] != best.get("TrainingJobName") for s in summaries):
        summaries.append(best)
    return tuning_from(described, summaries)


def tuning_from(described: dict, summaries: list[dict]) -> Tuning:
    job_config = described.get("HyperParameterTuningJobConfig", {})
    objective = job_config.get("HyperParameterTuningJobObjective", {})
    limits = job_config.get("ResourceLimits", {})
    ranges = job_config.get("ParameterRanges", {})
    tuned = [r["Name"] for kind in ("CategoricalParameterRanges", "ContinuousParameterRanges",
                                    "IntegerParameterRanges") for r in ranges.get(kind, [])]
    best = described.get("BestTrainingJob") or {}
    best_name = best.get("TrainingJobName")
    trials = []
    for s in summaries:
        metric = s.get("FinalHyperParameterTuningJobObjectiveMetric") or {}
        trials.append(Trial(
            name=s["TrainingJobName"], status=s["TrainingJobStatus"],
            hyperparameters={k: str(v).strip('"') for k, v in s.get("TunedHyperParameters", {}).items()},
            objective=metric.get("Value"), objective_status=s.get("ObjectiveStatus"), created=s.get("CreationTime"),
            started=s.get("TrainingStartTime"), ended=s.get("TrainingEndTime"), failure_reason=s.get("FailureReason"),
            best=s["TrainingJobName"] == best_name))
    epoch = dt.datetime.min.replace(tzinfo=dt.UTC)
    # SageMaker numbers trials in launch order (<tuning job>-001-<hex>); creation times of trials launched together
    # differ by microseconds in either order.
    trials.sort(key=lambda t: (trial_number(t.name, described["HyperParameterTuningJobName"]) or 10**9,
                               t.created or epoch, t.name))
    if not tuned:
        tuned = sorted({k for t in trials for k in t.hyperparameters})
    return Tuning(
        name=described["HyperParameterTuningJobName"], status=described["HyperParameterTuningJobStatus"],
        strategy=job_config.get("Strategy"), objective_name=objective.get("MetricName", contract.OBJECTIVE_METRIC),
        objective_type=objective.get("Type", contract.OBJECTIVE_TYPE), max_jobs=limits.get("MaxNumberOfTrainingJobs"),
        max_parallel=limits.get("MaxParallelTrainingJobs"), counters=described.get("TrainingJobStatusCounters", {}),
        best_job=best_name, best_objective=(best.get("FinalHyperParameterTuningJobObjectiveMetric") or {}).get("Value"),
        best_hyperparameters={k: str(v).strip('"') for k, v in best.get("TunedHyperParameters", {}).items()},
        tuned=tuned, trials=trials, created=described.get("CreationTime"),
        ended=described.get("HyperParameterTuningEndTime"), failure_reason=described.get("FailureReason"),
        instance_type=((described.get("TrainingJobDefinition") or {}).get("ResourceConfig") or {}).get("InstanceType"))


# --- training jobs ---------------------------------------------------------------------------------------------
@dataclass
class RuleVerdict:
    kind: str  # "Debugger" or "Profiler"
    name: str
    status: str
    details: str | None


@dataclass
class Job:
    name: str
    status: str
    secondary_status: str | None
    failure_reason: str | None
    hyperparameters: dict[str, str]
    created: dt.datetime | None
    started: dt.datetime | None
    ended: dt.datetime | None
    training_seconds: int | None
    billable_seconds: int | None
    instance: str | None
    final_metrics: dict[str, float]
    rules: list[RuleVerdict]
    output_path: str | None  # OutputDataConfig.S3OutputPath
    model_uri: str | None
    test_data_uri: str | None
    train_data_uri: str | None
    profiler_paths: list[str]  # S3 prefixes where a ProfilerReport can be
    instance_type: str | None = None  # ResourceConfig (what the job's billable seconds are priced at)
    instance_count: int = 1

    @property
    def duration_s(self) -> float | None:
        return self.training_seconds if self.training_seconds is not None else _seconds(self.started, self.ended)

    @property
    def rules_pending(self) -> bool:
        return any(r.status == "InProgress" for r in self.rules)

    @property
    def output_archive(self) -> tuple[str, str] | None:
        """(bucket, key) of output.tar.gz: beside model.tar.gz, as SageMaker writes it."""
        if self.model_uri and self.model_uri.endswith("/" + facts.MODEL_ARCHIVE):
            bucket, key = parse_s3_uri(self.model_uri)
            return bucket, key[: -len(facts.MODEL_ARCHIVE)] + facts.OUTPUT_ARCHIVE
        if self.output_path:
            bucket, key = parse_s3_uri(self.output_path)
            return bucket, join_key(key, self.name, "output", facts.OUTPUT_ARCHIVE)
        return None


def load_job(backend: Backend, name: str) -> Job:
    return job_from(backend.sagemaker.describe_training_job(TrainingJobName=name))


def job_from(d: dict) -> Job:
    rules = [RuleVerdict("Debugger", r.get("RuleConfigurationName", "?"), r.get("RuleEvaluationStatus", "?"),
                         r.get("StatusDetails")) for r in d.get("DebugRuleEvaluationStatuses", [])]
    rules += [RuleVerdict("Profiler", r.get("RuleConfigurationName", "?"), r.get("RuleEvaluationStatus", "?"),
                          r.get("StatusDetails")) for r in d.get("ProfilerRuleEvaluationStatuses", [])]
    output_path = (d.get("OutputDataConfig") or {}).get("S3OutputPath")
    # The ProfilerReport rule writes <rule-output>/ProfilerReport/profiler-output/profiler-report.html; its rule
    # output is the rule's own S3OutputPath if set, else <OutputDataConfig>/<job>/rule-output (AWS's default); the
    # local stand-in uses <ProfilerConfig.S3OutputPath>/<job>/rule-output. Only looked for when the rule is set.
    report_rules = [r for r in d.get("ProfilerRuleConfigurations", [])
                    if r.get("RuleConfigurationName") == facts.PROFILER_REPORT_RULE]
    profiler_paths = [r["S3OutputPath"] for r in report_rules if r.get("S3OutputPath")]
    if report_rules:
        for base in (output_path, (d.get("ProfilerConfig") or {}).get("S3OutputPath")):
            if base:
                profiler_paths.append(base.rstrip("/") + f"/{d['TrainingJobName']}/rule-output")
    channels = {c.get("ChannelName"): c["DataSource"]["S3DataSource"]["S3Uri"] for c in d.get("InputDataConfig", [])
                if "S3DataSource" in c.get("DataSource", {})}
    resources = d.get("ResourceConfig") or {}
    instance = resources.get("InstanceType")
    if instance and resources.get("InstanceCount", 1) > 1:
        instance = f"{resources['InstanceCount']} x {instance}"
    return Job(
        name=d["TrainingJobName"], status=d["TrainingJobStatus"], secondary_status=d.get("SecondaryStatus"),
        failure_reason=d.get("FailureReason"),
        hyperparameters={k: str(v).strip('"') for k, v in d.get("HyperParameters", {}).items()
                         if not k.startswith("sagemaker_") and not k.startswith("_")},
        created=d.get("CreationTime"), started=d.get("TrainingStartTime"), ended=d.get("TrainingEndTime"),
        training_seconds=d.get("TrainingTimeInSeconds"), billable_seconds=d.get("BillableTimeInSeconds"),
        instance=instance, final_metrics={m["MetricName"]: m["Value"] for m in d.get("FinalMetricDataList", [])
                                          if "MetricName" in m and "Value" in m},
        rules=rules, output_path=output_path, model_uri=(d.get("ModelArtifacts") or {}).get("S3ModelArtifacts"),
        test_data_uri=channels.get(contract.TEST), train_data_uri=channels.get(contract.TRAIN),
        profiler_paths=list(dict.fromkeys(profiler_paths)), instance_type=resources.get("InstanceType"),
        instance_count=resources.get("InstanceCount", 1))


# --- S3 objects ------------------------------------------------------------------------------------------------
def read_object(backend: Backend, bucket: str, key: str) -> tuple[bytes | None, str | None]:
    """(the object's bytes, None) or (None, why not): a missing or forbidden object is a gap, not a failure."""
    try:
        return backend.s3.get_object(Bucket=bucket, Key=key)["Body"].read(), None
    except ClientError as exc:
        return None, ("not found" if is_not_found(exc) else describe_aws_error(exc))


def list_keys(backend: Backend, bucket: str, prefix: str) -> list[dict]:
    return collect(backend.s3, "s3", "list_objects_v2", Bucket=bucket, Prefix=prefix)["Contents"]


def read_job_outputs(backend: Backend, job: Job) -> tuple[dict[str, Any], str | None]:
    """The JSON files of a job's output.tar.gz (history.json, health.json) by file name, or why there are none."""
    location = job.output_archive
    if location is None:
        return {}, "the job has no output location"
    data, why = read_object(backend, *location)
    if data is None:
        return {}, f"{s3_uri(*location)}: {why}"
    found: dict[str, Any] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
            for member in archive.getmembers():
                name = member.name.rsplit("/", 1)[-1]
                if member.isfile() and name in (contract.HISTORY_FILE, contract.HEALTH_FILE):
                    handle = archive.extractfile(member)
                    if handle is not None:
                        found[name] = json.loads(handle.read())
    except (tarfile.TarError, OSError, ValueError) as exc:
        return {}, f"{s3_uri(*location)} is not a readable archive: {exc}"
    return found, None


# --- metrics ---------------------------------------------------------------------------------------------------
@dataclass
class Curves:
    """Per-epoch metrics of one job; `source` says where they came from."""

    source: str
    epochs: list[dict[str, float]]  # {"epoch": n, "train_loss": ..., "valid_loss": ..., "valid_accuracy": ...}

    def series(self, metric: str) -> tuple[list[float], list[float]]:
        points = [(e["epoch"], e[metric]) for e in self.epochs if e.get(metric) is not None]
        return [p[0] for p in points], [p[1] for p in points]


def metric_queries(job_name: str, metrics: Iterable[str] = CURVE_METRICS) -> list[dict]:
    """GetMetricData queries for a training job's metrics (SageMaker publishes them per Host <job>/algo-1)."""
    return [{"Id": f"m{i}", "Label": name, "ReturnData": True, "MetricStat": {
        "Metric": {"Namespace": facts.TRAINING_METRICS_NAMESPACE, "MetricName": name,
                   "Dimensions": [{"Name": "Host", "Value": job_name + "/" + facts.TRAINING_HOST}]},
        "Period": 60, "Stat": "Average"}} for i, name in enumerate(metrics)]


def fetch_metric_data(cloudwatch: Any, job_name: str, start: dt.datetime, end: dt.datetime,
                      metrics: Iterable[str] = CURVE_METRICS) -> dict:
    """All of a job's metric datapoints as one GetMetricData response (pages merged)."""
    return collect(cloudwatch, "cloudwatch", "get_metric_data", MetricDataQueries=metric_queries(job_name, metrics),
                   StartTime=start, EndTime=end, ScanBy="TimestampAscending")


def metric_series(response: dict, queries: list[dict]) -> dict[str, list[tuple[dt.datetime, float]]]:
    labels = {q["Id"]: q["MetricStat"]["Metric"]["MetricName"] for q in queries}
    series: dict[str, list[tuple[dt.datetime, float]]] = {}
    for result in response.get("MetricDataResults", []):
        name = labels.get(result.get("Id", ""))
        if name:
            series.setdefault(name, []).extend(zip(result.get("Timestamps", []), result.get("Values", []),
                                                   strict=False))
    return {name: sorted(points) for name, points in series.items()}


def curves_from_history(history: dict) -> Curves | None:
    epochs = [{k: v for k, v in e.items() if k == "epoch" or k in CURVE_METRICS} for e in history.get("epochs", [])]
    return Curves(contract.HISTORY_FILE, epochs) if epochs else None


def curves_from_cloudwatch(backend: Backend, job: Job) -> Curves | None:
    if backend.cloudwatch is None or job.started is None:
        return None
    end = (job.ended or dt.datetime.now(dt.UTC)) + dt.timedelta(minutes=5)
    start = job.started - dt.timedelta(minutes=1)
    try:
        response = fetch_metric_data(backend.cloudwatch, job.name, start, end)
    except ClientError as exc:
        log.info("CloudWatch metrics of %s: %s", job.name, describe_aws_error(exc))
        return None
    series = metric_series(response, metric_queries(job.name))
    length = max((len(v) for v in series.values()), default=0)
    if length == 0:
        return None
    epochs = []
    for i in range(length):
        row: dict[str, float] = {"epoch": i + 1}
        for name, points in series.items():
            if i < len(points):
                row[name] = points[i][1]
        epochs.append(row)
    return Curves("CloudWatch", epochs)


def job_curves(backend: Backend, job: Job, outputs: dict[str, Any]) -> Curves | None:
    """history.json from output.tar.gz, else the CloudWatch series, else None: a job's final values alone
    (FinalMetricDataList) are no curve, and drawing them at some epoch would invent one."""
    if contract.HISTORY_FILE in outputs and (curves := curves_from_history(outputs[contract.HISTORY_FILE])):
        return curves
    return curves_from_cloudwatch(backend, job)


# --- profiler report and endpoint ------------------------------------------------------------------------------
@dataclass
class ProfilerReport:
    bucket: str
    key: str
    found: bool

    @property
    def uri(self) -> str:
        return s3_uri(self.bucket, self.key)


def find_profiler_report(backend: Backend, job: Job) -> ProfilerReport | None:
    """Where the ProfilerReport rule wrote profiler-report.html (found by listing), or where it would be."""
    if not job.profiler_paths:
        return None
    for path in job.profiler_paths:
        bucket, prefix = parse_s3_uri(path)
        try:
            keys = list_keys(backend, bucket, prefix.rstrip("/") + "/")
        except ClientError as exc:
            log.info("listing %s: %s", path, describe_aws_error(exc))
            continue
        for item in keys:
            if item["Key"].endswith("/" + facts.PROFILER_REPORT_FILE):
                return ProfilerReport(bucket, item["Key"], True)
    bucket, prefix = parse_s3_uri(job.profiler_paths[-1])
    return ProfilerReport(bucket, join_key(prefix, facts.PROFILER_REPORT_RULE, "profiler-output",
                                           facts.PROFILER_REPORT_FILE), False)


def describe_endpoint(backend: Backend, name: str) -> dict | None:
    try:
        return backend.sagemaker.describe_endpoint(EndpointName=name)
    except ClientError as exc:
        if is_not_found(exc):
            return None
        raise
