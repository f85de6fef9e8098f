"""What hostile images cost the endpoint: small files with huge dimensions (issue 12, item 17).

    python bench/decode_bench.py [--clients 10] [--requests 40]

1. Each crafted file (a few hundred KB; 6000x6000 RGB, grey, palette, RGBA, 16-bit and float) decoded alone in a
   fresh process as serving decodes it (imaging.decode_image, min_side=256): outcome, CPU seconds, peak RSS growth.
2. The local endpoint server on a 224x224 resnet18 (random weights): latency of a normal JPEG, alone, while
   `--clients` threads POST normal JPEGs (plain load) and while they POST the crafted files, and the server's RSS
   before, at its peak and after.
Loopback only; nothing leaves the machine.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from serve_bench import write_resnet224  # noqa: E402

from local.endpoint_server import start_endpoint_server  # noqa: E402

ONE_DECODE = r"""
import json, pathlib, sys, time
from ml import imaging

def hwm():  # this process's peak RSS (VmHWM: ru_maxrss would carry the parent's peak across exec)
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
imaging.decode_image(pathlib.Path(sys.argv[2]).read_bytes(), min_side=256)  # warm: Pillow's plugins loaded
data = pathlib.Path(sys.argv[1]).read_bytes()
peak = hwm()
start = time.process_time()
try:
    outcome = "x".join(map(str, imaging.decode_image(data, min_side=256).size))
except imaging.ApiException as exc:
    outcome = f"{exc.status_code} {exc.error.code}"
print(json.dumps({"outcome": outcome, "cpu_s": time.process_time() - start,
                  "peak_growth_mb": (hwm() - peak) / 2**20}))
"""


def craft(folder: Path) -> list[Path]:
    def save(name: str, img: Image.Image, fmt: str = "PNG", **params) -> Path:
        path = folder / f"{name}.{fmt.lower()}"
        img.save(path, fmt, **params)
        return path

    return [
        save("rgb-6000x6000", Image.new("RGB", (6000, 6000), (20, 30, 40)), compress_level=9),
        save("grey-6300x6300", Image.new("L", (6300, 6300), 90), compress_level=9),
        save("rgba-4000x4000", Image.new("RGBA", (4000, 4000), (1, 2, 3, 4)), compress_level=9),
        save("palette-6000x6000", Image.new("P", (6000, 6000), 3), compress_level=9),
        save("16-bit-6000x6000", Image.fromarray(np.full((6000, 6000), 40000, np.uint16)), compress_level=9),
        save("float-5000x5000", Image.fromarray(np.full((5000, 5000), 0.5, np.float32)), "TIFF",
             compression="tiff_adobe_deflate"),
    ]


def normal_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (480, 640, 3), np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def post(port: int, body: bytes) -> tuple[int, float]:
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request("POST", "/invocations", body=body, headers={"Content-Type": "application/x-image"})
        response = conn.getresponse()
        response.read()
        return response.status, time.perf_counter() - started
    finally:
        conn.close()


def latencies(port: int, body: bytes, n: int) -> tuple[float, float]:
    times = sorted(post(port, body)[1] * 1000 for _ in range(n))
    return statistics.median(times), times[min(len(times) - 1, int(0.99 * len(times)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--requests", type=int, default=40)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        files = craft(work)
        small = work / "small.png"
        Image.new("RGB", (64, 64)).save(small)
        print(f"{'file':<20} {'bytes':>8}  {'outcome':<24} {'CPU s':>6} {'peak +MB':>9}")
        for path in files:
            result = subprocess.run([sys.executable, "-c", ONE_DECODE, str(path), str(small)], cwd=ROOT,
                                    capture_output=True, text=True, check=True)
            r = json.loads(result.stdout)
            print(f"{path.stem:<20} {path.stat().st_size:>8,}  {r['outcome']:<24} {r['cpu_s']:>6.2f} "
                  f"{r['peak_growth_mb']:>9.0f}")

        model = write_resnet224(work / "model", [str(i) for i in range(10)])
        bodies, normal = [p.read_bytes() for p in files], normal_jpeg()
        with start_endpoint_server(model, log_to=None) as endpoint:
            server = psutil.Process(endpoint.process.pid)
            post(endpoint.port, normal)
            rss_before = server.memory_info().rss
            p50, p99 = latencies(endpoint.port, normal, args.requests)
            print(f"\nnormal 640x480 JPEG alone: p50 {p50:.0f} ms, p99 {p99:.0f} ms")
            peak = [rss_before]
            for label, sent in (("normal JPEGs (plain load, for comparison)", [normal]),
                                ("the crafted files", bodies)):
                stop = threading.Event()

                def attack(i: int, sent: list[bytes] = sent, stop: threading.Event = stop) -> None:
                    while not stop.is_set():
                        post(endpoint.port, sent[i % len(sent)])

                def watch(stop: threading.Event = stop) -> None:
                    while not stop.is_set():
                        peak[0] = max(peak[0], server.memory_info().rss)
                        time.sleep(0.05)

                threads = [threading.Thread(target=attack, args=(i,), daemon=True) for i in range(args.clients)]
                threads.append(threading.Thread(target=watch, daemon=True))
                for t in threads:
                    t.start()
                time.sleep(2)
                p50, p99 = latencies(endpoint.port, normal, args.requests)
                stop.set()
                for t in threads:
                    t.join(120)
                time.sleep(1)
                print(f"with {args.clients} clients sending {label}: p50 {p50:.0f} ms, p99 {p99:.0f} ms")
            print(f"endpoint RSS: {rss_before / 2**20:.0f} MB before, {peak[0] / 2**20:.0f} MB at peak, "
                  f"{server.memory_info().rss / 2**20:.0f} MB after")
    return 0


if __name__ == "__main__":
    sys.exit(main())
