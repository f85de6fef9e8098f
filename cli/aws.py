"""Helpers over boto3-shaped clients: pagination from botocore's own paginator model, JSON-safe responses, output
shape validation, S3 URIs. They work on any object with the client's methods (real, stubbed, recorded, local)."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote, urlparse

import botocore.session
from botocore.model import ListShape, MapShape, OperationModel, Shape, StructureShape
from botocore.utils import parse_timestamp
from botocore.validate import ParamValidator

from cli.errors import CliError

MAX_PAGES = 10_000  # a token that never ends is a bug of the server, not a reason to loop forever


@functools.cache
def _session() -> botocore.session.Session:
    return botocore.session.get_session()


@functools.cache
def _operation_names(service: str) -> dict[str, str]:
    """python method name -> API operation name (describe_training_job -> DescribeTrainingJob)."""
    from botocore import xform_name

    model = _session().get_service_model(service)
    return {xform_name(op): op for op in model.operation_names}


def operation_model(service: str, method: str) -> OperationModel:
    return _session().get_service_model(service).operation_model(_operation_names(service)[method])


@functools.cache
def paginator_config(service: str, method: str) -> dict[str, Any] | None:
    model = _session().get_paginator_model(service)
    try:
        return dict(model.get_paginator(_operation_names(service)[method]))
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
        whole.pop(token_key, None)
    for key in keys:
        whole.setdefault(key, [])
    return whole


# --- JSON ------------------------------------------------------------------------------------------------------
def jsonable(value: Any) -> Any:
    """A response as JSON: datetimes to ISO 8601 strings, ResponseMetadata dropped."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return value.isoformat()
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items() if k != "ResponseMetadata"}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, bytes | bytearray):
        raise TypeError("binary members are not recorded")
    return value


def revive(value: Any, shape: Shape | None) -> Any:
    """Undo jsonable() along an output shape: timestamps become datetimes again, as boto3 returns them."""
    if shape is None or value is None:
        return value
    if shape.type_name == "timestamp" and isinstance(value, str | int | float):
        try:
            return parse_timestamp(value)
        except (ValueError, TypeError):
            return value  # left for the validator to report
    if isinstance(shape, StructureShape) and isinstance(value, dict):
        return {k: revive(v, shape.members.get(k)) for k, v in value.items()}
    if isinstance(shape, ListShape) and isinstance(value, list):
        return [revive(v, shape.member) for v in value]
    if isinstance(shape, MapShape) and isinstance(value, dict):
        return {k: revive(v, shape.value) for k, v in value.items()}
    return value


def shape_problems(service: str, method: str, response: dict) -> list[str]:
    """What botocore's validator finds wrong with a response against the operation's output shape."""
    shape = operation_model(service, method).output_shape
    if shape is None:
        return []
    response = {k: v for k, v in response.items() if k != "ResponseMetadata"}
    report = ParamValidator().validate(revive(response, shape), shape)
    return [report.generate_report()] if report.has_errors() else []


# --- S3 --------------------------------------------------------------------------------------------------------
def parse_s3_uri(uri: str) -> tuple[str, str]:
    """(bucket, key) of s3://bucket/key or a path-style https://s3.<region>.amazonaws.com/bucket/key URL."""
    parsed = urlparse(uri)
    if parsed.scheme == "s3" and parsed.netloc:
        return parsed.netloc, parsed.path.lstrip("/")
    if parsed.scheme in ("http", "https") and parsed.netloc.split(":")[0].endswith("amazonaws.com"):
        host = parsed.netloc.split(":")[0]
        path = unquote(parsed.path).lstrip("/")
        if host.startswith("s3.") or host.startswith("s3-") or host == "s3.amazonaws.com":
            bucket, _, key = path.partition("/")
            return bucket, key
        if ".s3." in host or ".s3-" in host:
            return host.split(".s3", 1)[0], path
    raise CliError(f"not an S3 location: {uri!r} (expected s3://bucket/key)")


def s3_uri(bucket: str, key: str) -> str:
    return f"s3://{bucket}/{key}"


def join_key(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))


def console_s3_url(bucket: str, key: str, region: str) -> str:
    return f"https://s3.console.aws.amazon.com/s3/object/{bucket}?region={region}&prefix={key}"


def console_execution_url(arn: str, region: str) -> str:
    return f"https://{region}.console.aws.amazon.com/states/home?region={region}#/v2/executions/details/{arn}"


def region_of_arn(arn: str) -> str | None:
    parts = arn.split(":")
    return parts[3] if len(parts) > 4 and parts[0] == "arn" and parts[3] else None
