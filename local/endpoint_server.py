"""A SageMaker inference endpoint on this machine: the container protocol around a model's own code/inference.py.

    python -m local.endpoint_server --model-dir PATH --port N [--host 127.0.0.1] [--endpoint-name NAME]

PATH is a model directory written by ml/train.py or its model.tar.gz. The model runs through the code the PyTorch
inference DLC runs behind TorchServe: sagemaker-pytorch-inference's HandlerService (its Transformer imports
code/inference.py, calls model_fn once, then input_fn -> predict_fn -> output_fn per request). This server takes
TorchServe's place around it: it puts <model>/code first on sys.path (as the DLC's torchserve.py puts it on the
worker's PYTHONPATH), hands each request over as TorchServe does (raw bytes, decode_input_request=false, headers as
request properties) and answers with the status, reason phrase, content type and body the handler set. So, as on
AWS, only a sagemaker_inference BaseInferenceToolkitError keeps its status; anything else is a 500; an error's body
is "message\ntraceback" without a Content-Type.

Routes:
  GET  /ping                          200 once the model is loaded (503 while it loads)
  POST /invocations                   the container protocol (what SageMaker's front end calls)
  POST /endpoints/<name>/invocations  the sagemaker-runtime InvokeEndpoint API in front of it, so an unchanged
                                      boto3 client reaches it via AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME; a model's
                                      error becomes a 424 ModelError carrying OriginalStatusCode/OriginalMessage
                                      (the message followed by the traceback, as SageMaker forwards it).
It prints "listening on http://HOST:PORT" once the model is loaded and requests are answered, and exits cleanly
on SIGTERM/SIGINT. Python API: start_endpoint_server(model, port) -> EndpointProcess.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.request
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

# The DLC's handler service (TorchServe loads it as the model's handler: SAGEMAKER_HANDLER / the .mar's handler).
from sagemaker_pytorch_serving_container.handler_service import HandlerService

import stackfacts as facts
from local import wsgi
from ml import contract

ROOT = Path(__file__).resolve().parent.parent
# The name the DLC registers the model under in TorchServe (sagemaker_pytorch_serving_container/torchserve.py,
# DEFAULT_TS_MODEL_NAME); the toolkit logs it with every failed transform.
TS_MODEL_NAME = "model"
RUNTIME_INVOKE = re.compile(r"/endpoints/([^/]+)/invocations")
VARIANT = facts.VARIANT_NAME
ACCOUNT = facts.LOCAL_ACCOUNT
log = logging.getLogger("local.endpoint_server")


def own_code_first(code_dir: str) -> None:
    """Make <model>/code what the toolkit's import finds, with the model's own `ml` package (code/ml/, what
    SageMaker runs): this process imported the repository's `ml` for the contract, so those modules leave
    sys.modules first (the server keeps its references) and code/ goes first on sys.path."""
    package = contract.PACKAGE
    for name in [n for n in sys.modules if n == package or n.startswith(f"{package}.")]:
        del sys.modules[name]
    sys.path.insert(0, code_dir)


class ModelSourceError(Exception):
    """The model path is not something this server can load (one clear line for the user)."""


ENTRY = f"{contract.MODEL_CODE_DIR}/inference.py"


def check_model_source(path: str | Path) -> None:
    """Raise ModelSourceError unless `path` is a model directory or model.tar.gz with code/inference.py."""
    source = Path(path)
    if source.is_dir():
        if not (source / ENTRY).is_file():
            raise ModelSourceError(f"{source} has no {ENTRY}: not a model directory written by ml/train.py")
        return
    if not source.exists():
        raise ModelSourceError(f"{source} does not exist")
    if not source.is_file() or not tarfile.is_tarfile(source):
        raise ModelSourceError(f"{source} is neither a model directory nor a model.tar.gz")
    try:
        with tarfile.open(source) as archive:
            names = {name.removeprefix("./") for name in archive.getnames()}
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ModelSourceError(f"cannot read {source}: {exc}") from None
    if ENTRY not in names:
        raise ModelSourceError(f"{source} has no {ENTRY}: not a model.tar.gz written from ml/train.py's output")


# What a model.tar.gz may unpack to (its headers are trusted only this far: a small archive can declare terabytes).
MAX_MODEL_BYTES = 4 * 1024**3
MAX_MODEL_FILES = 10_000
TEMP_PREFIX = "endpoint-model-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_orphaned_copies(folder: Path | None = None) -> list[Path]:
    """Delete model copies whose extracting process is gone (killed before it could clean up)."""
    removed = []
    for path in Path(folder or tempfile.gettempdir()).glob(f"{TEMP_PREFIX}*-*"):
        pid = path.name.removeprefix(TEMP_PREFIX).split("-", 1)[0]
        if path.is_dir() and pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def resolve_model(path: str | Path, max_bytes: int = MAX_MODEL_BYTES, max_files: int = MAX_MODEL_FILES,
                  temp_root: str | Path | None = None) -> tuple[Path, Path | None]:
    """(model directory, temporary directory to delete afterwards or None) for a model dir or a model.tar.gz.

    An archive is extracted member by member, refused (ModelSourceError) as soon as it declares more than
    `max_bytes` or `max_files`; the copy is named after this process so a later one can sweep it if this one
    is killed.
    """
    check_model_source(path)
    source = Path(path)
    if source.is_dir():
        return source, None
    sweep_orphaned_copies(Path(temp_root) if temp_root else None)
    temp = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-", dir=temp_root))
    try:
        total, count = 0, 0
        with tarfile.open(source) as archive:
            for member in archive:
                total, count = total + max(member.size, 0), count + 1
                if total > max_bytes or count > max_files:
                    raise ModelSourceError(
                        f"{source} unpacks to more than {max_bytes:,} bytes or {max_files:,} files: not extracted")
                archive.extract(member, temp, filter="data")  # refuses absolute paths, links out, device files
    except (tarfile.TarError, OSError, EOFError) as exc:
        shutil.rmtree(temp, ignore_errors=True)
        raise ModelSourceError(f"cannot extract {source}: {exc}") from None
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return temp, temp


@dataclass
class Result:
    status: int
    body: bytes
    content_type: str | None  # None: the handler set none (TorchServe then sends no Content-Type header)
    phrase: str = ""


class RequestProcessor:
    """TorchServe's ts.context.RequestProcessor: one request's headers, as the toolkit reads them."""

    def __init__(self, request_header: dict[str, str]) -> None:
        self._request_header = request_header

    def get_request_properties(self) -> dict[str, str]:
        return self._request_header


class Context:
    """What the toolkit's HandlerService reads and sets on TorchServe's ts.context.Context (pytorch/serve
    ts/context.py): system_properties, model_name, request_processor, set_response_status/_content_type. One per
    request (batch size 1, as the DLC configures TorchServe), so concurrent requests never share a status."""

    def __init__(self, model_dir: Path, request_header: dict[str, str] | None = None) -> None:
        self.model_name = TS_MODEL_NAME
        self.system_properties = {"model_dir": str(model_dir), "gpu_id": None, "batch_size": 1,
                                  "server_name": "local-endpoint"}
        self.request_processor = [RequestProcessor(request_header or {})]
        self.status: int | None = None
        self.phrase: str | None = None
        self.content_type: str | None = None

    def set_response_status(self, code: int = 200, phrase: str = "", idx: int = 0) -> None:
        self.status, self.phrase = code, phrase

    def set_response_content_type(self, idx: int, value: str) -> None:
        self.content_type = value

    def get_response_status(self, idx: int = 0) -> tuple[int | None, str | None]:
        return self.status, self.phrase


def torchserve_body(value: Any) -> bytes:
    """One handler result as TorchServe encodes it (ts/protocol/otf_message_handler.py, create_predict_response):
    bytes as they are, str as UTF-8, anything else as JSON."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    return json.dumps(value, indent=2).encode("utf-8")


class ModelServer:
    """The toolkit's handler service around the model, loaded once, and the WSGI app in front of it."""

    def __init__(self, model_dir: Path, endpoint_name: str | None = None, max_concurrency: int = 1) -> None:
        self.model_dir = model_dir
        # On CPU one forward pass already uses every core (intra-op threads): running several at once only
        # oversubscribes the cores and makes every request slower. Requests wait their turn here instead.
        self._slots = threading.BoundedSemaphore(max(1, max_concurrency))
        self.endpoint_name = endpoint_name
        self.service = HandlerService()
        self.ready = threading.Event()

    # --- loading, as TorchServe loads the DLC's handler -------------------------------------------------
    def load(self) -> None:
        code_dir = str((self.model_dir / contract.MODEL_CODE_DIR).resolve())
        own_code_first(code_dir)
        # The toolkit's initialize imports the user module (SAGEMAKER_PROGRAM, default inference.py) and runs
        # model_fn; its exceptions reach the caller unchanged, as they fail a TorchServe worker's load.
        self.service.initialize(Context(self.model_dir))
        program = Path(os.environ.get("SAGEMAKER_PROGRAM") or contract.INFERENCE_PROGRAM).stem
        for loaded in (sys.modules.get(program), sys.modules.get(contract.PACKAGE)):
            where = getattr(loaded, "__file__", None)
            if where is not None and not Path(where).resolve().is_relative_to(code_dir):
                raise ModelSourceError(f"imported {where} instead of the model's own code in {code_dir}")
        self.ready.set()

    # --- one invocation ----------------------------------------------------------------------------------
    def invoke(self, body: bytes, content_type: str | None, accept: str | None) -> Result:
        """One request through HandlerService.handle, as a TorchServe worker runs it (status 200 unless set)."""
        headers = {}
        if content_type is not None:
            headers["Content-Type"] = content_type
        if accept:
            headers["Accept"] = accept
        context = Context(self.model_dir, headers)
        with self._slots:
            output = self.service.handle([{"body": body}], context)
        status, phrase = context.get_response_status(0)
        status = status or 200
        if status >= 500:
            log.error("invocation failed (%d %s)", status, phrase or "")
        elif status >= 400:
            log.info("invocation refused (%d %s)", status, phrase or "")
        return Result(status, torchserve_body(output[0]), context.content_type, phrase or "")

    # --- HTTP --------------------------------------------------------------------------------------------
    def app(self, environ: dict, start_response: wsgi.StartResponse) -> list[bytes]:
        path, method = environ.get("PATH_INFO", ""), environ.get("REQUEST_METHOD", "GET")
        runtime = RUNTIME_INVOKE.fullmatch(path)
        if path == "/ping":
            if method not in ("GET", "HEAD"):
                return wsgi.respond_error(start_response, contract.METHOD_NOT_ALLOWED, "use GET /ping",
                                          [("Allow", "GET")])
            if not self.ready.is_set():
                return wsgi.respond_error(start_response, contract.SERVICE_UNAVAILABLE, "the model is loading")
            return wsgi.respond_json(start_response, 200, {"status": "Healthy"})
        if path == "/invocations" or runtime:
            if method != "POST":
                return wsgi.respond_error(start_response, contract.METHOD_NOT_ALLOWED, f"use POST {path}",
                                          [("Allow", "POST")])
            if runtime:
                return self._runtime_invoke(runtime.group(1), environ, start_response)
            return self._container_invoke(environ, start_response)
        return wsgi.respond_error(start_response, contract.NOT_FOUND, f"no route for {path}")

    def _container_invoke(self, environ: dict, start_response: wsgi.StartResponse) -> list[bytes]:
        if not self.ready.is_set():
            return wsgi.respond_error(start_response, contract.SERVICE_UNAVAILABLE, "the model is loading")
        body = wsgi.read_body(environ, contract.ENDPOINT_MAX_BODY_BYTES)
        if body is None:
            return wsgi.respond_error(start_response, contract.PAYLOAD_TOO_LARGE,
                                      f"the limit is {contract.ENDPOINT_MAX_BODY_BYTES:,} bytes")
        result = self.invoke(body, environ.get("CONTENT_TYPE"), environ.get("HTTP_ACCEPT"))
        # As TorchServe's RestJob answers: the handler's status and reason phrase, Content-Type only when it set one.
        headers = [("Content-Length", str(len(result.body)))]
        if result.content_type:
            headers.insert(0, ("Content-Type", result.content_type))
        start_response(f"{result.status} {result.phrase}" if result.phrase else wsgi.status_line(result.status),
                       headers)
        return [result.body]

    def _runtime_invoke(self, name: str, environ: dict, start_response: wsgi.StartResponse) -> list[bytes]:
        """InvokeEndpoint as sagemaker-runtime answers it (rest-json: the error code in x-amzn-ErrorType)."""
        if self.endpoint_name and name != self.endpoint_name:
            return _aws_error(start_response, 400, "ValidationError",
                              f"Endpoint {name} of account {ACCOUNT} not found.")
        if not self.ready.is_set():
            return _aws_error(start_response, 429, "ModelNotReadyException", f"Model for endpoint {name} is not ready")
        body = wsgi.read_body(environ, contract.ENDPOINT_MAX_BODY_BYTES)
        if body is None:
            return _aws_error(start_response, 413, "ValidationError",
                              f"Request payload exceeds {contract.ENDPOINT_MAX_BODY_BYTES} bytes")
        result = self.invoke(body, environ.get("CONTENT_TYPE"), environ.get("HTTP_ACCEPT"))
        if result.status == 200:
            return wsgi.respond(start_response, 200, result.body, result.content_type or contract.JSON_CONTENT_TYPE,
                                [("x-Amzn-Invoked-Production-Variant", VARIANT)])
        kind = "client" if result.status < 500 else "server"
        original = result.body.decode("utf-8", "replace")  # the toolkit's "message\ntraceback"
        log_group = f"/aws/sagemaker/Endpoints/{name}"
        return wsgi.respond_json(start_response, 424, {
            "ErrorCode": f"{kind.upper()}_ERROR_FROM_MODEL",
            "LogStreamArn": f"arn:aws:logs:local:{ACCOUNT}:log-group:{log_group}",
            "Message": f"Received {kind} error ({result.status}) from primary with message \"{original}\". "
                       f"See the log group {log_group} for more information.",
            "OriginalMessage": original,
            "OriginalStatusCode": result.status,
        }, [("x-amzn-ErrorType", "ModelError")])


def _aws_error(start_response: wsgi.StartResponse, status: int, code: str, message: str) -> list[bytes]:
    return wsgi.respond_json(start_response, status, {"message": message}, [("x-amzn-ErrorType", code)])


# --- the process --------------------------------------------------------------------------------------------
def _watch_parent(parent_pid: int, stop: Any) -> None:
    # Started by another process (local.serve, the SageMaker stand-in): never outlive it, even if it is killed.
    while os.getppid() == parent_pid:
        time.sleep(0.5)
    log.warning("parent process %d is gone: shutting down", parent_pid)
    stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local.endpoint_server", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", required=True, help="model directory or model.tar.gz written by ml/train.py")
    parser.add_argument("--port", type=int, required=True, help="0 picks a free port (printed)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--endpoint-name", default=None,
                        help="answer InvokeEndpoint only for this name (default: any name)")
    parser.add_argument("--threads", type=int, default=8, help="request threads")
    parser.add_argument("--max-concurrency", type=int, default=1,
                        help="requests that run the model's handlers at once (default 1: one forward pass uses "
                             "every core)")
    parser.add_argument("--parent-pid", type=int, default=None, help="exit when this process is gone")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s endpoint %(levelname)s %(message)s",
                        stream=sys.stderr)
    try:
        model_dir, temp = resolve_model(args.model_dir)
    except ModelSourceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        model = ModelServer(model_dir, args.endpoint_name, args.max_concurrency)
        try:
            # 16 MB: bodies over the 6 MB InvokeEndpoint limit still get this server's JSON answer.
            server = wsgi.Server(model.app, args.host, args.port, threads=args.threads,
                                 max_request_body_size=16 * 1024 * 1024, ident="local-endpoint")
        except OSError as exc:
            print(f"error: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
            return 1
        wsgi.stop_on_signals(server.stop)
        if args.parent_pid:
            threading.Thread(target=_watch_parent, args=(args.parent_pid, server.stop), daemon=True).start()
        failure: list[str] = []

        def load() -> None:
            try:
                model.load()
            except BaseException as exc:  # SystemExit in a model's code too: never healthy-looking forever
                log.error("model_fn failed:\n%s", traceback.format_exc())
                failure.append(f"cannot load the model from {args.model_dir}: {exc}")
                server.stop()
                return
            print(wsgi.LISTENING.format(host=args.host, port=server.port), flush=True)

        # /ping answers 503 while model_fn runs, as a container does during endpoint creation.
        threading.Thread(target=load, name="model_fn", daemon=True).start()
        server.serve()
        if failure:
            print(f"error: {failure[0]}", file=sys.stderr)
            return 1
        return 0
    finally:
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)


# --- Python API for the processes that start endpoints ------------------------------------------------------
@dataclass
class EndpointProcess:
    """A running endpoint server subprocess; stop() (or a with block) ends it."""

    process: subprocess.Popen
    host: str
    port: int
    output: deque = field(default_factory=lambda: deque(maxlen=200))
    model_copy: Path | None = None  # an archive extracted by this process for the server: deleted by stop()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self, timeout: float = 15.0) -> int:
        try:
            if self.process.poll() is None:
                self.process.terminate()
                try:
                    self.process.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(5)
        finally:
            if self.model_copy is not None:
                shutil.rmtree(self.model_copy, ignore_errors=True)
        return self.process.returncode

    def __enter__(self) -> EndpointProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never through a proxy


def _pump(stream: IO[str], sink: IO[str] | None, prefix: str, lines: deque, started: threading.Event,
          box: dict) -> None:
    listening = re.compile(r"listening on http://([^:\s]+):(\d+)")
    for line in stream:
        lines.append(line.rstrip("\n"))
        if not started.is_set() and (match := listening.search(line)):
            box["port"] = int(match.group(2))
            started.set()
        if sink is not None:
            try:
                sink.write(prefix + line)
                sink.flush()
            except (OSError, ValueError):
                sink = None
    started.set()  # the process ended: wake the waiter


def start_endpoint_server(model: str | Path, port: int = 0, host: str = "127.0.0.1", endpoint_name: str | None = None,
                          threads: int = 8, max_concurrency: int = 1, timeout: float = 300.0,
                          log_to: IO[str] | None = sys.stderr, log_prefix: str = "",
                          env: dict[str, str] | None = None, cancel: threading.Event | None = None) -> EndpointProcess:
    """Start `python -m local.endpoint_server` and return once GET /ping answers 200.

    port=0 lets the server pick a free port (read back from its "listening on" line). Its output goes to `log_to`,
    each line after `log_prefix` (None: kept only in EndpointProcess.output). Raises RuntimeError with the
    server's last lines if it exits or does not become healthy within `timeout` seconds, or ("cancelled") as soon
    as `cancel` is set. A model.tar.gz is extracted here, not in the server, so that a server killed with
    SIGKILL leaves no copy behind: stop() deletes it.
    """
    try:
        model_dir, model_copy = resolve_model(model, temp_root=(env or {}).get("TMPDIR"))  # the server's temp
    except ModelSourceError as exc:
        raise RuntimeError(str(exc)) from None
    cmd = [sys.executable, "-m", "local.endpoint_server", "--model-dir", str(model_dir), "--port", str(port),
           "--host", host, "--threads", str(threads), "--max-concurrency", str(max_concurrency),
           "--parent-pid", str(os.getpid())]
    if endpoint_name:
        cmd += ["--endpoint-name", endpoint_name]
    child_env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
    child_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), child_env.get("PYTHONPATH")) if p)
    # Its own session: a terminal's Ctrl-C reaches only the parent, which then stops it in order.
    try:
        process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   env=child_env, cwd=ROOT, start_new_session=True)
    except BaseException:
        if model_copy is not None:
            shutil.rmtree(model_copy, ignore_errors=True)
        raise
    lines: deque = deque(maxlen=200)
    started, box = threading.Event(), dict[str, Any]()
    threading.Thread(target=_pump, args=(process.stdout, log_to, log_prefix, lines, started, box), daemon=True,
                     name=f"endpoint-{process.pid}-output").start()
    handle = EndpointProcess(process, host, 0, lines, model_copy)
    deadline = time.monotonic() + timeout
    try:
        while not started.wait(0.2):
            if cancel is not None and cancel.is_set():
                raise RuntimeError("cancelled")
            if time.monotonic() > deadline:
                break
        if "port" not in box:
            raise RuntimeError("the endpoint server did not start")
        handle.port = box["port"]
        while time.monotonic() < deadline and not (cancel is not None and cancel.is_set()):
            if process.poll() is not None:
                raise RuntimeError(f"the endpoint server exited with status {process.returncode}")
            try:
                with _DIRECT.open(f"{handle.url}/ping", timeout=5) as response:
                    if response.status == 200:
                        return handle
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        if cancel is not None and cancel.is_set():
            raise RuntimeError("cancelled")
        raise RuntimeError(f"the endpoint server did not become healthy within {timeout:g} s")
    except BaseException as exc:
        handle.stop()
        if isinstance(exc, RuntimeError) and str(exc) != "cancelled":
            time.sleep(0.1)  # let the pump collect the last lines
            tail = "\n".join(list(lines)[-15:])
            raise RuntimeError(f"{exc}:\n{tail}") from None
        raise


if __name__ == "__main__":
    sys.exit(main())
