"""The suite's own disk use: what a test or a module writes goes when it passes, so `make test` needs one module's
worth of free disk, not the sum of all (a CI run once failed half-way, out of disk, with 51 unexplained errors)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.support import ROOT

MODULE = '''
import pytest
from tests.support.scratch import module_scratch

@pytest.fixture(scope="module")
def big(tmp_path_factory, request):
    path = module_scratch(request, tmp_path_factory, "{name}-module")
    (path / "blob").write_bytes(b"x" * 1024)
    yield path
    assert (path / "blob").is_file()  # the fixture's own teardown still sees its folder

def test_uses_it(big, tmp_path):
    (tmp_path / "per-test").write_text("x")
    assert {outcome}
'''


def test_passing_modules_and_tests_leave_nothing_a_failing_one_keeps_its_folders(tmp_path):
    tests = tmp_path / "suite"
    tests.mkdir()
    (tests / "test_a.py").write_text(textwrap.dedent(MODULE.format(name="a", outcome="True")))
    (tests / "test_b.py").write_text(textwrap.dedent(MODULE.format(name="b", outcome="False")))
    (tests / "test_c.py").write_text(textwrap.dedent(MODULE.format(name="c", outcome="True")))
    base = tmp_path / "base"
    # The project's own pytest configuration (pyproject.toml: the retention policy) over a small suite of three
    # modules, the second failing; a given --basetemp is never removed at the end, so what stays can be listed.
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-c", str(ROOT / "pyproject.toml"), "--rootdir", str(ROOT),
         "-p", "no:cacheprovider", "-q", f"--basetemp={base}", str(tests)],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    assert "1 failed, 2 passed" in result.stdout, result.stdout[-2000:]
    kept = sorted(p.name for p in base.iterdir() if not p.is_symlink())  # mktemp's "current" links
    assert kept == ["b-module0", "test_uses_it1"], kept  # only the failing module's folder and its test's tmp_path
    assert (base / "b-module0" / "blob").is_file()


def test_a_disk_too_full_for_the_suite_is_one_line_before_anything_runs(tmp_path):
    from tests.support.scratch import SUITE_DISK_GB, disk_shortfall

    assert SUITE_DISK_GB > 0
    assert disk_shortfall(tmp_path, needed_gb=0.0) is None
    problem = disk_shortfall(tmp_path / "not" / "made" / "yet", needed_gb=1e9)  # a --basetemp to come: its disk
    assert problem is not None and "\n" not in problem
    assert f"under {tmp_path.resolve()}" in problem and "GB is free" in problem and "TMPDIR" in problem
