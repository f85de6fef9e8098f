"""`imgclf load`: a bounded load on the prediction API, rising then falling, with latency and instances over time.

    imgclf load --image IMAGE [--local [DIR] | --url URL] [--steps RPS:SECONDS,...] [--interval S]

Open loop: each step offers RPS requests a second for SECONDS (a pool of senders, so a slow answer does not lower
the offered rate), then the next step. Every --interval seconds one line: elapsed time, offered rate, answered and
failed requests, p50 and p99 latency of the requests that ended in the interval and, for a local run, the endpoint's
instances in service / desired as the stand-in records them (<DIR>/sagemaker/hosting/state.json). The default steps
rise past the default policy's target (100 invocations per instance per minute) and fall back below 90% of it, so
`make demo SERVE=1` plus `make load` shows the endpoint scale out and back in. Exit 1 if any request failed.
"""

from __future__ import annotations

import argparse
import json
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_STEPS = "0.5:30,2:30,4:90,0.5:270"  # 7 minutes: out within a minute or two, back in after the low alarm
MAX_SECONDS = 1800  # bounded: a load test, not a soak
MAX_RPS = 200.0
SENDERS = 32


@dataclass(frozen=True)
class Step:
    rps: float
    seconds: float


def parse_steps(text: str) -> list[Step]:
    """"RPS:SECONDS,..." -> steps; ValueError with one line on anything else."""
    steps = []
    for part in (p.strip() for p in text.split(",")):
        rps, sep, seconds = part.partition(":")
        try:
            step = Step(float(rps), float(seconds))
        except ValueError:
            raise ValueError(f"--steps takes RPS:SECONDS,... (got {part!r})") from None
        if not sep or not (0 <= step.rps <= MAX_RPS) or not (step.seconds > 0) or not math.isfinite(step.seconds):
            raise ValueError(f"--steps: {part!r} needs 0 <= RPS <= {MAX_RPS:g} and SECONDS > 0")
        steps.append(step)
    if sum(s.seconds for s in steps) > MAX_SECONDS:
        raise ValueError(f"--steps add up to more than {MAX_SECONDS} s")
    return steps


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


@dataclass
class Tick:
    elapsed: float
    offered_rps: float
    ok: int
    failed: int
    p50_ms: float | None
    p99_ms: float | None
    instances: str = ""

    def line(self) -> str:
        def ms(v: float | None) -> str:
            return f"{v:7.1f}" if v is not None else "      -"

        return (f"{self.elapsed:6.0f}s  offered {self.offered_rps:5.1f}/s  ok {self.ok:5d}  failed {self.failed:3d}  "
                f"p50 {ms(self.p50_ms)} ms  p99 {ms(self.p99_ms)} ms" + (f"  instances {self.instances}"
                                                                      if self.instances else ""))


@dataclass
class Summary:
    ticks: list[Tick] = field(default_factory=list)
    ok: int = 0
    failed: int = 0
    failures: list[str] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)


def run_load(send: Callable[[], int], steps: list[Step], *, interval: float = 10.0,
             on_tick: Callable[[Tick], None] | None = None, instances: Callable[[], str] | None = None,
             senders: int = SENDERS, stop: threading.Event | None = None) -> Summary:
    """Offer the steps' load to `send` (one request; returns the HTTP status, 200 is success, or raises), and
    report every `interval` seconds. Blocks until the last step's requests have ended (setting `stop` ends the
    schedule early)."""
    stop = stop or threading.Event()
    lock = threading.Lock()
    done: list[tuple[float, float, str | None]] = []  # (end, latency ms, failure or None)
    summary = Summary()

    def one() -> None:
        started = time.monotonic()
        try:
            status = send()
            failure = None if status == 200 else f"HTTP {status}"
        except Exception as exc:  # a refused connection, a timeout: a failed request, counted and named
            failure = f"{type(exc).__name__}: {exc}"[:200]
        ended = time.monotonic()
        with lock:
            done.append((ended, (ended - started) * 1000, failure))

    start = time.monotonic()
    offered = {"rps": 0.0}
    finished = threading.Event()

    def schedule() -> None:
        with ThreadPoolExecutor(max_workers=senders, thread_name_prefix="load") as pool:
            at = start
            for step in steps:
                offered["rps"] = step.rps
                end = at + step.seconds
                if step.rps <= 0:
                    stop.wait(max(0.0, end - time.monotonic()))
                else:
                    gap, due = 1.0 / step.rps, at
                    while due < end and not stop.is_set():
                        stop.wait(max(0.0, due - time.monotonic()))
                        pool.submit(one)
                        due += gap
                    stop.wait(max(0.0, end - time.monotonic()))
                if stop.is_set():
                    break
                at = end
            offered["rps"] = 0.0
        finished.set()

    threading.Thread(target=schedule, name="load-schedule", daemon=True).start()
    seen = 0
    last = start
    while True:
        ended = finished.wait(max(0.0, last + interval - time.monotonic()))
        now = time.monotonic()
        with lock:
            fresh, seen = done[seen:], len(done)
        latencies = [lat for _, lat, failure in fresh if failure is None]
        failed = [failure for _, _, failure in fresh if failure is not None]
        tick = Tick(now - start, offered["rps"], len(latencies), len(failed), percentile(latencies, 50),
                    percentile(latencies, 99), instances() if instances else "")
        summary.ticks.append(tick)
        summary.ok += len(latencies)
        summary.failed += len(failed)
        summary.failures.extend(failed[: max(0, 5 - len(summary.failures))])
        summary.latencies_ms.extend(latencies)
        if on_tick:
            on_tick(tick)
        last = now
        if ended:
            return summary


def local_instances(run_dir: Path, endpoint: str | None) -> Callable[[], str]:
    """"in service/desired" of a local run's endpoint, read from the stand-in's state file at each call."""
    state_file = run_dir / "sagemaker" / "hosting" / "state.json"

    def read() -> str:
        try:
            endpoints = json.loads(state_file.read_text()).get("endpoints", {})
        except (OSError, ValueError):
            return "?"
        found = endpoints.get(endpoint) if endpoint else next(iter(endpoints.values()), None)
        if not found or not found.get("variants"):
            return "?"
        variants = found["variants"].values()
        return f"{sum(v['current'] for v in variants)}/{sum(v['desired'] for v in variants)}"

    return read



def cmd_load(args: argparse.Namespace, backend_factory: Callable[[argparse.Namespace], Any]) -> int:
    import contextlib

    import requests

    import stackfacts as facts
    from cli import predict
    from cli.errors import CliError, UsageError
    from cli.views import console as make_console

    try:
        steps = parse_steps(args.steps)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.interval <= 0:
        raise UsageError("--interval must be positive")
    body, content_type = predict.read_image(Path(args.image))
    base, endpoint, instances = args.url, None, None
    if args.local is not None:
        run_dir = Path(args.local)
        recorded = None
        if run_dir.is_dir():
            backend = backend_factory(args)
            with contextlib.suppress(CliError):
                recorded = backend.optional_output(facts.OUTPUT_API_URL)
            with contextlib.suppress(CliError):
                endpoint = backend.optional_output(facts.OUTPUT_ENDPOINT)
            instances = local_instances(run_dir, endpoint)
        base = base or predict.local_api(recorded)
    if not base:
        raise UsageError("pass --url (the API base URL) or --local [DIR] (a local run that serves)")
    url = predict.predict_url(base, None)
    if predict.wants_signature(url, "auto"):
        raise UsageError("load runs against a local API only (loopback): it does not sign requests")
    session = requests.Session()
    session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=SENDERS))

    def send() -> int:
        return session.post(url, data=body, headers={"Content-Type": content_type}, timeout=args.timeout).status_code

    console = make_console()
    total = sum(s.seconds for s in steps)
    console.print(f"load on {url}: {', '.join(f'{s.rps:g}/s for {s.seconds:g} s' for s in steps)} "
                  f"({total:g} s); a line every {args.interval:g} s")
    summary = run_load(send, steps, interval=args.interval, instances=instances,
                       on_tick=lambda tick: console.print(tick.line(), highlight=False))
    p50, p99 = percentile(summary.latencies_ms, 50), percentile(summary.latencies_ms, 99)
    console.print(f"{summary.ok} answered, {summary.failed} failed; p50 {p50 or 0:.1f} ms, p99 {p99 or 0:.1f} ms"
                  + (f"; first failures: {'; '.join(summary.failures)}" if summary.failures else ""), highlight=False)
    return 1 if summary.failed else 0
