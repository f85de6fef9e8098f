"""Endpoint processes that die, archives that are too big, model.json values no model can be served with (issue 12,
item 19): `make serve` keeps answering (503, then the restarted server), the SageMaker stand-in replaces a dead
server, and no extracted model is left in the temp folder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import boto3
import pytest

from local.endpoint_server import ModelSourceError, resolve_model, sweep_orphaned_copies
from local.sagemaker import LocalSageMaker
from ml import contract
from tests.support import ROOT
from tests.support.local import BUCKET, ROLE, wait_until
from tests.support.serve import GOOD_PNG, assert_error, http_request, write_toy_model


def _tar(model_dir: Path, archive: Path) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(model_dir.rglob("*")):
            tar.add(path, arcname=path.relative_to(model_dir).as_posix(), recursive=False)
    return archive


def _copies(folder: Path) -> list[Path]:
    return sorted(folder.glob("endpoint-model-*"))


# --- extraction ---------------------------------------------------------------------------------------------------
def test_archives_are_extracted_with_a_size_cap(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    model = write_toy_model(tmp_path / "model")
    (model / "weights.bin").write_bytes(b"\0" * 5000)
    archive = _tar(model, tmp_path / "model.tar.gz")
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    with pytest.raises(ModelSourceError, match="more than 4,096 bytes"):
        resolve_model(archive, max_bytes=4096)
    with pytest.raises(ModelSourceError, match="more than"):
        resolve_model(archive, max_files=2)
    assert _copies(tmp_path / "tmp") == []  # nothing half-extracted stays behind
    directory, copy = resolve_model(archive)
    assert copy is not None and (directory / "weights.bin").stat().st_size == 5000


def test_copies_of_killed_processes_are_swept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    orphan = tmp_path / f"endpoint-model-{int(dead.stdout)}-abc"
    mine = tmp_path / f"endpoint-model-{os.getpid()}-abc"
    for folder in (orphan, mine):
        (folder / "code").mkdir(parents=True)
    assert sweep_orphaned_copies(tmp_path) == [orphan]
    assert not orphan.exists() and mine.exists()


# --- make serve ---------------------------------------------------------------------------------------------------
def _endpoint_pid(serve: subprocess.Popen) -> int:
    import psutil

    children = wait_until(lambda: [c for c in psutil.Process(serve.pid).children()
                                   if "local.endpoint_server" in " ".join(c.cmdline())], timeout=60)
    return children[0].pid


def test_a_killed_endpoint_server_is_restarted_behind_a_503_and_leaves_no_copy(tmp_path):
    temp = tmp_path / "tmp"
    temp.mkdir()
    archive = _tar(write_toy_model(tmp_path / "model"), tmp_path / "model.tar.gz")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT), "TMPDIR": str(temp),
           "TOY_LOAD_S": "2"}  # the replacement takes a while to load: the API must answer meanwhile
    serve = subprocess.Popen([sys.executable, "-m", "local.serve", str(archive), "--port", "0"], cwd=ROOT, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(serve.stdout), daemon=True).start()
    try:
        port = int(wait_until(lambda: next((ln.rsplit(":", 1)[1] for ln in lines if "listening on" in ln
                                            and "endpoint |" not in ln), None), timeout=120))
        before = http_request(port, "POST", contract.PREDICT_PATH, GOOD_PNG, "image/png")
        assert before.status != 503, before.body
        assert len(_copies(temp)) == 1
        os.kill(_endpoint_pid(serve), signal.SIGKILL)
        # Not connection refused: the contract's 503 until the replacement answers, then as before.
        during = wait_until(lambda: (r := http_request(port, "POST", contract.PREDICT_PATH, GOOD_PNG, "image/png"))
                            .status == 503 and r, timeout=60)
        assert_error(during, 503, contract.SERVICE_UNAVAILABLE.code)
        after = wait_until(lambda: (r := http_request(port, "POST", contract.PREDICT_PATH, GOOD_PNG, "image/png"))
                           .status == before.status and r, timeout=120)
        assert after.body == before.body
        assert serve.poll() is None and len(_copies(temp)) == 1  # the replacement reuses the one copy
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(60)
    assert _copies(temp) == [], "the extracted model outlived make serve"


# --- the SageMaker stand-in ---------------------------------------------------------------------------------------
def test_the_stand_in_replaces_a_dead_endpoint_server(tmp_path):
    model = write_toy_model(tmp_path / "model")
    with LocalSageMaker(tmp_path / "sm", stop_grace_seconds=2.0, endpoint_startup_timeout=120) as sm:
        (sm.s3.root / BUCKET).mkdir(parents=True)
        _tar(model, sm.s3.root / BUCKET / "model.tar.gz")
        sm.create_model(ModelName="toy", ExecutionRoleArn=ROLE,
                        PrimaryContainer={"Image": "pytorch-inference:2.6",
                                          "ModelDataUrl": f"s3://{BUCKET}/model.tar.gz"})
        sm.create_endpoint_config(EndpointConfigName="toy-config", ProductionVariants=[
            {"VariantName": "AllTraffic", "ModelName": "toy", "InitialInstanceCount": 1,
             "InstanceType": "ml.m5.large"}])
        sm.create_endpoint(EndpointName="toy", EndpointConfigName="toy-config")
        assert sm.wait_for_endpoint("toy", timeout=120)["EndpointStatus"] == "InService"
        runtime = boto3.client("sagemaker-runtime", region_name="us-east-1", endpoint_url=sm.runtime_url,
                               aws_access_key_id="local", aws_secret_access_key="local")
        answer = runtime.invoke_endpoint(EndpointName="toy", Body=b"x", ContentType="image/png")["Body"].read()
        backend = sm.hosting.endpoints["toy"].backends[0]
        copy, first = backend.model_copy, backend.proc
        assert copy is not None and copy.is_dir()
        first.kill()
        wait_until(lambda: backend.proc is not first and backend.ready.is_set(), timeout=120)
        assert sm.describe_endpoint(EndpointName="toy")["EndpointStatus"] == "InService"
        assert runtime.invoke_endpoint(EndpointName="toy", Body=b"x", ContentType="image/png")["Body"].read() \
            == answer
        # A replacement that cannot start: the endpoint leaves InService, with the reason.
        (copy / contract.MODEL_CODE_DIR / "inference.py").write_text("raise SystemExit('broken')\n")
        backend.proc.kill()
        failed = wait_until(lambda: (d := sm.describe_endpoint(EndpointName="toy"))["EndpointStatus"] == "Failed"
                            and d, timeout=120)
        assert "AllTraffic" in failed["FailureReason"]
        sm.delete_endpoint(EndpointName="toy")  # asynchronous, as on AWS: Deleting, then gone
        wait_until(lambda: not sm.list_endpoints()["Endpoints"], timeout=60)
        assert not copy.exists()
