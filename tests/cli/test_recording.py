"""The recording a local run leaves (write_recording) and the clients that answer from it (RecordedClient, RecordedS3):
layout, validity against botocore's output shapes, pagination, filters, AWS error codes, S3 semantics."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from botocore.exceptions import ClientError, ParamValidationError

from awsshapes import collect, output_problems
from cli.recording.reader import RecordedClient, RecordedS3, record_path, validate_recording
from cli.recording.writer import write_recording
from tests.support.cli import (
    BUCKET,
    STACK,
    STATE_MACHINE,
    FakeCloudWatch,
    FakeSageMaker,
    FakeStepFunctions,
    Scenario,
    record,
)
from tests.support.scratch import module_scratch


@pytest.fixture(scope="module")
def scenario() -> Scenario:
    return Scenario()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, scenario, request):
    root = module_scratch(request, tmp_path_factory, "recorded")
    record(root, scenario)
    return root


def test_layout_is_one_file_per_operation_and_identifier(run_dir, scenario):
    expected = [
        ("stepfunctions", "describe_execution", scenario.execution_name),
        ("stepfunctions", "get_execution_history", scenario.execution_name),
        ("stepfunctions", "list_executions", "imgclf-train-deploy"),
        ("sagemaker", "describe_hyper_parameter_tuning_job", scenario.tuning_job),
        ("sagemaker", "list_training_jobs_for_hyper_parameter_tuning_job", scenario.tuning_job),
        ("sagemaker", "describe_endpoint", scenario.endpoint),
        ("cloudformation", "describe_stacks", STACK),
        *[("sagemaker", "describe_training_job", name) for name in scenario.job_names],
    ]
    for service, method, identifier in expected:
        assert record_path(run_dir, service, method, identifier).is_file(), (method, identifier)
    for listing in ("list_endpoints", "list_endpoint_configs", "list_models"):
        assert record_path(run_dir, "sagemaker", listing).is_file()
    # Paginated lists are stored whole, without tokens.
    trials = json.loads(record_path(run_dir, "sagemaker", "list_training_jobs_for_hyper_parameter_tuning_job",
                                    scenario.tuning_job).read_text())
    assert len(trials["TrainingJobSummaries"]) == len(scenario.trials) and "NextToken" not in trials
    history = json.loads(record_path(run_dir, "stepfunctions", "get_execution_history",
                                     scenario.execution_name).read_text())
    assert len(history["events"]) == len(scenario.events()) and "nextToken" not in history
    # The run's S3 objects sit under s3/<bucket>/<key>.
    archive = run_dir / "s3" / BUCKET / "jobs" / scenario.final_job / "output" / "output.tar.gz"
    assert archive.read_bytes() == scenario.output_archive(scenario.final_job)
    assert (run_dir / "s3" / BUCKET / scenario.profiler_report_key).is_file()


def test_every_recorded_response_fits_botocores_output_shape(run_dir):
    assert validate_recording(run_dir) == []


def test_validation_catches_a_response_that_does_not_fit(tmp_path, run_dir, scenario):
    source = record_path(run_dir, "sagemaker", "describe_training_job", scenario.final_job)
    broken = json.loads(source.read_text())
    del broken["TrainingJobStatus"]
    broken["CreationTime"] = "not a time"
    target = record_path(tmp_path, "sagemaker", "describe_training_job", scenario.final_job)
    target.parent.mkdir(parents=True)
    target.write_text(json.dumps(broken))
    problems = validate_recording(tmp_path)
    assert len(problems) == 1 and "TrainingJobStatus" in problems[0] and "CreationTime" in problems[0]


def test_recorded_json_is_plain_json_with_iso_timestamps(run_dir, scenario):
    raw = json.loads(record_path(run_dir, "sagemaker", "describe_training_job", scenario.final_job).read_text())
    assert raw["CreationTime"] == scenario.describe_job(scenario.final_job)["CreationTime"].isoformat()
    assert "ResponseMetadata" not in raw


def test_recorded_client_answers_like_boto3(run_dir, scenario):
    sagemaker = RecordedClient(run_dir, "sagemaker")
    job = sagemaker.describe_training_job(TrainingJobName=scenario.final_job)
    assert isinstance(job["CreationTime"], dt.datetime) and job["CreationTime"].tzinfo is not None
    assert job["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert output_problems("sagemaker", "describe_training_job", job) == []
    expected = scenario.describe_job(scenario.final_job)
    assert job["DebugRuleEvaluationStatuses"][2]["RuleEvaluationStatus"] == \
        expected["DebugRuleEvaluationStatuses"][2]["RuleEvaluationStatus"] == "IssuesFound"
    assert job["TrainingStartTime"] == expected["TrainingStartTime"]


def test_recorded_lists_paginate_and_filter(run_dir, scenario):
    sagemaker = RecordedClient(run_dir, "sagemaker")
    first = sagemaker.list_training_jobs_for_hyper_parameter_tuning_job(
        HyperParameterTuningJobName=scenario.tuning_job, MaxResults=4)
    assert len(first["TrainingJobSummaries"]) == 4 and first["NextToken"]
    second = sagemaker.list_training_jobs_for_hyper_parameter_tuning_job(
        HyperParameterTuningJobName=scenario.tuning_job, MaxResults=4, NextToken=first["NextToken"])
    assert len(second["TrainingJobSummaries"]) == 2 and "NextToken" not in second
    whole = collect(sagemaker, "sagemaker", "list_training_jobs_for_hyper_parameter_tuning_job",
                    HyperParameterTuningJobName=scenario.tuning_job, MaxResults=1)
    assert sorted(t["TrainingJobName"] for t in whole["TrainingJobSummaries"]) == sorted(scenario.trial_names)
    failed = sagemaker.list_training_jobs_for_hyper_parameter_tuning_job(
        HyperParameterTuningJobName=scenario.tuning_job, StatusEquals="Failed")
    assert [t["TrainingJobName"] for t in failed["TrainingJobSummaries"]] == [scenario.trial_name(3)]
    endpoints = sagemaker.list_endpoints(NameContains="IMGCLF")  # case-insensitive, as SageMaker
    assert [e["EndpointName"] for e in endpoints["Endpoints"]] == [scenario.endpoint]
    with pytest.raises(ClientError) as info:
        sagemaker.list_endpoints(NextToken="garbage")
    assert info.value.response["Error"]["Code"] == "ValidationException"


def test_recorded_history_reverse_order(run_dir, scenario):
    stepfunctions = RecordedClient(run_dir, "stepfunctions")
    events = stepfunctions.get_execution_history(executionArn=scenario.execution_arn, reverseOrder=True)["events"]
    assert events[0]["type"] == "ExecutionSucceeded" and events[-1]["type"] == "ExecutionStarted"


@pytest.mark.parametrize(("service", "method", "params", "code"), [
    ("sagemaker", "describe_training_job", {"TrainingJobName": "nope"}, "ValidationException"),
    ("sagemaker", "describe_hyper_parameter_tuning_job", {"HyperParameterTuningJobName": "nope"}, "ResourceNotFound"),
    ("sagemaker", "describe_endpoint", {"EndpointName": "nope"}, "ValidationException"),
    ("stepfunctions", "describe_execution", {"executionArn": STATE_MACHINE.replace("stateMachine", "execution")
                                             + ":nope"}, "ExecutionDoesNotExist"),
    ("stepfunctions", "list_executions", {"stateMachineArn": STATE_MACHINE + "Other"}, "StateMachineDoesNotExist"),
    ("cloudformation", "describe_stacks", {"StackName": "Other"}, "ValidationError"),
])
def test_recorded_client_raises_awss_error_codes(run_dir, service, method, params, code):
    with pytest.raises(ClientError) as info:
        getattr(RecordedClient(run_dir, service), method)(**params)
    assert info.value.response["Error"]["Code"] == code


def test_recorded_client_validates_requests_and_refuses_unknown_calls(run_dir):
    sagemaker = RecordedClient(run_dir, "sagemaker")
    with pytest.raises(ParamValidationError):
        sagemaker.describe_training_job()
    with pytest.raises(ParamValidationError):
        sagemaker.describe_training_job(TrainingJobName="x", Bogus=1)
    with pytest.raises(AttributeError, match=r"cannot answer sagemaker\.create_training_job"):
        sagemaker.create_training_job(TrainingJobName="x")


def test_recorded_cloudwatch_answers_each_query(tmp_path, scenario):
    record(tmp_path, scenario, cloudwatch=FakeCloudWatch(scenario))
    from cli.model import metric_queries

    name = scenario.final_job
    response = RecordedClient(tmp_path, "cloudwatch").get_metric_data(
        MetricDataQueries=list(reversed(metric_queries(name))), StartTime=dt.datetime(2025, 1, 1),
        EndTime=dt.datetime(2026, 1, 1))
    by_id = {r["Id"]: r for r in response["MetricDataResults"]}
    epochs = scenario.epochs_of(scenario.final_spec)
    for query in metric_queries(name):
        metric = query["MetricStat"]["Metric"]["MetricName"]
        assert by_id[query["Id"]]["Values"] == [e[metric] for e in epochs]
    unknown = RecordedClient(tmp_path, "cloudwatch").get_metric_data(
        MetricDataQueries=metric_queries("no-such-job"), StartTime=dt.datetime(2025, 1, 1),
        EndTime=dt.datetime(2026, 1, 1))
    assert all(r["Values"] == [] for r in unknown["MetricDataResults"])  # CloudWatch: no data, not an error


def test_recording_again_merges_the_execution_list(tmp_path):
    first, second = Scenario(), Scenario(execution_name="run-0002")
    record(tmp_path, first)
    record(tmp_path, second)
    listed = RecordedClient(tmp_path, "stepfunctions").list_executions(stateMachineArn=STATE_MACHINE)["executions"]
    names = [e["name"] for e in listed]
    assert names.count("run-0001") == 1 and "run-0002" in names and "run-0000" in names


def test_clients_without_optional_methods_still_record(tmp_path, scenario):
    class Minimal:  # a stand-in that knows only the calls a run needs
        def __init__(self, inner):
            self.inner = inner

        def __getattr__(self, name):
            if name.startswith("list_endpoint") or name == "list_models":
                raise AttributeError(name)
            return getattr(self.inner, name)

    class NoList:
        def __init__(self, inner):
            self.inner = inner

        def describe_execution(self, **kw):
            return self.inner.describe_execution(**kw)

        def get_execution_history(self, **kw):
            return self.inner.get_execution_history(**kw)

    write_recording(tmp_path, sagemaker=Minimal(FakeSageMaker(scenario)),
                    stepfunctions=NoList(FakeStepFunctions(scenario)), execution_arn=scenario.execution_arn)
    assert validate_recording(tmp_path) == []
    listed = RecordedClient(tmp_path, "stepfunctions").list_executions(stateMachineArn=STATE_MACHINE)["executions"]
    assert [e["name"] for e in listed] == [scenario.execution_name]
    assert RecordedClient(tmp_path, "sagemaker").list_endpoints()["Endpoints"] == []


def test_stack_record_for_a_local_run(run_dir, scenario):
    stack = RecordedClient(run_dir, "cloudformation").describe_stacks(StackName=STACK)["Stacks"][0]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}
    assert outputs == {"StateMachineArn": STATE_MACHINE, "BucketName": BUCKET, "DatasetUri": f"s3://{BUCKET}/data/",
                       "EndpointName": scenario.endpoint}
    by_id = RecordedClient(run_dir, "cloudformation").describe_stacks(StackName=stack["StackId"])
    assert by_id["Stacks"][0]["StackName"] == STACK


def test_s3_copy_from_a_local_folder_and_skip_when_already_there(tmp_path, scenario):
    source = tmp_path / "local-s3"
    for (bucket, key), data in scenario.s3_objects().items():
        (source / bucket / key).parent.mkdir(parents=True, exist_ok=True)
        (source / bucket / key).write_bytes(data)
    out = tmp_path / "run"
    written = write_recording(
        out, sagemaker=FakeSageMaker(scenario), stepfunctions=FakeStepFunctions(scenario),
        execution_arn=scenario.execution_arn, s3=source)
    copied = [p for p in written if "s3" in p.parts]
    assert len(copied) == len(scenario.s3_objects())
    # A run whose S3 already is DIR/s3 copies nothing.
    again = write_recording(out, sagemaker=FakeSageMaker(scenario), stepfunctions=FakeStepFunctions(scenario),
                            execution_arn=scenario.execution_arn, s3=out / "s3")
    assert not [p for p in again if "s3" in p.parts]


def test_recorded_s3(tmp_path):
    s3 = RecordedS3(tmp_path)
    source = tmp_path / "f.bin"
    source.write_bytes(b"x" * 3000)
    seen = []
    s3.upload_file(str(source), "bucket", "a/b/f.bin", Callback=seen.append)
    assert sum(seen) == 3000
    assert s3.get_object(Bucket="bucket", Key="a/b/f.bin")["Body"].read() == b"x" * 3000
    for i in range(3):
        s3.put_object(Bucket="bucket", Key=f"a/k{i}", Body=b"y")
    listed = collect(s3, "s3", "list_objects_v2", Bucket="bucket", Prefix="a/", MaxKeys=2)["Contents"]
    assert [o["Key"] for o in listed] == ["a/b/f.bin", "a/k0", "a/k1", "a/k2"]
    assert listed[0]["ETag"] == '"' + __import__("hashlib").md5(b"x" * 3000).hexdigest() + '"'
    for call, code in ((lambda: s3.get_object(Bucket="bucket", Key="missing"), "NoSuchKey"),
                       (lambda: s3.get_object(Bucket="nobucket", Key="k"), "NoSuchBucket"),
                       (lambda: s3.head_object(Bucket="bucket", Key="missing"), "404"),
                       (lambda: s3.get_object(Bucket="bucket", Key="../escape"), "InvalidArgument")):
        with pytest.raises(ClientError) as info:
            call()
        assert info.value.response["Error"]["Code"] == code


def test_recorded_deletes_remove_from_the_recording(tmp_path, scenario):
    record(tmp_path, scenario)
    sagemaker = RecordedClient(tmp_path, "sagemaker")
    sagemaker.delete_endpoint(EndpointName=scenario.endpoint)
    assert scenario.endpoint not in [e["EndpointName"] for e in sagemaker.list_endpoints()["Endpoints"]]
    with pytest.raises(ClientError) as info:
        sagemaker.describe_endpoint(EndpointName=scenario.endpoint)
    assert info.value.response["Error"]["Code"] == "ValidationException"
    with pytest.raises(ClientError):
        sagemaker.delete_endpoint(EndpointName=scenario.endpoint)
    sagemaker.delete_model(ModelName=scenario.model)  # listed only (no describe recorded): still deletable
    assert sagemaker.list_models()["Models"] == []


def test_recording_needs_the_execution(tmp_path, scenario):
    missing = scenario.execution_arn + "x"
    with pytest.raises(ValueError, match="DescribeExecution failed"):
        write_recording(tmp_path, sagemaker=FakeSageMaker(scenario), stepfunctions=FakeStepFunctions(scenario),
                        execution_arn=missing)


def test_s3_objects_of_failed_trials_are_skipped_quietly(tmp_path, scenario):
    written = record(tmp_path, scenario)
    assert not (tmp_path / "s3" / BUCKET / "jobs" / scenario.trial_name(3)).exists()
    assert all(p.exists() for p in written)  # the fake S3 raised NoSuchKey for it; the recording went on


def test_execution_record_stands_in_for_a_finished_engine_run(tmp_path, scenario):
    """local.engine's client is gone when run_definition returns; its ExecutionResult is recorded instead."""
    from types import SimpleNamespace

    from awsshapes import jsonable
    from cli.recording.writer import ExecutionRecord

    events = jsonable(scenario.events())  # the engine renders timestamps as ISO strings
    result = SimpleNamespace(execution_arn=scenario.execution_arn, status="SUCCEEDED", events=events,
                             output={"endpoint": scenario.endpoint}, error=None, cause=None)
    stepfunctions = ExecutionRecord.from_result(result)
    write_recording(tmp_path, sagemaker=FakeSageMaker(scenario), stepfunctions=stepfunctions,
                    execution_arn=scenario.execution_arn)
    assert validate_recording(tmp_path) == []
    described = RecordedClient(tmp_path, "stepfunctions").describe_execution(executionArn=scenario.execution_arn)
    assert described["stateMachineArn"] == STATE_MACHINE and described["name"] == scenario.execution_name
    assert described["startDate"] == scenario.events()[0]["timestamp"]
    assert described["stopDate"] == scenario.events()[-1]["timestamp"]
    assert json.loads(described["output"]) == {"endpoint": scenario.endpoint}
    assert json.loads(described["input"]) == {}  # from the ExecutionStarted event
    with pytest.raises(ClientError):
        stepfunctions.describe_execution(executionArn=scenario.execution_arn + "x")


def test_profiler_report_is_looked_for_only_when_the_rule_ran(scenario):
    from cli.model import job_from

    final = scenario.describe_job(scenario.final_job)
    assert job_from(final).profiler_paths == [f"s3://{BUCKET}/jobs/{scenario.final_job}/rule-output",
                                             f"s3://{BUCKET}/profiler/{scenario.final_job}/rule-output"]
    final["ProfilerRuleConfigurations"] = [r for r in final["ProfilerRuleConfigurations"]
                                           if r["RuleConfigurationName"] != "ProfilerReport"]
    assert job_from(final).profiler_paths == []
    assert job_from(scenario.describe_job(scenario.trial_name(0))).profiler_paths == []


def test_stack_outputs_given_by_the_runner_except_a_foreign_state_machine(tmp_path, scenario):
    record(tmp_path, scenario, stack_outputs={"PredictUrl": "http://127.0.0.1:8123/predict",
                                              "StateMachineArn": STATE_MACHINE + "-from-template"})
    stack = RecordedClient(tmp_path, "cloudformation").describe_stacks(StackName=STACK)["Stacks"][0]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}
    assert outputs["PredictUrl"] == "http://127.0.0.1:8123/predict"
    assert outputs["StateMachineArn"] == STATE_MACHINE  # the one whose executions were recorded


def test_a_resource_not_there_yet_is_no_warning(tmp_path, caplog):
    """A live recording of a first run asks for the endpoint before it exists: that is expected (info), while any
    other refusal stays a warning."""
    import logging

    from cli.recording.writer import _Writer

    class Client:
        def __init__(self, message: str) -> None:
            self.message = message

        def describe_endpoint(self, **_):
            raise ClientError({"Error": {"Code": "ValidationException", "Message": self.message}}, "DescribeEndpoint")

    writer = _Writer(tmp_path)
    with caplog.at_level(logging.INFO, logger="cli.recording.writer"):
        writer.call(Client('Could not find endpoint "arn:aws:sagemaker:us-east-1:1:endpoint/e".'), "sagemaker",
                    "describe_endpoint", "e", EndpointName="e")
        writer.call(Client("Rate exceeded"), "sagemaker", "describe_endpoint", "e", EndpointName="e")
    levels = [(r.levelno, "Rate exceeded" in r.getMessage()) for r in caplog.records]
    assert levels == [(logging.INFO, False), (logging.WARNING, True)]
