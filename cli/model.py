"""What a run did, as plain data: the execution and the states it went through, the tuning job and its trials,
the training jobs (rule verdicts, metrics), built from boto3-shaped responses.

Pure: no clients, no files, no clock. cli/loaders.py makes the calls and hands the responses here; the recording
writer, the report and the views read the same objects, and local/engine.py reads its history through
history_states() as well, so a run has one reading whatever holds it.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import stackfacts as facts
from awsshapes import s3_uri
from cli.aws import s3_location
from cli.errors import CliError
from ml import contract

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


# --- the resources an execution created ------------------------------------------------------------------
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


# --- the states an execution went through --------------------------------------------------------------------------
@dataclass
class StateVisit:
    """One entry into a state (a loop enters a state again: another visit), from GetExecutionHistory's events:
    https://docs.aws.amazon.com/step-functions/latest/apireference/API_HistoryEvent.html"""

    name: str
    type: str  # Task, Pass, Choice, Wait, Map, Parallel, Succeed, Fail (<Type>StateEntered)
    entered: Any  # the event's timestamp: a datetime from boto3, ISO 8601 text from the local engine
    exited: Any = None
    status: str = "running"  # succeeded | caught (failed, then left through a Catch) | failed | running

    @property
    def seconds(self) -> float | None:
        start, end = _instant(self.entered), _instant(self.exited)
        return (end - start).total_seconds() if start and end else None


def _instant(value: Any) -> dt.datetime | None:
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            return None
    return value if isinstance(value, dt.datetime) else None


def history_states(events: Iterable[dict]) -> list[StateVisit]:
    """The visits in the order the states were entered; the one reading of a history into states, for the local
    engine's result, the read-model (Execution) and the demo's summary alike."""
    visits: list[StateVisit] = []
    open_visits: dict[str, StateVisit] = {}
    last: StateVisit | None = None
    for event in events:
        kind = event.get("type", "")
        if details := event.get("stateEnteredEventDetails"):
            last = StateVisit(details.get("name", ""), kind.removesuffix("StateEntered"), event.get("timestamp"))
            visits.append(last)
            open_visits[last.name] = last
        elif details := event.get("stateExitedEventDetails"):
            visit = open_visits.pop(details.get("name", ""), None)
            if visit:
                visit.exited = event.get("timestamp")
                visit.status = "caught" if visit.status == "failed" else "succeeded"
        elif kind.endswith(("Failed", "TimedOut")) and kind != "ExecutionFailed" and last is not None:
            last.status = "failed"
    return visits


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


def execution_from(described: dict, events: list[dict]) -> Execution:
    error, cause = described.get("error"), described.get("cause")
    for event in events:
        for key in ("executionFailedEventDetails", "executionTimedOutEventDetails", "executionAbortedEventDetails"):
            if details := event.get(key):
                error, cause = details.get("error") or error, details.get("cause") or cause
    visits = history_states(events)
    seconds: dict[str, float] = {}
    for visit in visits:
        if (took := visit.seconds) is not None:
            seconds[visit.name] = seconds.get(visit.name, 0.0) + took
    last = visits[-1] if visits else None
    status = described["status"]
    input_doc, output_doc = _json(described.get("input")), _json(described.get("output"))
    return Execution(
        arn=described["executionArn"], name=described.get("name") or described["executionArn"].rsplit(":", 1)[-1],
        status=status, state_machine_arn=described.get("stateMachineArn", ""), started=described.get("startDate"),
        stopped=described.get("stopDate"), input=input_doc, output=output_doc, error=error, cause=cause,
        current_state=last.name if status == "RUNNING" and last and last.exited is None else None,
        last_state=last.name if last else None,
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
            bucket, key = s3_location(self.model_uri)
            return bucket, key[: -len(facts.MODEL_ARCHIVE)] + facts.OUTPUT_ARCHIVE
        if self.output_path:
            bucket, key = s3_location(self.output_path)
            return bucket, facts.job_output_key(key, self.name, facts.OUTPUT_ARCHIVE)
        return None


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
                profiler_paths.append(base.rstrip("/") + f"/{d['TrainingJobName']}/{facts.RULE_OUTPUT_DIR}")
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
    """GetMetricData queries for a training job's metrics (published per TrainingJobName: facts.METRIC_DIMENSIONS)."""
    return [{"Id": f"m{i}", "Label": name, "ReturnData": True, "MetricStat": {
        "Metric": {"Namespace": facts.TRAINING_METRICS_NAMESPACE, "MetricName": name,
                   "Dimensions": [{"Name": facts.TRAINING_METRIC_DIMENSION, "Value": job_name}]},
        "Period": 60, "Stat": "Average"}} for i, name in enumerate(metrics)]


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


# --- profiler report -------------------------------------------------------------------------------------------
@dataclass
class ProfilerReport:
    bucket: str
    key: str
    found: bool

    @property
    def uri(self) -> str:
        return s3_uri(self.bucket, self.key)
