"""The local SageMaker stand-in: real training subprocesses, Debugger rules, profiler, tuning and endpoints."""

from __future__ import annotations

import base64
import io
import json
import shutil
import tarfile
import time
from pathlib import Path

import pytest

import stackfacts as facts
from awsshapes import join_key, s3_uri
from local.sagemaker import LocalSageMaker, SageMakerError
from local.sagemaker.api import validate_response
from local.sagemaker.s3 import LocalS3
from ml import contract
from tests.support.local import (
    BUCKET,
    FAKE_TRAIN,
    OUTPUT_PREFIX,
    ROLE,
    keep_invoking,
    pid_alive,
    runtime_client,
    s3_data,
    sourcedir,
    tiny_dataset,
    training_request,
    tuning_request,
    wait_until,
)
from tests.support.scratch import module_scratch
from tests.support.training import in_smdebug_env

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny(digits_dir, tmp_path_factory, request) -> Path:
    return tiny_dataset(digits_dir, module_scratch(request, tmp_path_factory, "tiny"))


@pytest.fixture(scope="module")
def events() -> list[dict]:
    return []


@pytest.fixture(scope="module")
def sm(tmp_path_factory, events, request):
    with LocalSageMaker(module_scratch(request, tmp_path_factory, "sagemaker"), stop_grace_seconds=2.0,
                        endpoint_startup_timeout=120, on_event=events.append) as standin:
        yield standin
    assert not any(pid_alive(p) for p in _pids(standin)), "a child process outlived close()"


def _pids(sm: LocalSageMaker) -> list[int]:
    pids = [j._proc.pid for j in sm.training_jobs.values() if j._proc]
    pids += [b.proc.pid for e in sm.hosting.endpoints.values() for b in e.backends if b.proc]
    return pids


@pytest.fixture(scope="module")
def data(sm, tiny) -> str:
    return s3_data(sm.s3.root, tiny)


@pytest.fixture(scope="module")
def completed(sm, data) -> dict:
    """One real Debugger + profiler training job (sourcedir not staged: the stand-in falls back to ml/)."""
    rules = {"VanishingGradient": {}, "VanishingGradientStrict": {"rule_to_invoke": "VanishingGradient",
                                                                  "threshold": "1.0"},
             "LossNotDecreasing": {}, "PoorWeightInitialization": {}, "DeadRelu": {}}
    request = training_request("tiny-debug", data, debugger=True, rules=rules, profiler=True,
                               hyperparameters={contract.EPOCHS: "2"})
    sm.create_training_job(**request)
    return sm.wait_for_training_job("tiny-debug", timeout=600, rules=True)


# --- API surface -------------------------------------------------------------------------------------------------
def test_requests_are_validated_and_errors_carry_aws_codes(sm, data):
    request = training_request("bad_name!", data)
    with pytest.raises(SageMakerError) as bad:
        sm.create_training_job(**request)
    assert bad.value.code == "ValidationException" and "trainingJobName" in bad.value.message
    assert bad.value.response["Error"]["Code"] == "ValidationException"

    with pytest.raises(SageMakerError) as typed:
        sm.create_training_job(**{**training_request("typed", data), "HyperParameters": {"epochs": 1}})
    assert typed.value.code == "ValidationException"

    with pytest.raises(SageMakerError) as missing:
        sm.describe_training_job(TrainingJobName="never-created")
    assert missing.value.code == "ResourceNotFound" and missing.value.operation == "DescribeTrainingJob"

    with pytest.raises(SageMakerError) as endpoint:
        sm.describe_endpoint(EndpointName="nope")
    assert endpoint.value.code == "ValidationException" and "Could not find endpoint" in endpoint.value.message

    with pytest.raises(SageMakerError) as unknown:
        sm.call("CreateCompilationJob", {})
    assert unknown.value.code == "UnknownOperationException"


def test_s3_uri_forms(tmp_path):
    s3 = LocalS3(tmp_path)
    for uri in ("s3://bucket-1/a/b.tar.gz", "https://s3.us-west-2.amazonaws.com/bucket-1/a/b.tar.gz",
                "https://bucket-1.s3.eu-west-1.amazonaws.com/a/b.tar.gz", "https://s3.amazonaws.com/bucket-1/a/b.tar.gz"):
        assert s3.parse(uri) == ("bucket-1", "a/b.tar.gz"), uri
        assert s3.path(uri) == tmp_path.resolve() / "bucket-1" / "a" / "b.tar.gz"
    assert s3.normalise("https://s3.us-east-1.amazonaws.com/b-2/k") == "s3://b-2/k"
    for bad in ("/local/path", "https://example.com/b/k", "s3://UPPER/k", "s3://b-1/../escape"):
        with pytest.raises(SageMakerError):
            s3.parse(bad)


# --- training ----------------------------------------------------------------------------------------------------
def test_training_job_completes_with_metrics_model_and_transitions(sm, completed):
    d = completed
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    assert [t["Status"] for t in d["SecondaryStatusTransitions"]] == [
        "Starting", "Downloading", "Training", "Uploading", "Completed"]
    assert validate_response("DescribeTrainingJob", d) == []

    # FinalMetricDataList: the last value of every MetricDefinition in the job's log, as SageMaker scrapes it.
    log = sm.training_log("tiny-debug").read_text()
    expected = {name: values[-1] for name, values in contract.parse_metrics(log).items()}
    assert {m["MetricName"]: m["Value"] for m in d["FinalMetricDataList"]} == expected
    assert {contract.TEST_ACCURACY, contract.VALID_ACCURACY, contract.HEALTH_ISSUES} <= set(expected)
    # Toolkit hyperparameters configure the launcher, they never reach the script as flags.
    assert "--sagemaker_program" not in log and "does not know" not in log

    artifacts = d["ModelArtifacts"]["S3ModelArtifacts"]
    assert artifacts == s3_uri(BUCKET, facts.job_output_key(OUTPUT_PREFIX, "tiny-debug", facts.MODEL_ARCHIVE))
    with tarfile.open(sm.s3.path(artifacts)) as archive:
        names = set(archive.getnames())
    assert {contract.MODEL_WEIGHTS_FILE, contract.MODEL_CONFIG_FILE, "code/inference.py"} <= names
    assert sm.s3.path(s3_uri(BUCKET, facts.job_output_key(OUTPUT_PREFIX, "tiny-debug", facts.OUTPUT_ARCHIVE))).is_file()
    assert (sm.s3.path(f"s3://{BUCKET}/checkpoints/tiny-debug") / contract.CHECKPOINT_FILE).is_file()
    assert json.loads((sm.training_job_dir("tiny-debug") / "description.json").read_text())["TrainingJobStatus"] \
        == "Completed"
    # The instance's volume is gone with the job: the model lives on in S3 only (as on AWS), the log stays.
    job_dir = sm.training_job_dir("tiny-debug")
    assert not (job_dir / "model").exists() and not (job_dir / "output" / "data").exists()
    assert sm.training_log("tiny-debug").is_file()


def test_debug_hook_config_is_smdebugs_format(sm, completed):
    path = sm.training_job_dir("tiny-debug") / "input" / "config" / "debughookconfig.json"
    parsed = in_smdebug_env(
        "import json, sys\n"
        "from smdebug.core.json_config import collect_hook_config_params, get_include_collections, "
        "get_json_config_as_dict\n"
        "config = get_json_config_as_dict(sys.argv[1])\n"
        "print(json.dumps({'out_dir': collect_hook_config_params(config)['out_dir'], "
        "'collections': sorted(get_include_collections(config))}))", str(path))
    debug_output = sm.s3.path(f"s3://{BUCKET}/debug/tiny-debug/{facts.DEBUG_OUTPUT_DIR}")
    assert Path(parsed["out_dir"]) == debug_output
    assert {"losses", "gradients", "relu_input"} <= set(parsed["collections"])
    assert any(debug_output.glob("events/*/*.tfevents")), "the hook wrote no tensors"
    assert (debug_output / "training_job_end.ts").is_file()


def test_rule_statuses_are_reported_after_the_job(sm, completed, events):
    statuses = {s["RuleConfigurationName"]: s for s in completed["DebugRuleEvaluationStatuses"]}
    assert statuses["VanishingGradient"]["RuleEvaluationStatus"] == "NoIssuesFound"
    strict = statuses["VanishingGradientStrict"]
    assert strict["RuleEvaluationStatus"] == "IssuesFound"
    assert strict["StatusDetails"].startswith("RuleEvaluationConditionMet: Evaluation of the rule VanishingGradient")
    assert statuses["LossNotDecreasing"]["RuleEvaluationStatus"] in ("NoIssuesFound", "IssuesFound")
    assert statuses["PoorWeightInitialization"]["RuleEvaluationStatus"] in ("NoIssuesFound", "IssuesFound")
    assert statuses["DeadRelu"]["RuleEvaluationStatus"] == "Error"
    assert "not implemented locally" in statuses["DeadRelu"]["StatusDetails"]
    # Like SageMaker: the job ends first (rules InProgress), verdicts come after.
    job_events = [e for e in events if e.get("TrainingJobName") == "tiny-debug"]
    completed_at = next(i for i, e in enumerate(job_events) if e.get("TrainingJobStatus") == "Completed")
    first_rule = next(i for i, e in enumerate(job_events) if e["type"] == "DebugRuleEvaluation")
    assert completed_at < first_rule

    profiler = {s["RuleConfigurationName"]: s for s in completed["ProfilerRuleEvaluationStatuses"]}
    # Not evaluated locally: SageMaker's "Error", never a NoIssuesFound nobody checked.
    assert profiler["LowGPUUtilization"]["RuleEvaluationStatus"] == "Error"
    assert "was not evaluated" in profiler["LowGPUUtilization"]["StatusDetails"]
    assert profiler[facts.PROFILER_REPORT_RULE]["RuleEvaluationStatus"] == "NoIssuesFound"
    assert completed["ProfilingStatus"] == "Enabled"
    report = sm.profiler_report("tiny-debug")
    rule_output = join_key(OUTPUT_PREFIX, "tiny-debug", facts.RULE_OUTPUT_DIR)
    assert report == sm.s3.path(s3_uri(BUCKET, facts.profiler_report_key(rule_output)))
    verdict = sm.s3.path(s3_uri(BUCKET, join_key(rule_output, "VanishingGradientStrict", "verdict.json")))
    assert json.loads(verdict.read_text())["status"] == "IssuesFound"
    page = report.read_text()
    assert "tiny-debug" in page and page.count("data:image/png;base64,") >= 2 and "VanishingGradientStrict" in page
    system = sm.s3.path(f"s3://{BUCKET}/profiler/tiny-debug/{facts.PROFILER_OUTPUT_DIR}/system/incremental")
    samples = [json.loads(line) for f in system.iterdir() for line in f.read_text().splitlines()]
    assert samples and {"CPUUtilization", "Memory"} <= {s["Dimension"] for s in samples}


def test_crash_fails_the_job_with_the_failure_file_as_reason(sm, tiny):
    broken = sm.s3.root / BUCKET / "broken"
    shutil.copytree(tiny, broken)
    (broken / contract.VALID / "eleven").mkdir()
    shutil.copy(next((tiny / contract.VALID / "1").iterdir()), broken / contract.VALID / "eleven" / "x.png")
    sm.create_training_job(**training_request("tiny-crash", f"s3://{BUCKET}/broken"))
    d = sm.wait_for_training_job("tiny-crash", timeout=300)
    assert d["TrainingJobStatus"] == "Failed" and d["SecondaryStatus"] == "Failed"
    failure = (sm.training_job_dir("tiny-crash") / "output" / "failure").read_text()
    assert "eleven" in failure
    assert d["FailureReason"] == f"AlgorithmError: {failure.strip()}"
    assert validate_response("DescribeTrainingJob", d) == []
    assert not sm.s3.path(d["ModelArtifacts"]["S3ModelArtifacts"]).exists()  # a failed job uploads no model


def test_missing_channel_data_fails_before_training(sm, data):
    request = training_request("tiny-nodata", data)
    request["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"] = f"s3://{BUCKET}/nothing-here"
    sm.create_training_job(**request)
    d = sm.wait_for_training_job("tiny-nodata", timeout=60)
    assert d["TrainingJobStatus"] == "Failed"
    assert d["FailureReason"].startswith("ClientError: Data download failed")
    assert "Training" not in [t["Status"] for t in d["SecondaryStatusTransitions"]]


def test_max_runtime_kills_the_job(sm, data):
    request = training_request("tiny-slow", data, max_runtime=3, hyperparameters={contract.EPOCHS: "500"})
    started = time.monotonic()
    sm.create_training_job(**request)
    job = sm.training_jobs["tiny-slow"]
    pid = wait_until(lambda: job._proc and job._proc.pid)
    d = sm.wait_for_training_job("tiny-slow", timeout=120)
    elapsed = time.monotonic() - started
    assert d["TrainingJobStatus"] == "Stopped" and d["SecondaryStatus"] == "MaxRuntimeExceeded"
    assert d["SecondaryStatusTransitions"][-1]["StatusMessage"] == \
        "Training job exceeded MaxRuntimeInSeconds provided"
    assert elapsed < 3 + sm.stop_grace_seconds + 30
    assert not pid_alive(pid)


def test_stop_training_job(sm, data):
    sm.create_training_job(**training_request("tiny-stop", data, hyperparameters={contract.EPOCHS: "500"}))
    wait_until(lambda: sm.describe_training_job(TrainingJobName="tiny-stop")["SecondaryStatus"] == "Training")
    # The container contract, as the training toolkit sets it up.
    proc = wait_until(lambda: sm.training_jobs["tiny-stop"]._proc)
    env = dict(item.split("=", 1) for item in Path(f"/proc/{proc.pid}/environ").read_text().split("\0") if "=" in item)
    job_dir = sm.training_job_dir("tiny-stop")
    assert env["TRAINING_JOB_NAME"] == "tiny-stop" and env["SM_CURRENT_HOST"] == facts.TRAINING_HOST
    assert env["SM_CHANNEL_TRAIN"] == str(job_dir / "input" / "data" / contract.TRAIN)
    assert env["SM_MODEL_DIR"] == str(job_dir / "model") and env["SM_OUTPUT_DIR"] == str(job_dir / "output")
    assert json.loads(env["SM_HPS"])[contract.EPOCHS] == 500 and env["SM_HP_EPOCHS"] == "500"  # the toolkit's JSON
    assert env["OMP_WAIT_POLICY"] == "PASSIVE"  # local default for shared cores
    sm.stop_training_job(TrainingJobName="tiny-stop")
    assert sm.describe_training_job(TrainingJobName="tiny-stop")["TrainingJobStatus"] in ("Stopping", "Stopped")
    d = sm.wait_for_training_job("tiny-stop", timeout=60)
    assert (d["TrainingJobStatus"], d["SecondaryStatus"]) == ("Stopped", "Stopped")
    assert validate_response("DescribeTrainingJob", d) == []
    assert tarfile.is_tarfile(sm.s3.path(d["ModelArtifacts"]["S3ModelArtifacts"]))  # what the script had saved
    with pytest.raises(SageMakerError) as again:
        sm.stop_training_job(TrainingJobName="tiny-stop")
    assert again.value.code == "ValidationException"
    listed = sm.list_training_jobs(NameContains="tiny-stop")["TrainingJobSummaries"]
    assert [s["TrainingJobStatus"] for s in listed] == ["Stopped"]


# --- tuning ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fake_code(sm) -> str:
    return sourcedir(sm.s3.root, {"train.py": FAKE_TRAIN}, key="code/fake.tar.gz")


def test_bayesian_tuning_finds_the_optimum_region(sm, data, fake_code):
    ranges = {"ContinuousParameterRanges": [{"Name": contract.LR, "MinValue": "0.0001", "MaxValue": "1.0",
                                             "ScalingType": "Logarithmic"}],
              "CategoricalParameterRanges": [{"Name": contract.BATCH_SIZE, "Values": ["16", "32"]}]}
    sm.create_hyper_parameter_tuning_job(**tuning_request("fake-bayes", data, fake_code, "Bayesian", ranges, 12, 2))
    d = sm.wait_for_tuning_job("fake-bayes", timeout=300)
    assert validate_response("DescribeHyperParameterTuningJob", d) == []
    assert d["HyperParameterTuningJobStatus"] == "Completed"
    assert d["TrainingJobStatusCounters"]["Completed"] == 12
    assert d["ObjectiveStatusCounters"] == {"Succeeded": 12, "Pending": 0, "Failed": 0}
    summaries = sm.list_training_jobs_for_hyper_parameter_tuning_job(
        HyperParameterTuningJobName="fake-bayes", SortBy="FinalObjectiveMetricValue", MaxResults=100)
    jobs = summaries["TrainingJobSummaries"]
    assert len(jobs) == 12 and all(j["TrainingJobName"].startswith("fake-bayes-") for j in jobs)
    values = [j["FinalHyperParameterTuningJobObjectiveMetric"]["Value"] for j in jobs]
    assert values == sorted(values, reverse=True)
    best = d["BestTrainingJob"]
    assert best["FinalHyperParameterTuningJobObjectiveMetric"]["Value"] == max(values)
    assert best["TrainingJobName"] == jobs[0]["TrainingJobName"]
    lr = best["TunedHyperParameters"][contract.LR]
    assert isinstance(lr, str) and 0.0001 <= float(lr) <= 1.0
    assert best["TunedHyperParameters"][contract.BATCH_SIZE] in ("16", "32")
    # The script saw the tuned values (strings, as --name value) and the objective was scraped from its log.
    trained = sm.describe_training_job(TrainingJobName=best["TrainingJobName"])
    assert trained["HyperParameters"][contract.LR] == lr and trained["TuningJobArn"] == d["HyperParameterTuningJobArn"]
    assert trained["HyperParameters"]["_tuning_objective_metric"] == contract.OBJECTIVE_METRIC
    # TPE learns: the best of 12 is far better than the worst, near the peak at lr = 0.01.
    assert max(values) > 0.8 and max(values) - min(values) > 0.2


def test_early_stopping_stops_poor_trials(sm, data, fake_code):
    ranges = {"ContinuousParameterRanges": [{"Name": contract.LR, "MinValue": "0.0001", "MaxValue": "1.0",
                                             "ScalingType": "Logarithmic"}]}
    request = tuning_request("fake-early", data, fake_code, "Random", ranges, 8, 1,
                              static={contract.EPOCHS: "4", "sleep": "0.4"}, early_stopping="Auto")
    sm.create_hyper_parameter_tuning_job(**request)
    d = sm.wait_for_tuning_job("fake-early", timeout=300)
    assert d["HyperParameterTuningJobStatus"] == "Completed"
    counters = d["TrainingJobStatusCounters"]
    assert counters["Stopped"] >= 1 and counters["Completed"] >= 1
    assert counters["Completed"] + counters["Stopped"] == 8
    stopped = sm.list_training_jobs_for_hyper_parameter_tuning_job(
        HyperParameterTuningJobName="fake-early", StatusEquals="Stopped", MaxResults=100)["TrainingJobSummaries"]
    for summary in stopped:  # a stopped trial ran fewer epochs than it was given
        log = sm.training_log(summary["TrainingJobName"]).read_text()
        assert "epoch=4/4" not in log
        assert validate_response("DescribeTrainingJob",
                                 sm.describe_training_job(TrainingJobName=summary["TrainingJobName"])) == []
    assert d["BestTrainingJob"]["TrainingJobStatus"] == "Completed"


def test_grid_search_covers_the_grid(sm, data, fake_code):
    ranges = {"CategoricalParameterRanges": [{"Name": contract.LR, "Values": ["0.001", "0.01"]},
                                             {"Name": contract.BATCH_SIZE, "Values": ["16", "32"]}]}
    sm.create_hyper_parameter_tuning_job(**tuning_request("fake-grid", data, fake_code, "Grid", ranges, None, 2))
    d = sm.wait_for_tuning_job("fake-grid", timeout=300)
    jobs = sm.list_training_jobs_for_hyper_parameter_tuning_job(HyperParameterTuningJobName="fake-grid")
    combos = {tuple(sorted(j["TunedHyperParameters"].items())) for j in jobs["TrainingJobSummaries"]}
    assert len(combos) == 4 and d["TrainingJobStatusCounters"]["Completed"] == 4
    assert d["BestTrainingJob"]["TunedHyperParameters"][contract.LR] == "0.01"


def test_warm_start_learns_from_the_parent(sm, data, fake_code):
    """The parent's 12 results seed TPE: the child's first proposals already sit near the optimum."""
    sm.wait_for_tuning_job("fake-bayes", timeout=300)
    ranges = {"ContinuousParameterRanges": [{"Name": contract.LR, "MinValue": "0.0001", "MaxValue": "1.0",
                                             "ScalingType": "Logarithmic"}],
              "CategoricalParameterRanges": [{"Name": contract.BATCH_SIZE, "Values": ["16", "32"]}]}
    request = tuning_request("fake-warm", data, fake_code, "Bayesian", ranges, 3, 1, seed=11)
    request["WarmStartConfig"] = {"ParentHyperParameterTuningJobs": [{"HyperParameterTuningJobName": "fake-bayes"}],
                                  "WarmStartType": "IdenticalDataAndAlgorithm"}
    sm.create_hyper_parameter_tuning_job(**request)
    d = sm.wait_for_tuning_job("fake-warm", timeout=300)
    assert d["WarmStartConfig"]["ParentHyperParameterTuningJobs"][0]["HyperParameterTuningJobName"] == "fake-bayes"
    assert d["BestTrainingJob"]["FinalHyperParameterTuningJobObjectiveMetric"]["Value"] > 0.75
    request["HyperParameterTuningJobName"] = "fake-orphan"
    request["WarmStartConfig"]["ParentHyperParameterTuningJobs"][0]["HyperParameterTuningJobName"] = "never-ran"
    with pytest.raises(SageMakerError, match="not found"):
        sm.create_hyper_parameter_tuning_job(**request)


def test_hyperband_prunes_on_epochs(sm, data, fake_code):
    ranges = {"ContinuousParameterRanges": [{"Name": contract.LR, "MinValue": "0.0001", "MaxValue": "1.0",
                                             "ScalingType": "Logarithmic"}]}
    request = tuning_request("fake-band", data, fake_code, "Hyperband", ranges, 6, 2,
                              static={contract.EPOCHS: "4", "sleep": "0.2"})
    request["HyperParameterTuningJobConfig"]["StrategyConfig"] = {
        "HyperbandStrategyConfig": {"MinResource": 1, "MaxResource": 4}}
    sm.create_hyper_parameter_tuning_job(**request)
    d = sm.wait_for_tuning_job("fake-band", timeout=300)
    counters = d["TrainingJobStatusCounters"]
    assert d["HyperParameterTuningJobStatus"] == "Completed" and counters["Completed"] + counters["Stopped"] == 6


def test_tuning_fails_when_every_trial_fails(sm, data, fake_code):
    ranges = {"CategoricalParameterRanges": [{"Name": contract.LR, "Values": ["0.001", "0.01"]}]}
    request = tuning_request("fake-doomed", data, fake_code, "Grid", ranges, None, 2, static={"fail": "yes"})
    sm.create_hyper_parameter_tuning_job(**request)
    d = sm.wait_for_tuning_job("fake-doomed", timeout=120)
    assert d["HyperParameterTuningJobStatus"] == "Failed" and "BestTrainingJob" not in d
    assert d["TrainingJobStatusCounters"]["NonRetryableError"] == 2 and d["FailureReason"]


def test_tuning_job_max_runtime_stops_it(sm, data, fake_code):
    ranges = {"ContinuousParameterRanges": [{"Name": contract.LR, "MinValue": "0.001", "MaxValue": "0.1"}]}
    request = tuning_request("fake-capped", data, fake_code, "Random", ranges, 4, 2,
                              static={contract.EPOCHS: "1000", "sleep": "0.5"})
    request["HyperParameterTuningJobConfig"]["ResourceLimits"]["MaxRuntimeInSeconds"] = 3  # API minimum is 120
    started = time.monotonic()
    sm._op_CreateHyperParameterTuningJob(request)  # the operation without `call`'s request validation
    d = sm.wait_for_tuning_job("fake-capped", timeout=120)
    assert d["HyperParameterTuningJobStatus"] == "Stopped" and time.monotonic() - started < 60
    assert d["TrainingJobStatusCounters"]["Stopped"] == 2 and d["TrainingJobStatusCounters"]["InProgress"] == 0


def test_tuning_validation(sm, data, fake_code):
    ranges = {"ContinuousParameterRanges": [{"Name": contract.LR, "MinValue": "0.1", "MaxValue": "0.01"}]}
    with pytest.raises(SageMakerError) as inverted:
        sm.create_hyper_parameter_tuning_job(**tuning_request("bad-range", data, fake_code, "Random", ranges, 2, 1))
    assert inverted.value.code == "ValidationException"
    request = tuning_request("bad-metric", data, fake_code, "Random",
                              {"CategoricalParameterRanges": [{"Name": "x", "Values": ["1"]}]}, 2, 1)
    request["HyperParameterTuningJobConfig"]["HyperParameterTuningJobObjective"]["MetricName"] = "nope"
    with pytest.raises(SageMakerError, match="not defined"):
        sm.create_hyper_parameter_tuning_job(**request)


def test_tuning_with_a_crashing_trial_still_completes(sm, data):
    """Real train.py trials; lr -1 makes one crash (argparse refuses it): the tuning job completes without it."""
    ranges = {"CategoricalParameterRanges": [{"Name": contract.LR, "Values": ["0.003", "-1", "0.01"]}]}
    request = tuning_request("tiny-tune", data, f"s3://{BUCKET}/code/not-staged.tar.gz", "Grid", ranges, None, 2,
                              static={k: v for k, v in training_request("x", data)["HyperParameters"].items()
                                      if not k.startswith("sagemaker_") and k != contract.LR})
    sm.create_hyper_parameter_tuning_job(**request)
    d = sm.wait_for_tuning_job("tiny-tune", timeout=600)
    assert d["HyperParameterTuningJobStatus"] == "Completed", d.get("FailureReason")
    assert d["TrainingJobStatusCounters"] == {"Completed": 2, "InProgress": 0, "RetryableError": 0,
                                              "NonRetryableError": 1, "Stopped": 0}
    assert d["ObjectiveStatusCounters"] == {"Succeeded": 2, "Pending": 0, "Failed": 1}
    jobs = sm.list_training_jobs_for_hyper_parameter_tuning_job(HyperParameterTuningJobName="tiny-tune")
    crashed = [j for j in jobs["TrainingJobSummaries"] if j["TrainingJobStatus"] == "Failed"]
    assert len(crashed) == 1 and crashed[0]["TunedHyperParameters"] == {contract.LR: "-1"}
    assert crashed[0]["FailureReason"].startswith("AlgorithmError: ") and "lr" in crashed[0]["FailureReason"]
    assert d["BestTrainingJob"]["TunedHyperParameters"][contract.LR] in ("0.003", "0.01")
    assert sm.describe_training_job(TrainingJobName=d["BestTrainingJob"]["TrainingJobName"])["ModelArtifacts"]


# --- hosting -----------------------------------------------------------------------------------------------------
def _image(tiny: Path) -> bytes:
    return next((tiny / contract.TEST / "3").iterdir()).read_bytes()


CAPTURE = {"EnableCapture": True, "InitialSamplingPercentage": 100, "DestinationS3Uri": f"s3://{BUCKET}/capture/",
           "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
           "CaptureContentTypeHeader": {"JsonContentTypes": ["application/json"]}}


def _deploy_model(sm: LocalSageMaker, name: str, model_data: str, capture: dict | None = None) -> None:
    sm.create_model(ModelName=name, ExecutionRoleArn=ROLE,
                    PrimaryContainer={"Image": "pytorch-inference:2.6", "ModelDataUrl": model_data})
    sm.create_endpoint_config(EndpointConfigName=f"{name}-config", ProductionVariants=[
        {"VariantName": facts.VARIANT_NAME, "ModelName": name, "InitialInstanceCount": 1,
         "InstanceType": "ml.m5.large"}],
        **({"DataCaptureConfig": capture} if capture else {}))


def test_endpoint_serves_and_updates_without_downtime(sm, completed, tiny):
    model_data = completed["ModelArtifacts"]["S3ModelArtifacts"]
    _deploy_model(sm, "blue", model_data, capture=CAPTURE)
    sm.create_endpoint(EndpointName="digits", EndpointConfigName="blue-config")
    assert sm.describe_endpoint(EndpointName="digits")["EndpointStatus"] == "Creating"
    d = sm.wait_for_endpoint("digits", timeout=180)
    assert d["EndpointStatus"] == "InService", d.get("FailureReason")
    assert validate_response("DescribeEndpoint", d) == []
    runtime = runtime_client(sm)
    answer = runtime.invoke_endpoint(EndpointName="digits", Body=_image(tiny), ContentType="image/png")
    predictions = json.loads(answer["Body"].read())
    assert answer["InvokedProductionVariant"] == facts.VARIANT_NAME and predictions
    # Data capture, in SageMaker's JSON-lines format: the image as base64, the JSON answer as text.
    assert d["DataCaptureConfig"]["CaptureStatus"] == "Started"
    capture_dir = sm.s3.path(f"s3://{BUCKET}/capture/digits/{facts.VARIANT_NAME}")
    captured = wait_until(lambda: [json.loads(line) for f in capture_dir.rglob("*.jsonl")  # written after the reply
                                   for line in f.read_text().splitlines()], timeout=10)
    assert len(captured) == 1
    data = captured[0]["captureData"]
    assert data["endpointInput"]["encoding"] == "BASE64" and data["endpointInput"]["observedContentType"] == "image/png"
    assert base64.b64decode(data["endpointInput"]["data"]) == _image(tiny)
    assert data["endpointOutput"]["encoding"] == "JSON" and json.loads(data["endpointOutput"]["data"]) == predictions

    with pytest.raises(SageMakerError) as busy:
        sm.create_endpoint(EndpointName="digits", EndpointConfigName="blue-config")
    assert "Cannot create already existing endpoint" in busy.value.message

    # Blue/green: keep invoking through the update; every request must be answered.
    blue = [b.proc for b in sm.hosting.endpoints["digits"].backends]
    _deploy_model(sm, "green", model_data)
    with keep_invoking(sm, lambda client: client.invoke_endpoint(EndpointName="digits", Body=_image(tiny),
                                                                  ContentType="image/png")) as load:
        sm.update_endpoint(EndpointName="digits", EndpointConfigName="green-config")
        assert sm.describe_endpoint(EndpointName="digits")["EndpointStatus"] == "Updating"
        with pytest.raises(SageMakerError, match="Cannot update in-progress endpoint"):
            sm.update_endpoint(EndpointName="digits", EndpointConfigName="green-config")
        d = sm.wait_for_endpoint("digits", timeout=180)
        time.sleep(0.5)
    assert load.failures == [] and load.answered > 0
    assert d["EndpointStatus"] == "InService" and d["EndpointConfigName"] == "green-config"
    wait_until(lambda: all(p.poll() is not None for p in blue), timeout=30)
    assert json.loads(runtime.invoke_endpoint(EndpointName="digits", Body=_image(tiny),
                                              ContentType="image/png")["Body"].read()) == predictions
    assert [e["EndpointName"] for e in sm.list_endpoints()["Endpoints"]] == ["digits"]


def test_endpoint_that_does_not_come_up_fails(sm, tiny):
    bad = sm.s3.root / BUCKET / "bad" / "model.tar.gz"
    bad.parent.mkdir(parents=True)
    with tarfile.open(bad, "w:gz") as archive:
        info = tarfile.TarInfo("README")
        payload = b"not a model"
        info.size = len(payload)
        archive.addfile(info, io.BytesIO(payload))
    _deploy_model(sm, "broken", f"s3://{BUCKET}/bad/model.tar.gz")
    sm.create_endpoint(EndpointName="broken", EndpointConfigName="broken-config")
    d = sm.wait_for_endpoint("broken", timeout=120)
    assert d["EndpointStatus"] == "Failed" and "code/inference.py" in d["FailureReason"]
    with pytest.raises(Exception) as refused:
        runtime_client(sm).invoke_endpoint(EndpointName="broken", Body=_image(tiny), ContentType="image/png")
    assert refused.value.response["Error"]["Code"] == "ValidationError"


def test_endpoints_survive_a_restart_of_the_stand_in(completed, sm, tmp_path, tiny):
    """An endpoint exists until deleted: a new stand-in on the same folder brings it back (make demo, twice)."""
    model = sm.s3.path(completed["ModelArtifacts"]["S3ModelArtifacts"])
    with LocalSageMaker(tmp_path / "first") as first:
        (first.s3.root / BUCKET).mkdir(parents=True)
        shutil.copy(model, first.s3.root / BUCKET / "model.tar.gz")
        _deploy_model(first, "m1", f"s3://{BUCKET}/model.tar.gz")
        first.create_endpoint(EndpointName="kept", EndpointConfigName="m1-config")
        assert first.wait_for_endpoint("kept", timeout=120)["EndpointStatus"] == "InService"
        with pytest.raises(RuntimeError, match="in use"):
            LocalSageMaker(tmp_path / "first")
    with LocalSageMaker(tmp_path / "first", restore=True) as second:
        assert second.describe_endpoint(EndpointName="kept")["EndpointStatus"] == "InService"
        assert second.describe_model(ModelName="m1")["PrimaryContainer"]["ModelDataUrl"].endswith("model.tar.gz")
        answer = runtime_client(second).invoke_endpoint(EndpointName="kept", Body=_image(tiny), ContentType="image/png")
        assert json.loads(answer["Body"].read())


# --- no orphans --------------------------------------------------------------------------------------------------
ORPHAN_SCRIPT = """
import sys, time
from local.sagemaker import LocalSageMaker
from tests.support.local import FAKE_TRAIN, sourcedir, tuning_request
with LocalSageMaker(sys.argv[1]) as sm:
    code = sourcedir(sm.s3.root, {"train.py": FAKE_TRAIN})
    (sm.s3.root / "local-test-bucket" / "data").mkdir(parents=True)
    for c in ("train", "valid", "test"):
        (sm.s3.root / "local-test-bucket" / "data" / c).mkdir()
    request = tuning_request("long", "s3://local-test-bucket/data", code, "Random",
                              {"CategoricalParameterRanges": [{"Name": "lr", "Values": ["0.01"]}]}, 2, 2,
                              static={"epochs": "1000", "sleep": "1"})
    sm.create_hyper_parameter_tuning_job(**request)
    while len([j for j in sm.training_jobs.values() if j._proc]) < 2:
        time.sleep(0.1)
    print(" ".join(str(j._proc.pid) for j in sm.training_jobs.values()), flush=True)
    time.sleep(600)
"""


@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGTERM", "SIGKILL"])
def test_no_child_outlives_the_stand_in(tmp_path, signal_name):
    """Ctrl-C (atexit sweep), SIGTERM and even SIGKILL of the parent (PR_SET_PDEATHSIG) end every job process."""
    import signal
    import subprocess
    import sys

    from tests.support.local import ROOT

    parent = subprocess.Popen([sys.executable, "-c", ORPHAN_SCRIPT, str(tmp_path / "work")], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(p) for p in parent.stdout.readline().split()]
        assert len(pids) == 2 and all(pid_alive(p) for p in pids)
        parent.send_signal(getattr(signal, signal_name))
        # The property: the children end (first thing the parent does on a signal; the kernel does it on SIGKILL).
        # The parent's own exit comes after its bookkeeping, whose length depends on the machine's load: it is
        # awaited separately, with room for a busy machine (it used to be part of one 30 s budget, and flaked).
        wait_until(lambda: not any(pid_alive(p) for p in pids), timeout=180)  # a loaded machine: jobs stop slowly
        parent.wait(120)
    finally:
        parent.kill()
        parent.wait()


def test_an_account_without_debugger_refuses_debugger_jobs_at_create(tmp_path, monkeypatch, tiny):
    """Issue 11 item 1: the stand-in plays a new account (Debugger closed to new customers) on request: every
    Debugger/Profiler member is refused at CreateTrainingJob (ValidationException, no job exists after), the same
    job without them is accepted."""
    monkeypatch.setenv("LOCAL_SAGEMAKER_DEBUGGER", "unavailable")
    with LocalSageMaker(tmp_path / "sm", stop_grace_seconds=1.0) as standin:
        assert not standin.debugger_available
        data = s3_data(standin.s3.root, tiny)
        for kwargs in ({"debugger": True}, {"profiler": True}):
            request = training_request("refused", data, **kwargs)
            with pytest.raises(SageMakerError) as info:
                standin.create_training_job(**request)
            assert info.value.code == "ValidationException" and "Debugger" in info.value.message
            assert not standin.list_training_jobs()["TrainingJobSummaries"]
        plain = training_request("plain", data, hyperparameters={contract.EPOCHS: "1"})
        plain["ProfilerConfig"] = {"DisableProfiler": True}
        standin.create_training_job(**plain)
        standin.stop_training_job(TrainingJobName="plain")
    with LocalSageMaker(tmp_path / "other", debugger_available=True) as standin:
        assert standin.debugger_available
