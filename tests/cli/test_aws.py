"""Every verb against AWS through botocore's Stubber on real boto3 clients: the response shapes are botocore's
(the Stubber validates each one), pagination is real (several pages), and the errors are AWS's own codes."""

from __future__ import annotations

import datetime as dt
import io
import json

import pytest
from botocore.stub import ANY

import stackfacts as facts
from cli.main import main
from cli.prices import HOSTING_USD_PER_HOUR, TRAINING_USD_PER_HOUR
from cli.views import STATUS_TRIALS
from tests.support.cli import (
    API_URL,
    AWS_ENV,
    BUCKET,
    DASHBOARD_URL,
    REGION,
    STACK,
    STATE_MACHINE,
    Scenario,
    StubApi,
    Stubs,
    make_dataset,
    png_bytes,
)

PREFIX = facts.RESOURCE_PREFIX


@pytest.fixture
def scenario() -> Scenario:
    return Scenario()


@pytest.fixture
def stubs(scenario) -> Stubs:
    return Stubs(scenario)


def run(argv: list[str], stubs: Stubs, capsys) -> tuple[int, str, str]:
    code = main(argv, backend_factory=lambda args: stubs.backend())
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# --- reading an execution --------------------------------------------------------------------------------------
def test_status_of_the_newest_execution(stubs, scenario, capsys):
    stubs.expect_stack()
    stubs.expect_latest_execution()
    stubs.expect_execution()
    stubs.expect_tuning(newest=STATUS_TRIALS)
    stubs.expect_job(scenario.final_job)
    stubs.expect_endpoint()
    code, out, err = run(["status"], stubs, capsys)
    assert code == 0, err
    stubs.assert_done()
    for i in range(len(scenario.trials)):
        assert scenario.trial_name(i).removeprefix(scenario.tuning_job + "-") in out
    assert f"★ {scenario.best_name.removeprefix(scenario.tuning_job + '-')}" in out
    assert "UpdateEndpoint" in out  # the last state is on history's 2nd page
    assert "IssuesFound" in out and "InService" in out
    # Cost at the jobs' own instances and the endpoint's current instance count; the stack's dashboard linked.
    price = TRAINING_USD_PER_HOUR["ml.g4dn.xlarge"]
    trial_seconds = sum(spec.minutes * 60 for spec in scenario.trials)
    assert f"{trial_seconds} s on ml.g4dn.xlarge = ${trial_seconds * price / 3600:.4f}" in out
    final_seconds = scenario.describe_job(scenario.final_job)["BillableTimeInSeconds"]
    assert f"{final_seconds} s x 1 x ml.g4dn.xlarge at ${price}/h = ${final_seconds * price / 3600:.4f}" in out
    hourly = scenario.endpoint_instances * HOSTING_USD_PER_HOUR["ml.m5.large"]
    assert f"{scenario.endpoint_instances} x ml.m5.large = ${hourly:.4f}/hour" in out
    assert f"dashboard {DASHBOARD_URL}" in out


def test_best_by_execution_arn_needs_no_stack(stubs, scenario, capsys):
    stubs.expect_execution()
    stubs.expect_tuning(with_trials=False)
    code, out, err = run(["best", scenario.execution_arn, "--json"], stubs, capsys)
    assert code == 0, err
    stubs.assert_done()
    best = json.loads(out)
    assert best["training_job"] == scenario.best_name and best["objective"]["value"] == 0.9851


def test_best_by_execution_name(stubs, scenario, capsys):
    stubs.expect_stack()
    stubs.expect_execution()
    stubs.expect_tuning(with_trials=False)
    code, out, _ = run(["best", scenario.execution_name], stubs, capsys)
    assert code == 0 and "0.0031324" in out
    stubs.assert_done()


def expect_report(stubs: Stubs, scenario: Scenario) -> None:
    stubs.expect_stack()
    stubs.expect_execution()
    stubs.expect_tuning()
    for name in scenario.trial_names:
        stubs.expect_job(name)
        stubs.expect_output(name)
    stubs.expect_job(scenario.final_job)
    stubs.expect_output(scenario.final_job)
    prefix = f"jobs/{scenario.final_job}/rule-output/"
    report = scenario.s3_objects()[(BUCKET, scenario.profiler_report_key)]
    stubs.add("s3", "list_objects_v2", {"Contents": [{"Key": prefix + "ProfilerReport/profiler-output/x.json",
                                                      "Size": 3}], "IsTruncated": True,
                                        "NextContinuationToken": "c2"}, {"Bucket": BUCKET, "Prefix": prefix})
    stubs.add("s3", "list_objects_v2", {"Contents": [{"Key": scenario.profiler_report_key, "Size": len(report)}],
                                        "IsTruncated": False},
              {"Bucket": BUCKET, "Prefix": prefix, "ContinuationToken": "c2"})
    stubs.add("s3", "get_object", {"Body": io.BytesIO(report)}, {"Bucket": BUCKET, "Key": scenario.profiler_report_key})
    stubs.expect_endpoint()


def test_report_from_s3_outputs(stubs, scenario, tmp_path, capsys):
    expect_report(stubs, scenario)
    code, out, err = run(["report", scenario.execution_name, "--out", str(tmp_path)], stubs, capsys)
    assert code == 0, err
    stubs.assert_done()
    assert out.splitlines()[0] == str(tmp_path / "report.html")
    markdown = (tmp_path / "report.md").read_text()
    assert "per-epoch metrics from history.json" in markdown
    assert "Per-epoch metrics of the tuning trials: from history.json for #1, #2, #3, #5, #6; none for #4 (" \
        in markdown
    assert (tmp_path / "profiler-report.html").is_file()
    html = (tmp_path / "report.html").read_text()
    assert f"https://{REGION}.console.aws.amazon.com/states/home" in html  # the AWS run links to its console
    for figure in ("tuning_objective_vs_lr.png", "training_curves_final.png", "training_curves_trials.png"):
        assert (tmp_path / figure).stat().st_size > 10_000


def test_report_falls_back_to_cloudwatch(tmp_path, capsys):
    scenario = Scenario(with_history=False)  # no output.tar.gz anywhere: metrics from CloudWatch instead
    stubs = Stubs(scenario)
    expect_report(stubs, scenario)
    code, _, err = run(["report", scenario.execution_name, "--out", str(tmp_path)], stubs, capsys)
    assert code == 0, err
    stubs.assert_done()
    markdown = (tmp_path / "report.md").read_text()
    assert "per-epoch metrics from CloudWatch" in markdown
    assert "the tuning trials: from CloudWatch for #1, #2, #3, #5, #6; none for #4 (" in markdown
    assert "No health.json from the final job" in markdown
    # the test accuracy still comes from the job's FinalMetricDataList
    assert "test_accuracy 0.9812" in markdown


# --- starting, uploading, deleting -----------------------------------------------------------------------------
def test_start(stubs, capsys):
    stubs.expect_stack()
    arn = STATE_MACHINE.replace(":stateMachine:", ":execution:") + ":try-2"
    expected_input = {facts.INPUT_DATASET: f"s3://{BUCKET}/data/digits/", facts.INPUT_MAX_JOBS: 8,
                      facts.INPUT_MAX_PARALLEL_JOBS: 2, facts.INPUT_MIN_TEST_ACCURACY: 0.9, "extra": True}
    stubs.add("stepfunctions", "start_execution", {"executionArn": arn, "startDate": dt.datetime.now(dt.UTC)},
              {"stateMachineArn": STATE_MACHINE, "name": "try-2", "input": json.dumps(expected_input)})
    code, out, err = run(["start", "--dataset", f"s3://{BUCKET}/data/digits", "--max-jobs", "8", "--parallel", "2",
                          "--min-test-accuracy", "0.9", "--name", "try-2", "--input", '{"extra": true}'],
                         stubs, capsys)
    assert code == 0, err
    stubs.assert_done()
    assert out.strip() == arn
    assert f"https://{REGION}.console.aws.amazon.com/states/home?region={REGION}#/v2/executions/details/{arn}" in err


def test_start_leaves_defaults_to_the_state_machine(stubs, capsys):
    stubs.expect_stack()
    started = {"executionArn": STATE_MACHINE + ":x", "startDate": dt.datetime.now()}
    stubs.add("stepfunctions", "start_execution", started, {"stateMachineArn": STATE_MACHINE, "input": "{}"})
    code, _, err = run(["start"], stubs, capsys)
    assert code == 0, err
    stubs.assert_done()


def test_start_refuses_a_dataset_the_role_cannot_read(stubs, capsys):
    stubs.expect_stack()
    code, _, err = run(["start", "--dataset", f"s3://{BUCKET}/elsewhere/"], stubs, capsys)
    assert code == 2 and f"must be under s3://{BUCKET}/data/" in err
    stubs.assert_done()


def test_start_with_a_taken_name(stubs, capsys):
    stubs.expect_stack()
    stubs.error("stepfunctions", "start_execution", "ExecutionAlreadyExists", "Execution Already Exists")
    code, _, err = run(["start", "--name", "dup"], stubs, capsys)
    assert code == 1 and "already exists" in err and "--name" in err


def test_start_refuses_a_bad_dataset_uri(stubs, capsys):
    stubs.expect_stack()
    code, _, err = run(["start", "--dataset", "/home/me/data"], stubs, capsys)
    assert code == 1 and "not an S3 location" in err


def test_upload_data_skips_what_s3_already_holds(stubs, tmp_path, capsys):
    data = tmp_path / "ds"
    make_dataset(data, classes=("a", "b"), per_class=1)
    stubs.expect_stack()
    same = data / "train" / "a" / "0.png"
    import hashlib

    existing = [{"Key": "data/train/a/0.png", "Size": same.stat().st_size,
                 "ETag": f'"{hashlib.md5(same.read_bytes()).hexdigest()}"'},
                {"Key": "data/train/b/0.png", "Size": 1, "ETag": '"0"'}]  # stale: uploaded again
    stubs.add("s3", "list_objects_v2", {"Contents": existing[:1], "IsTruncated": True, "NextContinuationToken": "n"},
              {"Bucket": BUCKET, "Prefix": "data/"})
    stubs.add("s3", "list_objects_v2", {"Contents": existing[1:], "IsTruncated": False},
              {"Bucket": BUCKET, "Prefix": "data/", "ContinuationToken": "n"})
    for key in [f"data/{split}/{c}/0.png" for split in ("train", "valid", "test") for c in "ab"]:  # the CLI's order
        if key != "data/train/a/0.png":
            stubs.add("s3", "put_object", {"ETag": '"x"'},
                      {"Bucket": BUCKET, "Key": key, "Body": ANY, "ContentType": "image/png",
                       "ChecksumAlgorithm": ANY})
    code, out, err = run(["upload-data", str(data), "--jobs", "1"], stubs, capsys)  # one at a time: Stubber order
    assert code == 0, err
    stubs.assert_done()
    assert "5 to upload" in out and "1 unchanged" in out


def test_teardown(stubs, scenario, capsys):
    stubs.expect_stack()
    stubs.add("sagemaker", "list_endpoints", scenario.list_endpoints(), {"NameContains": PREFIX})
    stubs.add("sagemaker", "list_endpoint_configs", scenario.list_endpoint_configs(), {"NameContains": PREFIX})
    stubs.add("sagemaker", "list_models", scenario.list_models(), {"NameContains": PREFIX})
    stubs.add("sagemaker", "delete_endpoint", {}, {"EndpointName": scenario.endpoint})
    stubs.error("sagemaker", "delete_endpoint_config", "ValidationException",
                f'Could not find endpoint configuration "{scenario.endpoint_config}".',
                params={"EndpointConfigName": scenario.endpoint_config})
    stubs.error("sagemaker", "delete_model", "AccessDeniedException", "not authorized to perform DeleteModel",
                params={"ModelName": scenario.model})
    code, out, err = run(["teardown", "--yes"], stubs, capsys)
    stubs.assert_done()
    assert code == 1  # the model could not be deleted
    assert f"deleted endpoint {scenario.endpoint}" in out
    assert f"endpoint config {scenario.endpoint_config} was already gone" in out
    assert f"could not delete model {scenario.model}: access denied" in err
    assert "someone-elses-endpoint" not in out


# --- predict ---------------------------------------------------------------------------------------------------
def test_predict_signs_with_sigv4(monkeypatch, tmp_path, capsys):
    import botocore.auth
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    for key, value in AWS_ENV.items():
        monkeypatch.setenv(key, value)
    fixed = dt.datetime(2025, 3, 1, 12, 0, 0)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *a, **k: fixed)
    image = tmp_path / "x.png"
    image.write_bytes(png_bytes())
    with StubApi() as api:
        code = main(["predict", str(image), "--url", api.url + "/prod", "--auth", "iam", "--region", REGION,
                     "--api-key", "k-123"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "0.9100" in out
    received = api.received[0]
    assert received.path == "/prod/predict" and received.headers["x-api-key"] == "k-123"
    authorization = received.headers["Authorization"]
    assert authorization.startswith(f"AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20250301/{REGION}/execute-api/")
    # The signature is SigV4's for exactly these bytes and headers.
    expected = AWSRequest(method="POST", url=api.url + "/prod/predict", data=image.read_bytes(),
                          headers={"Content-Type": "image/png", "Accept": "application/json", "x-api-key": "k-123"})
    SigV4Auth(Credentials("AKIDEXAMPLE", "secret"), "execute-api", REGION).add_auth(expected)
    assert authorization == expected.headers["Authorization"]


def test_predict_signing_decision():
    from cli import predict

    assert predict.wants_signature(API_URL, "auto")
    assert not predict.wants_signature("http://127.0.0.1:8080/predict", "auto")
    assert predict.wants_signature("http://127.0.0.1:8080/predict", "iam")
    assert not predict.wants_signature(API_URL, "none")
    assert predict.signing_region(API_URL, None) == REGION
    assert predict.predict_url(API_URL, 3) == API_URL + "?top_k=3"
    assert predict.predict_url(API_URL.removesuffix("predict"), None) == API_URL
    assert predict.predict_url("http://127.0.0.1:8080/predict", None) == "http://127.0.0.1:8080/predict"


def test_predict_finds_the_api_in_the_stack(stubs, tmp_path, capsys, monkeypatch):
    import requests

    monkeypatch.delenv("IMGCLF_API_URL", raising=False)
    stubs.expect_stack()
    sent = []

    def fake_post(self, url, data, headers, timeout):  # no network: the stack's URL is a real AWS host
        sent.append((url, headers))
        raise requests.exceptions.ConnectionError("refused")

    monkeypatch.setattr(requests.Session, "post", fake_post)
    image = tmp_path / "x.png"
    image.write_bytes(png_bytes())
    code, _, err = run(["predict", str(image), "--auth", "none"], stubs, capsys)
    assert sent[0][0] == API_URL
    assert code == 1 and err.startswith("error: cannot reach") and err.count("\n") == 1


def test_predict_reports_the_apis_error(tmp_path, capsys):
    image = tmp_path / "x.png"
    image.write_bytes(png_bytes())
    payload = {"error": {"code": "unsupported_media_type", "message": "unsupported media type"}}
    with StubApi(415, payload) as api:
        code = main(["predict", str(image), "--url", api.url])
    err = capsys.readouterr().err
    assert code == 1 and "HTTP 415 unsupported_media_type: unsupported media type" in err


@pytest.mark.parametrize("content, message", [(b"", "is empty"), (b"hello", "is not an image")])
def test_predict_refuses_bad_files_before_sending(tmp_path, capsys, content, message):
    bad = tmp_path / "bad.png"
    bad.write_bytes(content)
    with StubApi() as api:
        code = main(["predict", str(bad), "--url", api.url])
    assert code == 2 and message in capsys.readouterr().err and api.received == []
    assert main(["predict", str(tmp_path / "none.png"), "--url", "http://127.0.0.1:9"]) == 2


def test_predict_unreachable_url(tmp_path, capsys):
    image = tmp_path / "x.png"
    image.write_bytes(png_bytes())
    code = main(["predict", str(image), "--url", "http://127.0.0.1:9", "--timeout", "2"])
    err = capsys.readouterr().err
    assert code == 1 and "cannot reach http://127.0.0.1:9/predict" in err and "make serve" in err


# --- errors: one line, non-zero, never a traceback --------------------------------------------------------------
def test_no_credentials(monkeypatch, capsys):
    """A real client with no credentials anywhere fails while signing, before any request leaves."""
    for key in list(__import__("os").environ):
        if key.startswith("AWS_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    code = main(["status"])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error: no AWS credentials found") and err.count("\n") == 1


def test_no_region(monkeypatch, capsys):
    for key in list(__import__("os").environ):
        if key.startswith("AWS_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")
    code = main(["best"])
    assert code == 1 and "no AWS region configured" in capsys.readouterr().err


def test_stack_not_deployed(stubs, capsys):
    stubs.error("cloudformation", "describe_stacks", "ValidationError", f"Stack with id {STACK} does not exist",
                params={"StackName": STACK})
    code, out, err = run(["status"], stubs, capsys)
    assert code == 1 and out == ""
    assert err == f"error: stack {STACK} is not deployed in {REGION} (deploy it with `npx cdk deploy`, or pass " \
                  "--stack / --region)\n"


def test_stack_rolled_back(stubs, scenario, capsys):
    stack = scenario.describe_stacks()
    stack["Stacks"][0]["StackStatus"] = "ROLLBACK_COMPLETE"
    stubs.add("cloudformation", "describe_stacks", stack)
    code, _, err = run(["best"], stubs, capsys)
    assert code == 1 and "ROLLBACK_COMPLETE" in err


def test_stack_without_the_output(stubs, scenario, capsys):
    stubs.add("cloudformation", "describe_stacks", scenario.describe_stacks({"Other": "x"}))
    code, _, err = run(["status"], stubs, capsys)
    assert code == 1 and f"has no output '{facts.OUTPUT_STATE_MACHINE}'" in err and "its outputs: Other" in err


def test_execution_not_found(stubs, scenario, capsys):
    stubs.error("stepfunctions", "describe_execution", "ExecutionDoesNotExist",
                f"Execution Does Not Exist: '{scenario.execution_arn}'")
    code, _, err = run(["status", scenario.execution_arn], stubs, capsys)
    assert code == 1 and err.startswith("error: execution not found") and scenario.execution_arn in err


def test_no_executions_yet(stubs, capsys):
    stubs.expect_stack()
    stubs.add("stepfunctions", "list_executions", {"executions": []})
    code, _, err = run(["report", "--out", "unused"], stubs, capsys)
    assert code == 1 and "has no executions yet" in err and "imgclf start" in err


def test_access_denied(stubs, scenario, capsys):
    stubs.expect_execution()
    stubs.error("sagemaker", "describe_hyper_parameter_tuning_job", "AccessDeniedException",
                "User: arn:aws:iam::1:user/x is not authorized to perform: sagemaker:DescribeHyperParameterTuningJob")
    code, _, err = run(["best", scenario.execution_arn], stubs, capsys)
    assert code == 1
    assert err.startswith("error: access denied to DescribeHyperParameterTuningJob") and "Traceback" not in err


def test_throttled(stubs, scenario, capsys):
    stubs.error("stepfunctions", "describe_execution", "ThrottlingException", "Rate exceeded")
    code, _, err = run(["status", scenario.execution_arn], stubs, capsys)
    assert code == 1 and "throttled DescribeExecution" in err


def test_expired_credentials(stubs, capsys):
    stubs.error("cloudformation", "describe_stacks", "ExpiredToken", "The security token included in the request "
                                                                     "is expired", 403)
    code, _, err = run(["status"], stubs, capsys)
    assert code == 1 and "AWS rejected the credentials (ExpiredToken)" in err


def test_an_unexpected_failure_is_still_one_line(stubs, capsys, monkeypatch):
    import cli.views

    monkeypatch.setattr(cli.views, "load_snapshot", lambda *a: 1 / 0)
    code, _, err = run(["status", "arn:aws:states:us-east-1:1:execution:sm:x"], stubs, capsys)
    assert code == 1 and "internal error (ZeroDivisionError" in err and err.count("\n") == 1


def test_teardown_after_the_stack_is_destroyed(stubs, scenario, capsys):
    """`cdk destroy` removes the stack but not what the state machine created: teardown still finds it by name."""
    stubs.error("cloudformation", "describe_stacks", "ValidationError", f"Stack with id {STACK} does not exist")
    ours = scenario.list_endpoints()["Endpoints"][:1]
    stubs.add("sagemaker", "list_endpoints", {"Endpoints": ours, "NextToken": "2"}, {"NameContains": PREFIX})
    stubs.add("sagemaker", "list_endpoints", {"Endpoints": []}, {"NameContains": PREFIX, "NextToken": "2"})
    stubs.add("sagemaker", "list_endpoint_configs", {"EndpointConfigs": []}, {"NameContains": PREFIX})
    stubs.add("sagemaker", "list_models", {"Models": []}, {"NameContains": PREFIX})
    code, out, err = run(["teardown", "--dry-run"], stubs, capsys)
    stubs.assert_done()
    assert code == 0 and "is not deployed" in err and scenario.endpoint in out and "dry run" in out


def test_status_watch_follows_until_the_end(stubs, scenario, capsys, monkeypatch):
    """--watch polls: first the tuning is running, then the execution has succeeded."""
    import cli.main

    monkeypatch.setattr(cli.main.time, "sleep", lambda s: None)
    running = scenario.describe_execution() | {"status": "RUNNING"}
    del running["stopDate"]
    stubs.add("stepfunctions", "describe_execution", running, {"executionArn": scenario.execution_arn})
    stubs.add("stepfunctions", "get_execution_history", {"events": scenario.events()[:4]},
              {"executionArn": scenario.execution_arn, "maxResults": 1000})
    tuning = scenario.describe_tuning() | {"HyperParameterTuningJobStatus": "InProgress"}
    stubs.add("sagemaker", "describe_hyper_parameter_tuning_job", tuning)
    stubs.add("sagemaker", "list_training_jobs_for_hyper_parameter_tuning_job",
              {"TrainingJobSummaries": scenario.list_trials()[:2]})
    stubs.expect_execution()
    stubs.expect_tuning(newest=STATUS_TRIALS)
    stubs.expect_job(scenario.final_job)
    stubs.expect_endpoint()
    code, out, err = run(["status", scenario.execution_arn, "--watch", "--interval", "0.01"], stubs, capsys)
    assert code == 0, err
    stubs.assert_done()
    assert "SUCCEEDED" in out and "InService" in out
