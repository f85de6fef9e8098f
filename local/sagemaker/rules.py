"""Debugger rules evaluated locally over smdebug trials: the project's own implementations of the built-ins.

The built-in rule implementations live in SageMaker's rule container, not in the public smdebug package. These
classes follow the documented semantics and default parameters of the built-in rules ("List of Debugger
built-in rules") on top of smdebug's public `Rule` base class, `invoke_rule` and trials. SageMaker runs rule
evaluation in its own container; the stand-in runs it in a child process in smdebug's own environment
(.venv-smdebug: smdebug pins protobuf<=3.20.3 and numpy<2.3, so the main environment does not hold it):

    .venv-smdebug/bin/python -m local.sagemaker.rules SPEC.json     (spec: trial path, rules, result file)
"""

from __future__ import annotations

import inspect
import json
import math
import os
import re
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")  # smdebug's protobuf files (design §2)

import numpy as np
from smdebug.core.modes import ModeKeys
from smdebug.exceptions import RuleEvaluationConditionMet
from smdebug.rules.rule import Rule
from smdebug.rules.rule_invoker import invoke_rule
from smdebug.trials import create_trial


class RuleConfigError(Exception):
    """The rule cannot run as configured (SageMaker reports these as a ClientError of the rule job)."""


class LocalRule(Rule):
    """A rule that can also conclude after the last step (`finish`) and explain a verdict (`detail`)."""

    def __init__(self, base_trial) -> None:
        super().__init__(base_trial, action_str="")
        self.detail = ""
        self.inspected = 0  # datapoints the rule looked at: none means the hook did not save what it needs

    def finish(self, last_step: int) -> None:
        """Called once after every step was invoked; raise RuleEvaluationConditionMet to report an issue."""

    def found(self, detail: str) -> bool:
        self.detail = detail
        return True

    # helpers
    def names(self, collections: Sequence[str] = (), regexes: Sequence[str] = ()) -> list[str]:
        names: set[str] = set()
        for collection in collections:
            if collection in {c for c in self.base_trial.collections()}:
                names.update(self.base_trial.tensor_names(collection=collection))
        for regex in regexes:
            names.update(self.base_trial.tensor_names(regex=regex))
        return sorted(names)

    def scalar(self, name: str, step: int) -> float | None:
        tensor = self.base_trial.tensor(name)
        if step not in tensor.steps():
            return None
        return float(np.mean(tensor.value(step)))


def _listify(value: Any) -> list[str]:
    if value in (None, "", "None"):
        return []
    if isinstance(value, list | tuple):
        return [str(v) for v in value]
    return [v.strip() for v in str(value).split(",") if v.strip()]


class VanishingGradient(LocalRule):
    """Mean |gradient| of a tensor below `threshold` at any saved step."""

    def __init__(self, base_trial, threshold: float = 0.0000001) -> None:
        super().__init__(base_trial)
        self.threshold = float(threshold)

    def invoke_at_step(self, step: int) -> bool:
        for name in self.names(["gradients"]):
            tensor = self.base_trial.tensor(name)
            if step not in tensor.steps():
                continue
            self.inspected += 1
            value = float(tensor.reduction_value(step, "mean", abs=True))
            if value < self.threshold:
                return self.found(f"mean |gradient| of {name} is {value:.3g} < threshold {self.threshold:g}")
        return False


class LossNotDecreasing(LocalRule):
    """Loss at a step vs the loss at least `num_steps` (mode steps) before; EVAL, then TRAIN, then GLOBAL."""

    def __init__(self, base_trial, collection_names: str | None = None, tensor_regex: str | None = None,
                 use_losses_collection: bool = True, num_steps: int = 10, diff_percent: float | None = None,
                 mode: str | None = None) -> None:
        super().__init__(base_trial)
        self.num_steps, self.diff_percent = int(num_steps), diff_percent
        collections = _listify(collection_names) + (["losses"] if use_losses_collection else [])
        self.tensors = self.names(collections, _listify(tensor_regex))
        if not self.tensors:
            raise RuleConfigError("no loss tensors: save the 'losses' collection or pass tensor_regex")
        modes = [ModeKeys[mode.upper()]] if mode else [ModeKeys.EVAL, ModeKeys.TRAIN, ModeKeys.GLOBAL]
        saved = set(self.base_trial.modes())
        self.mode = next((m for m in modes if m in saved), modes[-1])
        self.previous: dict[str, tuple[int, float]] = {}

    def invoke_at_step(self, step: int) -> bool:
        if self.base_trial.mode(step) != self.mode:
            return False
        mode_step = self.base_trial.mode_step(step)
        for name in self.tensors:
            loss = self.scalar(name, step)
            if loss is None:
                continue
            self.inspected += 1
            if name not in self.previous:
                self.previous[name] = (mode_step, loss)
                continue
            before_step, before = self.previous[name]
            if mode_step - before_step < self.num_steps:
                continue
            self.previous[name] = (mode_step, loss)
            decrease = (before - loss) / max(abs(before), 1e-12) * 100
            failed = loss >= before if self.diff_percent is None else decrease < float(self.diff_percent)
            if failed:
                return self.found(f"{self.mode.name} loss {name} went {before:.4g} (step {before_step}) -> "
                                  f"{loss:.4g} (step {mode_step}): {'down' if decrease >= 0 else 'up'} "
                                  f"{abs(decrease):.2f}%")
        return False


def _loss_tensors(rule: LocalRule, tensor_regex: str | None) -> list[str]:
    tensors = rule.names(["losses"], _listify(tensor_regex))
    if not tensors:
        raise RuleConfigError("no loss tensors: save the 'losses' collection (TRAIN and EVAL modes)")
    return tensors


class Overfit(LocalRule):
    """(mean validation loss - mean training loss) / mean training loss above `ratio_threshold`, `patience` times.

    Means are taken per phase: the TRAIN steps since the previous evaluation against the EVAL steps after them.
    """

    def __init__(self, base_trial, tensor_regex: str | None = None, start_step: int = 0, patience: int = 1,
                 ratio_threshold: float = 0.1) -> None:
        super().__init__(base_trial)
        self.tensors = _loss_tensors(self, tensor_regex)
        self.start_step, self.patience, self.ratio = int(start_step), int(patience), float(ratio_threshold)
        self.train: list[float] = []
        self.valid: list[float] = []
        self.streak = 0
        self.comparisons = 0

    def _mean_loss(self, step: int) -> float | None:
        values = [v for n in self.tensors if (v := self.scalar(n, step)) is not None]
        return sum(values) / len(values) if values else None

    def _close_phase(self, step: int) -> bool:
        if self.train and self.valid:
            train, valid = sum(self.train) / len(self.train), sum(self.valid) / len(self.valid)
            ratio = (valid - train) / max(abs(train), 1e-12)
            self.comparisons += 1
            self.streak = self.streak + 1 if ratio > self.ratio else 0
            if self.streak >= self.patience:
                return self.found(f"validation loss {valid:.4g} vs training loss {train:.4g}: ratio {ratio:.3f} > "
                                  f"{self.ratio:g} for {self.streak} evaluation(s) (step {step})")
        self.train, self.valid = ([], []) if self.valid else (self.train, [])
        return False

    def invoke_at_step(self, step: int) -> bool:
        if step < self.start_step:
            return False
        mode, loss = self.base_trial.mode(step), self._mean_loss(step)
        if loss is None:
            return False
        self.inspected += 1
        if mode == ModeKeys.TRAIN:
            if self.valid and self._close_phase(step):
                return True
            self.train.append(loss)
        elif mode == ModeKeys.EVAL:
            self.valid.append(loss)
        return False

    def finish(self, last_step: int) -> None:
        if self.valid and self._close_phase(last_step):
            raise RuleEvaluationConditionMet(self.rule_name, last_step)


class Overtraining(LocalRule):
    """Training (validation) loss that has not improved by `delta` for `patience_train` (`_validation`) steps."""

    def __init__(self, base_trial, patience_train: int = 5, patience_validation: int = 10, delta: float = 0.1,
                 tensor_regex: str | None = None) -> None:
        super().__init__(base_trial)
        self.tensors = _loss_tensors(self, tensor_regex)
        self.patience = {ModeKeys.TRAIN: int(patience_train), ModeKeys.EVAL: int(patience_validation)}
        self.delta = float(delta)
        self.best: dict[ModeKeys, float] = {}
        self.since: dict[ModeKeys, int] = {}

    def invoke_at_step(self, step: int) -> bool:
        mode = self.base_trial.mode(step)
        if mode not in self.patience:
            return False
        values = [v for n in self.tensors if (v := self.scalar(n, step)) is not None]
        if not values:
            return False
        self.inspected += 1
        loss = sum(values) / len(values)
        if mode not in self.best or loss < self.best[mode] - self.delta:
            self.best[mode], self.since[mode] = loss, 0
            return False
        self.since[mode] += 1
        if self.since[mode] >= self.patience[mode]:
            label = "training" if mode == ModeKeys.TRAIN else "validation"
            return self.found(f"{label} loss has not improved by {self.delta:g} on its best {self.best[mode]:.4g} "
                              f"for {self.since[mode]} saved steps (step {step})")
        return False


class PoorWeightInitialization(LocalRule):
    """In the first `steps` steps: ReLU-input variance ratio across layers, gradient spread, early loss progress."""

    def __init__(self, base_trial, activation_inputs_regex: str = ".*relu_input", threshold: float = 10.0,
                 distribution_range: float = 0.001, patience: int = 5, steps: int = 10) -> None:
        super().__init__(base_trial)
        self.activations = self.names(regexes=_listify(activation_inputs_regex))
        if not self.activations:
            raise RuleConfigError(f"no activation inputs match {activation_inputs_regex!r}: save the 'relu_input' "
                                  "collection (include_regex .*relu_input)")
        self.threshold, self.range = float(threshold), float(distribution_range)
        self.patience, self.steps = int(patience), int(float(steps))
        self.gradients = self.names(["gradients"])
        self.losses = self.names(["losses"])
        self.best_loss: float | None = None
        self.without_progress = 0
        self.checked_activations = False

    def invoke_at_step(self, step: int) -> bool:
        if step >= self.steps:
            return False
        variances = {}
        for name in self.activations:
            tensor = self.base_trial.tensor(name)
            if step in tensor.steps():
                variances[name] = float(np.var(tensor.value(step)))
        if variances and not self.checked_activations:
            self.checked_activations = True
            self.inspected += 1
            low, high = min(variances, key=variances.__getitem__), max(variances, key=variances.__getitem__)
            ratio = variances[high] / max(variances[low], 1e-12)
            if ratio > self.threshold:
                return self.found(f"variance of activation inputs ranges {variances[low]:.3g} ({low}) to "
                                  f"{variances[high]:.3g} ({high}): ratio {ratio:.3g} > {self.threshold:g} "
                                  f"(step {step})")
        grads = [self.base_trial.tensor(n).value(step).ravel() for n in self.gradients
                 if step in self.base_trial.tensor(n).steps()]
        if grads:
            self.inspected += 1
            p5, p95 = np.percentile(np.concatenate(grads), [5, 95])
            if p95 - p5 < self.range:
                return self.found(f"gradient distribution 5th-95th percentile spread {p95 - p5:.3g} < "
                                  f"{self.range:g} (step {step})")
        if self.base_trial.mode(step) == ModeKeys.TRAIN:
            values = [v for n in self.losses if (v := self.scalar(n, step)) is not None]
            if values:
                loss = sum(values) / len(values)
                if self.best_loss is None or loss < self.best_loss:
                    self.best_loss, self.without_progress = loss, 0
                else:
                    self.without_progress += 1
                    if self.without_progress >= self.patience:
                        return self.found(f"loss has not decreased for {self.without_progress} saved steps in the "
                                          f"first {self.steps} steps (step {step})")
        return False


RULES: dict[str, type[LocalRule]] = {cls.__name__: cls for cls in
                                     (VanishingGradient, LossNotDecreasing, Overfit, Overtraining,
                                      PoorWeightInitialization)}


def _coerce(value: str, default: Any) -> Any:
    """RuleParameters arrive as strings; convert them to the type of the parameter's default."""
    if isinstance(default, bool):
        return str(value).strip().lower() in ("true", "1", "yes")
    if isinstance(default, int):
        return int(float(value))
    if isinstance(default, float):
        return float(value)
    if default is None and re.fullmatch(r"[-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?", str(value)):
        return float(value)
    return value


def build_rule(trial, parameters: dict[str, str]) -> LocalRule:
    name = parameters.get("rule_to_invoke")
    if not name:
        raise RuleConfigError("RuleParameters.rule_to_invoke is required for a built-in rule")
    cls = RULES.get(name)
    if cls is None:
        raise RuleConfigError(f"rule {name!r} is not implemented locally (local rules: {', '.join(sorted(RULES))})")
    signature = inspect.signature(cls.__init__)
    kwargs = {}
    for key, value in parameters.items():
        if key == "rule_to_invoke" or key.startswith("_"):
            continue
        if key not in signature.parameters:
            raise RuleConfigError(f"unknown parameter {key!r} for rule {name}")
        kwargs[key] = _coerce(value, signature.parameters[key].default)
    return cls(trial, **kwargs)


def evaluate(trial_path: str, parameters: dict[str, str]) -> dict:
    """{"status": NoIssuesFound|IssuesFound|Error, "details": str, "step": int|None} for one rule."""
    try:
        trial = create_trial(trial_path)
        steps = trial.steps()
        if not steps:
            return {"status": "Error", "details": f"ClientError: no tensors were saved under {trial_path}"}
        rule = build_rule(trial, parameters)
        try:
            invoke_rule(rule, start_step=0, end_step=steps[-1] + 1, raise_eval_cond=True)
            rule.finish(steps[-1])
        except RuleEvaluationConditionMet as met:
            return {"status": "IssuesFound", "step": met.step,
                    "details": f"RuleEvaluationConditionMet: Evaluation of the rule {rule.rule_name} at step "
                               f"{met.step} resulted in the condition being met. {rule.detail}".strip()}
        if rule.inspected == 0:
            return {"status": "Error",
                    "details": f"ClientError: the hook saved none of the tensors {rule.rule_name} needs"}
        return {"status": "NoIssuesFound", "details": f"{rule.rule_name}: {rule.inspected} datapoints inspected "
                                                      f"over {len(steps)} steps"}
    except RuleConfigError as exc:
        return {"status": "Error", "details": f"ClientError: {exc}"}
    except Exception as exc:
        return {"status": "Error", "details": f"InternalServerError: {type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc()}


def _finite(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def main(argv: list[str] | None = None) -> int:
    spec_path = Path((argv or sys.argv[1:])[0])
    spec = json.loads(spec_path.read_text())
    results: dict[str, dict] = {}
    out = Path(spec["result_file"])
    for config in spec["rules"]:
        name = config["RuleConfigurationName"]
        result = evaluate(spec["trial"], config.get("RuleParameters", {}))
        results[name] = {k: _finite(v) for k, v in result.items()}
        print(f"{name}: {result['status']} {result.get('details', '')}", flush=True)
        rule_dir = spec.get("rule_output", {}).get(name)
        if rule_dir:
            Path(rule_dir).mkdir(parents=True, exist_ok=True)
            (Path(rule_dir) / "verdict.json").write_text(json.dumps({"RuleConfigurationName": name, **result},
                                                                     indent=2))
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(results, indent=2))
        os.replace(tmp, out)  # the stand-in reads each verdict as soon as it is written
    return 0


if __name__ == "__main__":
    sys.exit(main())
