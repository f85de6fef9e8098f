"""Fixtures of the CLI tests: one recorded local run (the scenario tests/support/cli.py describes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.cli import Scenario, record
from tests.support.scratch import module_scratch


@pytest.fixture(scope="module")
def scenario() -> Scenario:
    return Scenario()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, scenario, request) -> Path:
    root = module_scratch(request, tmp_path_factory, "demo-output")
    record(root, scenario)
    return root
