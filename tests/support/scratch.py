"""Scratch folders for module-scoped fixtures that go when their module ends.

pytest keeps every `tmp_path_factory.mktemp` folder until the session ends, so the suite's disk use was the sum of
every module's (7.4 GB for one `make test`: the demo runs' local S3, stand-ins' job folders, Debugger tensors) and a
CI machine with less free disk failed half-way with errors that did not say why. With these, the peak is one
module's folders plus the session fixtures'. A module in which a test failed keeps its folders for a look, as
pytest's own `tmp_path_retention_policy = "failed"` (pyproject.toml) does for a test's `tmp_path`.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

# The most the slow suite holds in its temporary folder at once (pytest's basetemp, sampled every 5 s through a whole
# `make test` on a fresh clone: 2.5 GB, during tests/local/test_pipeline_offline.py's demo runs), plus room for the
# logs and caches written beside it. Before this module the same suite held 7.4 GB at its end.
SUITE_DISK_GB = 3.0


def module_scratch(request: pytest.FixtureRequest, factory: pytest.TempPathFactory, name: str) -> Path:
    """`factory.mktemp(name)`, removed when the requesting fixture is torn down unless a test failed meanwhile.

    Finalizers run last-in first-out, so a yield fixture that started a server in this folder has stopped it
    before the folder goes."""
    path = factory.mktemp(name)
    failed_before = request.session.testsfailed

    def remove() -> None:
        if request.session.testsfailed == failed_before:
            shutil.rmtree(path, ignore_errors=True)

    request.addfinalizer(remove)
    return path


def disk_shortfall(folder: str | Path | None, needed_gb: float = SUITE_DISK_GB) -> str | None:
    """One line when the disk under `folder` (default: the system's temporary folder, where pytest's basetemp
    goes) has less free space than the suite needs, else None; so `make test` stops in a second, not half-way."""
    where = Path(folder or tempfile.gettempdir()).resolve()
    while not where.exists():  # a --basetemp not made yet: the disk it will be on
        where = where.parent
    free_gb = shutil.disk_usage(where).free / 1e9
    if free_gb >= needed_gb:
        return None
    return (f"the tests need about {needed_gb:.1f} GB free under {where} (models, local S3 and Debugger tensors of "
            f"the pipeline runs); {free_gb:.1f} GB is free. Free some space, or point TMPDIR (or --basetemp) at a "
            "larger disk.")
