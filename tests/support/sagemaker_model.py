"""Checks a Step Functions task's Parameters against botocore's own SageMaker service model.

Static values must have the model's type, length, range, enum and pattern; `Name.$` members are dynamic
(JsonPath or an intrinsic function) and only their name is checked. Also walks ResultSelector paths through the
operation's output shape, so a misspelt response field fails here rather than at run time.
"""

from __future__ import annotations

import re
from typing import Any

from botocore.model import Shape

import awsshapes

# What a .sync integration returns: the Describe* of the job it waited for.
SYNC_OUTPUT = {"CreateHyperParameterTuningJob": "DescribeHyperParameterTuningJob",
               "CreateTrainingJob": "DescribeTrainingJob"}


def service_model(resource: str | None = None):
    """botocore's model of the service a Task Resource calls (SageMaker when none is given)."""
    name = "sagemaker"
    if resource and ":::aws-sdk:" in resource:
        name = resource.split(":::aws-sdk:", 1)[1].split(":", 1)[0]
    return awsshapes.service_model(name)


def operation(resource: str) -> tuple[str, bool]:
    """'arn:aws:states:::sagemaker:createTrainingJob.sync' -> ('CreateTrainingJob', True)."""
    action = resource.rsplit(":", 1)[1]
    sync = action.endswith(".sync")
    action = action.removesuffix(".sync")
    return action[0].upper() + action[1:], sync


def _dynamic_ok(value: Any) -> bool:
    return isinstance(value, str) and (value.startswith("$") or value.startswith("States."))


def _pattern_ok(pattern: str, value: str) -> bool:
    compiled = awsshapes.compile_pattern(pattern)
    return compiled is None or compiled.fullmatch(value) is not None  # None: a Java-only construct, not checked


def validate(shape: Shape, value: Any, path: str = "") -> list[str]:
    errors: list[str] = []
    t = shape.type_name
    meta = shape.metadata
    if t == "structure":
        if not isinstance(value, dict):
            return [f"{path}: expected an object for {shape.name}, got {type(value).__name__}"]
        errors += [f"{path}: {e}" for e in awsshapes.documented_errors(shape.name, value)]
        seen: set[str] = set()
        for key, item in value.items():
            dynamic = key.endswith(".$")
            name = key[:-2] if dynamic else key
            if name not in shape.members:
                errors.append(f"{path}.{name}: unknown member of {shape.name}")
                continue
            if name in seen:
                errors.append(f"{path}.{name}: given twice (static and dynamic)")
            seen.add(name)
            if dynamic:
                if not _dynamic_ok(item):
                    errors.append(f"{path}.{key}: a dynamic member needs a JsonPath or intrinsic, got {item!r}")
                continue
            errors += validate(shape.members[name], item, f"{path}.{name}")
        errors += [f"{path}.{m}: required member of {shape.name} missing"
                   for m in shape.required_members if m not in seen]
    elif t == "map":
        if not isinstance(value, dict):
            return [f"{path}: expected a map for {shape.name}"]
        for key, item in value.items():
            if key.endswith(".$"):
                if not _dynamic_ok(item):
                    errors.append(f"{path}.{key}: a dynamic entry needs a JsonPath or intrinsic")
                continue
            errors += validate(shape.key, key, f"{path}<key {key}>")
            errors += validate(shape.value, item, f"{path}.{key}")
        errors += _length(meta, len(value), path)
    elif t == "list":
        if not isinstance(value, list):
            return [f"{path}: expected a list for {shape.name}"]
        for i, item in enumerate(value):
            errors += validate(shape.member, item, f"{path}[{i}]")
        errors += _length(meta, len(value), path)
    elif t == "string":
        if not isinstance(value, str):
            return [f"{path}: expected a string, got {value!r}"]
        if shape.enum and value not in shape.enum:
            errors.append(f"{path}: {value!r} is not one of {shape.enum}")
        errors += _length(meta, len(value), path)
        if "pattern" in meta and not _pattern_ok(meta["pattern"], value):
            errors.append(f"{path}: {value!r} does not match {meta['pattern']}")
    elif t in ("integer", "long"):
        if not isinstance(value, int) or isinstance(value, bool):
            return [f"{path}: expected an integer, got {value!r}"]
        errors += _bounds(meta, value, path)
    elif t in ("float", "double"):
        if not isinstance(value, int | float) or isinstance(value, bool):
            return [f"{path}: expected a number, got {value!r}"]
        errors += _bounds(meta, value, path)
    elif t == "boolean":
        if not isinstance(value, bool):
            return [f"{path}: expected a boolean, got {value!r}"]
    else:
        errors.append(f"{path}: unchecked type {t}")
    return errors


def _bounds(meta: dict, v: float, path: str, what: str = "") -> list[str]:
    """The shape's min/max: a length's for strings, lists and maps (what="length "), a value's for numbers."""
    out = []
    if "min" in meta and v < meta["min"]:
        out.append(f"{path}: {what}{v} < min {meta['min']}")
    if "max" in meta and v > meta["max"]:
        out.append(f"{path}: {what}{v} > max {meta['max']}")
    return out


def _length(meta: dict, n: int, path: str) -> list[str]:
    return _bounds(meta, n, path, "length ")


def validate_request(resource: str, parameters: dict[str, Any]) -> list[str]:
    op, _ = operation(resource)
    return validate(service_model(resource).operation_model(op).input_shape, parameters, op)


_SEGMENT = re.compile(r"\.([A-Za-z0-9_]+)|\[\*\]|\[\?\([^]]*\)\]|\[\d+\]")


def _path_errors(shape, path: str, *, strict: bool = False) -> list[str]:
    """Walk `$.A.B[*].C` through an output shape: every member must exist. `strict` (a ResultSelector that must
    never meet an absent member) also wants every member before the first [*] required (`$.Absent[*]` raises
    States.Runtime; only members after a [*] may be missing) and refuses filters."""
    rest = path.removeprefix("$")
    pos, definite = 0, True  # up to the first [*]: a member absent there raises States.Runtime
    while pos < len(rest):
        m = _SEGMENT.match(rest, pos)
        if not m:
            return [f"{path}: cannot parse at {rest[pos:]!r}"]
        pos = m.end()
        if m.group(0) == "[*]":
            definite = False
        if m.group(1):
            if shape.type_name != "structure" or m.group(1) not in shape.members:
                return [f"{path}: {m.group(1)!r} is not a member of {shape.name}"]
            if strict and definite and m.group(1) not in shape.required_members:
                return [f"{path}: {m.group(1)!r} is optional in {shape.name}: absent, the path raises States.Runtime"]
            shape = shape.members[m.group(1)]
        elif strict and m.group(0).startswith("[?"):
            return [f"{path}: a filter in a ResultSelector raises States.Runtime when nothing matches"]
        else:
            if shape.type_name != "list":
                return [f"{path}: {shape.name} is not a list"]
            shape = shape.member
    return []


def output_path_errors(resource: str, path: str) -> list[str]:
    """Does `$.A.B[?(...)].C` exist in the operation's output shape?"""
    op, sync = operation(resource)
    return _path_errors(service_model(resource).operation_model(SYNC_OUTPUT.get(op, op) if sync else op).output_shape,
                        path)


def absent_member_errors(resource: str, path: str) -> list[str]:
    """Could `path` meet an absent member and raise States.Runtime (which no Catch takes)?

    Every member before the first [*] must be required in its structure (botocore's `required`): `$.Absent[*]`
    raises States.Runtime on AWS (Jayway: an absent property upstream of a wildcard is an error, even where the
    local interpreter answers []); after a [*], elements that lack a member are skipped.
    Filters ([?(...)]) are refused: an empty filter result is an error in the local interpreter. `.sync`
    outputs are Step Functions' own shape: nothing may be read from them.
    """
    op, sync = operation(resource)
    if sync:
        return [f"{path}: reads a .sync output (Step Functions builds that shape): use an aws-sdk Describe*"]
    return _path_errors(service_model(resource).operation_model(op).output_shape, path, strict=True)
