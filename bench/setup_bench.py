"""`make setup` on fresh checkouts, side by side: installed packages and set-up time, baseline vs candidate.

Each side is a fresh `git worktree` of its commit (nothing ignored carried over: no venv, no node_modules). On each,
first torch/torchvision go in with pip exactly as both Makefiles install them (timed apart: about 80 s and 5.5 GB of
CUDA wheels here, the same on both sides), then `make setup` is timed: everything else, Python and Node. Package
caches are as they are on this machine (warm for both sides after one run); `--cold` disables pip's and uv's caches
for the timed step. Bars (issue 15): `pip list` in .venv <= 120 packages; set-up minus torch <= 60 % of the baseline.

    .venv/bin/python bench/setup_bench.py [--baseline b77cee3] [--candidate HEAD] [--cold] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TORCH = ["torch==2.14.1", "torchvision==0.29.1"]  # the builds pip finds on the project's machines (requirements.txt)
MAX_PACKAGES = 120
MAX_TIME_RATIO = 0.60


@dataclass
class Side:
    label: str
    commit: str
    torch_s: float = 0.0
    setup_s: float = 0.0
    packages: int = 0
    smdebug_packages: int | None = None


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"setup_bench: {' '.join(cmd)} failed in {cwd} (exit {result.returncode}):\n"
                 f"{(result.stdout + result.stderr)[-3000:]}")
    return time.perf_counter() - started


def _count(python: Path) -> int:
    """`pip list`, as the issue counts."""
    out = subprocess.run([str(python), "-m", "pip", "list", "--format=json"], capture_output=True, text=True)
    return len(json.loads(out.stdout)) if out.returncode == 0 else 0


def measure(side: Side, work: Path, cold: bool) -> Side:
    tree = work / side.label
    _run(["git", "worktree", "add", "--detach", str(tree), side.commit], ROOT)
    try:
        _run([os.environ.get("PYTHON", "python3"), "-m", "venv", ".venv"], tree)  # as both Makefiles would
        side.torch_s = _run([str(tree / ".venv/bin/python"), "-m", "pip", "install", "--quiet",
                             "--disable-pip-version-check", *TORCH], tree)
        env = dict(os.environ)
        if cold:
            env.update(PIP_NO_CACHE_DIR="1", UV_NO_CACHE="1", npm_config_cache=str(work / f"npm-cache-{side.label}"))
        side.setup_s = _run(["make", "setup"], tree, env)
        side.packages = _count(tree / ".venv/bin/python")
        smdebug = tree / ".venv-smdebug/bin/python"
        if smdebug.exists():  # made without pip: uv (from .venv) lists it
            out = subprocess.run([str(tree / ".venv/bin/uv"), "pip", "list", "--python", str(smdebug),
                                  "--format=json"], capture_output=True, text=True)
            side.smdebug_packages = len(json.loads(out.stdout)) if out.returncode == 0 else None
    finally:
        if not KEEP:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, capture_output=True)
    return side


KEEP = False


def main(argv: list[str] | None = None) -> int:
    global KEEP
    parser = argparse.ArgumentParser(prog="bench/setup_bench.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default="b77cee3", help="the commit to compare with (default: b77cee3)")
    parser.add_argument("--candidate", default="HEAD", help="the commit measured (default: HEAD, committed work only)")
    parser.add_argument("--cold", action="store_true", help="no pip/uv/npm cache for the timed `make setup`")
    parser.add_argument("--keep", action="store_true", help="keep the two worktrees (under the work folder)")
    parser.add_argument("--work", type=Path, help="where the checkouts go (default: a temporary folder)")
    args = parser.parse_args(argv)
    KEEP = args.keep
    if shutil.which("make") is None or shutil.which("npm") is None:
        sys.exit("setup_bench: needs make and npm on PATH")
    work = args.work or Path(tempfile.mkdtemp(prefix="setup-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    sides = []
    for label, commit in (("baseline", args.baseline), ("candidate", args.candidate)):
        resolved = subprocess.run(["git", "rev-parse", "--short", commit], cwd=ROOT, capture_output=True, text=True)
        if resolved.returncode != 0:
            sys.exit(f"setup_bench: unknown commit {commit!r}")
        print(f"{label}: {resolved.stdout.strip()} ...", flush=True)
        sides.append(measure(Side(label, resolved.stdout.strip()), work, args.cold))
    if not KEEP:
        shutil.rmtree(work, ignore_errors=True)

    base, cand = sides
    ratio = cand.setup_s / base.setup_s
    print(f"\n{'':<10} {'commit':<10} {'torch (s)':>10} {'make setup (s)':>15} {'.venv packages':>15} "
          f"{'.venv-smdebug':>14}")
    for s in sides:
        print(f"{s.label:<10} {s.commit:<10} {s.torch_s:>10.1f} {s.setup_s:>15.1f} {s.packages:>15} "
              f"{s.smdebug_packages if s.smdebug_packages is not None else '-':>14}")
    print(f"\nset-up minus torch: {ratio:.0%} of the baseline (bar <= {MAX_TIME_RATIO:.0%}): "
          f"{'met' if ratio <= MAX_TIME_RATIO else 'NOT met'}")
    print(f".venv packages: {cand.packages} (bar <= {MAX_PACKAGES}): "
          f"{'met' if cand.packages <= MAX_PACKAGES else 'NOT met'}"
          f"{'; caches: cold' if args.cold else '; caches: warm'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
