"""The synthesized state machine, executed offline end to end (moto's ASL interpreter + the local SageMaker
stand-in + real ml/train.py subprocesses), through `make demo`'s own runner: first deploy (create), second deploy
(update, no downtime), a gate failure (endpoint untouched and still answering), and a training failure."""

from __future__ import annotations

import json
import re
import shutil
import threading

import pytest

from ml import contract
from tests.support.scratch import module_scratch

pytestmark = pytest.mark.slow

# Small but real: two quick trials of one or two epochs, so the suite stays within minutes on 2 cores.
CONTEXT = [
    "tuning.max_jobs=2", "tuning.max_parallel_jobs=2",
    'tuning.ranges={"epochs": {"min": 1, "max": 2}, "batch-size": {"values": ["64"]}, '
    '"lr": {"min": 0.001, "max": 0.002}}',
]


def _demo(out, data, capsys, *extra: str) -> tuple[int, str]:
    from local.demo import main

    args = ["--out", str(out), "--data", str(data)]
    for item in CONTEXT:
        args += ["-c", item]
    code = main([*args, *extra])
    text = capsys.readouterr().out
    return code, re.sub(r"\s+", " ", text)


def _hosting(out) -> dict:
    return json.loads((out / "sagemaker" / "hosting" / "state.json").read_text())


def _endpoint_config(out) -> str:
    state = _hosting(out)
    endpoints = state.get("endpoints", state.get("Endpoints", {}))
    (endpoint,) = endpoints.values() if isinstance(endpoints, dict) else endpoints
    return endpoint.get("EndpointConfigName") or endpoint.get("config") or json.dumps(endpoint)


@pytest.fixture(scope="module")
def out(tmp_path_factory, request):
    return module_scratch(request, tmp_path_factory, "demo")


def test_first_run_creates_the_endpoint_and_predicts(out, digits_dir, capsys):
    code, text = _demo(out, digits_dir, capsys)
    assert code == 0, text[-3000:]
    assert "▶ Create endpoint" in text and "▶ Update endpoint" not in text
    assert "prediction:" in text and "— correct" in text
    output = json.loads((out / "execution.json").read_text())["output"]
    assert output["endpoint_name"] and set(output["best_hyperparameters"]) == {
        contract.BATCH_SIZE, contract.LR, contract.EPOCHS}
    verdicts = output["rule_verdicts"]
    assert verdicts.pop("LowGPUUtilization") == "Error"  # not evaluated without a GPU: no verdict, not gated
    assert verdicts and all(v == contract.NO_ISSUES for v in verdicts.values())
    for name in ("model.tar.gz", "best-hyperparameters.json", "rule-verdicts.json", "profiler-report.html",
                 "template.json"):
        assert (out / name).is_file(), name
    from cli.recording.reader import validate_recording

    problems = validate_recording(out)
    assert all("ModelArtifacts" in p for p in problems), problems  # early-stopped trials have none


def test_second_run_updates_blue_green_without_downtime(out, digits_dir, capsys):
    before = _endpoint_config(out)
    code, text = _demo(out, digits_dir, capsys)
    assert code == 0, text[-3000:]
    assert "takes the update path" in text and "▶ Update endpoint" in text
    match = re.search(r"answered (\d+) of (\d+) requests: no downtime", text)
    assert match and int(match[1]) == int(match[2]) > 0, text[-2000:]
    assert _endpoint_config(out) != before


def test_gate_failure_leaves_the_endpoint_serving(out, digits_dir, capsys):
    before = _endpoint_config(out)
    # 1.0: the strictest legal minimum (1.01 is refused by the input checks before anything runs).
    code, text = _demo(out, digits_dir, capsys, "--input", json.dumps({"min_test_accuracy": 1.0}))
    assert code == 1
    assert "GateFailed" in text and "Gate: test accuracy too low" in text
    assert "the serving endpoint was left untouched and answers: HTTP 200" in text
    assert _endpoint_config(out) == before


def test_an_account_without_debugger_still_reaches_a_deployed_endpoint(tmp_path, digits_dir, capsys, monkeypatch):
    """Issue 11 item 1, the other way (test_first_run_creates_the_endpoint_and_predicts has Debugger): SageMaker
    refuses the Debugger job, the same job runs without it, the gate uses the script's own checks, the endpoint
    is created and answers, and the output says Debugger was unavailable and why."""
    monkeypatch.setenv("LOCAL_SAGEMAKER_DEBUGGER", "unavailable")
    out = tmp_path / "new-account"
    code, text = _demo(out, digits_dir, capsys, "-c", "tuning.max_jobs=1", "-c", "tuning.max_parallel_jobs=1")
    assert code == 0, text[-3000:]
    assert "Train without Debugger" in text and "prediction:" in text
    output = json.loads((out / "execution.json").read_text())["output"]
    assert output["debugger"]["status"] == "unavailable" and "Debugger" in output["debugger"]["reason"]
    assert output["training_job_name"].endswith("-nd") and output["rule_verdicts"] == {}


def test_training_failure_takes_the_failure_path(digits_dir, tmp_path):
    """The final training job dies (stopped from outside, as a spot reclaim or an operator would): the execution
    fails in the training state with SageMaker's description as the cause, and nothing is deployed."""
    from infra import synth_template
    from infra.definition import Resolver
    from local.engine import run_definition
    from local.sagemaker import LocalSageMaker

    context = {"profile": "local", "tuning": {"max_jobs": 1, "max_parallel_jobs": 1,
                                              "ranges": {"epochs": {"min": 1, "max": 2}}}}
    resolver = Resolver(synth_template(context))
    dataset = resolver.outputs()["DatasetUri"]
    stopped = threading.Event()
    with LocalSageMaker(tmp_path / "sm") as sm:
        def stop_final_job(event: dict) -> None:
            if (event.get("type") == "TrainingJob" and event.get("TrainingJobStatus") == "InProgress"
                    and not stopped.is_set()
                    and not sm.describe_training_job(TrainingJobName=event["TrainingJobName"]).get("TuningJobArn")):
                stopped.set()
                threading.Timer(2.0, sm.stop_training_job, kwargs={"TrainingJobName": event["TrainingJobName"]}
                                ).start()

        sm.add_listener(stop_final_job)
        for split in contract.CHANNELS:
            shutil.copytree(digits_dir / split, sm.s3.path(dataset) / split)
        result = run_definition(resolver.definition(), {}, sm)
        endpoints = sm.list_endpoints()["Endpoints"]
    assert stopped.is_set()
    assert result.status == "FAILED"
    assert result.failed_state == "Training failed", result.states()[-3:]
    assert "Stopped" in (result.cause or "")
    assert endpoints == []


def test_a_template_missing_a_needed_statement_fails_at_its_state_with_access_denied(tmp_path, digits_dir, capsys):
    """`make demo TEMPLATE=...` on a synthesized template whose state machine role lost its iam:PassRole statement:
    the run ends at the first state that passes the SageMaker role, AccessDenied naming the action, before any
    training."""
    import infra

    assembly = tmp_path / "cdk.out"
    template = infra.synth({"profile": "local"}, outdir=assembly)
    path = assembly / "ImageClassifier.template.json"
    for resource in template["Resources"].values():
        if resource["Type"] == "AWS::IAM::Policy":
            document = resource["Properties"]["PolicyDocument"]
            document["Statement"] = [s for s in document["Statement"] if s["Action"] != "iam:PassRole"]
    path.write_text(json.dumps(template))
    code, text = _demo(tmp_path / "out", digits_dir, capsys, "--template", str(path), "-c", "profile=local")
    assert code == 1, text[-2000:]
    assert "the pipeline failed in state" in text and "AccessDeniedException" in text
    assert "not authorized to perform: iam:PassRole on resource: arn:aws:iam::" in text
    history = json.loads((tmp_path / "out" / "execution.json").read_text())
    assert history["status"] == "FAILED" and not list((tmp_path / "out").glob("sagemaker/training/*/model.tar.gz"))
