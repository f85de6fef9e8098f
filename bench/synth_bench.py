"""Wall time of `cdk synth` (the CLI, app.py, cdk-nag included) on this machine; target <= 20 s on 2 cores.

    .venv/bin/python bench/synth_bench.py [--runs 3]

Also times the in-process `infra.synth_template()` (what tests and local mode call, without cdk-nag).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_S = 20.0


def cli_synth(outdir: str) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}  # no credentials: synth is offline
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    started = time.perf_counter()
    subprocess.run(["npx", "cdk", "synth", "--quiet", "--output", outdir], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - started


def in_process_synth() -> float:
    code = "import time, infra; t = time.perf_counter(); infra.synth_template(); print(time.perf_counter() - t)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    cli = []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="synth-bench-") as outdir:
            cli.append(cli_synth(outdir))
    inproc = in_process_synth()
    median = statistics.median(cli)
    print(f"cdk synth (CLI, app.py, cdk-nag): median {median:.1f} s, min {min(cli):.1f} s, max {max(cli):.1f} s "
          f"over {len(cli)} runs on {os.cpu_count()} cores; target <= {TARGET_S:.0f} s: "
          f"{'met' if median <= TARGET_S else 'MISSED'}")
    print(f"infra.synth_template() in process (no cdk-nag, after imports): {inproc:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
