"""Wall time of `cdk synth` (the CLI, app.py, cdk-nag included) on this machine; target <= 20 s on 2 cores.

    .venv/bin/python bench/synth_bench.py [--runs 3]

Also times the in-process `infra.synth_template()` (what tests and local mode call, without cdk-nag).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_S = 20.0


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cli_synth(outdir: str) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the CLI, node and python together): CPU time is what load cannot inflate."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}  # no credentials: synth is offline
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    cpu, started = _children_cpu(), time.perf_counter()
    subprocess.run(["npx", "cdk", "synth", "--quiet", "--output", outdir], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - started, _children_cpu() - cpu


def in_process_synth() -> float:
    code = "import time, infra; t = time.perf_counter(); infra.synth_template(); print(time.perf_counter() - t)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    runs = []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="synth-bench-") as outdir:
            runs.append(cli_synth(outdir))
    wall = [w for w, _ in runs]
    cpu = statistics.median(c for _, c in runs)
    inproc = in_process_synth()
    median = statistics.median(wall)
    load = os.getloadavg()[0]
    print(f"cdk synth (CLI, app.py, cdk-nag): median {median:.1f} s wall (min {min(wall):.1f}, max {max(wall):.1f}), "
          f"{cpu:.1f} s CPU, over {len(wall)} runs on {os.cpu_count()} cores at load {load:.1f}; "
          f"target <= {TARGET_S:.0f} s: {'met' if median <= TARGET_S else 'MISSED'}")
    print(f"infra.synth_template() in process (no cdk-nag, after imports): {inproc:.1f} s wall")
    return 0


if __name__ == "__main__":
    sys.exit(main())
