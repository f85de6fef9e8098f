"""AWS's APIs as botocore models them, in one place: service and operation models, pagination, request and response
checks against the shapes (with the constraints botocore leaves to the service), JSON conversion, S3 URIs.

Works on any object with a boto3 client's methods (real, stubbed, recorded, the local stand-in). Used by local
mode (the SageMaker stand-in, the engine), the CLI (calls and the recording) and the tests; no module of those keeps
a copy. Shapes: botocore/data/<service>/<version>/service-2.json and paginators-1.json.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote, urlparse

import botocore.session
from botocore import xform_name
from botocore.model import ListShape, MapShape, OperationModel, ServiceModel, Shape, StringShape, StructureShape
from botocore.utils import parse_timestamp
from botocore.validate import ParamValidator

MAX_PAGES = 10_000  # a token that never ends is a bug of the server, not a reason to loop forever

# Step Functions' aws-sdk service names that differ from botocore's:
# https://docs.aws.amazon.com/step-functions/latest/dg/supported-services-awssdk.html
BOTOCORE_NAMES = {"applicationautoscaling": "application-autoscaling"}


# --- models -------------------------------------------------------------------------------------------------------
@functools.cache
def _session() -> botocore.session.Session:
    return botocore.session.get_session()


@functools.cache
def service_model(service: str = "sagemaker") -> ServiceModel:
    """botocore's model of a service, by botocore's name or Step Functions' aws-sdk name."""
    return _session().get_service_model(BOTOCORE_NAMES.get(service, service))


@functools.cache
def _operation_names(service: str) -> dict[str, str]:
    """python method name -> API operation name (describe_training_job -> DescribeTrainingJob)."""
    return {xform_name(op): op for op in service_model(service).operation_names}


def operation_name(service: str, name: str) -> str:
    """The API operation for a boto3 method name or an operation name; KeyError when the service has none."""
    if name in service_model(service).operation_names:
        return name
    return _operation_names(service)[name]


def operation_model(service: str, name: str) -> OperationModel:
    return service_model(service).operation_model(operation_name(service, name))


# --- pagination (paginators-1.json) -------------------------------------------------------------------------------
@functools.cache
def paginator_config(service: str, method: str) -> dict[str, Any] | None:
    model = _session().get_paginator_model(BOTOCORE_NAMES.get(service, service))
    try:
        return dict(model.get_paginator(operation_name(service, method)))
    except ValueError:
        return None


def result_keys(service: str, method: str) -> list[str]:
    config = paginator_config(service, method) or {}
    keys = config.get("result_key", [])
    return [keys] if isinstance(keys, str) else list(keys)


def pages(client: Any, service: str, method: str, **params: Any) -> Iterator[dict]:
    """Every page of a paginated call, following the tokens botocore's paginator model names."""
    config = paginator_config(service, method)
    call = getattr(client, method)
    if config is None:
        yield call(**params)
        return
    seen: set[str] = set()
    token = None
    for _ in range(MAX_PAGES):
        page = call(**params, **({config["input_token"]: token} if token else {}))
        yield page
        token = page.get(config["output_token"])
        more = page.get(config["more_results"], bool(token)) if "more_results" in config else bool(token)
        if not token or not more or token in seen:
            return
        seen.add(token)


def collect(client: Any, service: str, method: str, **params: Any) -> dict:
    """A paginated call as one whole response: result lists concatenated, tokens dropped."""
    config = paginator_config(service, method) or {}
    keys = result_keys(service, method)
    whole: dict[str, Any] = {}
    for page in pages(client, service, method, **params):
        for key, value in page.items():
            if key in keys:
                whole.setdefault(key, []).extend(value)
            elif key not in whole:
                whole[key] = value
    for token_key in (config.get("output_token"), "ResponseMetadata", "IsTruncated", "ContinuationToken",
                      "NextContinuationToken"):
        if token_key:
            whole.pop(token_key, None)
    for key in keys:
        whole.setdefault(key, [])
    return whole


# --- JSON ---------------------------------------------------------------------------------------------------------
def to_json(value: Any, timestamps: str = "iso") -> Any:
    """Datetimes as JSON: 'iso' 8601 strings (boto3 responses recorded; aws-sdk task outputs) or 'millis' (what Step
    Functions' optimised integrations return). A naive datetime is taken as UTC."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return int(value.timestamp() * 1000) if timestamps == "millis" else value.isoformat()
    if isinstance(value, dict):
        return {k: to_json(v, timestamps) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v, timestamps) for v in value]
    return value


def jsonable(response: Any) -> Any:
    """A boto3 response as JSON to keep: datetimes as ISO 8601, ResponseMetadata dropped, binary refused."""
    if isinstance(response, dict):
        return {k: jsonable(v) for k, v in response.items() if k != "ResponseMetadata"}
    if isinstance(response, list | tuple):
        return [jsonable(v) for v in response]
    if isinstance(response, bytes | bytearray):
        raise TypeError("binary members are not recorded")
    return to_json(response)


def revive(value: Any, shape: Shape | None) -> Any:
    """Undo jsonable() along an output shape: timestamps become datetimes again, as boto3 returns them."""
    if shape is None or value is None:
        return value
    if shape.type_name == "timestamp" and isinstance(value, str | int | float):
        try:
            return parse_timestamp(value)  # type: ignore[arg-type]  # botocore takes epoch numbers too
        except (ValueError, TypeError):
            return value  # left for the validator to report
    if isinstance(shape, StructureShape) and isinstance(value, dict):
        return {k: revive(v, shape.members.get(k)) for k, v in value.items()}
    if isinstance(shape, ListShape) and isinstance(value, list):
        return [revive(v, shape.member) for v in value]
    if isinstance(shape, MapShape) and isinstance(value, dict):
        return {k: revive(v, shape.value) for k, v in value.items()}
    return value


# --- checks against the shapes ------------------------------------------------------------------------------------
@functools.cache
def compile_pattern(pattern: str | None) -> Any:
    """A shape's `pattern` as a compiled regex, or None. The models' patterns are Java regexes; the few `re` cannot
    read (\\p{L} classes, in tag keys and values) go to the `regex` module when installed, else are skipped."""
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


def constraint_errors(value: Any, shape: Shape, path: str = "") -> list[str]:
    """What botocore's client-side validator leaves to the service (max, pattern, enum), in AWS's own words."""
    errors: list[str] = []
    _constraints(value, shape, path, errors)
    return errors


# --- constraints AWS states in a member's documentation that botocore's shape does not carry ---------------------
# The SageMaker stand-in refuses them like SageMaker (request_problems), the config refuses them before anything is
# deployed, and the tests check every synthesized request against them (tests/support/sagemaker_model.py).
# botocore ProfilerConfig.ProfilingIntervalInMilliseconds: "Available values are 100, 200, 500, 1000 (1 second),
# 5000 (5 seconds), and 60000 (1 minute) milliseconds." (API_ProfilerConfig.html)
PROFILING_INTERVALS_MS: tuple[int, ...] = (100, 200, 500, 1000, 5000, 60000)
# botocore TrafficRoutingConfig.CanarySize: "Value must be less than or equal to 50% of the variant's total instance
# count"; LinearStepSize: "Value must be 10-50% of the variant's total instance count" (API_TrafficRoutingConfig.html,
# https://docs.aws.amazon.com/sagemaker/latest/dg/deployment-guardrails-blue-green-linear.html).
CANARY_MAX_PERCENT = 50
LINEAR_PERCENT = (10, 50)


def blue_green_waits(traffic: str, step_percent: int | None, wait_interval_s: int) -> int:
    """The WaitIntervalInSeconds of a blue/green shift, counted once per step: LINEAR bakes after each of its
    ceil(100 / step) steps (deployment-guardrails-blue-green-linear.html: "For each step, there is a baking period");
    a canary is one step, and ALL_AT_ONCE is counted once too, as BlueGreenUpdatePolicy's text names both waits."""
    if traffic == "LINEAR" and step_percent:
        return -(-100 // step_percent) * wait_interval_s
    return wait_interval_s


def _routing_errors(value: dict) -> list[str]:
    errors = []
    for member, (low, high) in (("CanarySize", (1, CANARY_MAX_PERCENT)), ("LinearStepSize", LINEAR_PERCENT)):
        size = value.get(member)
        if isinstance(size, dict) and size.get("Type") == "CAPACITY_PERCENT" and isinstance(size.get("Value"), int) \
                and not low <= size["Value"] <= high:
            errors.append(f"TrafficRoutingConfig.{member}: a CAPACITY_PERCENT of {size['Value']} is outside "
                          f"{low}-{high}% of the variant's capacity")
    return errors


def _blue_green_errors(value: dict) -> list[str]:
    # botocore BlueGreenUpdatePolicy.MaximumExecutionTimeoutInSeconds: "the timeout value should be larger than the
    # total waiting time specified in TerminationWaitInSeconds and WaitIntervalInSeconds".
    routing = value.get("TrafficRoutingConfiguration")
    limit, termination = value.get("MaximumExecutionTimeoutInSeconds"), value.get("TerminationWaitInSeconds", 0)
    if not isinstance(routing, dict) or not isinstance(limit, int) or not isinstance(termination, int):
        return []
    size = routing.get("LinearStepSize") or routing.get("CanarySize") or {}
    step = size.get("Value") if size.get("Type") == "CAPACITY_PERCENT" else None
    wait = routing.get("WaitIntervalInSeconds")
    if not isinstance(wait, int) or not isinstance(routing.get("Type"), str):
        return []
    total = termination + blue_green_waits(routing["Type"], step if isinstance(step, int) else None, wait)
    if limit <= total:
        return [f"BlueGreenUpdatePolicy.MaximumExecutionTimeoutInSeconds ({limit}) must be larger than the total "
                f"waiting time ({total} s: TerminationWaitInSeconds and every WaitIntervalInSeconds)"]
    return []


def _profiler_errors(value: dict) -> list[str]:
    interval = value.get("ProfilingIntervalInMilliseconds")
    if isinstance(interval, int) and interval not in PROFILING_INTERVALS_MS:
        return [f"ProfilerConfig.ProfilingIntervalInMilliseconds {interval} is not one of "
                f"{list(PROFILING_INTERVALS_MS)}"]
    return []


# botocore structure shape name -> its documented-only checks over a request's (static) members.
DOCUMENTED_CONSTRAINTS = {"ProfilerConfig": _profiler_errors, "TrafficRoutingConfig": _routing_errors,
                          "BlueGreenUpdatePolicy": _blue_green_errors}


def documented_errors(shape_name: str, value: Any) -> list[str]:
    """The documented-only constraints of a structure (DOCUMENTED_CONSTRAINTS); dynamic (`.$`) members are skipped."""
    check = DOCUMENTED_CONSTRAINTS.get(shape_name)
    return check(value) if check is not None and isinstance(value, dict) else []


def _constraints(value: Any, shape: Shape, path: str, errors: list[str]) -> None:
    meta = shape.metadata
    if isinstance(shape, StructureShape) and isinstance(value, dict):
        errors += [f"Value at '{_member_label(path)}' failed to satisfy constraint: {e}"
                   for e in documented_errors(shape.name, value)]
        for key, member_value in value.items():
            if key in shape.members:
                _constraints(member_value, shape.members[key], f"{path}.{key}", errors)
    elif isinstance(shape, ListShape) and isinstance(value, list):
        if "max" in meta and len(value) > meta["max"]:
            errors.append(f"Value at '{_member_label(path)}' failed to satisfy constraint: "
                          f"Member must have length less than or equal to {meta['max']}")
        for i, item in enumerate(value):
            _constraints(item, shape.member, f"{path}.{i + 1}", errors)
    elif isinstance(shape, MapShape) and isinstance(value, dict):
        if "max" in meta and len(value) > meta["max"]:
            errors.append(f"Value at '{_member_label(path)}' failed to satisfy constraint: "
                          f"Map must have length less than or equal to {meta['max']}")
        for key, item in value.items():
            _constraints(key, shape.key, f"{path}.{key}", errors)
            _constraints(item, shape.value, f"{path}.{key}", errors)
    elif isinstance(value, str) and isinstance(shape, StringShape):
        if "max" in meta and len(value) > meta["max"]:
            errors.append(f"Value '{value[:80]}' at '{_member_label(path)}' failed to satisfy constraint: "
                          f"Member must have length less than or equal to {meta['max']}")
        pattern = compile_pattern(meta.get("pattern"))
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


def request_problems(service: str, operation: str, params: dict) -> tuple[str | None, list[str]]:
    """(botocore's validator report or None, the service-side constraint errors) of a request."""
    shape = operation_model(service, operation).input_shape
    if shape is None:
        return None, []
    report = ParamValidator().validate(params, shape)
    if report.has_errors():
        return report.generate_report(), []
    return None, constraint_errors(params, shape)


def output_problems(service: str, operation: str, response: dict, *, constraints: bool = False) -> list[str]:
    """What is wrong with a response against the operation's output shape (timestamps may be JSON text);
    `constraints` adds the service-side ones (max, pattern, enum)."""
    shape = operation_model(service, operation).output_shape
    response = {k: v for k, v in response.items() if k != "ResponseMetadata"}
    if shape is None:
        return [] if not response else ["operation has no output"]
    revived = revive(response, shape)
    report = ParamValidator().validate(revived, shape)
    problems = [report.generate_report()] if report.has_errors() else []
    return problems + (constraint_errors(revived, shape) if constraints else [])


# --- S3 URIs ------------------------------------------------------------------------------------------------------
# Path-style (https://s3.<region>.amazonaws.com/bucket/key, CDK's L2 tasks) and virtual-hosted style:
# https://docs.aws.amazon.com/AmazonS3/latest/userguide/VirtualHosting.html
_PATH_STYLE = re.compile(r"^s3([.-][a-z0-9-]+)?\.amazonaws\.com(\.cn)?$")
_VIRTUAL_HOSTED = re.compile(r"^(?P<bucket>[a-z0-9.-]+)\.s3([.-][a-z0-9-]+)?\.amazonaws\.com(\.cn)?$")
# https://docs.aws.amazon.com/AmazonS3/latest/userguide/bucketnamingrules.html (3-63 characters)
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


class S3UriError(ValueError):
    """Not an S3 location (the message says why, in one line)."""


def parse_s3_uri(uri: str, *, strict: bool = False) -> tuple[str, str]:
    """(bucket, key) of s3://bucket/key or an S3 https URL (path-style or virtual-hosted). `strict` also wants a
    valid bucket name and no '..' in the key (what a service would refuse)."""
    parsed = urlparse(uri)
    if parsed.scheme == "s3" and parsed.netloc:
        bucket, key = parsed.netloc, parsed.path.lstrip("/")
    elif parsed.scheme in ("https", "http"):
        host = parsed.netloc.split(":")[0].lower()
        path = unquote(parsed.path).lstrip("/")
        if _PATH_STYLE.match(host):
            bucket, _, key = path.partition("/")
        elif m := _VIRTUAL_HOSTED.match(host):
            bucket, key = m["bucket"], path
        else:
            raise S3UriError(f"not an S3 location: {uri!r} is not an Amazon S3 URL")
    else:
        raise S3UriError(f"not an S3 location: {uri!r} (expected s3://bucket/key)")
    if strict and not _BUCKET.match(bucket or ""):
        raise S3UriError(f"not an S3 location: invalid bucket name {bucket!r} in {uri!r}")
    if strict and ".." in key.split("/"):
        raise S3UriError(f"not an S3 location: invalid key in {uri!r}")
    return bucket, key


def s3_uri(bucket: str, key: str) -> str:
    return f"s3://{bucket}/{key}"


def join_key(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))


# --- ARNs ---------------------------------------------------------------------------------------------------------
def region_of_arn(arn: str) -> str | None:
    """arn:partition:service:region:account:resource -> region (None for a global or malformed ARN)."""
    parts = arn.split(":")
    return parts[3] if len(parts) > 4 and parts[0] == "arn" and parts[3] else None
