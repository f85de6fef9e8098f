"""A local API Gateway (REST API, Lambda proxy integration) in front of the unchanged Lambda handler.

Each HTTP request becomes a REST proxy event (format 1.0) exactly as API Gateway builds it: bodies whose
Content-Type matches the binary media types arrive base64 with isBase64Encoded=true, anything else as UTF-8
text. API Gateway's own limit applies here (10 MB -> 413), and so does Lambda's 6 MB event limit. Only
POST /predict is routed; other paths get 404, other methods 405, both as the contract's JSON errors.
"""

from __future__ import annotations

import base64
import binascii
import importlib
import logging
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qs

import stackfacts as facts
from local import wsgi
from ml import contract

ROOT = Path(__file__).resolve().parent.parent
LAMBDA_DIR = ROOT / "lambda"
STAGE = "local"
ACCOUNT = facts.LOCAL_ACCOUNT
Handler = Callable[[dict, Any], dict]
log = logging.getLogger("local.rest_api")


def load_forwarder() -> ModuleType:
    """Import lambda/forwarder.py the way the Lambda runtime does (its folder is the task root).

    Its boto3 client is created at import, so set AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME, the region and
    credentials before the first call.
    """
    if str(LAMBDA_DIR) not in sys.path:
        sys.path.insert(0, str(LAMBDA_DIR))
    return importlib.import_module("forwarder")


@dataclass
class LambdaContext:
    """The attributes of the Lambda runtime's context object that handlers and Powertools read."""

    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    function_name: str = "predict-local"
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 1024
    timeout_s: float = 29.0
    log_group_name: str = "/aws/lambda/predict-local"
    log_stream_name: str = "local"
    _started: float = field(default_factory=time.monotonic)

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:local:{ACCOUNT}:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.timeout_s - (time.monotonic() - self._started)) * 1000))


def is_binary(content_type: str | None) -> bool:
    """API Gateway's binaryMediaTypes match: exact types and 'type/*' wildcards."""
    media = contract.media_type(content_type)
    for pattern in contract.BINARY_MEDIA_TYPES:
        if pattern == "*/*" or media == pattern or (pattern.endswith("/*") and media.startswith(pattern[:-1])):
            return True
    return False


def _headers(environ: dict) -> dict[str, str]:
    headers = {}
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            headers[key[5:].replace("_", "-").title()] = value
    for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        if environ.get(key):
            headers[key.replace("_", "-").title()] = environ[key]
    return headers


def make_event(environ: dict, body: bytes, request_id: str) -> dict:
    """An API Gateway REST proxy event for one WSGI request."""
    headers = _headers(environ)
    query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    binary = is_binary(environ.get("CONTENT_TYPE"))
    path, method = environ.get("PATH_INFO", "/"), environ.get("REQUEST_METHOD", "GET")
    return {
        "resource": path,
        "path": path,
        "httpMethod": method,
        "headers": headers or None,
        "multiValueHeaders": {k: [v] for k, v in headers.items()} or None,
        "queryStringParameters": {k: v[-1] for k, v in query.items()} or None,
        "multiValueQueryStringParameters": query or None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": path, "httpMethod": method, "path": f"/{STAGE}{path}", "stage": STAGE,
            "requestId": request_id, "extendedRequestId": request_id, "accountId": ACCOUNT, "apiId": "local",
            "protocol": environ.get("SERVER_PROTOCOL", "HTTP/1.1"), "requestTimeEpoch": int(time.time() * 1000),
            "identity": {"sourceIp": environ.get("REMOTE_ADDR"), "userAgent": headers.get("User-Agent")},
        },
        # No body is null, as API Gateway sends it; text bodies as API Gateway decodes them (bad UTF-8 replaced).
        "body": (base64.b64encode(body).decode("ascii") if binary else body.decode("utf-8", "replace"))
        if body else None,
        "isBase64Encoded": bool(body) and binary,
    }


class RestApi:
    """The WSGI app: routing, API Gateway's limits, event in, Lambda proxy response out."""

    def __init__(self, handler: Handler | None) -> None:
        self.handler = handler  # None until the Lambda is ready: the port can be held before that

    def __call__(self, environ: dict, start_response: wsgi.StartResponse) -> list[bytes]:
        request_id = str(uuid.uuid4())
        headers = [("x-amzn-RequestId", request_id)]
        path, method = environ.get("PATH_INFO", ""), environ.get("REQUEST_METHOD", "GET")
        if path != contract.PREDICT_PATH:
            return wsgi.respond_error(start_response, contract.NOT_FOUND,
                                      f"no resource {path}: POST images to {contract.PREDICT_PATH}", headers)
        if method != "POST":
            return wsgi.respond_error(start_response, contract.METHOD_NOT_ALLOWED,
                                      f"{method} is not allowed on {contract.PREDICT_PATH}: use POST",
                                      [*headers, ("Allow", "POST")])
        body = wsgi.read_body(environ, contract.API_GATEWAY_MAX_BODY_BYTES)
        if body is None:
            return wsgi.respond_error(
                start_response, contract.PAYLOAD_TOO_LARGE,
                f"the request is over API Gateway's {contract.API_GATEWAY_MAX_BODY_BYTES:,} byte limit; images "
                f"can be at most {contract.API_MAX_IMAGE_BYTES:,} bytes", headers)
        event = make_event(environ, body, request_id)
        if len(event["body"] or "") + 4096 > contract.LAMBDA_MAX_EVENT_BYTES:
            # Lambda refuses events over 6 MB before the function runs; base64 makes that ~4.4 MB of image.
            return wsgi.respond_error(
                start_response, contract.PAYLOAD_TOO_LARGE,
                f"the image is {len(body):,} bytes; through API Gateway and Lambda (base64) the limit is "
                f"{contract.API_MAX_IMAGE_BYTES:,} bytes", headers)
        if self.handler is None:
            return wsgi.respond_error(start_response, contract.SERVICE_UNAVAILABLE, "the API is starting", headers)
        try:
            result = self.handler(event, LambdaContext())
            return self._write(result, start_response, headers)
        except Exception:
            # API Gateway answers 502 when the integration fails or returns a malformed proxy response.
            log.exception("the Lambda handler failed")
            return wsgi.respond_error(start_response, contract.MODEL_ERROR, "the prediction function failed",
                                      headers)

    @staticmethod
    def _write(result: dict, start_response: wsgi.StartResponse, extra: list[tuple[str, str]]) -> list[bytes]:
        status = int(result["statusCode"])
        body = result.get("body") or ""
        try:
            data = base64.b64decode(body, validate=True) if result.get("isBase64Encoded") else body.encode("utf-8")
        except (binascii.Error, ValueError) as exc:
            raise ValueError("the Lambda flagged a body as base64 that is not") from exc
        headers = dict(result.get("headers") or {})
        for name, values in (result.get("multiValueHeaders") or {}).items():
            headers[name] = ", ".join(str(v) for v in values)
        lowered = {k.lower(): k for k in headers}
        headers.pop(lowered.get("content-length", ""), None)
        content_type = headers.pop(lowered.get("content-type", ""), None) or contract.JSON_CONTENT_TYPE
        return wsgi.respond(start_response, status, data, content_type,
                            [*extra, *((str(k), str(v)) for k, v in headers.items())])


def create_server(handler: Handler | None, host: str = "127.0.0.1", port: int = 0, threads: int = 8) -> wsgi.Server:
    """The REST front on waitress (its app is `server.app`). Bodies above waitress's 16 MB cap get waitress's own
    plain-text 413, as bodies above 10 MB get API Gateway's own answer in the cloud."""
    return wsgi.Server(RestApi(handler), host, port, threads=threads,
                       max_request_body_size=16 * 1024 * 1024, ident="local-api-gateway")
