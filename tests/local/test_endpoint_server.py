"""local/endpoint_server.py: SageMaker's container protocol around a model's own code/inference.py, loaded the way
the inference toolkit loads it, in its own process."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest

import stackfacts as facts
from local.endpoint_server import EndpointProcess, start_endpoint_server
from ml import contract
from tests.support import ROOT
from tests.support.serve import (
    DIGIT_CLASSES,
    GOOD_PNG,
    assert_error,
    assert_predictions,
    assert_toolkit_error,
    digit,
    encode,
    http_request,
    jpeg_like,
    png_declaring,
    write_toy_model,
)

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cli(*args: str, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "local.endpoint_server", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, **kw)


def wait_exit(process: subprocess.Popen | psutil.Process, timeout: float = 15) -> int | None:
    try:
        return process.wait(timeout)
    except (subprocess.TimeoutExpired, psutil.TimeoutExpired):
        return None


@pytest.fixture(scope="module")
def endpoint(trained_model):
    with start_endpoint_server(trained_model, endpoint_name="ep", log_to=None) as server:
        yield server


def invoke(server: EndpointProcess, body: bytes, content_type: str | None = "image/png", **kw):
    return http_request(server.port, "POST", "/invocations", body, content_type, **kw)


# --- the container protocol -----------------------------------------------------------------------------------
def test_ping(endpoint):
    reply = http_request(endpoint.port, "GET", "/ping")
    assert reply.status == 200 and reply.json() == {"status": "Healthy"}
    assert_error(http_request(endpoint.port, "POST", "/ping", b""), 405, contract.METHOD_NOT_ALLOWED.code)


def test_invocations_answer_every_class_best_first(endpoint, digits_dir):
    for folder in sorted((digits_dir / "test").iterdir())[:4]:
        reply = invoke(endpoint, sorted(folder.glob("*.png"))[0].read_bytes(),
                       headers={"Accept": contract.JSON_CONTENT_TYPE})
        assert reply.status == 200 and reply.headers["content-type"] == contract.JSON_CONTENT_TYPE
        payload = reply.json()
        assert_predictions(payload, 10, DIGIT_CLASSES)
        assert payload["predictions"][0]["label"] == folder.name


@pytest.mark.parametrize("accept", [None, "*/*", "application/json"])
def test_accept_defaults_to_json(endpoint, accept):
    reply = invoke(endpoint, GOOD_PNG, headers={"Accept": accept} if accept else None)
    assert reply.status == 200 and reply.json()["predictions"]


@pytest.mark.parametrize(("body", "content_type", "error"), [
    (b"", "image/png", contract.EMPTY_BODY),
    (b"hello", "text/plain", contract.UNSUPPORTED_MEDIA_TYPE),
    (b'{"a": 1}', "application/json", contract.UNSUPPORTED_MEDIA_TYPE),  # the toolkit hands JSON over as str
    (b"\xff\xd8\xff\xe0garbage", "image/jpeg", contract.INVALID_IMAGE),
    (png_declaring(20000, 20000), "image/png", contract.UNPROCESSABLE_IMAGE),
    (jpeg_like(contract.ENDPOINT_MAX_BODY_BYTES + 1), "image/jpeg", contract.PAYLOAD_TOO_LARGE),
], ids=["empty", "text", "json", "bad-jpeg", "bomb", "over-6MB"])
def test_handler_errors_become_their_status(endpoint, body, content_type, error):
    reply = invoke(endpoint, body, content_type)
    if error == contract.PAYLOAD_TOO_LARGE:  # refused by the HTTP front before the toolkit sees it
        assert_error(reply, error.status, error.code)
    else:  # the contract's error through the real toolkit, as the DLC answers it
        assert_toolkit_error(reply, error)
    assert invoke(endpoint, GOOD_PNG).status == 200


def test_routes(endpoint):
    assert_error(http_request(endpoint.port, "GET", "/invocations"), 405, contract.METHOD_NOT_ALLOWED.code)
    assert_error(http_request(endpoint.port, "GET", "/models"), 404, contract.NOT_FOUND.code)


def test_runtime_api_names_the_endpoint(endpoint):
    reply = http_request(endpoint.port, "POST", "/endpoints/other/invocations", GOOD_PNG, "image/png")
    assert reply.status == 400 and reply.headers["x-amzn-errortype"] == "ValidationError"
    assert "not found" in reply.json()["message"]
    reply = http_request(endpoint.port, "POST", "/endpoints/ep/invocations", GOOD_PNG, "image/png")
    assert reply.status == 200 and reply.headers["x-amzn-invoked-production-variant"] == facts.VARIANT_NAME


def test_concurrent_invocations_are_consistent(endpoint):
    images = [encode(digit(32, str(d))) for d in range(4)]
    expected = [invoke(endpoint, image).json() for image in images]
    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda i: invoke(endpoint, images[i % 4]), range(32)))
    assert [r.status for r in replies] == [200] * 32
    assert all(r.json() == expected[i % 4] for i, r in enumerate(replies))


# --- the toolkit's rules, on a model of our own -----------------------------------------------------------------


@pytest.fixture
def toy_model(tmp_path) -> Path:
    return write_toy_model(tmp_path / "toy")


def test_toolkit_rules_on_user_code(toy_model):
    with start_endpoint_server(toy_model, log_to=None) as server:
        reply = invoke(server, b"\x00\x01", "application/x-image", headers={"Accept": "*/*"})
        assert reply.status == 200 and reply.headers["content-type"] == contract.JSON_CONTENT_TYPE
        assert reply.json() == {"type": "bytes", "content_type": "application/x-image", "context": "Context",
                                "accept": contract.JSON_CONTENT_TYPE}
        assert invoke(server, b'{"x": 1}', "application/json").json()["type"] == "str"  # JSON reaches input_fn as str
        teapot = invoke(server, b"teapot", "application/x-image")
        assert (teapot.status, teapot.reason) == (418, "I'm a teapot")
        assert teapot.body.startswith(b"short and stout\nTraceback") and "content-type" not in teapot.headers
        kettle = invoke(server, b"kettle", "application/x-image")  # not the toolkit's class: its status is ignored
        assert kettle.status == 500 and kettle.body.startswith(b"whistles\nTraceback")
        boom = invoke(server, b"boom", "application/x-image")
        assert boom.status == 500 and boom.body.startswith(b"kaboom\nTraceback")
        assert invoke(server, b"ok", "application/x-image").status == 200, "still answering after a 500"
        # Through the runtime API, a 4xx/5xx from the model is a 424 ModelError with the traceback appended.
        reply = http_request(server.port, "POST", "/endpoints/any/invocations", b"boom", "application/x-image")
        assert reply.status == 424 and reply.headers["x-amzn-errortype"] == "ModelError"
        body = reply.json()
        assert body["OriginalStatusCode"] == 500 and body["OriginalMessage"].startswith("kaboom\nTraceback")


def test_ping_is_503_while_model_fn_runs(toy_model):
    port = free_port()
    env = {**os.environ, "TOY_LOAD_S": "3", "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([sys.executable, "-m", "local.endpoint_server", "--model-dir", str(toy_model),
                                "--port", str(port)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)
    try:
        statuses = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and 200 not in statuses:
            with contextlib.suppress(OSError):  # not listening yet
                statuses.append(http_request(port, "GET", "/ping", timeout=5).status)
            time.sleep(0.1)
        assert 503 in statuses and statuses[-1] == 200, statuses
        assert process.stdout.readline().strip() == f"listening on http://127.0.0.1:{port}"
    finally:
        process.terminate()
        assert wait_exit(process) == 0


def test_model_fn_failure_exits_with_one_clear_line(toy_model):
    result = cli("--model-dir", str(toy_model), "--port", "0", env={**os.environ, "TOY_FAIL": "1"})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == \
        f"error: cannot load the model from {toy_model}: weights are corrupt"
    with pytest.raises(RuntimeError, match="weights are corrupt"):
        start_endpoint_server(toy_model, log_to=None, env={"TOY_FAIL": "1"})


# --- model.tar.gz, shutdown, orphans, bad paths -----------------------------------------------------------------
def make_tarball(model_dir: Path, archive: Path) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(model_dir.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(model_dir)), recursive=False)
    return archive


def test_a_model_is_served_by_its_own_code(trained_model, tmp_path):
    """code/inference.py is a shim over code/ml/: the server runs the model's own `ml` package, as SageMaker does,
    never the repository's (which the server itself imported for the contract)."""
    model = tmp_path / "model"
    shutil.copytree(trained_model, model)
    assert (model / "code" / "inference.py").is_file() and (model / "code" / "ml" / "inference.py").is_file()
    with (model / "code" / "ml" / "inference.py").open("a") as f:
        f.write("\n_output_fn = output_fn\n\n"
                "def output_fn(prediction, accept):\n"  # the toolkit passes what the signature names
                "    body, content_type = _output_fn(prediction, accept)\n"
                "    return body.replace('{', '{\"served_by\": \"model code\", ', 1), content_type\n")
    with start_endpoint_server(model, log_to=None) as server:
        answer = invoke(server, GOOD_PNG).json()
    assert answer["served_by"] == "model code" and answer["predictions"]


def test_model_tarball_serves_the_same_and_is_cleaned_up(trained_model, endpoint, tmp_path):
    archive = make_tarball(trained_model, tmp_path / "model.tar.gz")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    server = start_endpoint_server(archive, log_to=None, env={"TMPDIR": str(scratch)})
    try:
        assert list(scratch.glob("endpoint-model-*")), "extracted into a temporary directory"
        assert invoke(server, GOOD_PNG).json()["predictions"] == invoke(endpoint, GOOD_PNG).json()["predictions"]
    finally:
        assert server.stop() == 0
    assert not list(scratch.glob("endpoint-model-*")), "the extracted model was left behind"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signals_stop_it_cleanly(toy_model, sig):
    server = start_endpoint_server(toy_model, log_to=None)
    assert invoke(server, b"ok", "application/x-image").status == 200
    started = time.monotonic()
    server.process.send_signal(sig)
    assert wait_exit(server.process) == 0
    assert time.monotonic() - started < 5


def test_it_never_outlives_the_process_that_started_it(toy_model):
    parent = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from local.endpoint_server import start_endpoint_server
        server = start_endpoint_server({str(toy_model)!r}, log_to=None)
        print(server.process.pid, flush=True)
        time.sleep(600)
    """)
    process = subprocess.Popen([sys.executable, "-c", parent], stdout=subprocess.PIPE, text=True)
    child = psutil.Process(int(process.stdout.readline()))
    assert child.is_running()
    process.kill()  # no chance to clean up
    process.wait(10)
    assert wait_exit(child, 10) is not None or not child.is_running()


@pytest.mark.parametrize("make", ["missing", "file", "tar-without-code", "dir-without-code"])
def test_bad_model_paths_are_one_clear_line(tmp_path, make):
    path = tmp_path / "model"
    if make == "file":
        path.write_text("not a model")
    elif make == "tar-without-code":
        (tmp_path / "x.txt").write_text("x")
        with tarfile.open(path, "w:gz") as tar:
            tar.add(tmp_path / "x.txt", arcname="x.txt")
    elif make == "dir-without-code":
        path.mkdir()
    result = cli("--model-dir", str(path), "--port", "0")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}"), result.stderr
    assert "Traceback" not in result.stderr


def test_port_in_use_is_one_clear_line(toy_model):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = cli("--model-dir", str(toy_model), "--port", str(port))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"error: cannot listen on 127.0.0.1:{port}: Address already in use"]


def test_start_helper_reports_a_bad_model(tmp_path):
    with pytest.raises(RuntimeError, match="does not exist"):
        start_endpoint_server(tmp_path / "nope", log_to=None)
