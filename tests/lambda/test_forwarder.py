"""lambda/forwarder.py: API Gateway REST proxy events in, InvokeEndpoint out. Error mappings with botocore's
Stubber (no AWS), then the real path against the local endpoint server around a model trained by ml/train.py."""

from __future__ import annotations

import base64
import io
import json
import socket
import time
from typing import Any

import pytest
from botocore.stub import Stubber

import stackfacts as facts
from local import wsgi
from local.endpoint_server import start_endpoint_server
from local.rest_api import LambdaContext
from ml import contract
from tests.support.forwarder import (
    CLASSES,
    ENDPOINT,
    all_classes,
    call,
    error_of,
    event,
    expected_call,
    forwarder_as_deployed,
    ok_response,
)
from tests.support.serve import (
    GOOD_PNG,
    assert_predictions,
    corrupt_png_data,
    digit,
    encode,
    png_declaring,
)


@pytest.fixture(scope="module")
def forwarder():
    yield from forwarder_as_deployed()


@pytest.fixture
def logs(forwarder):
    """Everything the Powertools logger writes during one test, as parsed JSON records."""
    stream = io.StringIO()
    handler = forwarder.logger.registered_handler
    previous = handler.setStream(stream)
    records: list[dict] = []
    yield lambda: records.extend(json.loads(line) for line in stream.getvalue().splitlines()) or records
    handler.setStream(previous)


@pytest.fixture
def stub(forwarder, monkeypatch):
    client = forwarder.make_client()
    monkeypatch.setattr(forwarder, "sagemaker_runtime", client)
    monkeypatch.setenv("ENDPOINT_NAME", ENDPOINT)
    with Stubber(client) as stubber:
        yield stubber
        stubber.assert_no_pending_responses()


# --- the happy path -----------------------------------------------------------------------------------------
def test_client_is_created_once_with_timeouts_and_retries(forwarder):
    config = forwarder.sagemaker_runtime.meta.config
    assert config.read_timeout == forwarder.READ_TIMEOUT_S and config.connect_timeout == 2
    assert config.retries["total_max_attempts"] == 2 and config.retries["mode"] == "standard"
    # Two attempts must end before API Gateway's 29 s so our JSON 504 wins.
    assert 2 * (config.read_timeout + config.connect_timeout) + 1 < 29
    assert forwarder.sagemaker_runtime.meta.service_model.service_name == "sagemaker-runtime"


def test_forwards_bytes_and_cuts_to_top_k(forwarder, stub):
    stub.add_response("invoke_endpoint", ok_response(all_classes()), expected_call())
    status, payload = call(forwarder, event(query={"top_k": "3"}))
    assert status == 200
    assert payload["model"] == ENDPOINT
    assert [p["label"] for p in payload["predictions"]] == ["0", "1", "2"]
    assert_predictions(payload, 3)


def test_default_top_k_and_models_with_fewer_classes(forwarder, stub):
    stub.add_response("invoke_endpoint", ok_response(all_classes()), expected_call())
    assert_predictions(call(forwarder, event())[1], contract.DEFAULT_TOP_K)
    three = json.dumps({"predictions": [{"label": c, "score": s} for c, s in (("a", .7), ("b", .2), ("c", .1))]})
    stub.add_response("invoke_endpoint", ok_response(three.encode()), expected_call())
    status, payload = call(forwarder, event())
    assert status == 200 and len(payload["predictions"]) == 3  # default 5 never exceeds the classes


def test_real_jpeg_bytes_survive_base64_untouched(forwarder, stub):
    jpeg = encode(digit(64), "JPEG")
    assert not jpeg.decode("latin-1").isascii()  # high bytes a UTF-8 decode would mangle
    stub.add_response("invoke_endpoint", ok_response(all_classes()), expected_call(jpeg))
    assert call(forwarder, event(jpeg, "image/jpeg"))[0] == 200


def test_header_names_are_case_insensitive_and_multi_value_only_works(forwarder, stub):
    stub.add_response("invoke_endpoint", ok_response(all_classes()), expected_call())
    ev = event(content_type=None, headers={"content-TYPE": "image/png"})
    assert call(forwarder, ev)[0] == 200
    stub.add_response("invoke_endpoint", ok_response(all_classes()), expected_call())
    ev = event(content_type=None)
    ev["headers"], ev["multiValueHeaders"] = None, {"Content-Type": ["image/png"]}
    assert call(forwarder, ev)[0] == 200


# --- refused before the endpoint is called (the Stubber fails on any unexpected call) -----------------------
@pytest.mark.parametrize(("ev", "status", "code"), [
    pytest.param(event(b""), 400, "empty_body", id="empty"),
    pytest.param(event(None), 400, "empty_body", id="null-body"),
    pytest.param({**event(), "body": "not base64 at all!"}, 400, "invalid_image", id="base64-flag-on-text"),
    pytest.param({**event(), "body": "iVBORw0KGgo=" + "é"}, 400, "invalid_image", id="base64-flag-non-ascii"),
    pytest.param({**event(), "body": "iVBORw0KGgo"}, 400, "invalid_image", id="base64-bad-padding"),
    pytest.param({**event(), "body": {"not": "a string"}}, 400, "invalid_image", id="body-not-a-string"),
    pytest.param(event(GOOD_PNG, "text/plain", b64=False), 415, "unsupported_media_type", id="png-as-text"),
    pytest.param(event(b"<html></html>", "text/html", b64=False), 415, "unsupported_media_type", id="html"),
    pytest.param(event(b'{"a": 1}', "application/json", b64=False), 415, "unsupported_media_type", id="json"),
    pytest.param(event(b"%PDF-1.4", "application/pdf"), 415, "unsupported_media_type", id="pdf"),
    pytest.param(event(b"\x00\x01\x02", "image/png"), 400, "invalid_image", id="bytes-as-png"),
    pytest.param(event(b"\xff\xd8\xff" + b"\x00" * 4_400_000, "image/jpeg"), 413, "payload_too_large",
                 id="oversize"),
    pytest.param(event(query={"top_k": "0"}), 400, "invalid_parameter", id="top_k-0"),
    pytest.param(event(query={"top_k": "-3"}), 400, "invalid_parameter", id="top_k-negative"),
    pytest.param(event(query={"top_k": "three"}), 400, "invalid_parameter", id="top_k-text"),
    pytest.param(event(query={"top_k": " 3"}), 400, "invalid_parameter", id="top_k-space"),
    pytest.param(event(query={"top_k": "\u0663"}), 400, "invalid_parameter", id="top_k-arabic-digit"),
    pytest.param(event(method="GET"), 405, "method_not_allowed", id="GET"),
])
def test_refused_before_calling_the_endpoint(forwarder, stub, ev, status, code):
    assert error_of(*call(forwarder, ev)) == (status, code)


def test_oversize_is_refused_before_decoding(forwarder, stub, monkeypatch):
    def boom(*_a: Any, **_k: Any) -> bytes:
        raise AssertionError("decoded a body it should have refused by its length")

    monkeypatch.setattr(forwarder.base64, "b64decode", boom)
    status, payload = call(forwarder, {**event(), "body": "A" * 8_000_000})
    assert error_of(status, payload) == (413, "payload_too_large")
    assert f"{contract.API_MAX_IMAGE_BYTES:,}" in payload["error"]["message"]


def test_missing_endpoint_configuration_is_503(forwarder, stub, monkeypatch):
    monkeypatch.delenv("ENDPOINT_NAME")
    assert error_of(*call(forwarder, event())) == (503, "service_unavailable")


def test_top_k_above_the_number_of_classes(forwarder, stub):
    stub.add_response("invoke_endpoint", ok_response(all_classes()), expected_call())
    status, payload = call(forwarder, event(query={"top_k": "11"}))
    assert error_of(status, payload) == (400, "invalid_parameter")
    assert "10" in payload["error"]["message"]
    stub.add_response("invoke_endpoint", ok_response(all_classes()), expected_call())
    assert_predictions(call(forwarder, event(query={"top_k": "10"}))[1], 10)


# --- endpoint errors ------------------------------------------------------------------------------------------
TRACE = "\nTraceback (most recent call last):\n  File \"/opt/ml/model/code/inference.py\", line 9\nSecretError: x"


def model_error(status: int | None, original: str) -> dict:
    fields: dict[str, Any] = {"OriginalMessage": original, "LogStreamArn": "arn:aws:logs:us-east-1:123:log-group"}
    if status is not None:
        fields["OriginalStatusCode"] = status
    return {"service_error_code": "ModelError", "http_status_code": 424, "modeled_fields": fields,
            "service_message": f"Received client error ({status}) from primary with message \"{original}\""}


def contract_json(error: contract.ApiError, message: str) -> str:
    return json.dumps(contract.error_body(error, message))


@pytest.mark.parametrize(("error", "status", "code"), [
    pytest.param(model_error(400, contract_json(contract.INVALID_IMAGE, "the image could not be decoded") + TRACE),
                 400, "invalid_image", id="model-400-contract-json"),
    pytest.param(model_error(422, contract_json(contract.UNPROCESSABLE_IMAGE, "too many pixels") + TRACE),
                 422, "unprocessable_image", id="model-422-contract-json"),
    pytest.param(model_error(415, "Content type application/x-image is not supported" + TRACE),
                 415, "unsupported_media_type", id="model-415-plain-text"),
    pytest.param(model_error(400, "bad input" + TRACE), 400, "invalid_image", id="model-400-plain-text"),
    pytest.param(model_error(404, "no such route" + TRACE), 502, "model_error", id="model-404-is-our-fault"),
    pytest.param(model_error(400, contract_json(contract.NOT_FOUND, "odd") + TRACE), 400, "invalid_image",
                 id="model-400-with-mismatched-code"),
    pytest.param(model_error(500, "CUDA out of memory" + TRACE), 502, "model_error", id="model-500"),
    pytest.param(model_error(503, "worker died" + TRACE), 502, "model_error", id="model-503"),
    pytest.param(model_error(None, "connection reset by peer"), 502, "model_error", id="model-no-status"),
    pytest.param({"service_error_code": "ValidationError", "http_status_code": 400,
                  "service_message": "Endpoint ep-test of account 123456789012 not found."},
                 503, "service_unavailable", id="endpoint-not-found"),
    pytest.param({"service_error_code": "ValidationError", "http_status_code": 400,
                  "service_message": "Endpoint ep-test is not in InService status"},
                 503, "service_unavailable", id="endpoint-not-in-service"),
    pytest.param({"service_error_code": "ValidationError", "http_status_code": 400,
                  "service_message": "1 validation error detected: Value at 'body' failed to satisfy constraint"},
                 502, "model_error", id="other-validation-error"),
    pytest.param({"service_error_code": "ThrottlingException", "http_status_code": 400,
                  "service_message": "Rate exceeded"}, 503, "service_unavailable", id="throttling"),
    pytest.param({"service_error_code": "ModelNotReadyException", "http_status_code": 429,
                  "service_message": "Model is not ready"}, 503, "service_unavailable", id="model-not-ready"),
    pytest.param({"service_error_code": "ServiceUnavailable", "http_status_code": 503,
                  "service_message": "unavailable"}, 503, "service_unavailable", id="service-unavailable"),
    pytest.param({"service_error_code": "InternalFailure", "http_status_code": 500,
                  "service_message": "internal"}, 502, "model_error", id="internal-failure"),
    pytest.param({"service_error_code": "InternalDependencyException", "http_status_code": 530,
                  "service_message": "dependency"}, 502, "model_error", id="internal-dependency"),
])
def test_endpoint_errors_map_to_contract_statuses(forwarder, stub, error, status, code):
    stub.add_client_error("invoke_endpoint", expected_params=expected_call(), **error)
    got_status, payload = call(forwarder, event())
    assert error_of(got_status, payload) == (status, code)
    text = payload["error"]["message"]
    assert "SecretError" not in text and "123456789012" not in text and "/opt/ml" not in text


def test_model_client_error_message_is_passed_on(forwarder, stub):
    stub.add_client_error("invoke_endpoint", **model_error(
        400, contract_json(contract.INVALID_IMAGE, "the image could not be decoded: truncated") + TRACE))
    _, payload = call(forwarder, event())
    assert payload["error"]["message"] == "the image could not be decoded: truncated"


@pytest.mark.parametrize("payload", [b"not json", b"{}", b'{"predictions": []}', b'{"predictions": [{"x": 1}]}',
                                     b'{"predictions": "3"}'], ids=["text", "empty", "none", "shape", "string"])
def test_unreadable_endpoint_response_is_502(forwarder, stub, payload):
    stub.add_response("invoke_endpoint", ok_response(payload), expected_call())
    assert error_of(*call(forwarder, event())) == (502, "model_error")


def test_a_bug_is_a_500_without_a_traceback(forwarder, stub, monkeypatch, logs):
    def bug(*_a: Any) -> None:
        raise RuntimeError("internal detail")

    monkeypatch.setattr(forwarder, "_predictions", bug)
    stub.add_response("invoke_endpoint", ok_response(all_classes()), expected_call())
    status, payload = call(forwarder, event())
    assert error_of(status, payload) == (500, "internal_error")
    assert "internal detail" not in payload["error"]["message"]
    assert any(r["level"] == "ERROR" and "internal detail" in r.get("exception", "") for r in logs())


def test_logs_structured_json_with_request_id_and_no_image_bytes(forwarder, stub, logs):
    body = encode(digit(32, "8"))
    stub.add_response("invoke_endpoint", ok_response(all_classes()), expected_call(body))
    forwarder.handler(event(body, query={"top_k": "2"}), LambdaContext(aws_request_id="lambda-req-9"))
    stub.add_client_error("invoke_endpoint", **model_error(500, "boom" + TRACE))
    forwarder.handler(event(body), LambdaContext(aws_request_id="lambda-req-10"))
    records = [r for r in logs() if r["message"] == "predict"]
    assert [r["status"] for r in records] == [200, 502]
    first, second = records
    assert first["request_id"] == "req-123" and first["function_request_id"] == "lambda-req-9"
    assert first["service"] == "predict" and first["level"] == "INFO"
    assert first["bytes"] == len(body) and first["format"] == "PNG" and first["top_k"] == 2
    assert "latency_ms" in first and "endpoint_ms" in first and "error" not in first
    assert second["function_request_id"] == "lambda-req-10" and second["error"] == "model_error"
    assert second["model_status"] == 500
    everything = json.dumps(logs())
    assert base64.b64encode(body).decode()[:24] not in everything
    assert "AWS_SECRET" not in everything and "testing" not in everything


# --- network failures, for real (a slow server, a closed port) -------------------------------------------------
def test_read_timeout_is_504(forwarder, monkeypatch):
    def slow(environ: dict, start_response):
        time.sleep(1.5)
        return wsgi.respond_json(start_response, 200, json.loads(all_classes()))

    server = wsgi.Server(slow, "127.0.0.1", 0, threads=2).start()
    try:
        client = forwarder.make_client(endpoint_url=server.url, read_timeout=0.3,
                                       retries={"mode": "standard", "total_max_attempts": 1})
        monkeypatch.setattr(forwarder, "sagemaker_runtime", client)
        monkeypatch.setenv("ENDPOINT_NAME", ENDPOINT)
        assert error_of(*call(forwarder, event())) == (504, "timeout")
    finally:
        server.stop()


def test_unreachable_endpoint_is_503(forwarder, monkeypatch):
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens on it
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = forwarder.make_client(endpoint_url=f"http://127.0.0.1:{port}",
                                   retries={"mode": "standard", "total_max_attempts": 1})
    monkeypatch.setattr(forwarder, "sagemaker_runtime", client)
    monkeypatch.setenv("ENDPOINT_NAME", ENDPOINT)
    assert error_of(*call(forwarder, event())) == (503, "service_unavailable")


# --- the real path: the Lambda's client against the local endpoint server ---------------------------------------
@pytest.fixture(scope="module")
def endpoint(trained_model):
    with start_endpoint_server(trained_model, endpoint_name="ep-real", log_to=None) as server:
        yield server


@pytest.fixture
def real(forwarder, endpoint, monkeypatch):
    monkeypatch.setattr(forwarder, "sagemaker_runtime", forwarder.make_client(endpoint_url=endpoint.url))
    monkeypatch.setenv("ENDPOINT_NAME", "ep-real")
    return forwarder


def good_request_succeeds(forwarder) -> None:
    status, payload = call(forwarder, event(GOOD_PNG, query={"top_k": "2"}))
    assert status == 200 and payload["model"] == "ep-real"
    assert_predictions(payload, 2, CLASSES)


@pytest.mark.slow
def test_real_endpoint_predicts(real, digits_dir):
    for folder in sorted((digits_dir / "test").iterdir())[:5]:
        image = sorted(folder.glob("*.png"))[0]
        status, payload = call(real, event(image.read_bytes(), query={"top_k": "10"}))
        assert status == 200
        assert_predictions(payload, 10, CLASSES)


@pytest.mark.slow
@pytest.mark.parametrize(("ev", "status", "code"), [
    pytest.param({**event(), "body": "%%% not base64 %%%"}, 400, "invalid_image", id="base64-flag-on-text"),
    pytest.param(event(GOOD_PNG[:60], "image/png"), 400, "invalid_image", id="truncated-png-from-the-model"),
    pytest.param(event(corrupt_png_data(), "image/png"), 400, "invalid_image", id="corrupt-png-from-the-model"),
    pytest.param(event(png_declaring(20000, 20000), "image/png"), 422, "unprocessable_image", id="bomb"),
    pytest.param(event(GOOD_PNG, query={"top_k": "11"}), 400, "invalid_parameter", id="top_k-above-classes"),
])
def test_real_endpoint_errors_reach_the_client_without_traceback(real, ev, status, code):
    got = call(real, ev)
    assert error_of(*got) == (status, code)
    assert "inference.py" not in got[1]["error"]["message"]
    good_request_succeeds(real)


@pytest.mark.slow
def test_real_endpoint_with_the_wrong_name_is_503(real, monkeypatch):
    monkeypatch.setenv("ENDPOINT_NAME", "ep-missing")
    status, payload = call(real, event())
    assert error_of(status, payload) == (503, "service_unavailable")
    assert facts.LOCAL_ACCOUNT not in payload["error"]["message"]  # the endpoint server says it; the client must not
    monkeypatch.setenv("ENDPOINT_NAME", "ep-real")
    good_request_succeeds(real)


@pytest.mark.slow
def test_real_endpoint_model_error_carries_status_and_traceback(forwarder, endpoint):
    """What the Lambda parses is what SageMaker sends: ModelError + OriginalStatusCode + message\\ntraceback."""
    client = forwarder.make_client(endpoint_url=endpoint.url)
    with pytest.raises(client.exceptions.ModelError) as info:
        client.invoke_endpoint(EndpointName="ep-real", Body=b"\xff\xd8\xff\x00", ContentType="image/jpeg")
    response = info.value.response
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 424
    assert response["OriginalStatusCode"] == 400
    first, rest = response["OriginalMessage"].split("\n", 1)
    assert json.loads(first)["error"]["code"] == "invalid_image"
    assert rest.startswith("Traceback")
    ok = client.invoke_endpoint(EndpointName="ep-real", Body=GOOD_PNG, ContentType="image/png",
                                Accept=contract.JSON_CONTENT_TYPE)
    assert ok["InvokedProductionVariant"] == "AllTraffic"
    assert len(json.loads(ok["Body"].read())["predictions"]) == 10


def test_serverless_limits_come_from_the_environment(forwarder, stub, monkeypatch):
    """The stack sets the serving mode's limits (infra/api.py); a serverless endpoint's 4 MB cap is enforced here
    with the contract's 413 instead of SageMaker's own refusal."""
    limits = forwarder.Limits.from_env({contract.ENV_MAX_IMAGE_BYTES: "4000000",
                                        contract.ENV_READ_TIMEOUT_S: "24", contract.ENV_ATTEMPTS: "1"})
    assert (limits.max_image_bytes, limits.read_timeout_s, limits.attempts) == (4_000_000, 24.0, 1)
    assert limits.client_config().retries["total_max_attempts"] == 1
    assert forwarder.Limits.from_env({}) == forwarder.Limits()  # unset: an instance endpoint's
    monkeypatch.setattr(forwarder, "LIMITS", limits)
    big = GOOD_PNG + b"\0" * (4_100_000 - len(GOOD_PNG))
    status, payload = call(forwarder, event(body=big))
    assert error_of(status, payload) == (413, "payload_too_large") and "4,000,000" in payload["error"]["message"]
