"""The calls that read a run: the execution and its history, the tuning job and its trials, the training jobs,
their output archives and metrics in S3 and CloudWatch, the endpoint. Each takes a Backend, calls client methods
only (AWS and a recorded local run answer alike) and hands the responses to the pure read-model, cli/model.py.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import tarfile
from collections.abc import Iterable
from typing import Any

from botocore.exceptions import ClientError

import stackfacts as facts
from awsshapes import collect, pages, s3_uri
from cli.aws import s3_location
from cli.backend import Backend
from cli.errors import CliError, describe_aws_error, is_not_found
from cli.model import (
    CURVE_METRICS,
    Curves,
    Execution,
    Job,
    ProfilerReport,
    Tuning,
    curves_from_history,
    execution_arn_for,
    execution_from,
    job_from,
    metric_queries,
    metric_series,
    tuning_from,
)
from ml import contract

log = logging.getLogger(__name__)


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


def load_job(backend: Backend, name: str) -> Job:
    return job_from(backend.sagemaker.describe_training_job(TrainingJobName=name))


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


def fetch_metric_data(cloudwatch: Any, job_name: str, start: dt.datetime, end: dt.datetime,
                      metrics: Iterable[str] = CURVE_METRICS) -> dict:
    """All of a job's metric datapoints as one GetMetricData response (pages merged)."""
    return collect(cloudwatch, "cloudwatch", "get_metric_data", MetricDataQueries=metric_queries(job_name, metrics),
                   StartTime=start, EndTime=end, ScanBy="TimestampAscending")


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


def find_profiler_report(backend: Backend, job: Job) -> ProfilerReport | None:
    """Where the ProfilerReport rule wrote profiler-report.html (found by listing), or where it would be."""
    if not job.profiler_paths:
        return None
    for path in job.profiler_paths:
        bucket, prefix = s3_location(path)
        try:
            keys = list_keys(backend, bucket, prefix.rstrip("/") + "/")
        except ClientError as exc:
            log.info("listing %s: %s", path, describe_aws_error(exc))
            continue
        for item in keys:
            if item["Key"].endswith("/" + facts.PROFILER_REPORT_FILE):
                return ProfilerReport(bucket, item["Key"], True)
    bucket, prefix = s3_location(job.profiler_paths[-1])
    return ProfilerReport(bucket, facts.profiler_report_key(prefix), False)


def describe_endpoint(backend: Backend, name: str) -> dict | None:
    try:
        return backend.sagemaker.describe_endpoint(EndpointName=name)
    except ClientError as exc:
        if is_not_found(exc):
            return None
        raise
