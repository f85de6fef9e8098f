"""The network: a torchvision backbone with a new classification head. Training and serving build it here."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision import models

from ml import contract

FINETUNE_MODES = ("head", "last", "all")


class ModelError(ValueError):
    """A backbone, weights file or fine-tuning mode that cannot be used."""


def _head_path(model: nn.Module) -> str:
    """Dotted name of the last Linear layer: the ImageNet classifier every torchvision backbone ends with."""
    linear = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not linear:
        raise ModelError(f"{type(model).__name__} has no Linear classifier to replace")
    return linear[-1]


def _replace(model: nn.Module, dotted: str, new: nn.Module) -> None:
    parent_name, _, child = dotted.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def _last_block(model: nn.Module, head: str) -> str | None:
    """The deepest top-level child that holds parameters, other than the head: resnet's layer4 etc."""
    head_root = head.split(".")[0]
    candidates = [n for n, m in model.named_children() if n != head_root and any(True for _ in m.parameters())]
    if not candidates:
        return None
    last = candidates[-1]
    children = list(model.get_submodule(last).named_children())
    # Sequential feature stacks (mobilenet, efficientnet): the last stage, not the whole backbone.
    if len(children) > 2 and isinstance(model.get_submodule(last), nn.Sequential):
        return f"{last}.{children[-1][0]}"
    return last


def staged_weights(backbone: str, channel_dir: str | None) -> Path:
    """The state dict staged in the pretrained input channel: `<backbone>.pt`, or the channel's only .pt/.pth.

    Nothing is downloaded: every tuning trial fetching ImageNet weights costs time and fails in a VPC without
    internet. Stage them once (README: "Pretrained weights") and SageMaker copies them in with the data.
    """
    env = f"SM_CHANNEL_{contract.PRETRAINED_CHANNEL.upper()}"
    expected = contract.PRETRAINED_FILE.format(backbone=backbone)
    if not channel_dir:
        raise ModelError(f"--weights {contract.PRETRAINED_WEIGHTS} needs the '{contract.PRETRAINED_CHANNEL}' input "
                         f"channel ({env}) holding {expected}: stage the weights once (README: Pretrained weights), "
                         f"or pass --weights none or a state-dict file")
    folder = Path(channel_dir)
    if (folder / expected).is_file():
        return folder / expected
    found = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in (".pt", ".pth")) \
        if folder.is_dir() else []
    if len(found) == 1:
        return found[0]
    raise ModelError(f"the '{contract.PRETRAINED_CHANNEL}' channel ({folder}) holds "
                     f"{len(found) or 'no'} state-dict files; it needs {expected}")


def state_dict_problem(backbone: str, state: object) -> str | None:
    """Why `state` cannot serve as `backbone`'s pretrained weights (None: it fits): a dict of tensors whose keys
    and shapes are those of the torchvision network build_model() starts from (the ImageNet head may be left out)."""
    if backbone not in models.list_models(module=models):
        return f"unknown torchvision backbone {backbone!r}"
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        return "it is not a state dict (a mapping of parameter names to tensors)"
    expected = models.get_model(backbone, weights=None).state_dict()
    head = _head_path(models.get_model(backbone, weights=None))
    optional = {f"{head}.weight", f"{head}.bias"}
    missing = [k for k in expected if k not in state and k not in optional]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {tuple(state[k].shape)} (needs {tuple(v.shape)})" for k, v in expected.items()
             if k in state and state[k].shape != v.shape]
    if not (missing or unexpected or wrong):
        return None
    parts = [f"{label} {', '.join(items[:3])}{' ...' if len(items) > 3 else ''}"
             for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if items]
    return f"it does not fit {backbone}: " + "; ".join(parts)


def build_model(
    backbone: str, num_classes: int, weights: str = "none", finetune: str = "head"
) -> nn.Module:
    """`weights`: 'none' or a path to a state dict (train.py resolves 'imagenet' to the staged channel's file)."""
    if finetune not in FINETUNE_MODES:
        raise ModelError(f"finetune must be one of {', '.join(FINETUNE_MODES)}, not {finetune!r}")
    if backbone not in models.list_models(module=models):
        raise ModelError(f"unknown torchvision backbone {backbone!r}")
    if weights == contract.PRETRAINED_WEIGHTS:
        raise ModelError(f"--weights {weights}: resolve it with staged_weights(); nothing downloads weights")
    else:
        model = models.get_model(backbone, weights=None)
        if weights not in ("none", "", None):
            path = Path(weights)
            if not path.is_file():
                raise ModelError(f"weights file {weights} does not exist")
            state = torch.load(path, map_location="cpu", weights_only=True)
            missing, unexpected = model.load_state_dict(state, strict=False)
            if unexpected or len(missing) > 2:
                raise ModelError(f"weights file {weights} does not fit {backbone}: missing {missing[:3]}, "
                                 f"unexpected {unexpected[:3]}")
    head = _head_path(model)
    old = model.get_submodule(head)
    _replace(model, head, nn.Linear(old.in_features, num_classes))
    if finetune != "all":
        trainable = {head}
        if finetune == "last" and (block := _last_block(model, head)):
            trainable.add(block)
        for name, param in model.named_parameters():
            param.requires_grad = any(name == t or name.startswith(t + ".") for t in trainable)
    return model


def head_name(model: nn.Module) -> str:
    return _head_path(model)


def train_mode(model: nn.Module) -> None:
    """model.train(), but batch-norm layers whose parameters are frozen keep their pretrained statistics."""
    model.train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            params = list(module.parameters(recurse=False))
            if params and not any(p.requires_grad for p in params):
                module.eval()
