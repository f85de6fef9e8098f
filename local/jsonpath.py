"""JSONPath results shaped as Step Functions shapes them, for moto's ASL interpreter.

Step Functions reads JSONPath with Jayway JsonPath's semantics
(https://docs.aws.amazon.com/step-functions/latest/dg/amazon-states-language-paths.html): a *definite* path, made
only of member names and single indexes, yields the one value it names; any other path (a wildcard, slice, union,
filter or deep scan) yields the list of every match, also when there is one
(https://javadoc.io/static/com.jayway.jsonpath/json-path/2.6.0/com/jayway/jsonpath/JsonPath.html#isDefinite--).

moto's extract_json decides by the shape of its first match instead: `$.jobs[0].name` comes back as a one-element
list (its fix for moto issue 7825), while `$.tags.*` or `$..name` with one match come back bare. A definition tuned
to that would pass locally and break on AWS. The engine installs `extract_json` below in moto's modules while a run
is routed; what moto does when nothing matches (an error, or [] for a wildcard) is kept as it is.
"""

from __future__ import annotations

import importlib
from typing import Any, Final

from jsonpath_ng.ext import parse
from jsonpath_ng.jsonpath import Child, Fields, Index, JSONPath, Root, This
from moto.stepfunctions.parser.asl.utils import json_path as moto_json_path

# moto's modules that call extract_json by the name they imported (found with grep; the test checks the list)
IMPORTERS: Final[tuple[str, ...]] = (
    "moto.stepfunctions.parser.asl.component.common.string.string_expression",
    "moto.stepfunctions.parser.asl.component.intrinsic.argument.argument",
    "moto.stepfunctions.parser.asl.component.state.choice.comparison.operator.implementations.boolean_equals",
    "moto.stepfunctions.parser.asl.component.state.choice.comparison.operator.implementations.numeric",
    "moto.stepfunctions.parser.asl.component.state.choice.comparison.operator.implementations.string_operators",
    "moto.stepfunctions.parser.asl.component.state.choice.comparison.operator.implementations.timestamp_operators",
    "moto.stepfunctions.parser.asl.eval.states",
)
moto_extract_json = moto_json_path.extract_json


def is_definite(path: JSONPath) -> bool:
    """Jayway's isDefinite: no deep scan and no array position that is not a single index."""
    if isinstance(path, Root | This):
        return True
    if isinstance(path, Child):
        return is_definite(path.left) and is_definite(path.right)
    if isinstance(path, Fields):
        return len(path.fields) == 1 and path.fields[0] != "*"
    if isinstance(path, Index):
        return len(path.indices) == 1
    return False  # Wildcard, Slice, Descendants, Filter, Union, ...


def extract_json(path: str, data: Any) -> Any:
    """moto's extract_json with Step Functions' result shape: the value for a definite path, a list otherwise."""
    expression = parse(path)
    matches = expression.find(data)
    if not matches:
        return moto_extract_json(path, data)  # NoSuchJsonPathError, or [] for a wildcard, as moto decides
    if is_definite(expression):
        return matches[0].value
    return [match.value for match in matches]


def install(function: Any = extract_json) -> None:
    """Point every importer's `extract_json` at `function` (moto's own to undo)."""
    for name in IMPORTERS:
        module = importlib.import_module(name)
        if not hasattr(module, "extract_json"):
            raise RuntimeError(f"{name} no longer imports extract_json: review local/jsonpath.py against moto")
        setattr(module, "extract_json", function)  # noqa: B010 (a module attribute moto imported by name)
