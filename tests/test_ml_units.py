"""Fast checks of the training modules: the network's fine-tuning modes and weights files, the health checks'
verdicts, and the metric-line round trip the stack depends on."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "ml"))

import contract  # flat, as inside the container
from health import HealthMonitor
from model import ModelError, build_model


def _trainable(model: nn.Module) -> set[str]:
    return {name.split(".")[0] for name, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize(
    ("finetune", "expected"),
    [("head", {"fc"}), ("last", {"fc", "layer4"}),
     ("all", {"conv1", "bn1", "layer1", "layer2", "layer3", "layer4", "fc"})],
)
def test_finetune_modes_choose_what_trains(finetune, expected):
    model = build_model("resnet18", 7, "none", finetune)
    assert _trainable(model) == expected
    assert model.fc.out_features == 7


def test_head_is_found_on_other_backbone_families():
    model = build_model("mobilenet_v3_small", 3, "none", "last")
    assert model.classifier[-1].out_features == 3
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any(n.startswith("classifier.") for n in trainable)
    assert any(n.startswith("features.12.") for n in trainable), "the last feature stage trains too"
    assert not any(n.startswith("features.0.") for n in trainable)


def test_weights_from_a_file(tmp_path):
    donor = build_model("resnet18", 1000, "none", "all")
    path = tmp_path / "resnet18.pt"
    # A torchvision-style state dict: ImageNet's 1000-class head included, which the new head replaces.
    torch.save(donor.state_dict(), path)
    model = build_model("resnet18", 4, str(path), "head")
    assert torch.equal(model.layer1[0].conv1.weight, donor.layer1[0].conv1.weight)
    assert model.fc.out_features == 4


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"backbone": "resnet9000"}, "unknown torchvision backbone"),
     ({"weights": "/no/such/file.pt"}, "does not exist"),
     ({"finetune": "some"}, "finetune must be one of")],
)
def test_bad_model_settings_are_clear_errors(kwargs, message):
    args = {"backbone": "resnet18", "num_classes": 2, "weights": "none", "finetune": "head", **kwargs}
    with pytest.raises(ModelError, match=message):
        build_model(**args)


def test_weights_file_for_another_network_is_refused(tmp_path):
    path = tmp_path / "other.pt"
    torch.save(build_model("mobilenet_v3_small", 10, "none").state_dict(), path)
    with pytest.raises(ModelError, match="does not fit resnet18"):
        build_model("resnet18", 2, str(path))


# --- health checks -----------------------------------------------------------------------------------
def _epochs(monitor: HealthMonitor, pairs: list[tuple[float, float]]) -> None:
    for i, (train, valid) in enumerate(pairs, 1):
        monitor.end_epoch(i, train, valid)


def test_healthy_run_finds_no_issues():
    monitor = HealthMonitor()
    monitor.step_losses = [2.3 - 0.05 * i for i in range(40)]
    _epochs(monitor, [(1.5, 1.4), (0.9, 0.85), (0.5, 0.55)])
    assert monitor.report()["issues"] == []


def test_health_detail_says_down_for_a_decrease():
    """A 94.5 % decrease read "+94.5%", as if the loss had risen."""
    monitor = HealthMonitor()
    monitor.step_losses = [2.3 - 0.05 * i for i in range(40)]
    detail = monitor.report()["checks"]["LossNotDecreasing"]["detail"]
    assert "(down 72.3%)" in detail and "+" not in detail
    monitor.step_losses = [1.0] * 10 + [1.5] * 30
    assert "up 50.0%" in monitor.report()["checks"]["LossNotDecreasing"]["detail"]


def test_overfitting_is_found():
    monitor = HealthMonitor()
    monitor.step_losses = [2.0 - 0.04 * i for i in range(40)]
    _epochs(monitor, [(1.0, 1.0), (0.6, 1.1), (0.3, 1.3), (0.1, 1.6)])
    assert "Overfit" in monitor.report()["issues"]


def test_loss_not_decreasing_is_found():
    monitor = HealthMonitor()
    monitor.step_losses = [2.30, 2.31, 2.29, 2.30] * 10
    assert monitor.report()["checks"]["LossNotDecreasing"]["status"] == contract.ISSUES_FOUND
    monitor.step_losses = [float("nan")] * 30
    assert monitor.report()["checks"]["LossNotDecreasing"]["status"] == contract.ISSUES_FOUND


def test_vanishing_gradient_is_found():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    model(torch.randn(8, 4)).sum().backward()
    for p in model[0].parameters():
        p.grad.mul_(1e-12)  # the first layer gets (almost) nothing back
    monitor = HealthMonitor()
    monitor.observe_step(1.0, model)
    monitor.end_epoch(1, 1.0, 1.0)
    verdict = monitor.report()["checks"]["VanishingGradient"]
    assert verdict["status"] == contract.ISSUES_FOUND and "0.weight" in verdict["detail"]


def test_poor_initialisation_is_found():
    model = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU())
    with torch.no_grad():
        model[2].weight.mul_(1e4)  # one layer's activations explode
    monitor = HealthMonitor()
    monitor.observe_initialisation(model, torch.randn(32, 16))
    assert monitor.report()["checks"]["PoorWeightInitialization"]["status"] == contract.ISSUES_FOUND


def test_health_check_names_are_the_contracts():
    assert set(HealthMonitor().report()["checks"]) == set(contract.HEALTH_CHECKS)


# --- metric lines ------------------------------------------------------------------------------------
def test_metric_lines_round_trip():
    line = contract.format_metrics(train_loss=0.25, valid_accuracy=0.9871234, images_per_second=1234.5)
    assert contract.parse_metrics(f"epoch=1/3 {line}\nnoise valid_accuracy=oops;\n") == {
        "train_loss": [0.25], "valid_accuracy": [0.987123], "images_per_second": [1234.5]}
    assert contract.parse_metrics(contract.format_metrics(test_loss=1.5e-07)) == {"test_loss": [1.5e-07]}


def test_metric_names_do_not_shadow_each_other():
    # test_loss must not also match inside e.g. "final_test_loss", and train_loss not inside valid lines.
    text = contract.format_metrics(valid_loss=0.5)
    assert "train_loss" not in contract.parse_metrics(text)
    assert "valid_loss" not in contract.parse_metrics("final_valid_loss=0.1;")
