"""Fast checks of the training modules: the network's fine-tuning modes and weights files, the health checks'
verdicts, and the metric-line round trip the stack depends on; what makes training cheaper (no host sync per step,
mixed precision, loader sizing, staged weights, smdebug only with Debugger) and a full disk's clean failure."""

from __future__ import annotations

import errno
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from ml import contract, debugger, train
from ml.health import HealthMonitor
from ml.model import ModelError, build_model, staged_weights
from tests.support.training import TRAIN_COMMAND, train_env


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
    for i, (train_loss, valid_loss) in enumerate(pairs, 1):
        monitor.end_epoch(i, train_loss, valid_loss)


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


# --- cost: no host synchronisation per step, mixed precision, loader sizing -----------------------------------

ML_DIR = Path(train.__file__).resolve().parent


def _tiny_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, 4))


def _batches(n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(n)
    return [(torch.randn(8, 3, 16, 16, generator=g), torch.randint(0, 4, (8,), generator=g)) for _ in range(n)]


def _host_reads_from_our_code(monkeypatch, steps: int) -> int:
    """Tensor -> Python conversions (each one a GPU->CPU synchronisation on CUDA) made by train.py and health.py
    while training `steps` batches with the health checks on."""
    ours = {str(ML_DIR / "train.py"), str(ML_DIR / "health.py")}
    calls = []

    def counting(name):
        original = getattr(torch.Tensor, name)

        def wrapper(self, *args, **kwargs):
            if sys._getframe(1).f_code.co_filename in ours:
                calls.append(name)
            return original(self, *args, **kwargs)
        return wrapper

    with monkeypatch.context() as m:
        for name in ("item", "tolist", "__float__", "__int__", "__bool__"):
            m.setattr(torch.Tensor, name, counting(name))
        model = _tiny_net()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
        monitor = HealthMonitor()
        train.train_epoch(model, _batches(steps), nn.CrossEntropyLoss(), optimizer, scheduler, torch.device("cpu"),
                          lambda loss: monitor.observe_step(loss, model))
        monitor.end_epoch(1, 1.0, 1.0)
    return len(calls)


def test_training_steps_make_no_host_synchronisation(monkeypatch):
    """The loss and the health checks' gradient statistics stay on the device: the read-backs per epoch are a
    constant, not a number per step (or per parameter per step)."""
    few, many = _host_reads_from_our_code(monkeypatch, 2), _host_reads_from_our_code(monkeypatch, 8)
    assert many == few, f"{many - few} host reads for 6 more steps"
    assert few <= 4


def test_device_accumulated_gradients_give_the_same_verdict_inputs():
    """The on-device accumulation gives the per-tensor mean |gradient| the per-step float() sums gave."""
    torch.manual_seed(0)
    model = _tiny_net()
    monitor = HealthMonitor()
    expected: dict[str, float] = {}
    for x, y in _batches(3):
        model.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                expected[name] = expected.get(name, 0.0) + float(p.grad.abs().mean()) / 3
        monitor.observe_step(torch.tensor(1.5), model)
    monitor.end_epoch(1, 1.0, 1.0)
    weakest = min(expected, key=expected.get)
    assert monitor.min_grad["tensor"] == weakest
    assert monitor.min_grad["mean_abs_grad"] == pytest.approx(expected[weakest], rel=1e-5)
    assert monitor.step_losses == [1.5, 1.5, 1.5]
    # A non-finite step (an fp16 overflow the scaler skips) does not poison the epoch's statistics.
    model.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    model[0].weight.grad.fill_(float("inf"))
    monitor.observe_step(torch.tensor(float("nan")), model)
    monitor.end_epoch(2, 1.0, 1.0)
    assert torch.isfinite(torch.tensor(monitor.min_grad["mean_abs_grad"]))
    assert monitor.report()["checks"]["LossNotDecreasing"]["status"] == contract.ISSUES_FOUND  # the nan loss


def test_health_state_survives_a_checkpoint_with_pending_device_values():
    model = _tiny_net()
    monitor = HealthMonitor()
    monitor.observe_step(torch.tensor(0.75), model)  # no gradients yet: losses only
    restored = HealthMonitor()
    restored.load_state_dict(json.loads(json.dumps(monitor.state_dict())))
    assert restored.step_losses == [0.75]


class _FakeCuda:
    type, index = "cuda", 0


@pytest.mark.parametrize(("capability", "expected"), [((7, 5), ("fp16", True)), ((8, 0), ("bf16", False)),
                                                      ((9, 0), ("bf16", False))])
def test_mixed_precision_follows_the_gpu(monkeypatch, capability, expected):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    # torch answers True on a T4 too (emulated bf16): the capability must decide.
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    chosen = train.choose_precision("auto", _FakeCuda())
    assert (chosen.name, chosen.scaler) == expected
    assert chosen.channels_last
    assert train.choose_precision("off", _FakeCuda()) == train.Precision()
    assert train.choose_precision("fp16", _FakeCuda()).scaler


def test_cpu_keeps_fp32_unless_asked():
    cpu = torch.device("cpu")
    assert train.choose_precision("auto", cpu).name == "fp32"
    assert train.choose_precision("bf16", cpu).name == "bf16"
    with pytest.raises(ModelError, match="needs a CUDA GPU"):
        train.choose_precision("fp16", cpu)


def test_cuda_gets_the_fused_adamw_and_the_cpu_the_default():
    """Fused AdamW is one kernel for all parameters (measured on an H200 in README.md); CPUs keep the default."""
    params = list(_tiny_net().parameters())
    assert train.make_optimizer(params, 1e-3, 0.01, _FakeCuda()).defaults["fused"] is True
    cpu = train.make_optimizer(params, 1e-3, 0.01, torch.device("cpu"))
    assert not cpu.defaults["fused"] and cpu.defaults["weight_decay"] == 0.01


def test_mixed_precision_loop_runs_device_agnostic():
    """The same train_epoch with autocast and a (disabled on CPU) scaler: what CUDA runs, minus the GPU."""
    torch.manual_seed(0)
    model = _tiny_net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    precision = train.Precision(torch.bfloat16, channels_last=True)
    loss_sum, seen = train.train_epoch(model, _batches(3), nn.CrossEntropyLoss(), optimizer, scheduler,
                                       torch.device("cpu"), None, precision)
    assert seen == 24 and math.isfinite(loss_sum)
    assert model[0].weight.dtype == torch.float32  # master weights stay fp32
    loss, accuracy = train.evaluate(model, _batches(2), nn.CrossEntropyLoss(), torch.device("cpu"), precision)
    assert math.isfinite(loss) and 0 <= accuracy <= 1


def test_loader_is_sized_to_the_instance(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    gpu = train.loader_options(_FakeCuda(), cached=True, requested=-1, local_size=1)
    assert gpu == {"num_workers": 7, "pin_memory": True, "persistent_workers": True, "prefetch_factor": 4}
    assert train.loader_options(_FakeCuda(), cached=False, requested=-1, local_size=2)["num_workers"] == 3
    cpu = torch.device("cpu")
    assert train.loader_options(cpu, cached=True, requested=-1, local_size=1) == {"num_workers": 0,
                                                                                 "pin_memory": False}
    streamed = train.loader_options(cpu, cached=False, requested=-1, local_size=1)
    assert streamed["num_workers"] == 8 and streamed["persistent_workers"]
    assert train.loader_options(cpu, cached=False, requested=2, local_size=1)["num_workers"] == 2


# --- pretrained weights from the staged channel ------------------------------------------------------------
def test_staged_weights_are_found_in_the_channel(tmp_path):
    with pytest.raises(ModelError, match="needs the 'pretrained' input channel"):
        staged_weights("resnet18", None)
    named, single = tmp_path / "named", tmp_path / "single"
    named.mkdir(), single.mkdir()
    (named / "resnet18.pt").write_bytes(b"x")
    (named / "other.pt").write_bytes(b"x")
    assert staged_weights("resnet18", str(named)) == named / "resnet18.pt"
    (single / "whatever.pth").write_bytes(b"x")
    assert staged_weights("resnet50", str(single)) == single / "whatever.pth"
    with pytest.raises(ModelError, match=r"holds 2 state-dict files; it needs resnet50\.pt"):
        staged_weights("resnet50", str(named))


def test_nothing_downloads_weights():
    with pytest.raises(ModelError, match="nothing downloads"):
        build_model("resnet18", 2, "imagenet")


def test_pretrained_without_the_channel_fails_in_seconds_before_training(tmp_path):
    env = train_env({"SM_OUTPUT_DIR": str(tmp_path / "out"), "SM_CHANNEL_TRAIN": str(tmp_path / "no-data")})
    result = subprocess.run([sys.executable, *TRAIN_COMMAND, "--preset", "local", "--weights", "imagenet"],
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "Traceback" not in result.stdout + result.stderr
    failure = (tmp_path / "out" / "failure").read_text()
    assert failure.startswith(f"--weights imagenet needs the '{contract.PRETRAINED_CHANNEL}' input channel")
    assert "\n" not in failure
    assert "data:" not in result.stdout, "no data was read"


# --- tuning trials keep their checkpoints apart -----------------------------------------------------------
def test_trial_checkpoints_are_kept_apart(monkeypatch, tmp_path):
    monkeypatch.setenv("TRAINING_JOB_NAME", "imgclf-0123-001-abcdef")
    trial = train.parse_args(["--checkpoint-dir", str(tmp_path), f"--{contract.CHECKPOINT_SCOPE}", "job"])
    assert train.checkpoint_path(trial) == tmp_path / "imgclf-0123-001-abcdef" / contract.CHECKPOINT_FILE
    final = train.parse_args(["--checkpoint-dir", str(tmp_path)])
    assert train.checkpoint_path(final) == tmp_path / contract.CHECKPOINT_FILE


def test_a_finished_trial_removes_only_its_own_checkpoint(monkeypatch, tmp_path):
    """Review 4 R11: trials share the tuning job's CheckpointConfig.S3Uri; a finished trial leaves nothing for the
    later ones to download. Its siblings' folders and the final job's (shared scope) checkpoint stay."""
    mine, sibling = "imgclf-0123-001-abcdef", "imgclf-0123-002-abcdef"
    for job in (mine, sibling):
        (tmp_path / job).mkdir()
        (tmp_path / job / contract.CHECKPOINT_FILE).write_bytes(b"state")
    (tmp_path / contract.CHECKPOINT_FILE).write_bytes(b"final")
    monkeypatch.setenv("TRAINING_JOB_NAME", mine)
    train.release_checkpoint(train.parse_args(["--checkpoint-dir", str(tmp_path), f"--{contract.CHECKPOINT_SCOPE}",
                                               "job"]))
    assert not (tmp_path / mine).exists()
    assert (tmp_path / sibling / contract.CHECKPOINT_FILE).is_file()
    train.release_checkpoint(train.parse_args(["--checkpoint-dir", str(tmp_path)]))
    assert (tmp_path / contract.CHECKPOINT_FILE).read_bytes() == b"final"


# --- smdebug only in the job that has Debugger -----------------------------------------------------------
@pytest.fixture
def pip_calls(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(debugger.subprocess, "run",
                        lambda cmd, **kw: calls.append(cmd) or subprocess.CompletedProcess(cmd, 0, "", ""))
    monkeypatch.setattr(debugger.importlib.util, "find_spec", lambda name: None)  # a DLC >= 2.2: no smdebug
    monkeypatch.setenv(debugger.TOOLKIT_ENV, "{}")
    monkeypatch.setenv(debugger.HOOK_CONFIG_ENV, str(tmp_path / "debughookconfig.json"))
    return calls


def test_a_job_without_debugger_installs_nothing(pip_calls, tmp_path):
    assert not debugger.install_smdebug_if_needed(enabled=True)  # a tuning trial: no hook config
    (tmp_path / "debughookconfig.json").write_text("{}")
    assert not debugger.install_smdebug_if_needed(enabled=False)  # --debugger off
    assert pip_calls == []


def test_the_debugger_job_installs_smdebug(pip_calls, tmp_path, monkeypatch):
    (tmp_path / "debughookconfig.json").write_text("{}")
    assert debugger.install_smdebug_if_needed(enabled=True)
    (cmd,) = pip_calls
    assert cmd[1:4] == ["-m", "pip", "install"] and cmd[-1] == str(ML_DIR / contract.DEBUGGER_REQUIREMENTS)
    assert "smdebug==" in (ML_DIR / contract.DEBUGGER_REQUIREMENTS).read_text()
    monkeypatch.delenv(debugger.TOOLKIT_ENV)  # the local stand-in: never pip-install into the user's venv
    assert not debugger.install_smdebug_if_needed(enabled=True)
    assert len(pip_calls) == 1


# --- a full disk ends the job with a reason, and the error handler never raises ---------------------------
def _enospc(path: str = "/opt/ml/checkpoints/checkpoint.tmp") -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)


@pytest.fixture
def job_env(monkeypatch, tmp_path):
    for key in [k for k in os.environ if k.startswith("SM_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("SM_OUTPUT_DIR", str(tmp_path / "output"))
    monkeypatch.setattr(train, "_setup_logging", lambda: None)
    return tmp_path / "output" / "failure"


def test_full_disk_during_training_is_the_failure_reason(monkeypatch, job_env):
    def worker(*args):
        raise _enospc()

    monkeypatch.setattr(train, "worker", worker)
    assert train.main(["--preset", "local"]) == 1
    reason = job_env.read_text()
    assert reason.startswith("no space left on device (/opt/ml/checkpoints/checkpoint.tmp)")


def test_full_disk_everywhere_the_handler_does_not_raise_again(monkeypatch, job_env, capsys):
    """The failure file cannot be written either (the same full disk): the reason goes to stderr, exit 1."""
    def worker(*args):
        raise _enospc()

    def no_space(self, *args, **kwargs):
        raise _enospc(str(self))

    monkeypatch.setattr(train, "worker", worker)
    monkeypatch.setattr(Path, "write_text", no_space)
    monkeypatch.setattr(Path, "mkdir", no_space)
    assert train.main(["--preset", "local"]) == 1
    assert not job_env.exists()
    err = capsys.readouterr().err
    assert "training failed: no space left on device (/opt/ml/checkpoints/checkpoint.tmp)" in err


def test_checkpoint_write_failure_names_the_file_and_leaves_no_partial_file(monkeypatch, tmp_path):
    def torch_save(obj, path):
        Path(path).write_bytes(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc] . PytorchStreamWriter failed writing file")

    monkeypatch.setattr(train.torch, "save", torch_save)
    with pytest.raises(OSError, match="could not write the checkpoint") as failure:
        train.save_checkpoint(tmp_path / contract.CHECKPOINT_FILE, {})
    assert failure.value.filename == str(tmp_path / "checkpoint.tmp")
    assert list(tmp_path.iterdir()) == []


def test_augmentation_depends_on_the_epoch_not_on_worker_lifetimes():
    """Persistent workers keep their RNG streams across epochs: a job resumed at epoch 2 (fresh workers) must still
    see the images epoch 2 of the uninterrupted job saw, with any number of workers."""
    from PIL import Image

    from ml.imaging import TransformSettings, build_transforms

    g = torch.Generator().manual_seed(0)
    images = [Image.fromarray((torch.rand(24, 24, 3, generator=g) * 255).byte().numpy()) for _ in range(12)]
    split = train.Split("train", ["a", "b"], items=images, labels=[i % 2 for i in range(12)], cached=True)
    settings = TransformSettings.for_size(16, "flip-crop")
    dataset = train.ImageDataset(split, build_transforms(settings)[0], settings.resize_size)

    def loader(workers: int, generator: torch.Generator):
        sampler = train.SeededSampler(train.RandomSampler(dataset, generator=generator), generator)
        extra = {"persistent_workers": True} if workers else {}
        return train.DataLoader(dataset, batch_size=4, sampler=sampler, num_workers=workers, **extra)

    def epoch(data, generator, number: int) -> torch.Tensor:
        train.seed_epoch(0, number, generator)
        return torch.cat([x for x, _ in data])

    uninterrupted_gen = torch.Generator()
    uninterrupted = loader(2, uninterrupted_gen)
    epoch(uninterrupted, uninterrupted_gen, 1)
    second = epoch(uninterrupted, uninterrupted_gen, 2)
    resumed_gen = torch.Generator()
    assert torch.equal(epoch(loader(2, resumed_gen), resumed_gen, 2), second)
    in_process_gen = torch.Generator()
    assert torch.equal(epoch(loader(0, in_process_gen), in_process_gen, 2), second)
    assert not torch.equal(epoch(loader(0, in_process_gen), in_process_gen, 3), second)


def test_gradient_statistics_are_sampled_every_interval():
    model = _tiny_net()
    every, sampled = HealthMonitor(), HealthMonitor(grad_interval=3)
    for i, (x, y) in enumerate(_batches(7)):
        model.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        if i % 3:
            model[0].weight.grad.mul_(0)  # only the sampled steps (0, 3, 6) show the first layer a gradient
        for monitor in (every, sampled):
            monitor.observe_step(torch.tensor(float(i)), model)
    for monitor in (every, sampled):
        monitor.end_epoch(1, 1.0, 1.0)
    assert every.step_losses == sampled.step_losses == [float(i) for i in range(7)]  # every loss, always
    assert every.min_grad["tensor"] == "0.weight"  # zero on 4 of 7 steps
    assert sampled.min_grad["tensor"] != "0.weight" or sampled.min_grad["mean_abs_grad"] > every.min_grad[
        "mean_abs_grad"]
