"""Known vulnerabilities in the locks (constraints.txt, constraints-smdebug.txt), with pip-audit.

pip-audit runs in a tool environment of its own (`uv tool run`), so the auditor's dependencies are not in the
environment it audits, and audits the pinned set exactly (`--no-deps --disable-pip`: no resolution, no install).
It needs a vulnerability service: PyPI's JSON API (https://docs.pypi.org/api/json/, its `vulnerabilities` field) or
OSV's (https://google.github.io/osv.dev/post-v1-query/). Where neither answers (a machine that reaches only package
indexes), the audit says so in one line and skips: exit 0. A vulnerability that cannot apply is listed, with why,
in .ci/audit-ignore.txt; a listed one without a reason is an error.

    python .ci/audit.py [--service pypi|osv]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCKS = ("constraints.txt", "constraints-smdebug.txt")
IGNORE_FILE = ROOT / ".ci" / "audit-ignore.txt"
PIP_AUDIT = "pip-audit==2.10.1"
PROBE_TIMEOUT_S = 10.0


class AuditError(Exception):
    """A malformed ignore file: one line, exit 2."""


def read_ignores(path: Path | None = None) -> dict[str, list[str]]:
    """lock file -> vulnerability ids to ignore. Lines: `<lock> <id>  # why it cannot apply`."""
    path = path or IGNORE_FILE
    ignores: dict[str, list[str]] = {lock: [] for lock in LOCKS}
    if not path.is_file():
        return ignores
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line, _, reason = raw.partition("#")
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 2 or fields[0] not in ignores:
            raise AuditError(f"{path.name}:{number}: expected `<{'|'.join(LOCKS)}> <vulnerability id>  # reason`")
        if not reason.strip():
            raise AuditError(f"{path.name}:{number}: {fields[1]} is ignored without a reason (say why it cannot apply)")
        ignores[fields[0]].append(fields[1])
    return ignores


def _answers(request: urllib.request.Request, key: str | None = None) -> bool:
    """True when the service answers 200 with a JSON object (holding `key`, where given)."""
    try:
        with urllib.request.urlopen(request, timeout=PROBE_TIMEOUT_S) as response:
            body = json.loads(response.read() or b"null")
            return response.status == 200 and isinstance(body, dict) and (key is None or key in body)
    except (OSError, ValueError):  # URLError, HTTPError (e.g. 404 from an index-only mirror), timeouts, not JSON
        return False


def reachable_service() -> str | None:
    """The first vulnerability service that answers a real query, or None."""
    pypi = urllib.request.Request("https://pypi.org/pypi/pip/26.3/json", headers={"Accept": "application/json"})
    if _answers(pypi, "vulnerabilities"):
        return "pypi"
    osv = urllib.request.Request("https://api.osv.dev/v1/query", method="POST",
                                 headers={"Content-Type": "application/json"},
                                 data=json.dumps({"package": {"name": "pip", "ecosystem": "PyPI"},
                                                  "version": "26.3"}).encode())
    if _answers(osv):  # {} for a version without known vulnerabilities
        return "osv"
    return None


def command(lock: str, service: str, ignored: list[str]) -> list[str]:
    uv = str(Path(sys.executable).parent / "uv")
    cmd = [uv, "tool", "run", "--from", PIP_AUDIT, "pip-audit", "--requirement", str(ROOT / lock), "--no-deps",
           "--disable-pip", "--vulnerability-service", service, "--progress-spinner", "off"]
    for vuln in ignored:
        cmd += ["--ignore-vuln", vuln]
    return cmd


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python .ci/audit.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--service", choices=("pypi", "osv"), help="skip the reachability probe and use this one")
    args = parser.parse_args(argv)
    try:
        ignores = read_ignores()
    except AuditError as exc:
        print(f"audit: {exc}", file=sys.stderr)
        return 2
    service = args.service or reachable_service()
    if service is None:
        print("audit: skipped: no vulnerability service answers from this machine (PyPI's JSON API, OSV); "
              "run `make audit` where one does")
        return 0
    failed = 0
    for lock in LOCKS:
        print(f"audit: {lock} ({service}; {len(ignores[lock])} ignored, see {IGNORE_FILE.relative_to(ROOT)})",
              flush=True)
        failed |= subprocess.call(command(lock, service, ignores[lock]), cwd=ROOT)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
