"""Child processes that never outlive the stand-in: their own process group, killed on stop, exit and parent death.

Every child starts in a new session (so a stop reaches its whole process tree), is registered for the atexit
sweep, and on Linux asks the kernel for SIGKILL when its parent dies (covers SIGKILL of the parent, where no
Python code runs). PR_SET_PDEATHSIG fires when the *thread* that forked exits, so all children are forked by
one long-lived spawner thread rather than by the short-lived job threads.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import ctypes.util
import functools
import os
import queue
import signal
import subprocess
import threading
import time
from concurrent.futures import Future
from typing import Any

_PR_SET_PDEATHSIG = 1
# Environment defaults for every child (an explicit setting in os.environ or a request wins). On a few shared
# cores, PyTorch's OpenMP threads spin-wait at every barrier while their siblings are descheduled: measured here
# (2 cores, busy machine) a tiny train.py ran at 2-4 images/s with the default policy and 23-34 images/s with
# PASSIVE, the same as pinning it to one core. SageMaker gives each job its own instance; locally they share.
CHILD_ENV_DEFAULTS: dict[str, str] = {"OMP_WAIT_POLICY": "PASSIVE"}
_lock = threading.Lock()
_children: dict[subprocess.Popen, object] = {}  # child -> the stand-in that started it
_requests: queue.Queue[tuple[dict[str, Any], object, Future]] = queue.Queue()
_spawner: threading.Thread | None = None

try:
    _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    _prctl: Any = _libc.prctl
except (OSError, AttributeError):  # not Linux: the atexit sweep still applies
    _prctl = None


def _die_with_parent(parent: int) -> None:
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _spawner_loop() -> None:
    while True:
        kwargs, owner, future = _requests.get()
        if not future.set_running_or_notify_cancel():
            continue
        try:
            proc = subprocess.Popen(**kwargs, start_new_session=True,
                                    preexec_fn=functools.partial(_die_with_parent, os.getpid()))
            with _lock:
                _children[proc] = owner
            future.set_result(proc)
        except BaseException as exc:  # handed to the caller
            future.set_exception(exc)


def child_env(*layers: dict[str, str]) -> dict[str, str]:
    """os.environ over CHILD_ENV_DEFAULTS, then each layer in turn."""
    env = {**CHILD_ENV_DEFAULTS, **os.environ}
    for layer in layers:
        env.update(layer)
    return env


def spawn(args: list[str], owner: object = None, **kwargs: Any) -> subprocess.Popen:
    """subprocess.Popen(args, **kwargs), registered (under `owner`) and tied to this process's lifetime."""
    global _spawner
    with _lock:
        if _spawner is None or not _spawner.is_alive():
            _spawner = threading.Thread(target=_spawner_loop, name="sagemaker-spawner", daemon=True)
            _spawner.start()
    future: Future = Future()
    _requests.put(({"args": args, **kwargs}, owner, future))
    return future.result()


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)  # the child leads its own group: pgid == pid


def terminate(proc: subprocess.Popen, grace: float = 5.0) -> int | None:
    """SIGTERM the child's process group (as SageMaker stops a job), SIGKILL after `grace` seconds."""
    if proc.poll() is None:
        _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
    if proc.poll() is None:
        _signal_group(proc, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
    # Grandchildren of an exited leader can outlive it in the group: sweep them too.
    _signal_group(proc, signal.SIGKILL)
    forget(proc)
    return proc.returncode


def forget(proc: subprocess.Popen) -> None:
    with _lock:
        _children.pop(proc, None)


def running() -> list[subprocess.Popen]:
    with _lock:
        return [p for p in _children if p.poll() is None]


def kill_all(owner: object = None) -> None:
    """End every child still registered (atexit, Ctrl-C), or only those `owner` started."""
    with _lock:
        children = [p for p, o in _children.items() if owner is None or o is owner]
    for proc in children:
        _signal_group(proc, signal.SIGKILL)
    for proc in children:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        forget(proc)


atexit.register(kill_all)
