"""Serving overhead and load, measured side by side in one run on the same images and the same model.

    python bench/serve_bench.py [--model DIR|model.tar.gz] [--load-seconds 60] [--no-resnet224]

For each model: p50 per image in process (Predictor.preprocess + forward), through the endpoint server alone
(HTTP POST /invocations) and through the full local REST API (POST /predict: REST front -> Lambda handler ->
boto3 -> endpoint server), interleaved round by round so drift hits all three alike; then the two ratios. The
trained 32x32 digits model is so fast that fixed HTTP overhead dominates its ratios, so the same is measured on a
224x224 resnet18 model directory as well (random weights: the timing, not the accuracy, matters). Last, a load
phase: 8 concurrent clients on the full API -> errors, p50/p99, requests/s, RSS of the server processes.
Loopback only; nothing leaves the machine.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ml import contract, inference  # noqa: E402
from ml.imaging import TransformSettings  # noqa: E402
from ml.model import build_model  # noqa: E402

TARGET_FULL, TARGET_ENDPOINT = 1.25, 1.10
SETTLE_S = 0.5


# --- models and images ------------------------------------------------------------------------------------------
def train_local_model(work: Path) -> Path:
    """The same model the tests use: ml/train.py --preset local on the rendered digits (about a minute)."""
    # A child process renders the digits: scikit-learn stays out of this process (see bench_images).
    subprocess.run([sys.executable, "-m", "local.digits", str(work / "digits")], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SM_") and k != "OMP_NUM_THREADS"}
    env.update({"SM_CHANNEL_TRAIN": str(work / "digits/train"), "SM_CHANNEL_VALID": str(work / "digits/valid"),
                "SM_CHANNEL_TEST": str(work / "digits/test"), "SM_MODEL_DIR": str(work / "model"),
                "SM_OUTPUT_DATA_DIR": str(work / "output/data"), "SM_OUTPUT_DIR": str(work / "output")})
    print("training a model with ml/train.py --preset local ...", flush=True)
    subprocess.run([sys.executable, str(ROOT / "ml/train.py"), "--preset", "local", "--epochs", "3",
                    "--checkpoint-dir", str(work / "ckpt")], env=env, check=True, stdout=subprocess.DEVNULL)
    return work / "model"


def write_resnet224(model_dir: Path, classes: list[str]) -> Path:
    """A servable 224x224 resnet18 model directory in the format ml/train.py writes (random weights, no download)."""
    import torch

    model_dir.mkdir(parents=True)
    torch.save(build_model("resnet18", len(classes), weights="none", finetune="all").state_dict(),
               model_dir / contract.MODEL_WEIGHTS_FILE)
    config = {"format": 1, "backbone": "resnet18", "classes": classes,
              "transforms": TransformSettings.for_size(224).to_dict(), "training_job": "bench-resnet18-224"}
    (model_dir / contract.MODEL_CONFIG_FILE).write_text(json.dumps(config, indent=2))
    code = model_dir / contract.MODEL_CODE_DIR  # as ml/train.py writes it: the shim and the ml package
    (code / contract.PACKAGE).mkdir(parents=True)
    for name in contract.INFERENCE_MODULES:
        shutil.copy2(ROOT / "ml" / name, code / contract.PACKAGE / name)
    shutil.copy2(ROOT / "ml" / contract.ENTRY_DIR / contract.INFERENCE_PROGRAM, code / contract.INFERENCE_PROGRAM)
    return model_dir


def bench_images(n: int, side: int, fmt: str) -> list[bytes]:
    """n distinct handwriting-like digits of side x side pixels (JPEG "photos" for the 224 model).

    Drawn with Pillow rather than loaded from scikit-learn: sklearn's wheel brings a second OpenMP runtime into this
    process, and on a small machine two OpenMP runtimes make the in-process timings erratic.
    """
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        glyph = Image.new("L", (side, side), 0)
        size = side * rng.uniform(0.5, 0.8)
        xy = (side * rng.uniform(0.15, 0.35), side * rng.uniform(0.0, 0.2))
        ImageDraw.Draw(glyph).text(xy, str(i % 10), fill=int(rng.integers(180, 256)), font_size=size)
        glyph = glyph.rotate(float(rng.uniform(-12, 12)), resample=Image.Resampling.BILINEAR)
        buf = io.BytesIO()
        glyph.convert("RGB").save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
        out.append(buf.getvalue())
    return out


# --- the servers --------------------------------------------------------------------------------------------------
@dataclass
class Stack:
    process: subprocess.Popen
    api_port: int
    endpoint_port: int
    output: list[str]

    def processes(self) -> list[psutil.Process]:
        me = psutil.Process(self.process.pid)
        return [me, *me.children(recursive=True)]

    def rss_mb(self) -> dict[str, float]:
        names = {0: "local.serve (front + Lambda)"}
        return {names.get(i, f"endpoint server pid {p.pid}"): p.memory_info().rss / 2**20
                for i, p in enumerate(self.processes())}

    def stop(self) -> int:
        self.process.terminate()
        return self.process.wait(30)


def start_stack(model: Path, *extra: str) -> Stack:
    """`make serve` as a user runs it: python -m local.serve MODEL --port 0 (a free port)."""
    process = subprocess.Popen([sys.executable, "-m", "local.serve", str(model), "--port", "0", *extra], cwd=ROOT,
                               env={**os.environ, "PYTHONUNBUFFERED": "1", "POWERTOOLS_LOG_LEVEL": "INFO"},
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output: list[str] = []
    ports: dict[str, int] = {}
    ready = threading.Event()

    def pump() -> None:
        for line in process.stdout:
            if len(output) < 2000:
                output.append(line)
            if match := re.match(r"(endpoint \| )?listening on http://127\.0\.0\.1:(\d+)$", line.strip()):
                ports["endpoint" if match.group(1) else "api"] = int(match.group(2))
                if "api" in ports:
                    ready.set()
        ready.set()

    threading.Thread(target=pump, daemon=True).start()
    if not ready.wait(600) or set(ports) != {"api", "endpoint"}:
        process.kill()
        raise SystemExit("local.serve did not start:\n" + "".join(output[-20:]))
    return Stack(process, ports["api"], ports["endpoint"], output)


class Client:
    """One keep-alive HTTP/1.1 connection, as a real client library would hold."""

    def __init__(self, port: int, path: str, content_type: str) -> None:
        self.port, self.path, self.content_type = port, path, content_type
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def post(self, body: bytes) -> tuple[int, bytes]:
        try:
            self.conn.request("POST", self.path, body, {"Content-Type": self.content_type})
            response = self.conn.getresponse()
            return response.status, response.read()
        except (OSError, http.client.HTTPException):
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            raise


# --- measurements ---------------------------------------------------------------------------------------------------
def p(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def overhead(model: Path, images: list[bytes], content_type: str, rounds: int, label: str) -> dict[str, float]:
    predictor = inference.model_fn(str(model))
    stack = start_stack(model)
    try:
        endpoint = Client(stack.endpoint_port, "/invocations", content_type)
        api = Client(stack.api_port, f"{contract.PREDICT_PATH}?top_k=3", content_type)

        # The model runs on a worker thread, as in every server (the endpoint's waitress threads): with two
        # intra-op threads, forwards started from a process's main thread were 2-60x slower here under load, which
        # would flatter the servers. Only the preprocess + forward itself is timed, inside that thread.
        model_thread = ThreadPoolExecutor(1, thread_name_prefix="in-process-model")

        def forward(body: bytes) -> float:
            started = time.perf_counter()
            predictor.probabilities(predictor.preprocess(body))
            return (time.perf_counter() - started) * 1000

        def in_process(body: bytes) -> float:
            return model_thread.submit(forward, body).result()

        def over_http(client: Client) -> Callable[[bytes], float]:
            def call(body: bytes) -> float:
                started = time.perf_counter()
                status, data = client.post(body)
                elapsed = (time.perf_counter() - started) * 1000
                if status != 200:
                    raise SystemExit(f"{client.path} answered {status}: {data[:200]!r}")
                return elapsed
            return call

        paths = {"in-process": in_process, "endpoint": over_http(endpoint), "full": over_http(api)}
        times: dict[str, list[float]] = {name: [] for name in paths}
        for fn in paths.values():  # warm-up: allocator, thread pools, keep-alive connections
            for body in images[:5]:
                fn(body)
        # Round by round, path by path, with a pause between paths: on 2 cores, the intra-op (OpenMP) threads of
        # the path just measured spin for a while after their last op and would slow the next path's threads.
        for _ in range(rounds):
            for name, fn in paths.items():
                time.sleep(SETTLE_S)
                times[name].extend(fn(body) for body in images)
        result = {name: statistics.median(t) for name, t in times.items()}
        print(f"\n== {label}: {len(images)} images x {rounds} rounds per path ==")
        for name, values in times.items():
            print(f"  p50 {name:<11} {result[name]:8.2f} ms   (p90 {p(values, 90):7.2f} ms)")
        full, ep = result["full"] / result["in-process"], result["endpoint"] / result["in-process"]
        print(f"  full API / in-process  = {full:.3f}   (target <= {TARGET_FULL}: "
              f"{'met' if full <= TARGET_FULL else 'MISSED'})")
        print(f"  endpoint / in-process  = {ep:.3f}   (target <= {TARGET_ENDPOINT}: "
              f"{'met' if ep <= TARGET_ENDPOINT else 'MISSED'})")
        print(f"  fixed HTTP cost: endpoint {result['endpoint'] - result['in-process']:.2f} ms, "
              f"full {result['full'] - result['in-process']:.2f} ms per request")
        model_thread.shutdown()
        return result
    finally:
        stack.stop()


def load(model: Path, images: list[bytes], content_type: str, clients: int, seconds: float,
         concurrency: int = 1) -> None:
    stack = start_stack(model, "--endpoint-concurrency", str(concurrency))
    try:
        warm = Client(stack.api_port, contract.PREDICT_PATH, content_type)
        for body in images[:10]:
            warm.post(body)
        before = stack.rss_mb()
        latencies: list[list[float]] = [[] for _ in range(clients)]
        errors: list[list[str]] = [[] for _ in range(clients)]
        deadline = time.monotonic() + seconds

        def run(i: int) -> None:
            client = Client(stack.api_port, contract.PREDICT_PATH, content_type)
            j = i
            while time.monotonic() < deadline:
                started = time.perf_counter()
                try:
                    status, data = client.post(images[j % len(images)])
                    if status != 200 or len(json.loads(data)["predictions"]) != contract.DEFAULT_TOP_K:
                        errors[i].append(f"{status}: {data[:120]!r}")
                except Exception as exc:
                    errors[i].append(repr(exc))
                latencies[i].append((time.perf_counter() - started) * 1000)
                j += clients

        started = time.monotonic()
        threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - started
        after = stack.rss_mb()
        all_latencies = [x for part in latencies for x in part]
        all_errors = [x for part in errors for x in part]
        print(f"\n== load: {clients} concurrent clients for {seconds:g} s on the full API (POST /predict), "
              f"endpoint concurrency {concurrency} ==")
        print(f"  requests {len(all_latencies)}   errors {len(all_errors)}   "
              f"throughput {len(all_latencies) / elapsed:.1f} req/s")
        print(f"  latency p50 {p(all_latencies, 50):.1f} ms   p99 {p(all_latencies, 99):.1f} ms   "
              f"max {max(all_latencies):.1f} ms")
        for name in before:
            print(f"  RSS {name:<32} before {before[name]:7.1f} MB   after {after.get(name, float('nan')):7.1f} MB")
        for error in all_errors[:5]:
            print(f"  error: {error}")
    finally:
        stack.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="model dir or model.tar.gz (default: train one, ~1 min)")
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--load-seconds", type=float, default=60.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--endpoint-concurrency", type=int, default=1)
    parser.add_argument("--torch-threads", type=int, default=0,
                        help="intra-op threads in every process measured (default 0: torch's default, one per core, "
                             "as make serve runs; 1 makes timings steadier on a busy shared machine)")
    parser.add_argument("--no-resnet224", dest="resnet224", action="store_false",
                        help="skip the 224x224 resnet18 measurement")
    args = parser.parse_args(argv)
    if args.torch_threads:
        os.environ["OMP_NUM_THREADS"] = str(args.torch_threads)  # inherited by local.serve and the endpoint
    work = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    try:
        import torch

        if args.torch_threads:
            torch.set_num_threads(args.torch_threads)

        print(f"machine: {os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads), "
              f"{'CUDA ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU only'}; "
              f"load average {os.getloadavg()[0]:.1f} (other processes)")
        model = args.model or train_local_model(work)
        config_dir = model if model.is_dir() else None
        classes = (json.loads((config_dir / contract.MODEL_CONFIG_FILE).read_text())["classes"]
                   if config_dir else [str(d) for d in range(10)])
        small = bench_images(args.images, 32, "PNG")
        overhead(model, small, "image/png", args.rounds, f"trained model {model} (32x32 PNG)")
        if args.resnet224:
            big_model = write_resnet224(work / "resnet18-224", classes)
            big = bench_images(args.images, 320, "JPEG")
            overhead(big_model, big, "image/jpeg", args.rounds, "resnet18 at 224x224 (320x320 JPEG)")
        load(model, small, "image/png", args.clients, args.load_seconds, args.endpoint_concurrency)
        print(f"\nload average at the end {os.getloadavg()[0]:.1f}")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
