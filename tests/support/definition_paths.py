"""Every JSONPath a state machine definition reads, and whether it can meet an absent member.

A JSONPath that finds nothing raises States.Runtime, which no Catch takes (a Choice Variable, a Parameters or
ResultSelector `.$` value, an intrinsic function's argument, a Fail's CausePath/ErrorPath:
https://docs.aws.amazon.com/step-functions/latest/dg/concepts-error-handling.html, "States.Runtime").
This walks the state graph forward and tracks, for every state, what lies where in its input:

- where a Task stored a response whose shape botocore defines (an aws-sdk call or an optimized request/response
  integration, stored whole: no ResultSelector), and where a Catch stored an error output ({"Error", "Cause"}:
  Error is always there, Cause is not: States.Timeout, States.Permissions ... carry none);
- where a Pass stored the result of an indefinite path (a filter or [*]): a list that may be empty, so a Choice
  Variable or parameter that indexes it needs IsPresent first (review 2 item 8: a MetricData without Value);
- which paths are known to be present on every way into the state: a Choice branch implies the IsPresent tests
  (and comparisons) that had to hold, and the negation of every rule before it (rules are tried in order, And/Or
  stop at the first decisive member, as the local interpreter and AWS's do).

A read of such a stored response is an error when it passes an optional member (botocore's `required` says which)
or a list index before any [*] or filter, unless that member is known present. Members after a [*] or filter
are fine: an indefinite path skips elements that lack them (Jayway's rule, which Step Functions follows).
A ResultSelector cannot be guarded, so every member it reads before a [*] must be required.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from tests.support.sagemaker_model import SYNC_OUTPUT, operation, service_model

Path = tuple[str, ...]
TOKEN = re.compile(r"\.([A-Za-z0-9_]+)|(\[\*\]|\.\*)|(\[\?\([^]]*\)\])|\[(\d+)\]")
# A path inside an intrinsic function's arguments (quoted literals are skipped by _scan).
PATH = re.compile(r"\$(?:\.[A-Za-z0-9_]+|\.\*|\[\*\]|\[\?\([^]]*\)\]|\[\d+\])*")
COMPARATOR_PATHS = ("StringEqualsPath", "StringLessThanPath", "StringGreaterThanPath", "StringLessThanEqualsPath",
                    "StringGreaterThanEqualsPath", "NumericEqualsPath", "NumericLessThanPath",
                    "NumericGreaterThanPath", "NumericLessThanEqualsPath", "NumericGreaterThanEqualsPath",
                    "BooleanEqualsPath", "TimestampEqualsPath", "TimestampLessThanPath", "TimestampGreaterThanPath",
                    "TimestampLessThanEqualsPath", "TimestampGreaterThanEqualsPath")
# Fields this walker does not model: a definition that uses one is refused, not waved through.
UNMODELLED = ("InputPath", "OutputPath", "ItemsPath", "ItemSelector", "ItemProcessor", "Iterator", "Branches",
              "ResultSelector@Pass")


def tokens(path: str) -> Path:
    """'$.a.b[0][*]' -> ('a', 'b', '[0]', '[*]'); filters stay one token '[?(...)]'."""
    out: list[str] = []
    rest, pos = path.removeprefix("$"), 0
    while pos < len(rest):
        m = TOKEN.match(rest, pos)
        if not m:
            raise ValueError(f"cannot parse JSONPath {path!r} at {rest[pos:]!r}")
        out.append(m.group(1) or ("[*]" if m.group(2) else None) or m.group(3) or f"[{m.group(4)}]")
        pos = m.end()
    return tuple(out)


def _scan(text: str) -> Iterator[str]:
    """The JSONPaths in a `.$` value: the value itself, or the arguments of an intrinsic function."""
    if text.startswith("$$"):
        return
    if text.startswith("$"):
        yield text
        return
    i, quoted = 0, False
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "'":
            quoted = not quoted
        elif ch == "$" and not quoted and not text.startswith("$$", i):
            m = PATH.match(text, i)
            yield m.group(0)
            i = m.end()
            continue
        i += 1


def parameter_paths(parameters: Any) -> Iterator[str]:
    if isinstance(parameters, dict):
        for key, value in parameters.items():
            if key.endswith(".$") and isinstance(value, str):
                yield from _scan(value)
            else:
                yield from parameter_paths(value)
    elif isinstance(parameters, list):
        for value in parameters:
            yield from parameter_paths(value)


# --- shapes: botocore's, and the error output of a Catch --------------------------------------------------------
@dataclass(frozen=True)
class ErrorOutput:
    """What a Catch stores: Error always, Cause not always."""

    name: str = "ErrorOutput"
    type_name: str = "structure"

    @property
    def members(self) -> dict[str, Any]:
        return {"Error": _STRING, "Cause": _STRING}

    @property
    def required_members(self) -> list[str]:
        return ["Error"]


@dataclass(frozen=True)
class _String:
    name: str = "String"
    type_name: str = "string"


_STRING = _String()
ERROR = ("error", "")
# What a Pass stores from an indefinite path ([*] or a filter): always a list, possibly empty (a filter that matches
# nothing, or matches only elements without the member, yields []), so its [0] needs IsPresent first.
FOUND = ("found", "")


@dataclass(frozen=True)
class _Anything:
    name: str = "an element of an indefinite path's result"
    type_name: str = "any"


@dataclass(frozen=True)
class FoundList:
    name: str = "the result of an indefinite path"
    type_name: str = "list"
    member: _Anything = _Anything()


def indefinite_results(parameters: Any, at: Path) -> Iterator[Path]:
    """Where a Pass's Parameters put the result of a pure indefinite path (`"x.$": "$.a[?(...)].b"`)."""
    if not isinstance(parameters, dict):
        return
    for key, value in parameters.items():
        if key.endswith(".$") and isinstance(value, str):
            m = PATH.fullmatch(value)
            if m and any(t == "[*]" or t.startswith("[?") for t in tokens(value)):
                yield (*at, key.removesuffix(".$"))
        else:
            yield from indefinite_results(value, (*at, key))


def _shape(key: tuple[str, str]):
    kind, resource = key
    if kind == "error":
        return ErrorOutput()
    if kind == "found":
        return FoundList()
    op, sync = operation(resource)
    return service_model(resource).operation_model(SYNC_OUTPUT.get(op, op) if sync else op).output_shape


def walk(shape, path: Path, present: frozenset[Path], *, origin: Path = ()) -> list[str]:
    """Errors for reading `path` (relative to a stored `shape` at `origin`): an optional member or an index before
    the first [*]/filter that `present` does not cover."""
    errors: list[str] = []
    for i, tok in enumerate(path):
        here = origin + path[: i + 1]
        shown = "$." + ".".join(here).replace(".[", "[")
        if tok == "[*]" or tok.startswith("[?"):
            return errors  # indefinite from here: an absent member yields nothing, no error
        if tok.startswith("["):
            if shape.type_name != "list":
                return [f"{shown}: {shape.name} is not a list"]
            if not _known(here, present):
                errors.append(f"{shown}: the list may be empty and nothing checks IsPresent first")
            shape = shape.member
            continue
        if shape.type_name == "any":
            return errors  # an element's own members are not modelled
        if shape.type_name != "structure" or tok not in shape.members:
            return [f"{shown}: {tok!r} is not a member of {shape.name}"]
        if tok not in shape.required_members and not _known(here, present):
            errors.append(f"{shown}: optional in {shape.name} and nothing checks IsPresent first")
        shape = shape.members[tok]
    return errors


def _known(path: Path, present: frozenset[Path]) -> bool:
    return any(p[: len(path)] == path for p in present)


# --- the forward walk ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Facts:
    stored: frozenset[tuple[Path, tuple[str, str]]]  # (where, shape key)
    present: frozenset[Path] | None  # None: not reached yet (the neutral element of the intersection)

    def merge(self, other: Facts) -> Facts:
        present = other.present if self.present is None else (
            self.present if other.present is None else self.present & other.present)
        return Facts(self.stored | other.stored, present)

    def write(self, result_path: str | None, key: tuple[str, str] | None = None) -> Facts:
        """ResultPath: what was at or under (or above) it is gone; `key`: a shape stored there."""
        if result_path is None:  # ResultPath null: the input passes through
            return self
        where = tokens(result_path)

        def overlaps(p: Path) -> bool:
            n = min(len(p), len(where))
            return p[:n] == where[:n]
        stored = frozenset(s for s in self.stored if not overlaps(s[0]))
        present = frozenset(p for p in (self.present or ()) if not overlaps(p))
        if key is not None:
            stored |= {(where, key)}
            present |= {where}
        return Facts(stored, present)

    def add(self, paths: Iterable[Path]) -> Facts:
        return Facts(self.stored, (self.present or frozenset()) | frozenset(paths))


def implied(condition: dict, truth: bool) -> set[Path]:
    """Paths that must be present when `condition` evaluated to `truth`."""
    if "And" in condition:
        return set().union(*[implied(c, True) for c in condition["And"]]) if truth else set()
    if "Or" in condition:
        return set().union(*[implied(c, False) for c in condition["Or"]]) if not truth else set()
    if "Not" in condition:
        return implied(condition["Not"], not truth)
    variable = tokens(condition["Variable"])
    if "IsPresent" in condition:
        return {variable} if condition["IsPresent"] == truth else set()
    return {variable} if truth else set()  # a comparison that held read its variable


def _condition_reads(condition: dict, present: frozenset[Path]) -> Iterator[tuple[str, frozenset[Path]]]:
    """(path, what is known present when it is read) for a Choice rule, members tried in order."""
    for key in ("And", "Or"):
        if key in condition:
            known = present
            for member in condition[key]:
                yield from _condition_reads(member, known)
                known = known | frozenset(implied(member, key == "And"))
            return
    if "Not" in condition:
        yield from _condition_reads(condition["Not"], present)
        return
    if "IsPresent" not in condition:
        yield condition["Variable"], present
    for key in COMPARATOR_PATHS:
        if key in condition:
            yield condition[key], present


def _stored_key(state: dict) -> tuple[str, str] | None:
    """The shape a Task stores at its ResultPath: botocore's output, unless a ResultSelector builds its own."""
    if state["Type"] != "Task" or "ResultSelector" in state:
        return None
    return ("sync" if state["Resource"].endswith(".sync") else "op", state["Resource"])


def _edges(state: dict, facts: Facts) -> Iterator[tuple[str, Facts]]:
    kind = state["Type"]
    if kind == "Choice":
        negated: set[Path] = set()
        for rule in state["Choices"]:
            yield rule["Next"], facts.add(negated | implied(rule, True))
            negated |= implied(rule, False)
        if "Default" in state:
            yield state["Default"], facts.add(negated)
        return
    if kind in ("Task", "Pass"):
        result_path = state.get("ResultPath", "$")
        after = facts.write(result_path, _stored_key(state))
        if kind == "Pass" and result_path is not None:
            found = frozenset((where, FOUND) for where in indefinite_results(state.get("Parameters", {}),
                                                                            tokens(result_path)))
            after = Facts(after.stored | found, after.present)
        for catch in state.get("Catch", []):
            yield catch["Next"], facts.write(catch.get("ResultPath", "$"), ERROR)
    else:
        after = facts
    if "Next" in state:
        yield state["Next"], after


def reads(state: dict, facts: Facts) -> Iterator[tuple[str, str, frozenset[Path]]]:
    """(field, path, known present) for every JSONPath the state reads from its input."""
    present = frozenset(facts.present or ())
    if state["Type"] == "Choice":
        for rule in state["Choices"]:
            for path, known in _condition_reads(rule, present):
                yield "Choice", path, known
            present = present | frozenset(implied(rule, False))
        return
    for field in ("Parameters",):
        for path in parameter_paths(state.get(field, {})):
            yield field, path, present
    for field in ("CausePath", "ErrorPath", "SecondsPath", "TimestampPath"):
        if field in state:
            for path in _scan(state[field]):
                yield field, path, present


def facts_per_state(definition: dict) -> dict[str, Facts]:
    states = definition["States"]
    for name, state in states.items():
        used = [f for f in UNMODELLED if "@" not in f and f in state]
        if used or (state["Type"] == "Pass" and "ResultSelector" in state):
            raise ValueError(f"{name}: uses {used or 'ResultSelector'}, which this walker does not model")
        if state["Type"] in ("Map", "Parallel"):
            raise ValueError(f"{name}: {state['Type']} states are not modelled")
    facts: dict[str, Facts] = {definition["StartAt"]: Facts(frozenset(), frozenset())}
    todo = [definition["StartAt"]]
    while todo:
        name = todo.pop()
        for target, out in _edges(states[name], facts[name]):
            merged = out if target not in facts else facts[target].merge(out)
            if merged != facts.get(target):
                facts[target] = merged
                todo.append(target)
    return facts


def absent_path_errors(definition: dict) -> list[str]:
    """Every read of a stored response or error output that can meet an absent member (see the module doc)."""
    errors: list[str] = []
    states = definition["States"]
    for name, facts in sorted(facts_per_state(definition).items()):
        for field, path, present in reads(states[name], facts):
            where = tokens(path)
            for origin, key in sorted(facts.stored):
                if where[: len(origin)] != origin:
                    continue
                if key[0] == "sync":
                    errors.append(f"{name} {field} {path}: reads a .sync output (Step Functions builds that shape)")
                    continue
                errors += [f"{name} {field}: {e}" for e in walk(_shape(key), where[len(origin):], present,
                                                                  origin=origin)]
    return sorted(set(errors))
