"""Shared fixtures: the local digits dataset and one small model trained by the real ml/train.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

# Property tests: `make test` runs the same examples every time (a green suite stays green for the code it was green
# for); `make fuzz` explores new ones (HYPOTHESIS_PROFILE=fuzz) and a failure it finds becomes an @example.
settings.register_profile("suite", derandomize=True)
settings.register_profile("fuzz", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "suite"))

ROOT = Path(__file__).resolve().parent.parent
TRAIN_SCRIPT = ROOT / "ml" / "train.py"


def run_train(args: list[str], env_extra: dict[str, str] | None = None, timeout: float = 1800,
              python: str = sys.executable, **kwargs) -> subprocess.CompletedProcess:
    """Run ml/train.py as SageMaker would: a fresh interpreter, settings in SM_* variables and flags."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SM_")}
    env.update(env_extra or {})
    return subprocess.run([python, str(TRAIN_SCRIPT), *args], env=env, capture_output=True, text=True,
                          timeout=timeout, **kwargs)


def smdebug_python() -> str:
    """The interpreter of smdebug's environment (.venv-smdebug, made by `make setup`), as local mode finds it."""
    from local.sagemaker.training import JobFailure
    from local.sagemaker.training import smdebug_python as find

    try:
        return find(ROOT)
    except JobFailure as missing:
        pytest.fail(str(missing))


def in_smdebug_env(code: str, *args: str) -> Any:
    """Run `code` in smdebug's environment (smdebug is not in this one); it prints one JSON value, returned."""
    out = subprocess.run([smdebug_python(), "-c", code, *args], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python"})
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def channel_env(data: Path, model_dir: Path, output: Path) -> dict[str, str]:
    return {
        "SM_CHANNEL_TRAIN": str(data / "train"), "SM_CHANNEL_VALID": str(data / "valid"),
        "SM_CHANNEL_TEST": str(data / "test"), "SM_MODEL_DIR": str(model_dir),
        "SM_OUTPUT_DATA_DIR": str(output / "data"), "SM_OUTPUT_DIR": str(output),
    }


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory) -> Path:
    from local.digits import render

    out = tmp_path_factory.mktemp("digits")
    render(out, size=32, seed=0)
    return out


# A tuning trial's command line, plus the tuner's own _tuning_objective_metric: the training toolkit never passes
# that one (sagemaker_training/params.py counts it among its own; tests/test_local_sagemaker_container.py), but
# train.py must tolerate arguments it does not know.
BASELINE_ARGS = ["--preset", "local", "--epochs", "3", "--lr", "0.003", "--batch-size", "64",
                 "--_tuning_objective_metric", "valid_accuracy"]


@dataclass
class TrainingRun:
    work: Path
    model_dir: Path
    output_dir: Path
    checkpoint_dir: Path
    log: str


@pytest.fixture(scope="session")
def training_run(digits_dir, tmp_path_factory) -> TrainingRun:
    """One real run of ml/train.py on the local digits (3 epochs), shared by every test that needs a model."""
    work = tmp_path_factory.mktemp("trained")
    run = TrainingRun(work, work / "model", work / "output", work / "ckpt", "")
    result = run_train([*BASELINE_ARGS, "--checkpoint-dir", str(run.checkpoint_dir)],
                       channel_env(digits_dir, run.model_dir, run.output_dir))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    run.log = result.stdout
    return run


@pytest.fixture(scope="session")
def trained_model(training_run) -> Path:
    """A model directory written by the real training script."""
    return training_run.model_dir
