"""SageMaker Debugger wiring: active only when smdebug imports and SageMaker (or local mode) wrote a hook config.

Tuning trials carry no DebugHookConfig (the API has no such member), so for them this is a no-op.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from torch import nn

log = logging.getLogger("train")

HOOK_CONFIG_ENV = "SMDEBUG_CONFIG_FILE_PATH"  # smdebug's own variable
DEFAULT_HOOK_CONFIG = "/opt/ml/input/config/debughookconfig.json"


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


def create_hook(model: nn.Module, loss_fn: nn.Module, enabled: bool = True) -> NoHook | SmdebugHook:
    """Register model and loss with the hook SageMaker configured (the collections come from its JSON)."""
    config = Path(os.environ.get(HOOK_CONFIG_ENV, DEFAULT_HOOK_CONFIG))
    if not enabled or not config.is_file():
        return NoHook()
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
