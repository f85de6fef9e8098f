"""SageMaker's request/response shapes from botocore's service model: validation, ARNs, JSON rendering."""

from __future__ import annotations

import datetime as dt
import re

from botocore.model import OperationModel, ServiceModel

import awsshapes
import stackfacts as facts
from awsshapes import to_json
from local.sagemaker.errors import SageMakerError, validation

__all__ = ["DEFAULT_ACCOUNT", "DEFAULT_REGION", "arn", "now", "operation_model", "paginate", "service_model",
           "to_json", "validate_request", "validate_response"]

DEFAULT_REGION, DEFAULT_ACCOUNT = facts.LOCAL_REGION, facts.LOCAL_ACCOUNT


def service_model() -> ServiceModel:
    return awsshapes.service_model("sagemaker")


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


def validate_request(operation: str, params: dict) -> None:
    """Raise ValidationException as SageMaker would for a request that does not fit the API's shape."""
    operation_model(operation)  # an unknown operation is UnknownOperationException
    report, errors = awsshapes.request_problems("sagemaker", operation, params)
    if report:
        raise validation(report).with_operation(operation)
    if errors:
        noun = "error" if len(errors) == 1 else "errors"
        raise validation(f"{len(errors)} validation {noun} detected: " + "; ".join(errors)).with_operation(operation)


def validate_response(operation: str, response: dict) -> list[str]:
    """Problems of a response against the output shape (used by tests: the stand-in must speak the API)."""
    operation_model(operation)
    return awsshapes.output_problems("sagemaker", operation, response, constraints=True)


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
