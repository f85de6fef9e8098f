"""Writing a recorded run: what the CLI and the report read about one execution, recorded as the boto3 responses
they would get from AWS (the layout: cli/recording/reader.py). local/demo.py writes its runs with it.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import shutil
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

import stackfacts as facts
from awsshapes import collect, jsonable, output_problems, paginator_config
from cli import config
from cli.aws import s3_location
from cli.errors import is_not_found
from cli.loaders import fetch_metric_data
from cli.model import execution_refs, job_from
from cli.recording.reader import (
    API_DIR,
    S3_DIR,
    RecordedS3,
    RecordingError,
    arn_name,
    client_error,
    confined,
    read_response,
    record_path,
)
from ml import contract

log = logging.getLogger(__name__)


class ExecutionRecord:
    """A finished execution as a Step Functions client (DescribeExecution, GetExecutionHistory, ListExecutions), for
    engines whose own client is gone when the run ends (local.engine's mock ends with run_definition).

    `events` are GetExecutionHistory's events (datetimes or ISO strings); input, output, start and stop dates come
    from them when not given.
    """

    def __init__(self, *, execution_arn: str, status: str, events: list[dict], output: Any = None,
                 error: str | None = None, cause: str | None = None, input: Any = None,
                 state_machine_arn: str | None = None) -> None:
        self.arn, self.status, self.events = execution_arn, status, list(events)
        name = arn_name(execution_arn)
        self.state_machine_arn = state_machine_arn or execution_arn.replace(":execution:", ":stateMachine:", 1)[
            : -len(name) - 1]
        started = next((e for e in self.events if e.get("type") == "ExecutionStarted"), None)
        if input is None and started:
            input = (started.get("executionStartedEventDetails") or {}).get("input")
        if output is None and status == "SUCCEEDED" and self.events:
            output = (self.events[-1].get("executionSucceededEventDetails") or {}).get("output")

        def as_text(value: Any) -> str | None:
            return value if isinstance(value, str) or value is None else json.dumps(value)

        self.described: dict[str, Any] = {
            "executionArn": execution_arn, "stateMachineArn": self.state_machine_arn, "name": name, "status": status,
            "startDate": _as_datetime(self.events[0]["timestamp"]) if self.events else dt.datetime.now(dt.UTC)}
        if status != "RUNNING" and self.events:
            self.described["stopDate"] = _as_datetime(self.events[-1]["timestamp"])
        for key, value in (("input", as_text(input)), ("output", as_text(output)), ("error", error),
                           ("cause", cause)):
            if value is not None:
                self.described[key] = value

    @classmethod
    def from_result(cls, result: Any, **overrides: Any) -> ExecutionRecord:
        """From local.engine's ExecutionResult (execution_arn, status, events, output, error, cause)."""
        return cls(execution_arn=result.execution_arn, status=result.status, events=result.events,
                   output=result.output, error=result.error, cause=result.cause, **overrides)

    def _check(self, arn: str, operation: str) -> None:
        if arn != self.arn:
            raise client_error("ExecutionDoesNotExist", f"Execution Does Not Exist: '{arn}'", operation)

    def describe_execution(self, executionArn: str) -> dict:
        self._check(executionArn, "DescribeExecution")
        return dict(self.described)

    def get_execution_history(self, executionArn: str, **_: Any) -> dict:
        self._check(executionArn, "GetExecutionHistory")
        return {"events": [dict(e) for e in self.events]}

    def list_executions(self, stateMachineArn: str, **_: Any) -> dict:
        keys = ("executionArn", "stateMachineArn", "name", "status", "startDate", "stopDate")
        mine = stateMachineArn == self.state_machine_arn
        return {"executions": [{k: self.described[k] for k in keys if k in self.described}] if mine else []}


class _Writer:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.written: list[Path] = []

    def save(self, service: str, method: str, identifier: str | None, response: dict) -> dict:
        data = jsonable(response)
        for problem in output_problems(service, method, data):
            log.warning("recording %s.%s(%s) does not fit the API's shape: %s", service, method, identifier, problem)
        path = record_path(self.root, service, method, identifier)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(path)
        self.written.append(path)
        return response

    def call(self, client: Any, service: str, method: str, identifier: str | None, **params: Any) -> dict | None:
        """One call recorded; a client without the method, or a refused call, is logged and skipped."""
        if client is None or not hasattr(client, method):
            log.info("recording: the %s client has no %s; skipped", service, method)
            return None
        try:
            response = collect(client, service, method, **params) if paginator_config(service, method) \
                else getattr(client, method)(**params)
        except ClientError as exc:
            # Not there yet (the endpoint before a first run deploys it: SageMaker answers ValidationException "Could
            # not find endpoint", https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_DescribeEndpoint.html)
            # is what a live recording expects; anything else is worth a warning.
            (log.info if is_not_found(exc) else log.warning)("recording: %s.%s(%s) failed: %s", service, method,
                                                             identifier, exc)
            return None
        return self.save(service, method, identifier, response)


def _newest_first(executions: list[dict]) -> list[dict]:
    def started(item: dict) -> float:
        value = item.get("startDate")
        if isinstance(value, str):
            value = dt.datetime.fromisoformat(value)
        return value.timestamp() if isinstance(value, dt.datetime) else 0.0

    merged = {e["executionArn"]: e for e in executions}
    return sorted(merged.values(), key=started, reverse=True)


def _copy_objects(source: Any, root: Path, locations: list[tuple[str, str, bool]]) -> list[Path]:
    """Copy S3 objects (bucket, key or prefix, is_prefix) from a client or a local S3 folder into root/s3."""
    reader = RecordedS3(source) if isinstance(source, str | Path) else source
    if isinstance(reader, RecordedS3) and reader.root.resolve() == (root / S3_DIR).resolve():
        return []  # the run's S3 already lives in the recording
    copied = []
    for bucket, key, is_prefix in locations:
        try:
            keys = [o["Key"] for o in collect(reader, "s3", "list_objects_v2", Bucket=bucket,
                                               Prefix=key)["Contents"]] if is_prefix else [key]
            for k in keys:
                try:
                    target = confined(root / S3_DIR, bucket, *k.split("/"))  # a key like '/x' or '../x' stays in
                except ValueError:
                    log.info("recording: s3://%s/%s not copied: it leads outside the recording", bucket, k)
                    continue
                if target.is_file():
                    continue
                body = reader.get_object(Bucket=bucket, Key=k)["Body"]
                target.parent.mkdir(parents=True, exist_ok=True)
                with target.open("wb") as handle:
                    shutil.copyfileobj(body, handle)
                copied.append(target)
        except ClientError as exc:
            log.info("recording: s3://%s/%s not copied: %s", bucket, key, exc)
    return copied


def write_recording(out_dir: str | Path, *, sagemaker: Any, stepfunctions: Any, execution_arn: str,
                    cloudformation: Any = None, cloudwatch: Any = None, s3: Any = None,
                    stack_name: str | None = None, stack_outputs: dict[str, str] | None = None) -> list[Path]:
    """Record everything the CLI and the report read about one execution; return the files written.

    `sagemaker` and `stepfunctions` are any objects with boto3's methods (real clients, the local stand-in, a
    client pointed at moto). `cloudformation`: when given, DescribeStacks of `stack_name` is recorded; otherwise a
    stack record is made from what the execution shows (its state machine, bucket and endpoint) updated with
    `stack_outputs`. `cloudwatch`: when given, each training job's metric series. `s3`: a client or a local S3
    folder (<root>/<bucket>/<key>) whose job outputs, final model, test channel and profiler report are copied
    into DIR/s3 (skipped when it already is DIR/s3).
    """
    root = Path(out_dir)
    w = _Writer(root)
    name = arn_name(execution_arn)
    described = w.call(stepfunctions, "stepfunctions", "describe_execution", name, executionArn=execution_arn)
    if described is None:
        raise ValueError(f"cannot record {execution_arn}: DescribeExecution failed")
    history = w.call(stepfunctions, "stepfunctions", "get_execution_history", name, executionArn=execution_arn) \
        or {"events": []}
    state_machine = described["stateMachineArn"]
    listing_path = record_path(root, "stepfunctions", "list_executions", arn_name(state_machine))
    previous = read_response(listing_path)["executions"] if listing_path.is_file() else []
    listed = []
    if hasattr(stepfunctions, "list_executions"):
        try:
            listed = collect(stepfunctions, "stepfunctions", "list_executions", stateMachineArn=state_machine)[
                "executions"]
        except ClientError as exc:
            log.info("recording: ListExecutions failed: %s", exc)
    this = {k: described[k] for k in ("executionArn", "stateMachineArn", "name", "status", "startDate", "stopDate")
            if described.get(k) is not None}
    w.save("stepfunctions", "list_executions", arn_name(state_machine),
           {"executions": _newest_first([*jsonable(previous), *jsonable(listed), jsonable(this)])})

    def parse(doc: Any) -> Any:
        try:
            return json.loads(doc) if isinstance(doc, str) else None
        except ValueError:
            return None

    refs = execution_refs(history["events"], [parse(described.get("input")), parse(described.get("output"))])
    jobs: list[dict] = []
    for tuning in refs.tuning_jobs:
        w.call(sagemaker, "sagemaker", "describe_hyper_parameter_tuning_job", tuning,
               HyperParameterTuningJobName=tuning)
        trials = w.call(sagemaker, "sagemaker", "list_training_jobs_for_hyper_parameter_tuning_job", tuning,
                        HyperParameterTuningJobName=tuning) or {}
        for summary in trials.get("TrainingJobSummaries", []):
            job = summary["TrainingJobName"]
            if described_job := w.call(sagemaker, "sagemaker", "describe_training_job", job, TrainingJobName=job):
                jobs.append(described_job)
    finals = []
    for job in refs.training_jobs:
        if described_job := w.call(sagemaker, "sagemaker", "describe_training_job", job, TrainingJobName=job):
            jobs.append(described_job)
            finals.append(described_job)
    for endpoint in refs.endpoints:
        w.call(sagemaker, "sagemaker", "describe_endpoint", endpoint, EndpointName=endpoint)
    for endpoint_config in refs.endpoint_configs:
        w.call(sagemaker, "sagemaker", "describe_endpoint_config", endpoint_config, EndpointConfigName=endpoint_config)
    for model in refs.models:
        w.call(sagemaker, "sagemaker", "describe_model", model, ModelName=model)
    for listing in ("list_endpoints", "list_endpoint_configs", "list_models"):
        w.call(sagemaker, "sagemaker", listing, None)

    if cloudwatch is not None:
        for d in jobs:
            if d.get("TrainingStartTime") is None:
                continue
            start = _as_datetime(d["TrainingStartTime"]) - dt.timedelta(minutes=1)
            end = _as_datetime(d.get("TrainingEndTime") or dt.datetime.now(dt.UTC)) + dt.timedelta(minutes=5)
            try:
                w.save("cloudwatch", "get_metric_data", d["TrainingJobName"],
                       fetch_metric_data(cloudwatch, d["TrainingJobName"], start, end))
            except ClientError as exc:
                log.info("recording: metrics of %s: %s", d["TrainingJobName"], exc)

    if s3 is not None:
        locations: list[tuple[str, str, bool]] = []
        for d in jobs:
            job = job_from(d)
            if job.output_archive:
                locations.append((*job.output_archive, False))
        for d in finals:
            job = job_from(d)
            if job.model_uri:
                locations.append((*s3_location(job.model_uri), False))
            if job.test_data_uri:
                bucket, prefix = s3_location(job.test_data_uri)
                locations.append((bucket, prefix.rstrip("/") + "/", True))
            for path in job.profiler_paths:
                bucket, prefix = s3_location(path)
                locations.append((bucket, prefix.rstrip("/") + "/", True))
        w.written += _copy_objects(s3, root, locations)

    stack_name = stack_name or config.DEFAULT_STACK_NAME
    recorded = w.call(cloudformation, "cloudformation", "describe_stacks", stack_name, StackName=stack_name) \
        if cloudformation is not None else None
    if recorded is None:
        w.save("cloudformation", "describe_stacks", stack_name,
               _stack_record(stack_name, described, finals or jobs, refs.endpoints, stack_outputs or {}))
    return w.written


def _as_datetime(value: Any) -> dt.datetime:
    return dt.datetime.fromisoformat(value) if isinstance(value, str) else value


def _stack_record(name: str, execution: dict, jobs: list[dict], endpoints: list[str],
                  overrides: dict[str, str]) -> dict:
    """A DescribeStacks response for a local run: the outputs the CLI reads, from what the execution used."""
    state_machine = execution["stateMachineArn"]
    outputs = {facts.OUTPUT_STATE_MACHINE: state_machine}
    for d in jobs:
        path = (d.get("OutputDataConfig") or {}).get("S3OutputPath")
        if path:
            outputs[facts.OUTPUT_BUCKET] = s3_location(path)[0]
        train = job_from(d).train_data_uri
        if train and train.rstrip("/").endswith("/" + contract.TRAIN):
            bucket, key = s3_location(train.rstrip("/")[: -len(contract.TRAIN)])
            outputs[facts.OUTPUT_DATASET] = f"s3://{bucket}/{key}"  # what the run trained on
    if endpoints:
        outputs[facts.OUTPUT_ENDPOINT] = endpoints[-1]
    outputs.update(overrides)
    # The recording files executions under the state machine that ran them: the stack must name that one.
    if outputs[facts.OUTPUT_STATE_MACHINE] != state_machine:
        log.info("recording: StateMachineArn %s replaced by the one that ran, %s", outputs[facts.OUTPUT_STATE_MACHINE],
                 state_machine)
        outputs[facts.OUTPUT_STATE_MACHINE] = state_machine
    parts = state_machine.split(":")
    region, account = (parts[3], parts[4]) if len(parts) > 5 else (facts.LOCAL_REGION, facts.LOCAL_ACCOUNT)
    return {"Stacks": [{
        "StackName": name, "StackId": f"arn:aws:cloudformation:{region}:{account}:stack/{name}/local",
        "Description": f"local run (recorded); the prediction API path is {contract.PREDICT_PATH}",
        "CreationTime": execution.get("startDate") or dt.datetime.now(dt.UTC),
        "StackStatus": "CREATE_COMPLETE",
        "Outputs": [{"OutputKey": k, "OutputValue": v} for k, v in outputs.items()]}]}


def recorded_runs(root: str | Path) -> list[tuple[dict, list[dict]]]:
    """The executions a recording holds, newest first, each with the DescribeTrainingJob of every training job it ran
    (its trials and its final job; {"TrainingJobName": name} where none was recorded): what pruning old runs' job
    files needs. Unreadable files count as empty (a half-written recording must not stop a new run)."""
    root = Path(root)

    def read(path: Path) -> dict:
        try:
            return read_response(path)
        except RecordingError:
            return {}

    listings = (root / API_DIR / "stepfunctions" / "list_executions").glob("*.json")
    executions = sorted({e["executionArn"]: e for path in listings for e in read(path).get("executions", [])
                         if "executionArn" in e}.values(), key=lambda e: str(e.get("startDate", "")), reverse=True)
    runs = []
    for execution in executions:
        history = read(record_path(root, "stepfunctions", "get_execution_history", arn_name(execution["executionArn"])))
        refs = execution_refs(history.get("events", []))
        jobs = list(refs.training_jobs)
        for tuning in refs.tuning_jobs:
            listing = read(record_path(root, "sagemaker", "list_training_jobs_for_hyper_parameter_tuning_job", tuning))
            jobs += [t["TrainingJobName"] for t in listing.get("TrainingJobSummaries", [])]
        runs.append((execution, [read(record_path(root, "sagemaker", "describe_training_job", job))
                                 or {"TrainingJobName": job} for job in jobs]))
    return runs
