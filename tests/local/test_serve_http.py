"""The whole local prediction API over real HTTP: `python -m local.serve MODEL` (REST front -> the unchanged Lambda
handler -> boto3 -> the endpoint server -> code/inference.py), against a model trained by ml/train.py."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
from PIL import Image

from ml import contract
from tests.support import ROOT
from tests.support.serve import (
    BAD_AND_ODD,
    DIGIT_CLASSES,
    GOOD_PNG,
    Case,
    assert_error,
    assert_predictions,
    digit,
    encode,
    exif_rotated,
    http_request,
    write_toy_model,
)

pytestmark = pytest.mark.slow


@dataclass
class Api:
    process: subprocess.Popen
    port: int
    output: list[str]

    def post(self, body: bytes, content_type: str | None = "image/png", query: str = "", **kw):
        return http_request(self.port, "POST", contract.PREDICT_PATH + (f"?{query}" if query else ""), body,
                            content_type, **kw)


def start_serve(model: Path | str, *extra: str, timeout: float = 300) -> Api:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([sys.executable, "-m", "local.serve", str(model), "--port", "0", *extra], cwd=ROOT,
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output: list[str] = []
    found = threading.Event()
    port: list[int] = []

    def pump() -> None:
        for line in process.stdout:
            output.append(line)
            # The endpoint server's own lines are forwarded with a prefix: only the REST front's line matches.
            if not port and (match := re.match(r"listening on http://127\.0\.0\.1:(\d+)$", line.strip())):
                port.append(int(match.group(1)))
                found.set()
        found.set()

    threading.Thread(target=pump, daemon=True).start()
    assert found.wait(timeout) and port, "local.serve did not start:\n" + "".join(output[-30:])
    return Api(process, port[0], output)


def stop_serve(api: Api, sig: int = signal.SIGTERM) -> tuple[int, list[int]]:
    children = [c.pid for c in psutil.Process(api.process.pid).children(recursive=True)]
    api.process.send_signal(sig)
    rc = api.process.wait(30)
    return rc, children


def gone(pids: list[int], timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in pids):
            return True
        time.sleep(0.1)
    return False


@pytest.fixture(scope="module")
def api(trained_model):
    api = start_serve(trained_model)
    yield api
    if api.process.poll() is None:
        stop_serve(api)


def good_request_succeeds(api: Api) -> None:
    reply = api.post(GOOD_PNG)
    assert reply.status == 200, reply.body[:300]
    assert_predictions(reply.json(), contract.DEFAULT_TOP_K, DIGIT_CLASSES)


def test_predict_returns_top_k_labels(api, digits_dir):
    right = 0
    images = [(folder.name, path) for folder in sorted((digits_dir / "test").iterdir())
              for path in sorted(folder.glob("*.png"))[:2]]
    for label, path in images:
        reply = api.post(path.read_bytes(), "image/png", "top_k=3")
        assert reply.status == 200
        payload = reply.json()
        assert set(payload) == {"predictions", "model"} and payload["model"] == "local-endpoint"
        assert_predictions(payload, 3, DIGIT_CLASSES)
        right += payload["predictions"][0]["label"] == label
    assert right >= 0.8 * len(images), f"{right}/{len(images)} right: the served model is not the trained one"


def test_default_top_k_and_request_id(api):
    reply = api.post(GOOD_PNG)
    assert reply.status == 200 and reply.headers["content-type"] == contract.JSON_CONTENT_TYPE
    assert_predictions(reply.json(), contract.DEFAULT_TOP_K, DIGIT_CLASSES)
    assert re.fullmatch(r"[0-9a-f-]{36}", reply.headers["x-amzn-requestid"])


@pytest.mark.parametrize("case", BAD_AND_ODD, ids=[c.name for c in BAD_AND_ODD])
def test_bad_and_odd_inputs(api, case: Case):
    reply = api.post(case.make(), case.content_type, case.query)
    if case.status == 200:
        assert reply.status == 200, reply.body[:300]
        k = int(case.query.split("=")[1]) if case.query else contract.DEFAULT_TOP_K
        assert_predictions(reply.json(), k, DIGIT_CLASSES)
    else:
        assert_error(reply, case.status, case.code)
        if case.status == 413:
            assert "4,400,000" in reply.json()["error"]["message"], "a 413 states the image limit"
    good_request_succeeds(api)


def test_exif_orientation_is_applied_end_to_end(api):
    def scores(body: bytes) -> dict[str, float]:
        return {p["label"]: p["score"] for p in api.post(body, query="top_k=10").json()["predictions"]}

    upright = digit(32, "7")
    want = scores(encode(upright))
    # Lossless PNG whose EXIF turns the stored pixels back: exactly the upright pixels, so exactly its scores.
    assert scores(exif_rotated(upright)) == want
    stored = upright.transpose(Image.Transpose.ROTATE_270)
    assert scores(encode(stored)) != want, "sanity: the stored (turned) pixels alone score differently"


def test_routes_and_methods(api):
    assert_error(http_request(api.port, "GET", "/predict"), 405, contract.METHOD_NOT_ALLOWED.code)
    assert http_request(api.port, "GET", "/predict").headers["allow"] == "POST"
    assert_error(http_request(api.port, "PUT", "/predict", GOOD_PNG, "image/png"), 405,
                 contract.METHOD_NOT_ALLOWED.code)
    assert_error(http_request(api.port, "POST", "/", GOOD_PNG, "image/png"), 404, contract.NOT_FOUND.code)
    assert_error(http_request(api.port, "POST", "/predict/extra", GOOD_PNG, "image/png"), 404,
                 contract.NOT_FOUND.code)
    assert_error(http_request(api.port, "GET", "/ping"), 404, contract.NOT_FOUND.code)
    good_request_succeeds(api)


def test_concurrent_clients_all_succeed(api):
    images = [encode(digit(32, str(d))) for d in range(10)]

    def client(i: int) -> list[int]:
        return [api.post(images[(i + j) % 10]).status for j in range(6)]

    with ThreadPoolExecutor(8) as pool:
        statuses = [s for result in pool.map(client, range(8)) for s in result]
    assert statuses == [200] * 48


def test_logs_are_structured_json_with_request_id_and_no_image_bytes(api):
    body = encode(digit(32, "5"))
    encoded = base64.b64encode(body).decode()
    reply = api.post(body)
    assert reply.status == 200
    request_id = reply.headers["x-amzn-requestid"]
    deadline = time.monotonic() + 5
    record = None
    while record is None and time.monotonic() < deadline:
        for line in list(api.output):
            if request_id in line and line.lstrip().startswith("{"):
                record = json.loads(line)
        time.sleep(0.05)
    assert record is not None, "no JSON log line with the request id"
    assert record["request_id"] == request_id and record["status"] == 200 and record["level"] == "INFO"
    assert record["format"] == "PNG" and record["bytes"] == len(body)
    text = "".join(api.output)
    assert encoded[:40] not in text, "image bytes in the logs"


def test_sigterm_stops_both_processes(trained_model):
    api = start_serve(trained_model)
    assert api.post(GOOD_PNG).status == 200
    rc, children = stop_serve(api, signal.SIGTERM)
    assert rc == 0, "".join(api.output[-20:])
    assert children and gone(children), "the endpoint server outlived local.serve"


def test_ctrl_c_stops_both_processes(trained_model, tmp_path):
    # A model.tar.gz, as SageMaker stores it.
    archive = tmp_path / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(trained_model.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(trained_model)), recursive=False)
    api = start_serve(archive)
    assert api.post(GOOD_PNG).status == 200
    rc, children = stop_serve(api, signal.SIGINT)
    assert rc == 0
    assert children and gone(children)


@pytest.mark.parametrize("model", ["does/not/exist", "README.md", "ml"])
def test_bad_model_path_is_one_clear_line(model):
    result = subprocess.run([sys.executable, "-m", "local.serve", model, "--port", "0"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and model in lines[0], result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_ctrl_c_while_the_model_loads_stops_everything(tmp_path):
    model = write_toy_model(tmp_path / "toy")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT), "TOY_LOAD_S": "60"}
    process = subprocess.Popen([sys.executable, "-m", "local.serve", str(model), "--port", "0"], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    children: list[int] = []
    while not children and time.monotonic() < deadline:  # the endpoint server is up and inside model_fn
        children = [c.pid for c in psutil.Process(process.pid).children(recursive=True)]
        time.sleep(0.2)
    time.sleep(2)
    started = time.monotonic()
    process.send_signal(signal.SIGINT)
    assert process.wait(30) == 0
    assert time.monotonic() - started < 15, "did not wait for model_fn to finish"
    assert children and gone(children)
    assert "Traceback" not in process.stdout.read()


def test_port_in_use_fails_fast_with_one_line(trained_model):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        started = time.monotonic()
        result = subprocess.run([sys.executable, "-m", "local.serve", str(trained_model), "--port", str(port)],
                                cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and time.monotonic() - started < 30, "failed before loading the model"
    assert result.stderr.strip().splitlines() == [f"error: cannot listen on 127.0.0.1:{port}: Address already in use"]
