"""Every verb against a recorded local run (--local DIR): the recording is written by write_recording over fake
clients whose responses validate against botocore's output shapes."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import stackfacts as facts
from cli import config
from cli.main import build_parser, main, untangle_local
from cli.recording.reader import RecordedClient
from cli.views import fmt_hyperparameter
from tests.support import ROOT
from tests.support.cli import BUCKET, Scenario, StubApi, make_dataset, png_bytes, record


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err



@pytest.fixture
def fresh_run(tmp_path, run_dir) -> Path:
    """A copy for verbs that change the recording (teardown, upload-data)."""
    return Path(shutil.copytree(run_dir, tmp_path / "run"))


VERBS = ("upload-data", "stage-weights", "start", "status", "best", "report", "predict", "load", "teardown")


@pytest.mark.parametrize("verb", VERBS)
def test_every_verb_has_help(verb, capsys):
    with pytest.raises(SystemExit) as info:
        main([verb, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert f"imgclf {verb}" in out and "--region" in out
    assert "--local" in out


def test_module_entry_point_runs():
    result = subprocess.run([sys.executable, "-m", "cli", "--help"], capture_output=True, text=True, timeout=60,
                            cwd=ROOT)
    assert result.returncode == 0
    assert all(verb in result.stdout for verb in VERBS)


def test_status(run_dir, scenario, capsys):
    code, out, err = run(["status", "--local", str(run_dir)], capsys)
    assert code == 0, err
    assert "SUCCEEDED" in out and scenario.execution_name in out
    for i, spec in enumerate(scenario.trials):
        assert scenario.trial_name(i).removeprefix(scenario.tuning_job + "-") in out
        assert fmt_hyperparameter(spec.lr) in out
    assert f"★ {scenario.best_name.removeprefix(scenario.tuning_job + '-')}" in out
    assert "0.9851" in out and "LossNotDecreasing" in out and "IssuesFound" in out
    assert scenario.endpoint in out and "InService" in out


def test_status_prices_a_local_run_with_the_cloud_profiles_instances(run_dir, scenario, capsys):
    from cli.cost import cloud_instances
    from cli.prices import HOSTING_USD_PER_HOUR, TRAINING_USD_PER_HOUR

    code, out, err = run(["status", "--local", str(run_dir)], capsys)
    assert code == 0, err
    cloud = cloud_instances()
    seconds = sum(spec.minutes * 60 for spec in scenario.trials)
    price = TRAINING_USD_PER_HOUR[cloud.tuning]
    assert f"trials ({len(scenario.trials)})" in out
    assert f"{seconds} s on {cloud.tuning} = ${seconds * price / 3600:.4f}" in out
    final = scenario.describe_job(scenario.final_job)["BillableTimeInSeconds"]
    assert f"{final} s x {cloud.training_count} x {cloud.training} at ${TRAINING_USD_PER_HOUR[cloud.training]}/h" in out
    hourly = scenario.endpoint_instances * HOSTING_USD_PER_HOUR[cloud.serving]
    assert f"{scenario.endpoint_instances} x {cloud.serving} = ${hourly:.4f}/hour" in out
    assert "what this run would cost on AWS" in out and "dashboard" not in out  # no dashboard runs locally


def test_status_by_name_and_watch_of_a_finished_execution(run_dir, scenario, capsys):
    code, out, _ = run(["status", scenario.execution_name, "--watch", "--local", str(run_dir)], capsys)
    assert code == 0 and scenario.final_job in out


def test_status_watch_of_a_failed_execution_exits_3(tmp_path, capsys):
    failed = Scenario(status="FAILED")
    record(tmp_path, failed)
    code, out, _ = run(["status", "--watch", "--local", str(tmp_path)], capsys)
    assert code == 3
    assert "FAILED" in out and "RulesFoundIssues" in out


def test_best_table_and_json(run_dir, scenario, capsys):
    code, out, _ = run(["best", "--local", str(run_dir)], capsys)
    best = scenario.trials[scenario.best_index]
    assert code == 0 and scenario.best_name in out and best.lr in out and "0.9851" in out
    code, out, _ = run(["best", "--json", "--local", str(run_dir)], capsys)
    data = json.loads(out)
    assert data["training_job"] == scenario.best_name
    assert data["objective"] == {"metric": "valid_accuracy", "type": "Maximize", "value": best.objective}
    assert data["hyperparameters"] == {"batch-size": best.batch_size, "lr": best.lr, "epochs": best.epochs}
    assert data["trials"] == {"completed": 5, "total": 6}


def test_report(run_dir, scenario, tmp_path, capsys):
    out_dir = tmp_path / "report"
    code, out, err = run(["report", "--local", str(run_dir), "--out", str(out_dir)], capsys)
    assert code == 0, err
    assert str(out_dir / "report.html") in out
    markdown = (out_dir / "report.md").read_text()
    assert scenario.best_name in markdown and "★ best" in markdown
    assert (out_dir / "profiler-report.html").read_bytes() == scenario.s3_objects()[
        (BUCKET, scenario.profiler_report_key)]


def test_execution_not_found(run_dir, capsys):
    code, out, err = run(["status", "run-9999", "--local", str(run_dir)], capsys)
    assert code == 1 and out == ""
    assert err.startswith("error: execution not found") and err.count("\n") == 1


def test_missing_local_run(tmp_path, capsys):
    code, _, err = run(["best", "--local", str(tmp_path / "nothing")], capsys)
    assert code == 1 and "no local run in" in err and "make demo" in err and "Traceback" not in err


def test_local_run_without_an_execution(tmp_path, capsys):
    (tmp_path / "api").mkdir()
    code, _, err = run(["status", "--local", str(tmp_path)], capsys)
    assert code == 1 and "is not deployed" in err and "make demo" in err


def test_start_says_to_use_make_demo(run_dir, capsys):
    code, _, err = run(["start", "--local", str(run_dir)], capsys)
    assert code == 2 and "make demo" in err


def test_teardown_lists_then_deletes(fresh_run, scenario, capsys):
    code, out, _ = run(["teardown", "--local", str(fresh_run)], capsys)  # stdin is not a terminal: no prompt
    assert code == 0 and "nothing deleted" in out
    for name in (scenario.endpoint, scenario.endpoint_config, scenario.model):
        assert name in out
    assert "someone-elses-endpoint" not in out
    code, out, _ = run(["teardown", "--dry-run", "--local", str(fresh_run)], capsys)
    assert code == 0 and "dry run" in out
    code, out, err = run(["teardown", "--yes", "--local", str(fresh_run)], capsys)
    assert code == 0, err
    assert f"deleted endpoint {scenario.endpoint}" in out and f"deleted model {scenario.model}" in out
    sagemaker = RecordedClient(fresh_run, "sagemaker")
    assert [e["EndpointName"] for e in sagemaker.list_endpoints()["Endpoints"]] == ["someone-elses-endpoint"]
    assert sagemaker.list_endpoint_configs()["EndpointConfigs"] == [] and sagemaker.list_models()["Models"] == []
    code, out, _ = run(["teardown", "--yes", "--local", str(fresh_run)], capsys)
    assert code == 0 and "nothing to delete" in out


def test_upload_data_syncs_into_the_run_folder(fresh_run, tmp_path, capsys):
    data = tmp_path / "digits"
    make_dataset(data)
    code, out, err = run(["upload-data", str(data), "--local", str(fresh_run)], capsys)
    assert code == 0, err
    assert "18 to upload" in out and f"s3://{BUCKET}/data/" in out
    uploaded = fresh_run / "s3" / BUCKET / "data" / "valid" / "2" / "1.png"
    assert uploaded.read_bytes() == (data / "valid" / "2" / "1.png").read_bytes()
    (data / "test" / "0" / "0.png").write_bytes(png_bytes(9))  # changed: uploaded again, the rest is unchanged
    code, out, _ = run(["upload-data", str(data), "--prefix", "data", "--local", str(fresh_run)], capsys)
    assert code == 0 and "1 to upload" in out and "17 unchanged" in out
    assert (fresh_run / "s3" / BUCKET / "data" / "test" / "0" / "0.png").read_bytes() == png_bytes(9)


def test_upload_data_refuses_a_bad_layout(fresh_run, tmp_path, capsys):
    data = tmp_path / "bad"
    make_dataset(data)
    shutil.rmtree(data / "test")
    for f in (data / "train" / "1").iterdir():
        f.unlink()
    (data / "valid" / "0" / "notes.txt").write_text("hello")
    (data / "valid" / "9").mkdir()
    (data / "valid" / "9" / "x.png").write_bytes(png_bytes())
    code, out, err = run(["upload-data", str(data), "--local", str(fresh_run)], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1
    for problem in ("missing split: test/", "empty class: train/1/", "notes.txt", "valid/ has classes that train/"):
        assert problem in err
    assert not (fresh_run / "s3" / BUCKET / "data").exists()


def test_upload_data_missing_folder(fresh_run, tmp_path, capsys):
    code, _, err = run(["upload-data", str(tmp_path / "none"), "--local", str(fresh_run)], capsys)
    assert code == 2 and "is not a folder" in err


def test_predict_against_a_local_api(run_dir, capsys, tmp_path):
    image = tmp_path / "three.png"
    image.write_bytes(png_bytes())
    with StubApi() as api:
        code, out, err = run(["predict", str(image), "--url", api.url, "--top-k", "2", "--local", str(run_dir)],
                             capsys)
    assert code == 0, err
    assert "3" in out and "0.9100" in out
    request = api.received[0]
    assert request.path == "/predict?top_k=2"
    assert request.headers["Content-Type"] == "image/png" and request.body == image.read_bytes()
    assert "Authorization" not in request.headers  # never signed for a local server


def test_predict_uses_the_runs_recorded_api_url(tmp_path, scenario, capsys):
    image = tmp_path / "img.png"
    image.write_bytes(png_bytes())
    with StubApi() as api:
        record(tmp_path / "run", scenario, stack_outputs={facts.OUTPUT_API_URL: api.url})
        code, out, err = run(["predict", "--local", str(tmp_path / "run"), str(image), "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)[0]["predictions"][0] == {"label": "3", "score": 0.91}


def test_local_flag_does_not_swallow_the_positional():
    assert untangle_local(["status", "--local", "run-7"]) == ["status", f"--local={config.DEFAULT_LOCAL_DIR}",
                                                                "run-7"]
    assert untangle_local(["teardown", "--local", "x"]) == ["teardown", "--local", "x"]
    args = build_parser().parse_args(untangle_local(["predict", "--local", "a.png", "b.png"]))
    assert args.local == config.DEFAULT_LOCAL_DIR and args.images == ["a.png", "b.png"]


# --- tampered recordings (issue 12, item 18) ----------------------------------------------------------------------
def test_recorded_s3_keys_stay_inside_the_bucket_folder(tmp_path):
    from botocore.exceptions import ClientError

    from cli.recording.reader import RecordedS3

    planted = tmp_path / "planted.txt"
    planted.write_text("secret")
    (tmp_path / "s3" / "bucket").mkdir(parents=True)
    (tmp_path / "s3" / "bucket" / "link").symlink_to(planted)
    s3 = RecordedS3(tmp_path / "s3")
    # An S3 URL's key that begins with '/' joined as an absolute path: s3://bucket//tmp/.../planted.txt.
    for key in (str(planted), f"/{planted}", "link", "../../planted.txt", "a/../../../planted.txt"):
        with pytest.raises(ClientError) as info:
            s3.get_object(Bucket="bucket", Key=key)
        assert info.value.response["Error"]["Code"] in ("InvalidArgument", "NoSuchKey"), key


@pytest.mark.parametrize("damage", ["truncated", "not-json", "a-list", "wrong-shape"])
def test_a_damaged_recording_is_one_line_naming_the_file(fresh_run, scenario, capsys, damage):
    from cli.recording.reader import record_path

    path = record_path(fresh_run, "stepfunctions", "describe_execution", scenario.execution_name)
    text = path.read_text()
    path.write_text({"truncated": text[: len(text) // 2], "not-json": "\x00\x01garbage", "a-list": "[1, 2]",
                     "wrong-shape": json.dumps({**json.loads(text), "status": 7, "startDate": "yesterday"})}[damage])
    code, _, err = run(["status", scenario.execution_name, "--local", str(fresh_run)], capsys)
    assert code == 1 and err.count("\n") == 1, err
    assert str(path) in err and "internal error" not in err and "Traceback" not in err


def test_a_tampered_job_record_is_named(fresh_run, scenario, capsys):
    from cli.recording.reader import record_path

    path = record_path(fresh_run, "sagemaker", "describe_training_job", scenario.final_job)
    job = json.loads(path.read_text())
    del job["TrainingJobName"], job["AlgorithmSpecification"]
    path.write_text(json.dumps(job))
    code, _, err = run(["status", "--local", str(fresh_run)], capsys)
    assert code == 1 and str(path) in err and "internal error" not in err, err


def test_copied_s3_keys_stay_inside_the_recording(tmp_path):
    import io

    from botocore.response import StreamingBody

    from cli.recording.writer import _copy_objects

    class HostileS3:
        keys = ("out/ok.bin", "out/../../../escaped.bin", f"out/{tmp_path}/abs.bin")

        def list_objects_v2(self, **params):
            return {"Contents": [{"Key": k} for k in self.keys], "IsTruncated": False}

        def get_object(self, Bucket, Key):
            return {"Body": StreamingBody(io.BytesIO(b"x"), 1)}

    root = tmp_path / "run"
    copied = _copy_objects(HostileS3(), root, [("bucket", "out/", True), ("bucket", "/" + str(tmp_path / "a"), False)])
    assert all(p.resolve().is_relative_to(root.resolve()) for p in copied), copied
    assert not (tmp_path / "escaped.bin").exists() and not (tmp_path / "a").exists()
    assert (root / "s3" / "bucket" / "out" / "ok.bin").read_bytes() == b"x"


# --- issue 12 ----------------------------------------------------------------------------------------------------
def test_a_missing_local_dir_never_falls_back_to_demo_output(tmp_path, run_dir, monkeypatch, capsys):
    """`make demo` then `make test`: with demo-output/ present, a missing --local DIR is still an error."""
    monkeypatch.chdir(tmp_path)
    shutil.copytree(run_dir, tmp_path / config.DEFAULT_LOCAL_DIR)
    for verb in ("best", "status", "report"):
        extra = ["--out", str(tmp_path / "r")] if verb == "report" else []
        code, _, err = run([verb, "--local", str(tmp_path / "nothing"), *extra], capsys)
        assert code == 1 and "no local run in" in err and str(tmp_path / "nothing") in err, (verb, err)
    assert untangle_local(["best", "--local", "runs/missing"]) == ["best", "--local", "runs/missing"]
    assert untangle_local(["predict", "--local", "missing.png"])[1] == f"--local={config.DEFAULT_LOCAL_DIR}"


def test_imgclf_alone_lists_the_verbs(capsys):
    code, out, _ = run([], capsys)
    assert code == 2 and all(verb in out for verb in VERBS)


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.startswith("imgclf ")


@pytest.mark.parametrize("verb", VERBS)
def test_help_has_no_placeholders(verb, capsys):
    with pytest.raises(SystemExit):
        main([verb, "--help"])
    out = capsys.readouterr().out
    assert "{config" not in out and not re.search(r"\{[A-Za-z_.]+\}", out)  # no f-string that lost its f


def test_local_predict_skips_a_stopped_recorded_api(tmp_path, scenario, monkeypatch, capsys):
    """The run's API has stopped (nothing on its port): the API that `make serve` runs answers instead."""
    import socket

    with socket.socket() as dead, socket.socket() as other:  # ports bound once and free now
        dead.bind(("127.0.0.1", 0))
        other.bind(("127.0.0.1", 0))
        stopped, nothing = (f"http://127.0.0.1:{s.getsockname()[1]}" for s in (dead, other))
    image = tmp_path / "img.png"
    image.write_bytes(png_bytes())
    record(tmp_path / "run", scenario, stack_outputs={facts.OUTPUT_API_URL: stopped})
    with StubApi() as api:
        monkeypatch.setattr(config, "LOCAL_API_URL", api.url)
        code, out, err = run(["predict", "--local", str(tmp_path / "run"), str(image), "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)[0]["predictions"][0]["label"] == "3"
    monkeypatch.setattr(config, "LOCAL_API_URL", nothing)  # neither listens: one line naming both
    code, _, err = run(["predict", "--local", str(tmp_path / "run"), str(image)], capsys)
    assert code == 1 and err.count("\n") == 1 and stopped in err and "make demo SERVE=1" in err


def _without_tuning_job(fresh_run: Path) -> None:
    """The execution scheduled its tuning job, then failed before SageMaker created it."""
    for method in ("describe_hyper_parameter_tuning_job", "list_training_jobs_for_hyper_parameter_tuning_job"):
        shutil.rmtree(fresh_run / "api" / "sagemaker" / method)
    for path in (fresh_run / "api" / "stepfunctions" / "describe_execution").glob("*.json"):
        described = json.loads(path.read_text())
        described.update(status="FAILED", error="SageMaker.ResourceLimitExceeded", cause="no quota for ml.m5.large")
        described.pop("output", None)
        path.write_text(json.dumps(described))


def test_best_and_report_of_an_execution_that_failed_before_tuning(fresh_run, tmp_path, capsys):
    _without_tuning_job(fresh_run)
    code, _, err = run(["best", "--local", str(fresh_run)], capsys)
    assert code == 1 and err.count("\n") == 1 and "ResourceNotFound" not in err
    assert "FAILED" in err and "no quota for ml.m5.large" in err
    code, _, err = run(["report", "--local", str(fresh_run), "--out", str(tmp_path / "report")], capsys)
    assert code == 0, err
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "FAILED" in markdown and "no quota for ml.m5.large" in markdown


def _with_many_trials(run_dir: Path, scenario: Scenario, n: int) -> None:
    """The recording's tuning job grown to n trials (the scenario's, repeated under new names)."""
    api = run_dir / "api" / "sagemaker"
    listing = api / "list_training_jobs_for_hyper_parameter_tuning_job" / f"{scenario.tuning_job}.json"
    base = json.loads(listing.read_text())["TrainingJobSummaries"]
    trials = []
    for i in range(n):
        item = dict(base[i % len(base)])
        item["TrainingJobName"] = f"{scenario.tuning_job}-{i + 1:05d}-{i:08x}"
        item["CreationTime"] = f"2026-01-01T{i // 3600 % 24:02d}:{i // 60 % 60:02d}:{i % 60:02d}+00:00"
        trials.append(item)
    listing.write_text(json.dumps({"TrainingJobSummaries": trials}))
    described_path = api / "describe_hyper_parameter_tuning_job" / f"{scenario.tuning_job}.json"
    described = json.loads(described_path.read_text())
    described["TrainingJobStatusCounters"] = {"Completed": n, "InProgress": 0, "RetryableError": 0,
                                              "NonRetryableError": 0, "Stopped": 0}
    described["HyperParameterTuningJobConfig"]["ResourceLimits"]["MaxNumberOfTrainingJobs"] = n
    described_path.write_text(json.dumps(described))


def test_status_reads_scale_with_what_it_shows(fresh_run, scenario, monkeypatch, capsys):
    """10,000 trials: one list call for the newest few (and the best from the describe), not 100 pages."""
    from cli.views import STATUS_TRIALS

    _with_many_trials(fresh_run, scenario, 10_000)
    calls: list[str] = []
    original = RecordedClient._call
    monkeypatch.setattr(RecordedClient, "_call", lambda self, method, params: calls.append(method) or
                        original(self, method, params))
    code, out, err = run(["status", "--local", str(fresh_run)], capsys)
    assert code == 0, err
    assert calls.count("list_training_jobs_for_hyper_parameter_tuning_job") == 1 and len(calls) < 12
    assert f"showing the newest {STATUS_TRIALS + 1} of 10000" in out  # the newest 20 and the best
    assert "10000-0000270f" in out and "★ 003-000abc02" in out


def test_status_fits_80_columns(run_dir, scenario, monkeypatch, capsys):
    """One line per trial at 80 columns: no repeated job-name prefix, no 20-digit learning rates."""
    import cli.views

    monkeypatch.setattr(cli.views, "console", lambda stderr=False: cli.views.Console(width=80, file=sys.stdout))
    code, out, err = run(["status", "--local", str(run_dir)], capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert all(len(line) <= 80 for line in lines)
    for i, spec in enumerate(scenario.trials):
        short = scenario.trial_name(i).removeprefix(scenario.tuning_job + "-")
        (row,) = [line for line in lines if short in line]
        assert fmt_hyperparameter(spec.lr) in row and spec.batch_size in row
