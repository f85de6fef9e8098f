"""The local endpoint server runs models through the PyTorch inference DLC's own Python code
(sagemaker-pytorch-inference's HandlerService and the sagemaker_inference Transformer it carries), so what a client
sees is what the DLC answers: the toolkit's statuses, reason phrases, bodies and content types, around the
repository's ml/inference.py."""

from __future__ import annotations

import json

import pytest

from local.endpoint_server import Context, start_endpoint_server, torchserve_body
from ml import contract
from tests.support.scratch import module_scratch
from tests.support.serve import (
    GOOD_PNG,
    assert_error,
    assert_predictions,
    assert_toolkit_error,
    http_request,
    jpeg_like,
    png_declaring,
    write_random_model,
    write_toy_model,
)


@pytest.fixture(scope="module")
def random_endpoint(tmp_path_factory, request):
    model = write_random_model(module_scratch(request, tmp_path_factory, "random") / "model", classes=("a", "b", "c"))
    with start_endpoint_server(model, endpoint_name="ep", log_to=None) as server:
        yield server


def test_the_server_runs_the_dlc_handler_service():
    import sagemaker_pytorch_serving_container.handler_service as dlc

    from local import endpoint_server

    assert endpoint_server.HandlerService is dlc.HandlerService


@pytest.mark.parametrize(("body", "content_type", "error"), [
    (b"", "image/png", contract.EMPTY_BODY),
    (b"hello", "text/plain", contract.UNSUPPORTED_MEDIA_TYPE),
    (b'{"a": 1}', "application/json", contract.UNSUPPORTED_MEDIA_TYPE),
    (b"\xff\xd8\xff\xe0garbage", "image/jpeg", contract.INVALID_IMAGE),
    (png_declaring(20000, 20000), "image/png", contract.UNPROCESSABLE_IMAGE),
], ids=["empty", "text", "json", "bad-jpeg", "bomb"])
def test_contract_errors_keep_their_status_through_the_toolkit(random_endpoint, body, content_type, error):
    assert_toolkit_error(http_request(random_endpoint.port, "POST", "/invocations", body, content_type), error)


def test_predictions_through_the_toolkit(random_endpoint):
    for accept in (None, "*/*", contract.JSON_CONTENT_TYPE):  # the toolkit's default accept is JSON
        reply = http_request(random_endpoint.port, "POST", "/invocations", GOOD_PNG, "image/png",
                             headers={"Accept": accept} if accept else None)
        assert reply.status == 200 and reply.headers["content-type"] == contract.JSON_CONTENT_TYPE
        assert_predictions(reply.json(), 3, ["a", "b", "c"])


def test_the_front_still_refuses_oversized_bodies_itself(random_endpoint):
    big = jpeg_like(contract.ENDPOINT_MAX_BODY_BYTES + 1)
    assert_error(http_request(random_endpoint.port, "POST", "/invocations", big, "image/jpeg"),
                 contract.PAYLOAD_TOO_LARGE.status, contract.PAYLOAD_TOO_LARGE.code)


def test_invoke_endpoint_forwards_the_toolkit_body_as_original_message(random_endpoint):
    reply = http_request(random_endpoint.port, "POST", "/endpoints/ep/invocations", b"plain", "image/png")
    assert reply.status == 424 and reply.headers["x-amzn-errortype"] == "ModelError"
    body = reply.json()
    assert body["OriginalStatusCode"] == contract.INVALID_IMAGE.status
    first, rest = body["OriginalMessage"].split("\n", 1)
    assert json.loads(first)["error"]["code"] == contract.INVALID_IMAGE.code
    assert rest.startswith("Traceback (most recent call last):") and rest.count("Traceback") == 1


def test_toolkit_rules_on_user_code(tmp_path):
    """Rules that only the real toolkit has: a `status_code` attribute is not enough (500), the reason phrase is
    the exception's, the handlers get TorchServe's context, JSON bodies reach input_fn as str."""
    with start_endpoint_server(write_toy_model(tmp_path / "toy"), log_to=None) as server:
        def invoke(body: bytes, content_type: str = "application/x-image"):
            return http_request(server.port, "POST", "/invocations", body, content_type)

        ok = invoke(b"\x00")
        assert ok.status == 200 and ok.json()["context"] == "Context" and ok.json()["type"] == "bytes"
        assert invoke(b'{"x": 1}', "application/json").json()["type"] == "str"
        teapot = invoke(b"teapot")
        assert (teapot.status, teapot.reason) == (418, "I'm a teapot")
        assert teapot.body.startswith(b"short and stout\nTraceback (most recent call last):")
        kettle = invoke(b"kettle")
        assert kettle.status == 500 and kettle.body.startswith(b"whistles\nTraceback")
        assert "content-type" not in kettle.headers
        assert invoke(b"\x00").status == 200, "still answering after a 500"


def test_the_context_and_body_encoding_are_torchserves(tmp_path):
    context = Context(tmp_path, {"Content-Type": "image/png"})
    assert context.request_processor[0].get_request_properties() == {"Content-Type": "image/png"}
    assert context.system_properties["model_dir"] == str(tmp_path) and context.model_name == "model"
    assert context.get_response_status(0) == (None, None)
    context.set_response_status(code=415, phrase="unsupported_media_type")
    context.set_response_content_type(0, "text/csv")
    assert (context.get_response_status(0), context.content_type) == ((415, "unsupported_media_type"), "text/csv")
    assert torchserve_body(b"\x00") == b"\x00" and torchserve_body("é") == "é".encode()
    assert json.loads(torchserve_body({"a": [1]})) == {"a": [1]}
