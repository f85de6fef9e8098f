"""The training script's own rule checks: a deployment gate that works with or without SageMaker Debugger.

Each check mirrors a Debugger built-in rule and reports Debugger's verdict words, so the state machine gates
on both alike. Thresholds follow the built-in rules' defaults where those make sense per epoch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ml.contract import ISSUES_FOUND, NO_ISSUES


def change_words(decrease: float) -> str:
    """0.945 -> 'down 94.5%', -0.02 -> 'up 2.0%': a signed '+94.5%' for a decrease reads as a rise."""
    return f"{'down' if decrease >= 0 else 'up'} {abs(decrease):.1%}"


@dataclass
class Thresholds:
    vanishing_gradient: float = 1e-7  # VanishingGradient: mean |grad| of a weight tensor below this
    overfit_ratio: float = 0.1  # Overfit: (valid - train) / train above this ...
    overfit_patience: int = 2  # ... while valid loss rose for this many epochs in a row
    loss_window: int = 10  # LossNotDecreasing: mean of the first vs the last `loss_window` steps
    loss_min_decrease: float = 0.01  # ... must fall by at least this fraction
    init_variance_ratio: float = 1000.0  # PoorWeightInitialization: max/min variance of ReLU inputs
    init_dead_fraction: float = 0.99  # ... or a ReLU input almost never positive


@dataclass
class HealthMonitor:
    """Fed by the training loop; `report()` is what health.json holds.

    Per step, everything stays on the training device: the loss and every weight tensor's mean |gradient| are
    accumulated as tensors and read back once per epoch (`flush`), so a step costs no GPU->CPU synchronisation
    and no data-parallel rank waits for rank 0's bookkeeping.
    """

    thresholds: Thresholds = field(default_factory=Thresholds)
    step_losses: list[float] = field(default_factory=list)
    epochs: list[dict] = field(default_factory=list)
    min_grad: dict[str, Any] = field(default_factory=dict)  # {"tensor": name, "mean_abs_grad": value}
    init: dict | None = None
    # Gradient statistics every `grad_interval` steps (the loss every step): reading every weight gradient costs
    # one more pass over the model's memory, ~3 % of a CPU step; Debugger's VanishingGradient likewise judges the
    # gradients saved every save_interval steps. The mean over sampled steps estimates the mean over all steps.
    grad_interval: int = 1
    _steps: int = field(default=0, repr=False)
    _pending_losses: list[torch.Tensor] = field(default_factory=list, repr=False)
    _grad_names: list[str] = field(default_factory=list, repr=False)
    _grad_sums: torch.Tensor | None = field(default=None, repr=False)  # per weight tensor: summed mean |grad|
    _grad_counts: torch.Tensor | None = field(default=None, repr=False)  # ... over this many finite steps

    # --- observations -----------------------------------------------------------------------------
    def observe_step(self, loss: torch.Tensor | float, model: nn.Module) -> None:
        """Record one step's loss and gradients without reading anything back to the host."""
        if isinstance(loss, torch.Tensor):
            self._pending_losses.append(loss.detach().reshape(()))
        else:
            self.step_losses.append(float(loss))
        self._steps += 1
        if (self._steps - 1) % max(self.grad_interval, 1):
            return
        named = [(n, p.grad) for n, p in model.named_parameters() if p.grad is not None and p.dim() >= 2]
        if not named:
            return
        names = [n for n, _ in named]
        grads = [g.detach() for _, g in named]
        # One fused L1 norm per tensor (the kernel clip_grad_norm_ uses), divided by the element counts.
        norms = torch.stack(torch._foreach_norm(grads, 1)).float()
        means = norms / torch.tensor([g.numel() for g in grads], dtype=torch.float32, device=norms.device)
        finite = torch.isfinite(means)  # fp16 steps the gradient scaler skips carry inf/nan gradients
        if self._grad_sums is None or names != self._grad_names:
            self._flush_grads()
            self._grad_names = names
            self._grad_sums = torch.zeros_like(means)
            self._grad_counts = torch.zeros_like(means)
        assert self._grad_sums is not None and self._grad_counts is not None  # set just above
        self._grad_sums += torch.where(finite, means, torch.zeros_like(means))
        self._grad_counts += finite.float()

    def _flush_grads(self) -> dict[str, float]:
        """Mean |gradient| per weight tensor since the last flush: the one host read-back of an epoch."""
        if self._grad_sums is None or self._grad_counts is None:
            return {}
        sums, counts = self._grad_sums.tolist(), self._grad_counts.tolist()
        means = {name: total / count for name, total, count in zip(self._grad_names, sums, counts, strict=True)
                 if count > 0}
        self._grad_names, self._grad_sums, self._grad_counts = [], None, None
        return means

    def flush(self) -> None:
        """Move the step losses recorded on the device into `step_losses` (one synchronisation)."""
        if self._pending_losses:
            self.step_losses.extend(torch.stack(self._pending_losses).float().tolist())
            self._pending_losses = []

    def end_epoch(self, epoch: int, train_loss: float, valid_loss: float) -> None:
        self.flush()
        mean_grads = self._flush_grads()
        if mean_grads:
            weakest = min(mean_grads, key=mean_grads.__getitem__)
            self.min_grad = {"tensor": weakest, "mean_abs_grad": mean_grads[weakest]}
        self.epochs.append({"epoch": epoch, "train_loss": train_loss, "valid_loss": valid_loss,
                            "min_mean_abs_grad": self.min_grad.get("mean_abs_grad")})

    def observe_initialisation(self, model: nn.Module, batch: torch.Tensor) -> None:
        """ReLU inputs of one forward pass before any update, as Debugger's relu_input collection."""
        stats: list[tuple[str, float, float]] = []
        hooks = []

        def record(name: str):
            def hook(_module, inputs, _output):
                x = inputs[0].detach().float()
                stats.append((name, float(x.var()), float((x > 0).float().mean())))
            return hook

        for name, module in model.named_modules():
            if isinstance(module, nn.ReLU):
                hooks.append(module.register_forward_hook(record(name)))
        try:
            with torch.no_grad():
                model(batch)
        finally:
            for h in hooks:
                h.remove()
        if stats:
            variances = [v for _, v, _ in stats]
            self.init = {
                "relu_layers": len(stats),
                "variance_ratio": max(variances) / max(min(variances), 1e-12),
                "min_positive_fraction": min(p for _, _, p in stats),
            }

    # --- verdicts ---------------------------------------------------------------------------------
    def _vanishing_gradient(self) -> dict:
        value = self.min_grad.get("mean_abs_grad")
        found = value is not None and value < self.thresholds.vanishing_gradient
        return {"status": ISSUES_FOUND if found else NO_ISSUES,
                "detail": f"smallest mean |gradient| {value:.3g} in {self.min_grad['tensor']}"
                if value is not None else "no gradients observed",
                "threshold": self.thresholds.vanishing_gradient}

    def _overfit(self) -> dict:
        t, streak, found = self.thresholds, 0, False
        for prev, cur in zip(self.epochs, self.epochs[1:], strict=False):
            streak = streak + 1 if cur["valid_loss"] > prev["valid_loss"] else 0
            gap = (cur["valid_loss"] - cur["train_loss"]) / max(cur["train_loss"], 1e-12)
            found = found or (streak >= t.overfit_patience and gap > t.overfit_ratio)
        return {"status": ISSUES_FOUND if found else NO_ISSUES,
                "detail": f"valid loss rose {t.overfit_patience} epochs in a row with a train/valid gap "
                          f"over {t.overfit_ratio:.0%}" if found else "valid loss tracks train loss",
                "threshold": t.overfit_ratio}

    def _loss_not_decreasing(self) -> dict:
        w, losses = self.thresholds.loss_window, [x for x in self.step_losses if math.isfinite(x)]
        if len(losses) < 2 * w or len(losses) < len(self.step_losses):
            found = len(losses) < len(self.step_losses)  # a NaN/inf loss is an issue in itself
            detail = "non-finite loss" if found else f"fewer than {2 * w} steps: not judged"
            return {"status": ISSUES_FOUND if found else NO_ISSUES, "detail": detail}
        first, last = sum(losses[:w]) / w, sum(losses[-w:]) / w
        decrease = (first - last) / max(abs(first), 1e-12)
        found = decrease < self.thresholds.loss_min_decrease
        return {"status": ISSUES_FOUND if found else NO_ISSUES,
                "detail": f"train loss {first:.4g} -> {last:.4g} ({change_words(decrease)})",
                "threshold": self.thresholds.loss_min_decrease}

    def _poor_initialisation(self) -> dict:
        if not self.init:
            return {"status": NO_ISSUES, "detail": "no ReLU layers observed"}
        t = self.thresholds
        found = (self.init["variance_ratio"] > t.init_variance_ratio
                 or self.init["min_positive_fraction"] < 1 - t.init_dead_fraction)
        return {"status": ISSUES_FOUND if found else NO_ISSUES,
                "detail": f"ReLU input variance ratio {self.init['variance_ratio']:.3g}, "
                          f"least active layer {self.init['min_positive_fraction']:.1%} positive",
                "threshold": t.init_variance_ratio}

    def report(self) -> dict:
        self.flush()
        checks = {
            "VanishingGradient": self._vanishing_gradient(),
            "Overfit": self._overfit(),
            "LossNotDecreasing": self._loss_not_decreasing(),
            "PoorWeightInitialization": self._poor_initialisation(),
        }
        return {"checks": checks,
                "issues": sorted(k for k, v in checks.items() if v["status"] == ISSUES_FOUND),
                "epochs": self.epochs}

    # --- checkpointing ----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        self.flush()
        return {"step_losses": self.step_losses, "epochs": self.epochs, "min_grad": self.min_grad,
                "init": self.init}

    def load_state_dict(self, state: dict) -> None:
        self.step_losses = list(state["step_losses"])
        self.epochs = list(state["epochs"])
        self.min_grad = dict(state["min_grad"])
        self.init = state["init"]
