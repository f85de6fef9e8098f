"""The import structure of the code: no circle, and no arrow from a lower layer up to a higher one.

The graph is built with ast from every import the code runs (module level and inside functions: a lazy import is
still an arrow), leaving out `if TYPE_CHECKING:` blocks (annotations only, never run). ml/ modules import each other
flat inside the containers (`import contract`): such a name resolves to ml/<name>.py.
"""

from __future__ import annotations

import ast
import sys
from functools import cache
from pathlib import Path

import pytest

from tests.support import ROOT

PACKAGES = ("ml", "stackfacts", "awsshapes", "lambda", "infra", "cli", "local")

# Higher imports lower, never the other way, and never sideways between two packages of one layer.
LAYERS = {
    "ml": 0,  # the training and inference code: goes into the containers alone (with the Lambda bundle's contract)
    "stackfacts": 0,  # the stack seen from outside: standard library only
    "awsshapes": 1,  # botocore's models: shapes, constraints, JSON, S3 URIs (for local mode, the CLI, the tests)
    "lambda": 1,  # the forwarder: its bundle holds ml/contract.py and nothing else of ours
    "infra": 2,  # the CDK app
    "cli": 3,  # imgclf: reads what infra deploys (infra.load_config_for for prices)
    "local": 4,  # the offline pipeline: runs infra's template, records runs with the CLI's writer
}

# The SageMaker stand-in in tiers of its own, top first: an import goes to a lower tier only. Its resources (jobs,
# endpoints) are given the narrow context, never the service, which alone registers them and serves the API.
STANDIN = "local.sagemaker"
STANDIN_TIERS = [
    [STANDIN],  # the package's face: the service and its error
    ["local.sagemaker.service"],  # the API: every operation, the tables of resources
    ["local.sagemaker.tuning"],  # a tuning job: its trials are training jobs it starts through a callable
    ["local.sagemaker.training", "local.sagemaker.hosting", "local.sagemaker.scaling"],  # jobs, endpoints, scaling
    ["local.sagemaker.rule_jobs"],  # a training job's rule jobs
    ["local.sagemaker.context"],  # what a job or an endpoint may use of the stand-in
    ["local.sagemaker.api", "local.sagemaker.s3", "local.sagemaker.processes", "local.sagemaker.container",
     "local.sagemaker.profiler", "local.sagemaker.rules"],
    ["local.sagemaker.errors"],
]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "__pycache__" not in path.parts:
                found[_module_name(path)] = path
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _runtime_imports(tree: ast.AST, type_checking: bool = False) -> list[ast.Import | ast.ImportFrom]:
    """The imports that run; with `type_checking`, those of `if TYPE_CHECKING:` blocks too (annotations)."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node) and not type_checking:
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _resolve(importer: str, name: str) -> str | None:
    """The project module `name` means when `importer` imports it, or None (not ours)."""
    known = modules()
    if importer.split(".")[0] == "ml" and f"ml.{name.split('.')[0]}" in known:
        name = f"ml.{name}"  # ml/'s flat imports, as inside the containers
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


@cache
def graph(type_checking: bool = False) -> dict[str, set[str]]:
    """module -> the project modules it imports when it runs (with `type_checking`: for annotations too)."""
    edges: dict[str, set[str]] = {name: set() for name in modules()}
    for name, path in modules().items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in _runtime_imports(ast.parse(path.read_text(), str(path)), type_checking):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base]) if base else ".".join(anchor)
                # `from pkg import sub` imports the submodule when there is one, else a name of pkg.
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules() else base
                           for alias in node.names]
            for target in targets:
                resolved = _resolve(name, target)
                if resolved and resolved != name:
                    edges[name].add(resolved)
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges[node]:
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            connect(node)
    return found


def test_the_graph_sees_the_imports():
    """The walker itself: lazy imports, `from pkg import submodule`, ml/'s flat names, TYPE_CHECKING left out."""
    edges = graph()
    assert "ml.contract" in edges["ml.imaging"]  # `import contract`, flat
    assert "cli.recording.writer" in edges["local.demo"]  # inside a function
    assert "infra.images" in edges["infra.stack"]  # from infra import images
    assert "local.sagemaker.scaling" not in edges["local.sagemaker.hosting"]  # under TYPE_CHECKING only
    assert "local.sagemaker.scaling" in graph(type_checking=True)["local.sagemaker.hosting"]


def test_no_import_circle():
    assert _cycles(graph()) == []


def test_a_circle_is_found():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_arrow_from_a_lower_layer_up():
    wrong = [f"{a} -> {b}" for a, targets in graph().items() for b in sorted(targets)
             if a.split(".")[0] != b.split(".")[0] and LAYERS[a.split(".")[0]] <= LAYERS[b.split(".")[0]]]
    assert wrong == []


def test_the_standin_imports_only_down_its_tiers():
    tier = {name: depth for depth, names in enumerate(STANDIN_TIERS) for name in names}
    ours = [name for name in modules() if name == STANDIN or name.startswith(f"{STANDIN}.")]
    assert sorted(ours) == sorted(tier), "place each module of the stand-in in STANDIN_TIERS"
    wrong = [f"{a} -> {b}" for a in ours for b in sorted(graph()[a]) if b in tier and tier[b] <= tier[a]]
    assert wrong == []


def test_jobs_and_endpoints_never_name_the_service():
    """Not even for an annotation: they are given the context (local.sagemaker.context) and narrow callables."""
    top = {STANDIN, "local.sagemaker.service"}
    wrong = [f"{a} -> {b}" for a, targets in graph(type_checking=True).items() if a.startswith(f"{STANDIN}.")
             and a not in top for b in sorted(targets & top)]
    assert wrong == []


def test_stackfacts_is_standard_library_only():
    for name, path in modules().items():
        if name.split(".")[0] != "stackfacts":
            continue
        for node in _runtime_imports(ast.parse(path.read_text())):
            top = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            outside = [t for t in top if t.split(".")[0] not in sys.stdlib_module_names | {"__future__"}
                       and not t.startswith("stackfacts")]
            assert not outside, f"{name} imports {outside}"


def _reach(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for target in graph()[todo.pop()]:
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


@pytest.mark.parametrize("loader", ["cli.backend", "cli.loaders", "cli.recording.reader", "cli.recording.writer",
                                    "cli.views", "cli.report", "cli.main"])
def test_the_read_model_is_below_the_loaders(loader):
    """cli/model.py is pure: none of the modules that make calls or read files is reachable from it."""
    assert loader not in _reach("cli.model")


def test_the_demo_imports_only_the_recording_writer():
    assert "cli.recording.writer" in graph()["local.demo"]
    assert "cli.recording.reader" not in graph()["local.demo"]


def test_one_module_is_the_pipeline():
    """cli/pipeline.py (what the CLI reads of a run) beside infra/pipeline.py (the state machine) read as two homes
    for one thing."""
    assert [name for name in modules() if name.rsplit(".", 1)[-1] == "pipeline"] == ["infra.pipeline"]
