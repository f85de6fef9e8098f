"""`make demo`'s runner (local/demo.py) without training: what it refuses before starting, how it stages the
dataset, tells the story of a run, records it and prunes old runs. The end-to-end runs are in
test_pipeline_offline.py (slow)."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console

from local import demo
from local.demo import DemoError, DemoProgress, check_dataset, demo_console, prune_runs, stage_dataset
from ml import contract
from tests.support.cli import make_dataset
from tests.support.scratch import module_scratch


# --- refused before anything starts ------------------------------------------------------------------------------
def test_only_the_default_dataset_is_rendered(tmp_path, monkeypatch, capsys):
    missing = tmp_path / "typo" / "dataset"
    code = demo.main(["--data", str(missing), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().out
    assert code == 1 and "does not exist" in err and str(missing) in err
    assert not missing.exists() and not (tmp_path / "out").exists()  # nothing rendered, nothing started
    monkeypatch.setattr(demo, "DEFAULT_DATA", missing)
    check_dataset(missing)  # the default may be missing: it is rendered


def test_a_dataset_without_a_split_is_refused(tmp_path):
    make_dataset(tmp_path / "data")
    for split in ("train", "valid"):
        (tmp_path / "data" / split).rename(tmp_path / split)
    with pytest.raises(DemoError, match="has no train/, valid/ folder"):
        check_dataset(tmp_path / "data")


def test_a_busy_port_is_one_line_before_anything_starts(tmp_path, capsys):
    make_dataset(tmp_path / "data")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code = demo.main(["--data", str(tmp_path / "data"), "--out", str(tmp_path / "out"), "--serve",
                          "--port", str(port)])
    out = capsys.readouterr().out
    assert code == 1 and f"port {port} is in use" in out and out.count("\n") == 1 and "Traceback" not in out
    assert not (tmp_path / "out").exists()


# --- the dataset given is the dataset trained ----------------------------------------------------------------------
def test_staging_replaces_the_previous_dataset(tmp_path):
    target = tmp_path / "s3" / "bucket" / "data"
    make_dataset(tmp_path / "digits", classes=tuple("0123456789"))
    stage_dataset(tmp_path / "digits", target)
    make_dataset(tmp_path / "two", classes=("cat", "dog"))
    stage_dataset(tmp_path / "two", target)
    for split in ("train", "valid", "test"):
        assert sorted(p.name for p in (target / split).iterdir()) == ["cat", "dog"]
    (tmp_path / "two" / "valid" / "dog" / "0.png").unlink()  # a file deleted from the dataset is gone after
    stage_dataset(tmp_path / "two", target)
    assert sorted(p.name for p in (target / "valid" / "dog").iterdir()) == sorted(
        p.name for p in (tmp_path / "two" / "valid" / "dog").iterdir())


# --- the console -------------------------------------------------------------------------------------------------
def _stamp(offset: float = 0.0) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(time.time() + offset, dt.UTC).isoformat()


def _entered(name: str, offset: float = 0.0) -> dict:
    return {"type": "TaskStateEntered", "timestamp": _stamp(offset), "stateEnteredEventDetails": {"name": name}}


def _exited(name: str, offset: float = 0.0) -> dict:
    return {"type": "TaskStateExited", "timestamp": _stamp(offset), "stateExitedEventDetails": {"name": name}}


def _piped() -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return demo_console(buffer), buffer


def test_a_polling_loop_is_one_line_with_a_count():
    console, buffer = _piped()
    ui = DemoProgress(console)
    ui.state_event(_entered("Start tuning"))
    ui.state_event(_exited("Start tuning"))
    for _ in range(25):
        for state in ("Wait for tuning", "Describe tuning", "Tuning done?"):
            ui.state_event(_entered(state))
            ui.state_event(_exited(state))
    ui.state_event(_entered("Train final model"))
    ui.finish()
    lines = buffer.getvalue().splitlines()
    for state in ("Start tuning", "Wait for tuning", "Describe tuning", "Tuning done?", "Train final model"):
        assert sum(f"▶ {state}" in line for line in lines) == 1, state
    (loop,) = [line for line in lines if "↻" in line]
    assert "Wait for tuning → Describe tuning → Tuning done?" in loop and "24 more times" in loop
    assert lines.index(loop) < next(i for i, line in enumerate(lines) if "Train final model" in line)
    assert len(lines) < 15


def test_stand_in_events_come_after_the_state_that_caused_them():
    console, buffer = _piped()
    ui = DemoProgress(console, hold=60)
    caused_at = time.time()
    # the stand-in reports at once; the history that shows the state arrives later by polling
    ui.sagemaker_event({"type": "TuningJob", "time": caused_at + 0.01, "HyperParameterTuningJobName": "tj",
                        "HyperParameterTuningJobStatus": "Completed"})
    ui.state_event(_entered("Start tuning", offset=-1.0))
    ui.state_event(_exited("Describe tuning", offset=0.5))
    ui.finish()
    text = buffer.getvalue()
    assert text.index("▶ Start tuning") < text.index("tuning job tj: Completed")


def test_piped_output_has_no_source_column_and_no_wrapping():
    console, buffer = _piped()
    ui = DemoProgress(console)
    long_cause = "x" * 250
    ui.state_event({"type": "ExecutionFailed", "timestamp": _stamp(),
                    "executionFailedEventDetails": {"error": "States.TaskFailed", "cause": long_cause}})
    lines = buffer.getvalue().splitlines()
    assert len(lines) == 1 and long_cause in lines[0] and "demo.py" not in lines[0]


def test_updating_names_the_new_config():
    console, buffer = _piped()

    def describe_endpoint(EndpointName: str) -> dict:
        return {"EndpointName": EndpointName, "EndpointStatus": "Updating", "EndpointConfigName": "old-config",
                "PendingDeploymentSummary": {"EndpointConfigName": "new-config"}}

    ui = DemoProgress(console, describe_endpoint=describe_endpoint)
    ui.sagemaker_event({"type": "Endpoint", "EndpointName": "ep", "EndpointStatus": "Updating",
                        "EndpointConfigName": "old-config"})
    ui.finish()
    assert "old-config → new-config" in buffer.getvalue()


def test_progress_bars_name_trials_whole_and_stop_their_timers():
    console, _ = _piped()
    ui = DemoProgress(console)
    tuning = "imgclf-Tune-0a1b2c3d"
    arn = f"arn:aws:sagemaker:us-east-1:000000000000:hyper-parameter-tuning-job/{tuning.lower()}"
    for i in (1, 2):
        ui.sagemaker_event({"type": "TrainingJob", "TrainingJobName": f"{tuning}-00{i}-abcdef0{i}",
                            "TrainingJobStatus": "InProgress", "TuningJobArn": arn,
                            "HyperParameters": {"epochs": "4"}})
    ui.sagemaker_event({"type": "TrainingJob", "TrainingJobName": "imgclf-final-0a1b2c3d",
                        "TrainingJobStatus": "InProgress", "TuningJobArn": None, "HyperParameters": {}})
    ui.sagemaker_event({"type": "TrainingJob", "TrainingJobName": f"{tuning}-001-abcdef01",
                        "TrainingJobStatus": "Stopped"})
    tasks = {t.description: t for t in ui.progress.tasks}
    assert set(tasks) == {"trial 1", "trial 2", "training imgclf-final-0a1b2c3d"}
    stopped, running = tasks["trial 1"], tasks["trial 2"]
    assert stopped.stop_time is not None and running.stop_time is None
    elapsed = stopped.elapsed
    time.sleep(0.05)
    assert stopped.elapsed == elapsed  # its timer no longer runs


# --- recording and pruning -----------------------------------------------------------------------------------------
def test_an_interrupted_run_is_recorded_as_such(tmp_path, capsys):
    from cli.main import main as imgclf

    class NoSageMaker:  # the run was interrupted before any job: nothing to describe
        pass

    class Standin:
        sm = NoSageMaker()

    arn = "arn:aws:states:us-east-1:123456789012:execution:local-abc:demo-20260101-000000"
    live = demo.LiveRecording(tmp_path, NoSageMaker(), DemoProgress(Console(file=io.StringIO())), "demo-x", {})
    live.sm.s3 = type("S3", (), {"root": tmp_path / "s3"})()
    events = [{"type": "ExecutionStarted", "id": 1, "previousEventId": 0, "timestamp": _stamp(-5),
               "executionStartedEventDetails": {"input": "{}", "roleArn": "arn:aws:iam::123456789012:role/r"}},
              _entered("Check input", -4) | {"id": 2, "previousEventId": 1}]
    live.record("ABORTED", demo.aborted(events, "KeyboardInterrupt", "interrupted on this machine (Ctrl-C)"),
                arn=arn, error="KeyboardInterrupt", cause="interrupted on this machine (Ctrl-C)")
    code = imgclf(["status", "--local", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0 and "demo-20260101-000000" in out and "ABORTED" in out and "Ctrl-C" in out
    assert re.search(r"duration\s+0m (0[5-9]|[1-5]\d)s", out)  # from the start to the interrupt, not 0 s


def _recorded_run(out: Path, index: int) -> tuple[str, list[Path]]:
    """A run as the recording files it: its execution (history with a training job) and that job's files."""
    name, job = f"demo-{index}", f"imgclf-job-{index}"
    api = out / "api"
    listing = api / "stepfunctions" / "list_executions" / f"local-{index}.json"
    listing.parent.mkdir(parents=True, exist_ok=True)
    arn = f"arn:aws:states:us-east-1:123456789012:execution:local-{index}:{name}"
    listing.write_text(json.dumps({"executions": [{"executionArn": arn, "name": name, "status": "SUCCEEDED",
                                                   "startDate": f"2026-01-0{index}T00:00:00+00:00"}]}))
    history = api / "stepfunctions" / "get_execution_history" / f"{name}.json"
    history.parent.mkdir(parents=True, exist_ok=True)
    history.write_text(json.dumps({"events": [{"type": "TaskScheduled", "taskScheduledEventDetails": {
        "resourceType": "sagemaker", "resource": "createTrainingJob.sync",
        "parameters": json.dumps({"TrainingJobName": job})}}]}))
    described = api / "sagemaker" / "describe_training_job" / f"{job}.json"
    described.parent.mkdir(parents=True, exist_ok=True)
    described.write_text(json.dumps({
        "TrainingJobName": job, "OutputDataConfig": {"S3OutputPath": "s3://bucket/training/"},
        "DebugHookConfig": {"S3OutputPath": "s3://bucket/debug"},
        "CheckpointConfig": {"S3Uri": f"s3://bucket/checkpoints/{job}/"}}))
    files = [out / "sagemaker" / "training-jobs" / job / "input" / "data.bin", out / "logs" / f"{job}.log",
             out / "s3" / "bucket" / "training" / job / "output" / "model.tar.gz",
             out / "s3" / "bucket" / "debug" / job / "debug-output" / "tensors.bin",
             out / "s3" / "bucket" / "checkpoints" / job / "checkpoint.pt"]
    for path in files:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * 1000)
    dataset = out / "s3" / "bucket" / "data" / "train"  # the job's input/data links to the dataset itself
    dataset.mkdir(parents=True, exist_ok=True)
    (dataset / "image.png").write_bytes(b"png")
    (out / "sagemaker" / "training-jobs" / job / "input" / "train").symlink_to(dataset, target_is_directory=True)
    return name, files


def test_old_runs_job_files_are_pruned_except_a_served_model(tmp_path):
    runs = [_recorded_run(tmp_path, i) for i in (1, 2, 3, 4)]
    served = runs[0][1][2]  # the endpoint still serves the oldest run's model
    pruned, freed = prune_runs(tmp_path, keep=2, protected={served})
    assert pruned == 2 and freed == 9 * 1000
    assert served.is_file()
    for _, files in runs[2:]:
        assert all(p.is_file() for p in files)
    for path in [*runs[0][1][:2], *runs[0][1][3:], *runs[1][1]]:
        assert not path.exists(), path
    assert not (tmp_path / "sagemaker" / "training-jobs" / "imgclf-job-2").exists()
    assert (tmp_path / "s3" / "bucket" / "data" / "train" / "image.png").is_file()  # links are not followed
    # the recording of old runs stays: status still shows them
    assert (tmp_path / "api" / "stepfunctions" / "get_execution_history" / "demo-1.json").is_file()
    assert prune_runs(tmp_path, keep=2, protected={served}) == (0, 0)


# --- Ctrl-C ------------------------------------------------------------------------------------------------------
def test_jsiis_exit_after_ctrl_c_prints_no_broken_pipe(tmp_path):
    """The terminal's Ctrl-C ends jsii's Node process too; its atexit stop then wrote into the dead pipe."""
    script = tmp_path / "script.py"
    script.write_text(
        "import os, signal, sys, time\n"
        "import aws_cdk  # starts jsii's Node process\n"
        "from jsii._runtime import kernel\n"
        "node = kernel.provider._process._process\n"
        "node.send_signal(signal.SIGINT); node.wait(30)\n"
        "from local.demo import _quiet_jsii_exit\n"
        "if sys.argv[1] == 'quiet':\n"
        "    _quiet_jsii_exit()\n")
    root = Path(demo.__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root)}
    loud, quiet = (subprocess.run([sys.executable, str(script), how], cwd=root, env=env, capture_output=True,
                                  text=True, timeout=300) for how in ("loud", "quiet"))
    assert "BrokenPipeError" in loud.stderr  # what a user saw (the test's premise)
    assert quiet.returncode == 0 and "Traceback" not in quiet.stderr, quiet.stderr


def test_a_caught_task_failure_keeps_the_order():
    """Find endpoint fails (none yet), the Catch goes to Create endpoint, whose stand-in event comes last."""
    console, buffer = _piped()
    ui = DemoProgress(console, hold=60)
    ui.sagemaker_event({"type": "Endpoint", "time": time.time() + 0.3, "EndpointName": "ep",
                        "EndpointStatus": "Creating", "EndpointConfigName": "c1"})
    ui.state_event(_entered("Find endpoint", offset=0.0))
    ui.state_event({"type": "TaskFailed", "timestamp": _stamp(0.1),
                    "taskFailedEventDetails": {"error": "SageMaker.ValidationException", "cause": "not found"}})
    ui.state_event(_entered("Create endpoint", offset=0.2))
    ui.finish()
    text = buffer.getvalue()
    order = [text.index(s) for s in ("▶ Find endpoint", "SageMaker.ValidationException", "▶ Create endpoint",
                                     "endpoint ep: Creating")]
    assert order == sorted(order)


def test_the_live_record_finds_its_arn_during_the_run_only(tmp_path, monkeypatch):
    """The ARN is looked up from the engine's events (moto is up then), once; never after the run."""
    ui = DemoProgress(Console(file=io.StringIO()))
    live = demo.LiveRecording(tmp_path, object(), ui, "demo-x", {}, interval=3600)
    lookups = []
    monkeypatch.setattr(live, "_find_arn", lambda: lookups.append(1) or "arn:aws:states:r:1:execution:m:demo-x")
    live.state_event(_entered("Check input"))
    live.state_event(_exited("Check input"))
    assert len(lookups) == 1 and live.arn.endswith(":demo-x") and len(ui.events) == 2
    source = Path(demo.__file__).read_text()
    run_body = source[source.index("def run(args"):source.index("def _quiet_jsii_exit")]
    assert "_find_arn" not in run_body  # the interrupt path records with what it has


# --- the Makefile ------------------------------------------------------------------------------------------------
@pytest.mark.skipif(not shutil.which("make"), reason="make is not installed")
def test_make_demo_adds_no_error_130_and_never_renders_a_given_data(tmp_path):
    root = Path(demo.__file__).resolve().parent.parent
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho interrupted >&2\nexit 130\n")
    fake.chmod(0o755)
    # -o setup: the environment is taken as installed (make test has just done so)
    stopped = subprocess.run(["make", "-s", "-o", "setup", "demo", f"PY={fake}", "DATA=data/digits", "-o", "data"],
                             cwd=root, capture_output=True, text=True, timeout=60)
    assert stopped.stderr.strip() == "interrupted" and "Error" not in stopped.stderr and stopped.returncode == 0
    plan = subprocess.run(["make", "-n", "-o", "setup", "demo", f"DATA={tmp_path / 'typo'}"], cwd=root,
                          capture_output=True, text=True, timeout=60)
    assert "local.digits" not in plan.stdout and f"--data {tmp_path / 'typo'}" in plan.stdout


# --- honest verdicts --------------------------------------------------------------------------------------------
def test_a_gate_on_a_rule_that_cannot_be_evaluated_locally_is_refused_before_anything_starts(tmp_path, capsys):
    make_dataset(tmp_path / "data")
    code = demo.main(["--data", str(tmp_path / "data"), "--out", str(tmp_path / "out"),
                      "-c", 'debugger.gate_rules=["VanishingGradient", "LowGPUUtilization"]'])
    out = capsys.readouterr().out
    assert code == 1 and "debugger.gate_rules LowGPUUtilization" in out and "was not evaluated" in out
    assert out.count("\n") <= 2 and "Traceback" not in out  # one line (the console may wrap it)
    assert not (tmp_path / "out").exists()  # refused before synth, staging or training


def test_a_rule_that_cannot_be_evaluated_locally_is_no_verdict():
    from local.sagemaker.profiler import NOT_EVALUATED_STATUS, not_evaluated_locally

    assert NOT_EVALUATED_STATUS != contract.NO_ISSUES
    assert "not evaluated" in (not_evaluated_locally("LowGPUUtilization") or "")
    assert not_evaluated_locally("ProfilerReport") is None


# --- run what you deploy: --template ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def assembly(tmp_path_factory, request) -> Path:
    """A cloud assembly as `cdk synth` writes it, gating on LowGPUUtilization (which the stand-in cannot evaluate)."""
    import infra

    outdir = module_scratch(request, tmp_path_factory, "cdk.out")
    infra.synth({"profile": "local", "debugger": {"gate_rules": ["VanishingGradient", "LowGPUUtilization"]}},
                outdir=outdir)
    return outdir / "ImageClassifier.template.json"


def test_a_template_gating_on_a_rule_that_cannot_be_evaluated_is_refused(assembly, tmp_path, capsys):
    make_dataset(tmp_path / "data")
    template = json.loads(assembly.read_text())
    assert demo.gated_rules(template) == ("VanishingGradient", "LowGPUUtilization")
    code = demo.main(["--data", str(tmp_path / "data"), "--out", str(tmp_path / "out"), "--template", str(assembly),
                      "-c", "profile=local"])
    out = capsys.readouterr().out
    assert code == 1 and "debugger.gate_rules LowGPUUtilization" in out and "Traceback" not in out
    assert not (tmp_path / "out").exists()


def test_a_template_synthesized_with_other_context_or_missing_is_one_line(assembly, tmp_path, capsys):
    make_dataset(tmp_path / "data")
    for extra, message in ((["--template", str(assembly), "-c", "prefix=other"], "synthesized with prefix 'imgclf'"),
                           (["--template", str(tmp_path / "nope.template.json")], "No such file"),
                           (["--template", str(tmp_path / "data" / "train" / "0" / "0.png")], "not this app's")):
        code = demo.main(["--data", str(tmp_path / "data"), "--out", str(tmp_path / "out"), *extra])
        out = capsys.readouterr().out
        assert code == 1 and message in out and "Traceback" not in out, out
    assert not (tmp_path / "out").exists()


def test_the_template_source_bundle_is_staged_where_its_jobs_read_it(assembly, tmp_path):
    from infra.definition import Resolver
    from infra.pipeline import S
    from local.sagemaker.api import DEFAULT_ACCOUNT, DEFAULT_REGION
    from local.sagemaker.s3 import LocalS3

    resolver = Resolver(json.loads(assembly.read_text()), region=DEFAULT_REGION, account=DEFAULT_ACCOUNT)
    s3 = LocalS3(tmp_path / "s3")
    staged = demo.stage_assets(assembly, resolver, s3)
    hps = resolver.definition()["States"][S.TUNE]["Parameters"]["TrainingJobDefinition"]["StaticHyperParameters"]
    submit = hps["sagemaker_submit_directory"].strip('"')  # SageMaker passes hyperparameters as strings
    assert staged == [submit]
    assert s3.path(submit).read_bytes() == next(assembly.parent.glob("asset.*.tar.gz")).read_bytes()


def test_a_failed_jobs_reason_is_what_the_console_shows():
    """A .sync job's cause is its whole Describe* answer (FailureReason last, past any truncation); the console
    shows the reason, and for a tuning job its first failed trial's (where an S3 AccessDenied is named)."""
    denied = ("ClientError: Data download failed: channel train: An error occurred (AccessDenied) when calling the "
              "ListObjectsV2 operation: User: arn:aws:sts::1:assumed-role/r/SageMaker is not authorized to perform: "
              "s3:ListBucket on resource: arn:aws:s3:::b because no identity-based policy allows the s3:ListBucket "
              "action")
    training = json.dumps({"TrainingJobName": "j", "HyperParameters": {f"h{i}": "x" * 50 for i in range(20)},
                           "TrainingJobStatus": "Failed", "FailureReason": denied})
    assert demo.failure_reason(training, None) == denied

    class Trials:
        def list_training_jobs_for_hyper_parameter_tuning_job(self, **kwargs):
            assert kwargs == {"HyperParameterTuningJobName": "t", "StatusEquals": "Failed"}
            return {"TrainingJobSummaries": [{"TrainingJobName": "t-001", "FailureReason": denied}]}

    tuning = json.dumps({"HyperParameterTuningJobName": "t", "HyperParameterTuningJobStatus": "Failed",
                         "FailureReason": "No training job succeeded"})
    assert demo.failure_reason(tuning, Trials()) == f"No training job succeeded (trial t-001: {denied})"
    assert demo.failure_reason("GateFailed: plain text", None) == "GateFailed: plain text"
    assert demo.failure_reason(None, None) == ""
