"""smdebug lives only where SageMaker has it: in its own environment (.venv-smdebug: ml/debugger-requirements.txt
over the main environment's torch), which local mode uses for Debugger-on training jobs and for the rule jobs. The main
environment moves on (current protobuf and numpy); without the smdebug environment a Debugger-on job fails at once,
in one line, before any training."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import time

import pytest
from packaging.version import Version

from local.sagemaker import LocalSageMaker
from local.sagemaker.rule_jobs import SMDEBUG_PYTHON_ENV
from tests.support.local import s3_data, tiny_dataset, training_request
from tests.support.training import in_smdebug_env


def test_the_main_environment_has_no_smdebug_and_current_protobuf_and_numpy():
    assert importlib.util.find_spec("smdebug") is None
    assert Version(importlib.metadata.version("protobuf")) >= Version("4.25.8")  # past CVE-2025-4565's range
    assert Version(importlib.metadata.version("numpy")) >= Version("2.3")


def test_the_smdebug_environment_has_smdebug_its_pins_and_the_main_torch():
    found = in_smdebug_env(
        "import json, numpy, google.protobuf, torch, smdebug.pytorch, smdebug.trials\n"
        "print(json.dumps([numpy.__version__, google.protobuf.__version__, torch.__file__]))")
    numpy_version, protobuf_version, torch_file = found
    assert Version(numpy_version) < Version("2.3") and Version(protobuf_version) <= Version("3.20.3")
    assert ".venv-smdebug" not in torch_file  # layered over the main environment's torch, not a second copy


def test_a_debugger_job_without_the_smdebug_environment_fails_at_once(digits_dir, tmp_path, monkeypatch):
    monkeypatch.setenv(SMDEBUG_PYTHON_ENV, str(tmp_path / "no-such-venv" / "bin" / "python"))
    with LocalSageMaker(tmp_path / "sm", stop_grace_seconds=2.0) as sm:
        data = s3_data(sm.s3.root, tiny_dataset(digits_dir, tmp_path / "tiny"))
        started = time.monotonic()
        sm.create_training_job(**training_request("no-smdebug", data, debugger=True, rules={"VanishingGradient": {}}))
        described = sm.wait_for_training_job("no-smdebug", timeout=300, rules=True)
    assert described["TrainingJobStatus"] == "Failed"
    assert "make setup" in described["FailureReason"] and "\n" not in described["FailureReason"]
    assert "Traceback" not in described["FailureReason"]
    assert time.monotonic() - started < 120  # no training ran (a real epoch takes minutes here)
    (rule,) = described["DebugRuleEvaluationStatuses"]
    assert rule["RuleEvaluationStatus"] == "Error" and "make setup" in rule["StatusDetails"]


@pytest.mark.slow
def test_a_job_without_debugger_needs_no_smdebug_environment(digits_dir, tmp_path, monkeypatch):
    monkeypatch.setenv(SMDEBUG_PYTHON_ENV, str(tmp_path / "no-such-venv" / "bin" / "python"))
    with LocalSageMaker(tmp_path / "sm", stop_grace_seconds=2.0) as sm:
        data = s3_data(sm.s3.root, tiny_dataset(digits_dir, tmp_path / "tiny"))
        sm.create_training_job(**training_request("plain", data, hyperparameters={"epochs": "1"}))
        described = sm.wait_for_training_job("plain", timeout=600)
    assert described["TrainingJobStatus"] == "Completed", described.get("FailureReason")
