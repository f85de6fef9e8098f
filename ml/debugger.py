"""SageMaker Debugger wiring: active only when smdebug imports and SageMaker (or local mode) wrote a hook config.

Tuning trials carry no DebugHookConfig (the API has no such member), so for them this is a no-op.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

from torch import nn

from ml import contract

log = logging.getLogger("train")

HOOK_CONFIG_ENV = "SMDEBUG_CONFIG_FILE_PATH"  # smdebug's own variable
DEFAULT_HOOK_CONFIG = "/opt/ml/input/config/debughookconfig.json"
# Set by the SageMaker training toolkit in the entry point's environment (sagemaker-training's
# environment.Environment -> SM_TRAINING_ENV), also by the local stand-in, which runs the toolkit's code; a local
# Debugger job still never pip-installs: the stand-in runs it with smdebug's environment (.venv-smdebug).
TOOLKIT_ENV = "SM_TRAINING_ENV"
HERE = Path(__file__).resolve().parent


def hook_config() -> Path:
    return Path(os.environ.get(HOOK_CONFIG_ENV, DEFAULT_HOOK_CONFIG))


def install_smdebug_if_needed(enabled: bool, requirements: Path | None = None) -> bool:
    """pip-install smdebug's pins, only in the job that has Debugger: SageMaker wrote its hook config, the
    script was not told `--debugger off`, smdebug is missing (DLCs >= 2.2 lack it) and this is a SageMaker
    container. Returns whether it installed; a failed install leaves the job training without the hook."""
    requirements = requirements or HERE / contract.DEBUGGER_REQUIREMENTS
    if not enabled or not hook_config().is_file() or importlib.util.find_spec("smdebug") is not None:
        return False
    if not os.environ.get(TOOLKIT_ENV):
        log.warning("debugger: smdebug is not installed here; training without the hook")
        return False
    log.info("debugger: installing %s (this job has a Debugger hook config)", requirements.name)
    result = subprocess.run([sys.executable, "-m", "pip", "install", "--no-input", "--disable-pip-version-check",
                             "-r", str(requirements)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        log.warning("debugger: pip could not install %s; training without the hook:\n%s", requirements.name,
                    result.stderr[-2000:])
        return False
    importlib.invalidate_caches()
    return True


class NoHook:
    """Stands in when Debugger is off, so the training loop has no branches."""

    enabled = False

    def train(self) -> None: ...

    def eval(self) -> None: ...

    def predict(self) -> None: ...


class SmdebugHook:
    enabled = True

    def __init__(self, hook, modes) -> None:
        self._hook, self._modes = hook, modes

    def train(self) -> None:
        self._hook.set_mode(self._modes.TRAIN)

    def eval(self) -> None:
        self._hook.set_mode(self._modes.EVAL)

    def predict(self) -> None:
        self._hook.set_mode(self._modes.PREDICT)


def save_intervals(config: dict, steps_per_epoch: Mapping[str, int]) -> dict:
    """The hook config with `saves_per_epoch` (HookParameters) turned into smdebug's per-mode save intervals.

    TRAIN saves about that many steps per epoch (at least one step apart). EVAL saves one step per epoch, the
    first validation batch: the evaluation loader is not shuffled, so the rules that follow the EVAL loss
    (LossNotDecreasing, Overfit, Overtraining) compare the same samples epoch after epoch, not batches of
    different difficulty. Collections that set their own save_interval keep it (a collection overrides the hook).
    """
    params = dict(config.get("HookParameters") or {})
    wanted = params.pop(contract.DEBUGGER_SAVES_PER_EPOCH, None)
    if wanted is None:
        return config
    saves = max(1, int(wanted))
    for mode, steps in steps_per_epoch.items():
        per_epoch = max(1, int(steps))
        params[f"{mode}.save_interval"] = str(per_epoch if mode == "eval" else max(1, per_epoch // saves))
    return {**config, "HookParameters": params}


def _derived_config(config: Path, steps_per_epoch: Mapping[str, int] | None) -> Path:
    raw = json.loads(config.read_text())
    derived = save_intervals(raw, steps_per_epoch or {})
    if derived is raw:
        return config
    out = Path(tempfile.mkdtemp(prefix="debughook-")) / config.name
    out.write_text(json.dumps(derived))
    log.info("debugger: save intervals %s", {k: v for k, v in derived["HookParameters"].items()
                                             if k.endswith("save_interval")})
    return out


def create_hook(model: nn.Module, loss_fn: nn.Module, enabled: bool = True,
                steps_per_epoch: Mapping[str, int] | None = None) -> NoHook | SmdebugHook:
    """Register model and loss with the hook SageMaker configured (the collections come from its JSON);
    `steps_per_epoch` per smdebug mode ("train", "eval") sets the save intervals the config asks to derive."""
    config = hook_config()
    if not enabled or not config.is_file():
        return NoHook()
    config = _derived_config(config, steps_per_epoch)
    os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")
    try:
        import smdebug.pytorch as smd
    except Exception as exc:
        log.warning("debugger: hook config %s found but smdebug does not import (%s); training without it",
                    config, exc)
        return NoHook()
    hook = smd.get_hook(json_config_path=str(config), create_if_not_exists=True)
    if hook is None:
        return NoHook()
    hook.register_module(model)
    hook.register_loss(loss_fn)
    log.info("debugger: hook registered from %s, writing to %s", config, hook.out_dir)
    return SmdebugHook(hook, smd.modes)
