""".ci/audit.py: pip-audit over both locks, ignores only with a reason, one line and exit 0 where no vulnerability
service answers (this machine reaches only package indexes), a failing audit fails `make test`."""

from __future__ import annotations

import importlib.util

import pytest

from tests.support import ROOT


@pytest.fixture
def audit():
    spec = importlib.util.spec_from_file_location("ci_audit", ROOT / ".ci" / "audit.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_project_ignore_file_parses_and_each_entry_has_a_reason(audit):
    ignores = audit.read_ignores()
    assert set(ignores) == set(audit.LOCKS)
    assert "GHSA-8qvm-5x2c-j2w7" in ignores["constraints-smdebug.txt"]
    assert not ignores["constraints.txt"]  # the main environment ignores nothing
    for lock in audit.LOCKS:
        assert (ROOT / lock).is_file()


@pytest.mark.parametrize("line, fragment", [
    ("constraints.txt GHSA-xxxx-yyyy-zzzz", "without a reason"),
    ("constraints.txt GHSA-xxxx-yyyy-zzzz   #   ", "without a reason"),
    ("requirements.txt GHSA-xxxx-yyyy-zzzz  # not a lock", "expected"),
    ("GHSA-xxxx-yyyy-zzzz  # no lock named", "expected"),
])
def test_a_malformed_ignore_is_one_line_and_exit_2(audit, tmp_path, monkeypatch, capsys, line, fragment):
    bad = tmp_path / "audit-ignore.txt"
    bad.write_text(f"# header\n\n{line}\n")
    monkeypatch.setattr(audit, "IGNORE_FILE", bad)
    monkeypatch.setattr(audit, "reachable_service", lambda: pytest.fail("probed before the ignore file was valid"))
    assert audit.main([]) == 2
    err = capsys.readouterr().err.strip()
    assert fragment in err and err.count("\n") == 0 and ":3:" in err


def test_offline_it_skips_in_one_line(audit, monkeypatch, capsys):
    monkeypatch.setattr(audit, "reachable_service", lambda: None)
    monkeypatch.setattr(audit.subprocess, "call", lambda *a, **k: pytest.fail("pip-audit ran without a service"))
    assert audit.main([]) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith("audit: skipped") and "\n" not in out


def test_each_lock_is_audited_as_pinned_with_its_own_ignores(audit, monkeypatch):
    calls = []
    monkeypatch.setattr(audit.subprocess, "call", lambda cmd, **k: calls.append(cmd) or 0)
    assert audit.main(["--service", "osv"]) == 0
    assert len(calls) == len(audit.LOCKS)
    for cmd, lock in zip(calls, audit.LOCKS, strict=True):
        assert cmd[cmd.index("--requirement") + 1] == str(ROOT / lock)
        assert {"--no-deps", "--disable-pip"} <= set(cmd) and cmd[cmd.index("--vulnerability-service") + 1] == "osv"
        ignored = [cmd[i + 1] for i, arg in enumerate(cmd) if arg == "--ignore-vuln"]
        assert ignored == audit.read_ignores()[lock]


def test_a_vulnerability_found_fails(audit, monkeypatch):
    main_lock = str(ROOT / "constraints.txt")
    monkeypatch.setattr(audit.subprocess, "call",
                        lambda cmd, **k: 1 if cmd[cmd.index("--requirement") + 1] == main_lock else 0)
    assert audit.main(["--service", "pypi"]) == 1
