"""The environment is what the project needs (issue 15): every direct requirement is imported by the project's code or
is one of its tools; the lock says why each package is there; the venv is exactly the lock; the digits ship with the
repository instead of a 10 MB machine-learning library."""

from __future__ import annotations

import ast
import importlib.metadata
import re
from pathlib import Path

from tests.support import ROOT

SOURCES = ("app.py", "stackfacts", "awsshapes", "infra", "ml", "lambda", "local", "cli", "tests", "bench", ".ci")
# Requirements that no `import` names, and why each is needed.
TOOLS = {
    "pip": "installs torch/torchvision from the machine's pip configuration (Makefile)",
    "uv": "installs and locks (Makefile)",
    "ruff": "lint (make test)",
    "mypy": "the type checker (make test: make typecheck)",
    "botocore-stubs": "botocore's types, read by mypy",
    "pytest-timeout": "pytest plugin (pyproject: timeout)",
    "syrupy": "pytest plugin (snapshot fixture)",
}
_PIN = re.compile(r"^([A-Za-z0-9._-]+)(?:\[[^\]]*\])?==([^\s#;]+)")


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        if m := _PIN.match(line.strip()):
            pins[_normal(m[1])] = m[2]
    return pins


def _imported_top_levels() -> set[str]:
    names: set[str] = set()
    for source in SOURCES:
        path = ROOT / source
        files = [path] if path.is_file() else path.rglob("*.py")
        for file in files:
            if "__snapshots__" in file.parts:
                continue
            for node in ast.walk(ast.parse(file.read_text(), str(file))):
                if isinstance(node, ast.Import):
                    names.update(a.name.split(".")[0] for a in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names.add(node.module.split(".")[0])
    return names


def test_every_direct_requirement_is_imported_or_a_named_tool():
    by_distribution: dict[str, set[str]] = {}
    for module, dists in importlib.metadata.packages_distributions().items():
        for dist in dists:
            by_distribution.setdefault(_normal(dist), set()).add(module)
    imported = _imported_top_levels()
    unused = [name for name in _pins(ROOT / "requirements.txt")
              if name not in TOOLS and not by_distribution.get(name, set()) & imported]
    assert not unused, f"nothing imports {unused}: drop them or name the tool that needs them"


def test_the_lock_says_why_each_package_is_there():
    lock = (ROOT / "constraints.txt").read_text().splitlines()
    pinned = [line for line in lock if _PIN.match(line)]
    assert pinned and all("# via" in line for line in pinned), [line for line in pinned if "# via" not in line]
    direct = _pins(ROOT / "requirements.txt")
    locked = _pins(ROOT / "constraints.txt")
    assert {name: locked.get(name) for name in direct} == direct  # the lock holds every direct pin, unchanged


def test_excluded_packages_stay_out_of_the_lock():
    excluded = {_normal(line.split("#")[0].strip()) for line in (ROOT / "excludes.txt").read_text().splitlines()
                if line.split("#")[0].strip()}
    assert excluded and not excluded & set(_pins(ROOT / "constraints.txt"))


def test_the_environment_is_exactly_the_lock():
    locked = _pins(ROOT / "constraints.txt")
    installed = {_normal(d.metadata["Name"]): d.version for d in importlib.metadata.distributions()}
    installed.pop("sagemaker-image-classifier", None)  # the project itself (editable)
    assert installed == locked, {k: (installed.get(k), locked.get(k)) for k in installed.keys() ^ locked.keys()}


def test_the_shipped_digits_are_the_uci_test_set():
    from local.digits import load_digits

    images, targets = load_digits()
    assert images.shape == (1797, 8, 8) and images.min() == 0 and images.max() == 16
    # Per-class counts of the UCI optdigits test set (optdigits.names).
    assert [int((targets == d).sum()) for d in range(10)] == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
