"""The prediction API on this machine: API Gateway -> the Lambda handler -> a SageMaker endpoint, on 127.0.0.1.

    python -m local.serve MODEL --port PORT        (make serve MODEL=... PORT=...)

MODEL is a model directory written by ml/train.py or its model.tar.gz. Starts the endpoint server
(local/endpoint_server.py) as a subprocess on a free port, points the unchanged Lambda handler's boto3 client at it
with AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME (fake credentials: nothing can reach AWS), and serves the REST front
(local/rest_api.py) on 127.0.0.1:PORT. Ctrl-C or SIGTERM stops both.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import threading
import time
from collections import deque

import stackfacts as facts
from local import wsgi
from local.endpoint_server import (
    EndpointProcess,
    ModelSourceError,
    check_model_source,
    resolve_model,
    start_endpoint_server,
)
from local.rest_api import create_server, load_forwarder

DEFAULT_ENDPOINT_NAME = "local-endpoint"
RESTARTS_PER_MINUTE = 3  # more deaths than this in a minute: the model itself is broken, stop with its error
log = logging.getLogger("local.serve")


def local_aws_environment(endpoint_url: str, endpoint_name: str) -> dict[str, str]:
    """What the Lambda process sees locally: the endpoint's URL and name, and credentials that are not real."""
    return {
        "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": endpoint_url,
        "ENDPOINT_NAME": endpoint_name,
        "AWS_ACCESS_KEY_ID": "local",
        "AWS_SECRET_ACCESS_KEY": "local",
        "AWS_SESSION_TOKEN": "local",
        "AWS_DEFAULT_REGION": facts.LOCAL_REGION,
        "AWS_REGION": facts.LOCAL_REGION,
        "AWS_EC2_METADATA_DISABLED": "true",
        "POWERTOOLS_SERVICE_NAME": "predict",
        # botocore honours HTTP(S)_PROXY: loopback must never go through one.
        "NO_PROXY": ",".join(filter(None, ("127.0.0.1,localhost", os.environ.get("NO_PROXY")))),
        "no_proxy": ",".join(filter(None, ("127.0.0.1,localhost", os.environ.get("no_proxy")))),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local.serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="model directory or model.tar.gz written by ml/train.py")
    parser.add_argument("--port", type=int, default=8080, help="port of the REST API (0: any free port)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--endpoint-name", default=DEFAULT_ENDPOINT_NAME)
    parser.add_argument("--threads", type=int, default=8, help="REST front request threads")
    parser.add_argument("--endpoint-concurrency", type=int, default=1,
                        help="requests the endpoint runs through the model at once (default 1: CPU)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        stream=sys.stderr)
    logging.getLogger("botocore").setLevel(logging.WARNING)  # "found credentials in environment" each start
    try:
        check_model_source(args.model)
    except ModelSourceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    # Hold the port first: a port in use fails in a second, not after the model has loaded.
    try:
        server = create_server(None, args.host, args.port, threads=args.threads)
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    wsgi.stop_on_signals(server.stop)  # Ctrl-C while the model loads must still stop the endpoint cleanly
    # One copy of an archived model, owned here: a killed endpoint server leaves nothing behind, and its
    # replacement starts from the same files.
    try:
        model_dir, model_copy = resolve_model(args.model)
    except ModelSourceError as exc:
        server.stop()
        server.serve()
        print(f"error: {exc}", file=sys.stderr)
        return 2

    def start(port: int = 0) -> EndpointProcess:
        return start_endpoint_server(model_dir, port=port, endpoint_name=args.endpoint_name,
                                     max_concurrency=args.endpoint_concurrency, log_prefix="endpoint | ",
                                     cancel=server.stopped)

    endpoint: EndpointProcess | None = None
    try:
        try:
            endpoint = start()
        except RuntimeError as exc:
            cancelled = server.stopping
            server.stop()
            server.serve()  # returns at once: closes the socket
            if cancelled:
                return 0
            print(f"error: {exc}", file=sys.stderr)
            return 1
        os.environ.update(local_aws_environment(endpoint.url, args.endpoint_name))
        os.environ.pop("AWS_PROFILE", None)
        forwarder = load_forwarder()  # after the environment: its client is created at import
        server.app.handler = forwarder.handler  # type: ignore[attr-defined]  # the REST API's app object
        failed: list[str] = []

        def watch_endpoint() -> None:
            # A dead endpoint server is replaced on the same port (the Lambda's client keeps its URL); meanwhile
            # the API answers 503 service_unavailable, as API Gateway does while an endpoint is unreachable.
            nonlocal endpoint
            restarts: deque[float] = deque(maxlen=RESTARTS_PER_MINUTE)
            while not server.stopping:
                assert endpoint is not None  # started before this thread, replaced only here
                if endpoint.process.poll() is None:
                    time.sleep(0.5)
                    continue
                log.error("the endpoint server exited (%s): restarting it", endpoint.process.returncode)
                if len(restarts) == restarts.maxlen and time.monotonic() - restarts[0] < 60:
                    failed.append(f"the endpoint server exited {restarts.maxlen + 1} times within a minute")
                    server.stop()
                    return
                restarts.append(time.monotonic())
                try:
                    endpoint = start(endpoint.port)
                except RuntimeError as exc:
                    if not server.stopping:
                        failed.append(f"the endpoint server could not be restarted: {exc}")
                        server.stop()
                    return
                log.info("the endpoint server is back on %s", endpoint.url)

        threading.Thread(target=watch_endpoint, name="endpoint-watch", daemon=True).start()
        if not server.stopping:
            print(wsgi.LISTENING.format(host=args.host, port=server.port), flush=True)
        server.serve()
        if failed:
            print(f"error: {failed[0]}", file=sys.stderr)
            return 1
        return 0
    finally:
        if endpoint is not None:
            endpoint.stop()
        if model_copy is not None:
            shutil.rmtree(model_copy, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
