"""The engine: moto's ASL interpreter running a tune -> train -> gate -> deploy definition against the stand-in."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from infra.definition import Resolver
from local.engine import check_definition, run_definition
from local.sagemaker import LocalSageMaker
from ml import contract
from tests.support.engine import ENDPOINT, SAGEMAKER, pipeline, run_input
from tests.support.local import (
    BUCKET,
    FAKE_TRAIN,
    keep_invoking,
    pid_alive,
    runtime_client,
    s3_data,
    sourcedir,
    tiny_dataset,
)
from tests.support.scratch import module_scratch

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sm(tmp_path_factory, request):
    with LocalSageMaker(module_scratch(request, tmp_path_factory, "engine"), stop_grace_seconds=2.0) as standin:
        yield standin


@pytest.fixture(scope="module")
def definition(sm, digits_dir, tmp_path_factory, request) -> dict:
    data = s3_data(sm.s3.root, tiny_dataset(digits_dir, module_scratch(request, tmp_path_factory, "tiny")))
    return pipeline(data, sourcedir(sm.s3.root, {"train.py": FAKE_TRAIN}, key="code/fake.tar.gz"))


def _image(sm: LocalSageMaker) -> bytes:
    return next((sm.s3.root / BUCKET / "data" / contract.TEST / "7").iterdir()).read_bytes()


@pytest.fixture(scope="module")
def first_run(sm, definition):
    events: list[dict] = []
    result = run_definition(definition, run_input("one"), sm, on_event=events.append, timeout=900)
    return result, events


def test_pipeline_runs_end_to_end_and_creates_the_endpoint(sm, first_run, tmp_path):
    result, events = first_run
    assert result.status == "SUCCEEDED", (result.error, result.cause)
    assert result.events == events and [e["id"] for e in events] == list(range(1, len(events) + 1))
    visited = [row.name for row in result.states()]
    assert visited[:3] == ["Tune", "Describe best trial", "Train"]
    assert "Create endpoint" in visited and "Update endpoint" not in visited
    find = next(row for row in result.states() if row.name == "Find endpoint")
    assert find.status == "caught"  # describeEndpoint's not-found error went through the Catch
    output = result.output
    assert output["lookup"]["Error"] == "SageMaker.SageMakerException"
    assert "Could not find endpoint" in output["lookup"]["Cause"]
    # The tuned values reached the training job; the .sync output was the final Describe* answer.
    tuning = sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName="tune-one")
    counters = tuning["TrainingJobStatusCounters"]
    assert counters["Completed"] + counters["Stopped"] == 3 and counters["Completed"] >= 1  # early stopping is on
    assert output["tuning"]["hyperparameters"] == tuning["BestTrainingJob"]["TunedHyperParameters"]
    trained = sm.describe_training_job(TrainingJobName="train-one")
    for name, value in output["tuning"]["hyperparameters"].items():
        assert trained["HyperParameters"][name] == value
    assert output["training"]["model"] == trained["ModelArtifacts"]["S3ModelArtifacts"]
    assert output["rules_state"]["statuses"] == ["NoIssuesFound", "NoIssuesFound"]
    assert sm.describe_endpoint(EndpointName=ENDPOINT)["EndpointConfigName"] == "config-one"
    answer = runtime_client(sm).invoke_endpoint(EndpointName=ENDPOINT, Body=_image(sm), ContentType="image/png")
    assert json.loads(answer["Body"].read())
    saved = json.loads(result.save(tmp_path / "history.json").read_text())
    assert saved["status"] == "SUCCEEDED" and len(saved["events"]) == len(events)


def test_second_run_updates_the_endpoint_without_downtime(sm, definition, first_run):
    assert first_run[0].succeeded
    with keep_invoking(sm, lambda client: client.invoke_endpoint(EndpointName=ENDPOINT, Body=_image(sm),
                                                                  ContentType="image/png"), pause=0.2) as load:
        result = run_definition(definition, run_input("two"), sm, timeout=900)
    assert result.status == "SUCCEEDED", (result.error, result.cause)
    visited = [row.name for row in result.states()]
    assert "Update endpoint" in visited and "Create endpoint" not in visited
    assert sm.describe_endpoint(EndpointName=ENDPOINT)["EndpointConfigName"] == "config-two"
    assert load.failures == [] and load.answered > 5


def test_gate_stops_on_rule_issues_and_leaves_the_endpoint_untouched(sm, definition, first_run):
    before = sm.describe_endpoint(EndpointName=ENDPOINT)
    strict = {"VanishingGradient": {"threshold": "1.0"}, "LossNotDecreasing": {}}
    result = run_definition(definition, run_input("gate", rules=strict), sm, timeout=900)
    assert result.status == "FAILED" and result.error == "GateRejected"
    assert result.failed_state == "Gate rejected"
    assert "Create model" not in [row.name for row in result.states()]
    after = sm.describe_endpoint(EndpointName=ENDPOINT)
    assert after["EndpointConfigName"] == before["EndpointConfigName"]
    assert after["LastModifiedTime"] == before["LastModifiedTime"]
    answer = runtime_client(sm).invoke_endpoint(EndpointName=ENDPOINT, Body=_image(sm), ContentType="image/png")
    assert json.loads(answer["Body"].read())


def test_training_over_its_time_limit_takes_the_failure_path(sm, definition, first_run):
    result = run_definition(definition, run_input("slow", max_runtime=3, static={contract.EPOCHS: "500"}), sm,
                            timeout=900)
    assert result.status == "FAILED" and result.error == "TrainingFailed"
    cause = json.loads(result.cause)  # the .sync task fails with the final DescribeTrainingJob as its cause
    assert (cause["TrainingJobStatus"], cause["SecondaryStatus"]) == ("Stopped", "MaxRuntimeExceeded")
    failed = next(e for e in result.events if e["type"] == "TaskFailed")
    assert failed["taskFailedEventDetails"]["error"] == "States.TaskFailed"
    assert failed["taskFailedEventDetails"]["resource"] == "createTrainingJob.sync"
    job = sm.training_jobs["train-slow"]
    assert not pid_alive(job._proc.pid)


def test_stopping_an_execution_stops_its_training_job(sm, definition, first_run):
    training = threading.Event()

    def watch(event: dict) -> None:
        if event.get("TrainingJobName") == "train-abort" and event.get("type") == "TrainingMetric":
            training.set()  # the script is past its first epoch: stop the execution now

    sm.add_listener(watch)
    try:
        result = run_definition(definition, run_input("abort", static={contract.EPOCHS: "500"}), sm, timeout=600,
                                stop=training)
    finally:
        sm.remove_listener(watch)
    assert result.status == "ABORTED"
    job = sm.training_jobs["train-abort"]
    assert job.wait(30)
    assert job.describe()["TrainingJobStatus"] == "Stopped"
    assert not pid_alive(job._proc.pid)


def test_template_intrinsics_resolve_to_local_names():
    template = {
        "Parameters": {"BootstrapVersion": {"Type": "String", "Default": "/cdk-bootstrap/hnb659fds/version"}},
        "Resources": {
            "Bucket": {"Type": "AWS::S3::Bucket"},
            "Role": {"Type": "AWS::IAM::Role"},
            "Machine": {"Type": "AWS::StepFunctions::StateMachine", "Properties": {
                "DefinitionString": {"Fn::Join": ["", [
                    '{"StartAt":"T","States":{"T":{"Type":"Task","Resource":"arn:',
                    {"Ref": "AWS::Partition"},
                    ':states:::sagemaker:createModel","Parameters":{"ModelName":"m","ExecutionRoleArn":"',
                    {"Fn::GetAtt": ["Role", "Arn"]},
                    '","PrimaryContainer":{"ModelDataUrl":"',
                    {"Fn::Sub": "https://s3.${AWS::Region}.${AWS::URLSuffix}/${Bucket}/model.tar.gz"},
                    '"}},"End":true}}}']]},
                "DefinitionSubstitutions": {"unused": {"Ref": "Bucket"}}}}}}
    resolver = Resolver(template, region="eu-west-1", account="123456789012", stack_name="Demo")
    task = resolver.definition()["States"]["T"]
    assert task["Resource"] == "arn:aws:states:::sagemaker:createModel"
    assert task["Parameters"]["ExecutionRoleArn"] == "arn:aws:iam::123456789012:role/Demo-Role"
    assert task["Parameters"]["PrimaryContainer"]["ModelDataUrl"] == \
        "https://s3.eu-west-1.amazonaws.com/demo-bucket/model.tar.gz"
    assert resolver.name("Bucket") == "demo-bucket"
    check_definition(resolver.definition())
    with pytest.raises(ValueError, match="waitForTaskToken"):
        check_definition({"StartAt": "T", "States": {"T": {
            "Type": "Task", "Resource": f"{SAGEMAKER}:createTrainingJob.waitForTaskToken", "End": True}}})
    with pytest.raises(ValueError, match=r"[dD]escribeEndpoint"):
        check_definition({"StartAt": "T", "States": {"T": {
            "Type": "Task", "Resource": f"{SAGEMAKER}:describeEndpoint", "End": True}}})


def test_the_synthesized_definition_parses():
    import infra

    template = infra.synth_template({"profile": "local"})
    definition = Resolver(template).definition()
    resources = {s.get("Resource") for s in definition["States"].values()}
    assert f"{SAGEMAKER}:createTrainingJob.sync" in resources
    check_definition(definition)


def test_invalid_definitions_are_refused(sm):
    with pytest.raises(ValueError, match="invalid state machine definition"):
        run_definition({"StartAt": "Nope", "States": {}}, {}, sm)
    assert Path(sm.work_dir).is_dir()
