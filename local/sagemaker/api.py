"""SageMaker's request/response shapes from botocore's service model: validation, ARNs, JSON rendering."""

from __future__ import annotations

import datetime as dt
import functools
import re
from typing import Any

import botocore.session
from botocore.model import ListShape, MapShape, OperationModel, ServiceModel, Shape, StructureShape
from botocore.validate import ParamValidator

import stackfacts as facts
from local.sagemaker.errors import SageMakerError, validation

DEFAULT_REGION, DEFAULT_ACCOUNT = facts.LOCAL_REGION, facts.LOCAL_ACCOUNT


@functools.cache
def service_model() -> ServiceModel:
    return botocore.session.get_session().get_service_model("sagemaker")


def operation_model(operation: str) -> OperationModel:
    try:
        return service_model().operation_model(operation)
    except Exception as exc:  # botocore raises OperationNotFoundError
        raise SageMakerError("UnknownOperationException", f"Unknown operation {operation}", operation) from exc


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def arn(kind: str, name: str, region: str = DEFAULT_REGION, account: str = DEFAULT_ACCOUNT) -> str:
    """SageMaker ARNs lower-case the resource name (arn:aws:sagemaker:...:training-job/my-job)."""
    return f"arn:aws:sagemaker:{region}:{account}:{kind}/{name.lower()}"


# --- request validation ----------------------------------------------------------------------------
@functools.cache
def _pattern(pattern: str | None):
    # The model's patterns are Java regexes; the few `re` cannot read (\p{L} classes, in tag keys and values) go
    # to the `regex` module when it is installed (it reads them), else they are skipped.
    if not pattern:
        return None
    try:
        return re.compile(pattern, flags=re.DOTALL)
    except re.error:
        try:
            import regex
        except ImportError:
            return None
        try:
            return regex.compile(pattern, flags=regex.DOTALL)
        except regex.error:
            return None


def _member_label(path: str) -> str:
    # AWS names the offending member camelCase with its full path: 'trainingJobName', 'hyperParameters.lr'
    parts = [p[:1].lower() + p[1:] for p in path.split(".") if p]
    return ".".join(parts) or "request"


def _constraint_errors(value: Any, shape: Shape, path: str, errors: list[str]) -> None:
    """Checks botocore's client-side validator leaves to the service: max, pattern, enum."""
    meta = shape.metadata
    if isinstance(shape, StructureShape) and isinstance(value, dict):
        for key, member_value in value.items():
            if key in shape.members:
                _constraint_errors(member_value, shape.members[key], f"{path}.{key}", errors)
    elif isinstance(shape, ListShape) and isinstance(value, list):
        if "max" in meta and len(value) > meta["max"]:
            errors.append(f"Value at '{_member_label(path)}' failed to satisfy constraint: "
                          f"Member must have length less than or equal to {meta['max']}")
        for i, item in enumerate(value):
            _constraint_errors(item, shape.member, f"{path}.{i + 1}", errors)
    elif isinstance(shape, MapShape) and isinstance(value, dict):
        if "max" in meta and len(value) > meta["max"]:
            errors.append(f"Value at '{_member_label(path)}' failed to satisfy constraint: "
                          f"Map must have length less than or equal to {meta['max']}")
        for key, item in value.items():
            _constraint_errors(key, shape.key, f"{path}.{key}", errors)
            _constraint_errors(item, shape.value, f"{path}.{key}", errors)
    elif isinstance(value, str) and shape.type_name == "string":
        if "max" in meta and len(value) > meta["max"]:
            errors.append(f"Value '{value[:80]}' at '{_member_label(path)}' failed to satisfy constraint: "
                          f"Member must have length less than or equal to {meta['max']}")
        pattern = _pattern(meta.get("pattern"))
        if pattern is not None and not pattern.fullmatch(value):
            errors.append(f"Value '{value[:80]}' at '{_member_label(path)}' failed to satisfy constraint: "
                          f"Member must satisfy regular expression pattern: {pattern}")
        if shape.enum and value not in shape.enum:
            errors.append(f"Value '{value}' at '{_member_label(path)}' failed to satisfy constraint: "
                          f"Member must satisfy enum value set: [{', '.join(shape.enum)}]")
    elif (isinstance(value, int | float) and not isinstance(value, bool)
          and shape.type_name in ("integer", "long", "float", "double") and "max" in meta and value > meta["max"]):
            errors.append(f"Value '{value}' at '{_member_label(path)}' failed to satisfy constraint: "
                          f"Member must have value less than or equal to {meta['max']}")


def validate_request(operation: str, params: dict) -> None:
    """Raise ValidationException as SageMaker would for a request that does not fit the API's shape."""
    model = operation_model(operation)
    shape = model.input_shape
    if shape is None:
        return
    report = ParamValidator().validate(params, shape)
    if report.has_errors():
        raise validation(report.generate_report()).with_operation(operation)
    errors: list[str] = []
    _constraint_errors(params, shape, "", errors)
    if errors:
        noun = "error" if len(errors) == 1 else "errors"
        raise validation(f"{len(errors)} validation {noun} detected: " + "; ".join(errors)).with_operation(operation)


def validate_response(operation: str, response: dict) -> list[str]:
    """Problems of a response against the output shape (used by tests: the stand-in must speak the API)."""
    shape = operation_model(operation).output_shape
    if shape is None:
        return [] if not response else ["operation has no output"]
    report = ParamValidator().validate(response, shape)
    problems = [report.generate_report()] if report.has_errors() else []
    _constraint_errors(response, shape, "", problems)
    return problems


# --- JSON rendering --------------------------------------------------------------------------------
def to_json(value: Any, timestamps: str = "iso") -> Any:
    """Datetimes as Step Functions renders them: 'iso' strings (aws-sdk tasks) or 'millis' (optimised tasks)."""
    if isinstance(value, dt.datetime):
        if timestamps == "millis":
            return int(value.timestamp() * 1000)
        return value.isoformat()
    if isinstance(value, dict):
        return {k: to_json(v, timestamps) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v, timestamps) for v in value]
    return value


def paginate(items: list[dict], params: dict, default_max: int = 10) -> tuple[list[dict], str | None]:
    """SageMaker's NextToken paging over an already sorted list (the token is an opaque offset)."""
    start = 0
    token = params.get("NextToken")
    if token:
        # str.isdigit() is true for '¹' and other non-ASCII digits that int() refuses: only our own offsets pass.
        if not re.fullmatch(r"[0-9]{1,9}", token):
            raise validation("Invalid pagination token")
        start = int(token)
    size = params.get("MaxResults", default_max)
    page = items[start:start + size]
    more = start + size < len(items)
    return page, (str(start + size) if more else None)
