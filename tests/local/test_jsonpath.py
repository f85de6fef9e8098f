"""local/jsonpath.py: paths yield what Step Functions yields (Jayway: a value for a definite path, else a list),
in the engine's runs, where moto alone yields a list for a member read after an index."""

from __future__ import annotations

import re
from pathlib import Path

import moto
import pytest
from jsonpath_ng.ext import parse
from moto.stepfunctions.parser.asl.utils.json_path import NoSuchJsonPathError

from local import jsonpath
from local.engine import run_definition

DATA = {"jobs": [{"name": "a", "tags": {"k": "v"}}], "two": [{"name": "a"}, {"name": "b"}], "n": 3}


@pytest.mark.parametrize(("path", "expected"), [
    ("$.jobs[0].name", "a"),  # moto: ["a"]
    ("$.jobs[0]", {"name": "a", "tags": {"k": "v"}}),
    ("$.jobs[0].tags.k", "v"),
    ("$.n", 3),
    ("$['n']", 3),
    ("$.jobs[*].name", ["a"]),  # indefinite: a list, also of one
    ("$.two[*].name", ["a", "b"]),
    ("$.jobs[0].tags.*", ["v"]),  # moto: "v"
    ("$..k", ["v"]),  # moto: "v"
    ("$.two[0:1]", [{"name": "a"}]),
    ("$.two[0,1].name", ["a", "b"]),
    ("$.two[?(@.name == 'b')].name", ["b"]),
])
def test_a_path_yields_what_step_functions_yields(path, expected):
    assert jsonpath.extract_json(path, DATA) == expected


@pytest.mark.parametrize("path", ["$.jobs[0].name", "$.jobs[0].tags.*", "$..k"])
def test_moto_alone_shapes_these_differently(path):
    """The reason for the module: if moto's answer ever matches AWS's, this fails and the override can go."""
    assert jsonpath.moto_extract_json(path, DATA) != jsonpath.extract_json(path, DATA)


def test_what_matches_nothing_is_left_to_moto():
    with pytest.raises(NoSuchJsonPathError):
        jsonpath.extract_json("$.missing", DATA)
    assert jsonpath.extract_json("$.two[*].missing", DATA) == jsonpath.moto_extract_json("$.two[*].missing", DATA)


@pytest.mark.parametrize(("path", "definite"), [
    ("$", True), ("$.a.b", True), ("$.a[3].b", True), ("$['a']", True),
    ("$.a[*]", False), ("$.a.*", False), ("$..a", False), ("$.a[1:]", False), ("$.a[0,1]", False),
    ("$.a[?(@.x)]", False), ("$['a','b']", False),
])
def test_definiteness_is_jaywayss(path, definite):
    assert jsonpath.is_definite(parse(path)) is definite


def test_every_module_of_moto_that_imports_extract_json_is_patched():
    parser = Path(moto.__file__).parent / "stepfunctions" / "parser"
    importers = set()
    for source in parser.rglob("*.py"):
        if re.search(r"import[^\n]*\bextract_json\b|^\s+extract_json,$", source.read_text(), re.MULTILINE) \
                and source.name != "json_path.py":
            importers.add(".".join(source.relative_to(parser.parent.parent.parent).with_suffix("").parts))
    assert importers == set(jsonpath.IMPORTERS)


def test_a_run_reads_a_member_after_an_index_as_aws_does():
    """In Parameters, a Choice and an intrinsic argument; moto's own interpreter gives ["a"] for each."""
    definition = {"StartAt": "Read", "States": {
        "Read": {"Type": "Pass", "Parameters": {"name.$": "$.jobs[0].name",
                                                "upper.$": "States.Format('job {}', $.jobs[0].name)"},
                 "ResultPath": "$.read", "Next": "Is a"},
        "Is a": {"Type": "Choice", "Choices": [{"Variable": "$.jobs[0].name", "StringEquals": "a", "Next": "Done"}],
                 "Default": "Not a"},
        "Not a": {"Type": "Fail", "Error": "NotA"},
        "Done": {"Type": "Pass", "OutputPath": "$.read", "End": True}}}
    result = run_definition(definition, DATA, None, poll_interval=0.05, timeout=60)
    assert result.succeeded, (result.error, result.cause)
    assert result.output == {"name": "a", "upper": "job a"}
    assert jsonpath.moto_extract_json("$.jobs[0].name", DATA) == ["a"]  # what the run would have read unpatched


def test_the_patch_ends_with_the_run():
    from moto.stepfunctions.parser.asl.eval import states

    run_definition({"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}}, {}, None, poll_interval=0.05,
                   timeout=60)
    assert states.extract_json is jsonpath.moto_extract_json
