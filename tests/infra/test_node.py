"""The Node.js that jsii runs the CDK in (issue 12 item 11): the release package.json pins, one jsii supports, so
synthesizing prints no end-of-life banner, with no silencing variable; the README names the same release."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jsii
import pytest

ROOT = Path(__file__).resolve().parents[2]
PINNED = json.loads((ROOT / "package.json").read_text())["devDependencies"]["node"]
NODE = ROOT / "node_modules" / ".bin" / "node"
needs_node = pytest.mark.skipif(not NODE.is_file(), reason="node_modules not installed: run `make setup`")


def _jsii_releases() -> dict[int, dict]:
    """jsii's own table of Node releases (major -> end of life, untested), from the runtime it embeds."""
    runtime = Path(jsii.__file__).parent / "_embedded" / "jsii" / "bin__jsii-runtime.js"
    table = {}
    for major, body in re.findall(r"new NodeRelease\((\d+),\{([^}]*)\}", runtime.read_text()):
        eol = re.search(r'endOfLife:new Date\("(\d{4}-\d{2}-\d{2})"\)', body)
        table[int(major)] = {"end_of_life": dt.date.fromisoformat(eol[1]) if eol else None,
                             "untested": "untested:!0" in body}
    return table


def test_the_pinned_node_is_a_release_jsii_supports():
    major = int(PINNED.split(".")[0])
    release = _jsii_releases()[major]
    assert not release["untested"]
    assert release["end_of_life"] > dt.date.today() + dt.timedelta(days=180), \
        f"Node {major} reaches end of life on {release['end_of_life']}: pin a newer release in package.json"


def test_the_readme_names_the_pinned_node():
    assert f"Node.js {PINNED}" in (ROOT / "README.md").read_text()


@needs_node
def test_the_installed_node_is_the_pinned_one():
    out = subprocess.run([str(NODE), "--version"], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == f"v{PINNED}"


@needs_node
def test_synthesizing_prints_no_node_banner():
    """As a user's shell runs it: the system's Node first on PATH, no JSII_* variable, nothing silenced."""
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if "node_modules" not in p)
    env = {k: v for k, v in os.environ.items() if not k.startswith("JSII_")} | {"PATH": path}
    out = subprocess.run([sys.executable, "-c", "import infra, aws_cdk; aws_cdk.App()"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "end-of-life" not in out.stderr and "!!" not in out.stderr, out.stderr[:2000]
