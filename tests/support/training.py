"""Running ml/train.py the way SageMaker does, and smdebug's own environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support import ROOT

# The training code as a fresh interpreter runs it: the `ml` package of this checkout (PYTHONPATH below), the
# module the source bundle's entry shim (ml/entry/train.py) calls.
TRAIN_COMMAND = ("-m", "ml.train")


def train_env(env_extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment minus any SM_* of ours, this checkout first on PYTHONPATH, plus `env_extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SM_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env.update(env_extra or {})
    return env


def run_train(args: list[str], env_extra: dict[str, str] | None = None, timeout: float = 1800,
              python: str = sys.executable, **kwargs) -> subprocess.CompletedProcess:
    """Run ml/train.py as SageMaker would: a fresh interpreter, settings in SM_* variables and flags."""
    return subprocess.run([python, *TRAIN_COMMAND, *args], env=train_env(env_extra), capture_output=True,
                          text=True, timeout=timeout, **kwargs)


def smdebug_python() -> str:
    """The interpreter of smdebug's environment (.venv-smdebug, made by `make setup`), as local mode finds it."""
    from local.sagemaker.errors import JobFailure
    from local.sagemaker.rule_jobs import smdebug_python as find

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


# A tuning trial's command line, plus the tuner's own _tuning_objective_metric: the training toolkit never passes
# that one (sagemaker_training/params.py counts it among its own; tests/local/sagemaker/test_container.py), but
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
