"""Shared fixtures: the local digits dataset and one small model trained by the real ml/train.py; and one check
before the slow tests run (enough free disk).

Helpers live in tests.support (this file holds fixtures and that hook only)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

from tests.support.scratch import disk_shortfall
from tests.support.training import BASELINE_ARGS, TrainingRun, channel_env, run_train

# Property tests: `make test` runs the same examples every time (a green suite stays green for the code it was green
# for); `make fuzz` explores new ones (HYPOTHESIS_PROFILE=fuzz) and a failure it finds becomes an @example.
settings.register_profile("suite", derandomize=True)
settings.register_profile("fuzz", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "suite"))


def pytest_collection_finish(session: pytest.Session) -> None:
    """A run with slow tests (pipelines, training) on a disk too full for them stops now, in one line."""
    if any(item.get_closest_marker("slow") for item in session.items):
        problem = disk_shortfall(session.config.option.basetemp)
        if problem:
            pytest.exit(problem, returncode=pytest.ExitCode.USAGE_ERROR)


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory) -> Path:
    from local.digits import render

    out = tmp_path_factory.mktemp("digits")
    render(out, size=32, seed=0)
    return out


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
