"""The forwarder Lambda as API Gateway and SageMaker see it: proxy events, endpoint answers, its JSON replies."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.response import StreamingBody

import stackfacts as facts
from local.rest_api import LambdaContext, load_forwarder
from ml import contract
from tests.support.serve import DIGIT_CLASSES, GOOD_PNG

ENDPOINT = "ep-test"
CLASSES = DIGIT_CLASSES  # what the forwarder tests' endpoint answers
FAKE_AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
            "AWS_DEFAULT_REGION": facts.LOCAL_REGION, "AWS_REGION": facts.LOCAL_REGION,
            "AWS_EC2_METADATA_DISABLED": "true"}


def event(body: bytes | str | None = GOOD_PNG, content_type: str | None = "image/png", b64: bool | None = None,
          query: dict | None = None, method: str = "POST", headers: dict | None = None) -> dict:
    """A REST proxy event as API Gateway builds it (bytes -> base64 unless told otherwise)."""
    if isinstance(body, bytes):
        b64 = True if b64 is None else b64
        body = base64.b64encode(body).decode() if b64 else body.decode("utf-8", "replace")
    all_headers = {**({"Content-Type": content_type} if content_type else {}), **(headers or {})}
    return {
        "resource": "/predict", "path": "/predict", "httpMethod": method, "headers": all_headers or None,
        "multiValueHeaders": {k: [v] for k, v in all_headers.items()} or None,
        "queryStringParameters": query, "requestContext": {"requestId": "req-123", "stage": "test"},
        "body": body, "isBase64Encoded": bool(b64),
    }


def all_classes(scores: list[float] | None = None) -> bytes:
    scores = scores or [0.55, 0.2, 0.1, 0.05, 0.04, 0.03, 0.01, 0.01, 0.005, 0.005]
    return json.dumps({"predictions": [{"label": str(i), "score": s} for i, s in enumerate(scores)],
                       "model": "job-1"}).encode()


def ok_response(data: bytes) -> dict:
    return {"Body": StreamingBody(io.BytesIO(data), len(data)), "ContentType": contract.JSON_CONTENT_TYPE,
            "InvokedProductionVariant": facts.VARIANT_NAME}


def expected_call(body: bytes = GOOD_PNG) -> dict:
    return {"EndpointName": ENDPOINT, "Body": body, "ContentType": "application/x-image",
            "Accept": contract.JSON_CONTENT_TYPE}


def call(forwarder, ev: dict) -> tuple[int, dict]:
    response = forwarder.handler(ev, LambdaContext())
    assert response["isBase64Encoded"] is False
    assert response["headers"]["Content-Type"] == contract.JSON_CONTENT_TYPE
    return response["statusCode"], json.loads(response["body"])


def error_of(status: int, payload: dict) -> tuple[int, str]:
    assert set(payload) == {"error"} and set(payload["error"]) == {"code", "message"}, payload
    assert "Traceback" not in payload["error"]["message"]
    return status, payload["error"]["code"]


def forwarder_as_deployed() -> Iterator[Any]:
    """lambda/forwarder.py as the local API loads it: fake credentials, no endpoint URL (a module fixture's body)."""
    with pytest.MonkeyPatch.context() as mp:
        for key, value in FAKE_AWS.items():
            mp.setenv(key, value)
        for key in ("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", "AWS_ENDPOINT_URL", "AWS_PROFILE"):
            mp.delenv(key, raising=False)
        yield load_forwarder()
