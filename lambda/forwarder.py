"""The function behind API Gateway's POST /predict: image bytes in, top-k labels out.

API Gateway (REST, Lambda proxy integration) -> validate -> SageMaker InvokeEndpoint -> top-k JSON.
The endpoint answers every class, best first (code/inference.py's output_fn); this function cuts to top_k.

Bundle: this file + ml/__init__.py + ml/contract.py; Powertools comes from the AWS Lambda layer. So import only
ml.contract, the standard library, boto3/botocore and aws_lambda_powertools here.
Configuration: ENDPOINT_NAME (required). Locally, AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME points the client at a
local endpoint server (local/serve.py).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import boto3
from aws_lambda_powertools import Logger
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from ml import contract
from ml.contract import ApiError, ApiException

ENDPOINT_NAME_ENV = "ENDPOINT_NAME"
# What the Lambda sends on: the bytes are already sniffed as a real image, and this media type is one the
# inference toolkit never decodes as UTF-8 text.
ENDPOINT_CONTENT_TYPE = "application/x-image"


@dataclass(frozen=True)
class Limits:
    """What the serving mode allows (infra/api.py sets the variables): the largest image, and how long and how
    often to wait for the endpoint. API Gateway gives up after 29 s with its own 504: the attempts (plus connects
    and one backoff) end inside it, so a slow model surfaces as this function's JSON 504. An instance endpoint
    answers warm (two attempts of 10 s); a serverless one takes at most 4 MB and may start cold (one of 24 s).
    The Lambda's own timeout should be at least 28 s."""

    max_image_bytes: int = contract.API_MAX_IMAGE_BYTES
    read_timeout_s: float = 10.0
    attempts: int = 2

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Limits:
        default = cls()
        return cls(int(environ.get(contract.ENV_MAX_IMAGE_BYTES, default.max_image_bytes)),
                   float(environ.get(contract.ENV_READ_TIMEOUT_S, default.read_timeout_s)),
                   int(environ.get(contract.ENV_ATTEMPTS, default.attempts)))

    @property
    def max_encoded(self) -> int:
        return (self.max_image_bytes + 2) // 3 * 4  # base64 length of the largest image accepted

    def client_config(self) -> Config:
        return Config(connect_timeout=2, read_timeout=self.read_timeout_s, tcp_keepalive=True,
                      retries={"mode": "standard", "total_max_attempts": self.attempts})


LIMITS = Limits.from_env(os.environ)
READ_TIMEOUT_S = LIMITS.read_timeout_s
CLIENT_CONFIG = LIMITS.client_config()
THROTTLING_CODES = frozenset({
    "ThrottlingException", "Throttling", "TooManyRequestsException", "RequestThrottled", "RequestLimitExceeded",
    "ProvisionedThroughputExceededException", "ModelNotReadyException", "ServiceUnavailable",
})
_TOP_K = re.compile(r"[0-9]{1,9}")
# The model's 4xx that are the client's to fix (anything else from the model is our fault: 502). A bare status
# without the contract's JSON maps to the error that owns it; a bare 400 means the image.
_CLIENT_ERRORS: tuple[ApiError, ...] = (
    contract.INVALID_IMAGE, contract.EMPTY_BODY, contract.INVALID_PARAMETER, contract.PAYLOAD_TOO_LARGE,
    contract.UNSUPPORTED_MEDIA_TYPE, contract.UNPROCESSABLE_IMAGE,
)
_ERRORS_BY_CODE: dict[str, ApiError] = {e.code: e for e in _CLIENT_ERRORS}
_ERRORS_BY_STATUS: dict[int, ApiError] = {e.status: e for e in reversed(_CLIENT_ERRORS)}

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "predict"))


def make_client(endpoint_url: str | None = None, **config: Any):
    """A sagemaker-runtime client; created once per container (module level) and reused across invocations.

    `config` overrides CLIENT_CONFIG (tests shorten timeouts); endpoint_url defaults to the AWS one, or to
    AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME when that is set (local mode).
    """
    merged = CLIENT_CONFIG.merge(Config(**config)) if config else CLIENT_CONFIG
    return boto3.client("sagemaker-runtime", config=merged, endpoint_url=endpoint_url)


sagemaker_runtime = make_client()


def handler(event: dict, context: Any) -> dict:
    started = time.perf_counter()
    event = event if isinstance(event, dict) else {}
    request_id = (event.get("requestContext") or {}).get("requestId")
    # Thread-safe keys: the local REST front calls this handler from several threads at once.
    logger.thread_safe_clear_keys()
    logger.thread_safe_append_keys(request_id=request_id,
                                   function_request_id=getattr(context, "aws_request_id", None))
    facts: dict[str, Any] = {}
    try:
        response = _predict(event, facts)
    except ApiException as exc:
        facts["error"] = exc.error.code
        response = _error(exc.error, exc.message)
    except Exception:
        logger.exception("unexpected failure")
        facts["error"] = contract.INTERNAL_ERROR.code
        response = _error(contract.INTERNAL_ERROR, "the prediction service failed unexpectedly")
    logger.info("predict", extra={"status": response["statusCode"],
                                  "latency_ms": round((time.perf_counter() - started) * 1000, 2), **facts})
    return response


def _predict(event: dict, facts: dict[str, Any]) -> dict:
    method = event.get("httpMethod")
    if method and method.upper() != "POST":
        raise ApiException(contract.METHOD_NOT_ALLOWED, f"{method} is not allowed on {contract.PREDICT_PATH}: use POST")
    endpoint = os.environ.get(ENDPOINT_NAME_ENV)
    if not endpoint:
        raise ApiException(contract.SERVICE_UNAVAILABLE, "the prediction endpoint is not configured")
    top_k = _top_k(event.get("queryStringParameters"))
    body = _body(event)
    fmt = contract.check_image_request(body, _header(event, "content-type"), LIMITS.max_image_bytes)
    facts.update(endpoint=endpoint, bytes=len(body), format=fmt, top_k=top_k)

    predictions = _invoke(endpoint, body, facts)
    if top_k is not None and top_k > len(predictions):
        raise ApiException(contract.INVALID_PARAMETER,
                           f"top_k={top_k} is above the number of classes ({len(predictions)})")
    k = top_k if top_k is not None else min(contract.DEFAULT_TOP_K, len(predictions))
    return _response(200, {"predictions": predictions[:k], "model": endpoint})


def _top_k(params: dict | None) -> int | None:
    raw = (params or {}).get(contract.TOP_K_PARAM)
    if raw is None:
        return None
    value = int(raw) if isinstance(raw, str) and _TOP_K.fullmatch(raw) else 0
    if value < 1:
        raise ApiException(contract.INVALID_PARAMETER,
                           f"{contract.TOP_K_PARAM} must be an integer from 1 to the number of classes, "
                           f"not {str(raw)[:20]!r}")
    return value


def _header(event: dict, name: str) -> str | None:
    # API Gateway keeps the client's spelling of header names.
    for key, value in (event.get("headers") or {}).items():
        if key.lower() == name:
            return value
    for key, values in (event.get("multiValueHeaders") or {}).items():
        if key.lower() == name and values:
            return values[-1]
    return None


def _body(event: dict) -> bytes:
    """The request body as bytes. Binary media types arrive base64; never decode them as UTF-8 text."""
    body = event.get("body")
    if body is None:
        return b""
    if not isinstance(body, str):
        raise ApiException(contract.INVALID_IMAGE, "the request body is not a string in the event")
    if not event.get("isBase64Encoded"):
        return body.encode("utf-8", "replace")
    if len(body) > LIMITS.max_encoded:  # refuse before decoding megabytes we would throw away
        raise ApiException(contract.PAYLOAD_TOO_LARGE,
                           f"the image is about {len(body) * 3 // 4:,} bytes; the limit is "
                           f"{LIMITS.max_image_bytes:,} bytes (API Gateway -> Lambda carries base64)")
    try:
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise ApiException(contract.INVALID_IMAGE, "the body is flagged base64 but is not valid base64") from None


def _invoke(endpoint: str, body: bytes, facts: dict[str, Any]) -> list[dict]:
    started = time.perf_counter()
    try:
        response = sagemaker_runtime.invoke_endpoint(
            EndpointName=endpoint, Body=body, ContentType=ENDPOINT_CONTENT_TYPE, Accept=contract.JSON_CONTENT_TYPE,
        )
        payload = response["Body"].read()
    except ClientError as exc:
        raise _from_client_error(exc, endpoint, facts) from None
    except ReadTimeoutError:
        raise ApiException(contract.GATEWAY_TIMEOUT,
                           f"the model did not answer within {LIMITS.read_timeout_s:g} s; try again later") from None
    except (EndpointConnectionError, ConnectTimeoutError, ConnectionClosedError) as exc:
        facts["endpoint_error"] = type(exc).__name__
        raise ApiException(contract.SERVICE_UNAVAILABLE, "the model endpoint cannot be reached; retry later") from None
    except BotoCoreError as exc:
        facts["endpoint_error"] = type(exc).__name__
        raise ApiException(contract.MODEL_ERROR, "the call to the model failed") from None
    finally:
        facts["endpoint_ms"] = round((time.perf_counter() - started) * 1000, 2)
    return _predictions(payload)


def _predictions(payload: bytes) -> list[dict]:
    try:
        predictions = json.loads(payload)["predictions"]
        if not isinstance(predictions, list) or not predictions:
            raise ValueError("no predictions")
        return [{"label": str(p["label"]), "score": float(p["score"])} for p in predictions]
    except (ValueError, KeyError, TypeError):
        raise ApiException(contract.MODEL_ERROR, "the model returned a response this service cannot read") from None


def _from_client_error(exc: ClientError, endpoint: str, facts: dict[str, Any]) -> ApiException:
    response = exc.response
    code = response.get("Error", {}).get("Code", "")
    message = response.get("Error", {}).get("Message", "")
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
    facts.update(endpoint_error=code, endpoint_status=status)
    if code == "ModelError":
        original = response.get("OriginalStatusCode")
        facts["model_status"] = original
        if isinstance(original, int) and 400 <= original < 500:
            return _from_model_client_error(original, str(response.get("OriginalMessage") or ""))
        return ApiException(contract.MODEL_ERROR, "the model failed to process the image")
    if code in THROTTLING_CODES or status in (429, 503):
        return ApiException(contract.SERVICE_UNAVAILABLE, "the model endpoint is busy or not ready; retry with backoff")
    if code == "ValidationError" and re.search(r"not found|inservice|in service|not ready", message, re.IGNORECASE):
        # The message names the account: log it, never send it.
        logger.warning("endpoint unavailable", extra={"endpoint_message": message[:300]})
        return ApiException(contract.SERVICE_UNAVAILABLE, f"the model endpoint {endpoint!r} is not available")
    logger.warning("endpoint refused the call", extra={"endpoint_message": message[:300]})
    return ApiException(contract.MODEL_ERROR, "the model endpoint refused the call")


def _from_model_client_error(status: int, original: str) -> ApiException:
    """The model's own 4xx: ml/inference.py puts the contract's JSON on the first line; SageMaker appends the
    container's traceback after a newline, which must never reach the client."""
    first = original.split("\n", 1)[0].strip()
    try:
        error = json.loads(first)["error"]
        known = _ERRORS_BY_CODE.get(error["code"])
        if known is not None and known.status == status:
            return ApiException(known, str(error["message"])[:500])
    except (ValueError, KeyError, TypeError):
        pass
    known = _ERRORS_BY_STATUS.get(status)
    if known is None:
        return ApiException(contract.MODEL_ERROR, f"the model refused the request ({status})")
    return ApiException(known, first[:300] or f"the model refused the image ({status})")


def _response(status: int, body: dict) -> dict:
    return {
        "statusCode": status,
        "headers": {"Content-Type": contract.JSON_CONTENT_TYPE, "Cache-Control": "no-store"},
        "body": json.dumps(body),
        "isBase64Encoded": False,
    }


def _error(error: ApiError, message: str) -> dict:
    response = _response(error.status, contract.error_body(error, message))
    if error is contract.METHOD_NOT_ALLOWED:
        response["headers"]["Allow"] = "POST"
    return response
