"""ml/debugger.py: the Debugger save interval follows the job's steps per epoch (issue 11 item 6)."""

from __future__ import annotations

import json
import math

import pytest

from infra import sagemaker_requests as req
from infra.config import load_config
from ml import contract
from ml.debugger import _derived_config, save_intervals
from tests.support.training import in_smdebug_env


def _hook_config(cfg) -> dict:
    """What SageMaker writes to /opt/ml/input/config/debughookconfig.json from the request's DebugHookConfig."""
    hook = req.training_job(cfg)["DebugHookConfig"]
    return {"LocalPath": "/opt/ml/output/tensors", "S3OutputPath": hook["S3OutputPath"],
            "HookParameters": hook.get("HookParameters", {}),
            "CollectionConfigurations": hook["CollectionConfigurations"]}


def _saved_steps(interval: int, steps_per_epoch: int, epochs: int) -> int:
    return len(range(0, steps_per_epoch * epochs, interval))  # smdebug saves step % save_interval == 0


# (train images, valid images, batch size): the digits demo, a small dog-breed set, the seed's dog breeds
@pytest.mark.parametrize(("train", "valid", "batch"), [(1000, 200, 64), (2000, 400, 128), (8000, 1700, 512),
                                                       (8000, 1700, 128), (20000, 4000, 32)])
@pytest.mark.parametrize("epochs", [2, 5])
def test_every_rule_sees_several_saved_steps_in_a_short_job(train, valid, batch, epochs):
    cfg = load_config({})
    config = _hook_config(cfg)
    # No collection keeps the SDK's 500-step interval that would save step 0 only.
    assert all("save_interval" not in c.get("CollectionParameters", {}) for c in config["CollectionConfigurations"])
    steps = {"train": math.ceil(train / batch), "eval": math.ceil(valid / batch)}
    params = save_intervals(config, steps)["HookParameters"]
    assert contract.DEBUGGER_SAVES_PER_EPOCH not in params
    # TRAIN: about saves_per_epoch steps per epoch (every step when an epoch has fewer), bounded output.
    interval = int(params["train.save_interval"])
    saved = _saved_steps(interval, steps["train"], epochs)
    assert min(steps["train"], cfg.debugger.saves_per_epoch) * epochs <= saved
    assert saved <= 2 * cfg.debugger.saves_per_epoch * epochs
    # EVAL: the first validation batch of every epoch, so the loss rules compare the same samples over epochs.
    interval = int(params["eval.save_interval"])
    assert interval == steps["eval"]
    assert [s for s in range(steps["eval"] * epochs) if s % interval == 0] == [
        e * steps["eval"] for e in range(epochs)]


def test_the_500_step_default_would_have_saved_step_zero_only():
    old = {"HookParameters": {}, "CollectionConfigurations": [
        {"CollectionName": "losses", "CollectionParameters": {"save_interval": "500"}}]}
    assert save_intervals(old, {"train": 63, "eval": 14}) is old  # nothing to derive: the collection's 500 stays
    assert _saved_steps(500, 63, 5) == 1


def test_an_explicit_interval_is_kept():
    cfg = load_config({"debugger.save_interval": 7})
    config = _hook_config(cfg)
    assert contract.DEBUGGER_SAVES_PER_EPOCH not in config["HookParameters"]
    assert {c["CollectionParameters"]["save_interval"] for c in config["CollectionConfigurations"]} == {"7"}
    assert save_intervals(config, {"train": 100}) == config


def test_the_derived_config_is_what_smdebug_reads(tmp_path):
    path = tmp_path / "debughookconfig.json"
    config = _hook_config(load_config({}))
    config["LocalPath"] = str(tmp_path / "tensors")
    path.write_text(json.dumps(config))
    derived = _derived_config(path, {"train": 125, "eval": 27})
    assert derived != path and json.loads(path.read_text()) == config  # SageMaker's file is left as written
    # smdebug lives in its own environment (as in the training container): ask its parser there.
    modes = in_smdebug_env(
        "import json, sys\n"
        "from smdebug.core.json_config import collect_hook_config_params\n"
        "from smdebug.core.modes import ModeKeys\n"
        "modes = collect_hook_config_params(json.load(open(sys.argv[1])))['save_config_modes']\n"
        "print(json.dumps({m.name: modes[m]['save_interval'] for m in (ModeKeys.TRAIN, ModeKeys.EVAL)}))",
        str(derived))
    assert modes == {"TRAIN": "12", "EVAL": "27"}
