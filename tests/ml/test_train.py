"""ml/train.py under the SageMaker training contract: it learns, logs parsable metrics, resumes, runs
data-parallel, writes a servable model directory, and fails clearly on bad data."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ml import contract
from tests.support import ROOT
from tests.support.training import (
    BASELINE_ARGS,
    TRAIN_COMMAND,
    channel_env,
    in_smdebug_env,
    run_train,
    smdebug_python,
    train_env,
)

pytestmark = pytest.mark.slow


def _last(log: str, name: str) -> float:
    return contract.parse_metrics(log)[name][-1]


def test_training_learns(training_run):
    metrics = contract.parse_metrics(training_run.log)
    losses = metrics[contract.TRAIN_LOSS]
    assert len(losses) == 3, "one train_loss per epoch"
    assert losses[-1] < losses[0] * 0.5, f"train loss should fall: {losses}"
    assert metrics[contract.VALID_ACCURACY][-1] > 0.8  # 10 classes: chance is 0.1
    assert metrics[contract.TEST_ACCURACY] and metrics[contract.TEST_ACCURACY][-1] > 0.8
    assert metrics[contract.THROUGHPUT][-1] > 0


def test_every_metric_regex_matches_real_output(training_run):
    """The regexes the stack's MetricDefinitions use find every metric in the script's real log."""
    found = contract.parse_metrics(training_run.log)
    assert set(found) == {m.name for m in contract.METRICS}
    assert found[contract.HEALTH_ISSUES] == [0.0]
    assert found[contract.SKIPPED_IMAGES] == [0.0]


def test_unknown_sagemaker_hyperparameters_are_tolerated(training_run):
    assert "ignoring arguments train.py does not know: --_tuning_objective_metric valid_accuracy" in training_run.log


def test_health_checks_json(training_run):
    report = json.loads((training_run.output_dir / "data" / contract.HEALTH_FILE).read_text())
    assert set(report["checks"]) == set(contract.HEALTH_CHECKS)
    for verdict in report["checks"].values():
        assert verdict["status"] in (contract.NO_ISSUES, contract.ISSUES_FOUND)
        assert verdict["detail"]
    assert report["issues"] == []
    assert [e["epoch"] for e in report["epochs"]] == [1, 2, 3]
    history = json.loads((training_run.output_dir / "data" / contract.HISTORY_FILE).read_text())
    assert history["test"][contract.TEST_ACCURACY] == pytest.approx(_last(training_run.log, contract.TEST_ACCURACY),
                                                                     abs=1e-5)


def test_model_directory_is_what_the_inference_container_loads(training_run, digits_dir):
    model_dir = training_run.model_dir
    config = json.loads((model_dir / contract.MODEL_CONFIG_FILE).read_text())
    assert config["classes"] == [str(d) for d in range(10)], "class list comes from the data"
    assert config["transforms"]["image_size"] == 32
    code = model_dir / contract.MODEL_CODE_DIR
    for name in (*(f"{contract.PACKAGE}/{m}" for m in contract.INFERENCE_MODULES), contract.INFERENCE_PROGRAM,
                 "requirements.txt"):
        assert (code / name).is_file(), name
    # As the toolkit does: a fresh interpreter with only code/ importable, the user module `inference` (the shim
    # over code/ml/), model_fn on the directory.
    probe = """
import json, sys
from pathlib import Path
import inference
assert Path(sys.modules["ml"].__file__).resolve().parent.parent == Path.cwd().resolve(), sys.modules["ml"].__file__
model = inference.model_fn(sys.argv[1])
right = total = 0
for folder in sorted(Path(sys.argv[2]).iterdir()):
    for image in sorted(folder.glob('*.png'))[:3]:
        data = inference.input_fn(image.read_bytes(), 'image/png')
        body, ctype = inference.output_fn(inference.predict_fn(data, model), 'application/json')
        top = json.loads(body)['predictions'][0]['label']
        right += top == folder.name; total += 1
print(right, total, ctype)
"""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", probe, str(model_dir), str(digits_dir / "test")], cwd=code,
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    right, total, ctype = result.stdout.split()
    assert ctype == contract.JSON_CONTENT_TYPE
    assert int(total) == 30 and int(right) >= 24


def test_resume_after_kill_reaches_the_same_result(training_run, digits_dir, tmp_path):
    """A job killed mid-way (spot interruption) and started again continues from its last checkpoint."""
    ckpt = tmp_path / "ckpt"
    env = train_env(channel_env(digits_dir, tmp_path / "model", tmp_path / "output"))
    args = [sys.executable, *TRAIN_COMMAND, *BASELINE_ARGS, "--checkpoint-dir", str(ckpt)]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 1200  # a loaded machine: the first epoch may take minutes
        while not (ckpt / contract.CHECKPOINT_FILE).exists():
            assert proc.poll() is None, "training ended before its first checkpoint"
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGKILL)  # also when an assertion above failed: never leave it running
        proc.wait(timeout=60)
    assert not (tmp_path / "model" / contract.MODEL_WEIGHTS_FILE).exists(), "killed before the end"

    resumed = run_train([*BASELINE_ARGS, "--checkpoint-dir", str(ckpt)],
                        channel_env(digits_dir, tmp_path / "model", tmp_path / "output"))
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    assert "resuming from" in resumed.stdout
    epochs_run = [line for line in resumed.stdout.splitlines() if line.startswith("epoch=")]
    assert 1 <= len(epochs_run) < 3, "only the epochs after the checkpoint run again"
    for name in (contract.TEST_ACCURACY, contract.TEST_LOSS):
        assert _last(resumed.stdout, name) == pytest.approx(_last(training_run.log, name), rel=1e-3, abs=1e-4)


def test_two_process_data_parallel_training(digits_dir, tmp_path):
    result = run_train(["--preset", "local", "--epochs", "2", "--nproc", "2", "--checkpoint-dir",
                        str(tmp_path / "ckpt")], channel_env(digits_dir, tmp_path / "model", tmp_path / "output"))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "distributed: 2 processes on 1 host(s), backend gloo" in result.stdout
    metrics = contract.parse_metrics(result.stdout)
    assert len(metrics[contract.TRAIN_LOSS]) == 2, "only rank 0 logs metrics"
    assert metrics[contract.TEST_ACCURACY][-1] > 0.5
    assert (tmp_path / "model" / contract.MODEL_WEIGHTS_FILE).is_file()


def test_debugger_hook_writes_the_collections_the_rules_need(digits_dir, tmp_path):
    tensors = tmp_path / "tensors"
    config = tmp_path / "debughookconfig.json"
    config.write_text(json.dumps({
        "LocalPath": str(tensors),
        "HookParameters": {"save_interval": "5"},
        "CollectionConfigurations": [
            {"CollectionName": "losses"}, {"CollectionName": "gradients"},
            {"CollectionName": "relu_input", "CollectionParameters": {"include_regex": ".*relu_input"}},
        ],
    }))
    env = {**channel_env(digits_dir, tmp_path / "model", tmp_path / "output"),
           "SMDEBUG_CONFIG_FILE_PATH": str(config), "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python"}
    # As in the training container: ml/debugger-requirements.txt (smdebug) over the framework's torch.
    result = run_train(["--preset", "local", "--epochs", "1", "--checkpoint-dir", str(tmp_path / "ckpt")], env,
                       python=smdebug_python())
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "debugger: hook registered" in result.stdout
    trial = in_smdebug_env(
        "import json, sys\n"
        "from smdebug import modes\n"
        "from smdebug.trials import create_trial\n"
        "trial = create_trial(sys.argv[1])\n"
        "print(json.dumps({'names': trial.tensor_names(), 'losses': trial.tensor_names(collection='losses'),\n"
        "                  'train': trial.steps(mode=modes.TRAIN), 'eval': trial.steps(mode=modes.EVAL)}))",
        str(tensors))
    assert any(n.startswith("gradient/") for n in trial["names"])
    assert trial["losses"]
    assert any("relu_input" in n for n in trial["names"])
    assert trial["train"] and trial["eval"]


# --- bad data: one clear line, a non-zero exit, and SageMaker's failure file ----------------------------
def _copy_digits(src: Path, dst: Path, per_class: int = 12) -> Path:
    for split in contract.CHANNELS:
        for folder in (src / split).iterdir():
            target = dst / split / folder.name
            target.mkdir(parents=True)
            for image in sorted(folder.glob("*.png"))[:per_class]:
                shutil.copy(image, target / image.name)
    return dst


def _fails_clearly(result: subprocess.CompletedProcess, output: Path, fragment: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stdout + result.stderr
    failure = (output / "failure").read_text()
    assert fragment in failure, failure
    assert fragment in result.stdout + result.stderr


@pytest.fixture
def small_digits(digits_dir, tmp_path) -> Path:
    return _copy_digits(digits_dir, tmp_path / "data")


def test_missing_channel(small_digits, tmp_path):
    env = channel_env(small_digits, tmp_path / "model", tmp_path / "out")
    del env["SM_CHANNEL_VALID"]
    _fails_clearly(run_train(["--preset", "local", "--epochs", "1"], env), tmp_path / "out",
                   "channel 'valid' is missing")


def test_empty_channel(small_digits, tmp_path):
    shutil.rmtree(small_digits / "test")
    (small_digits / "test").mkdir()
    env = channel_env(small_digits, tmp_path / "model", tmp_path / "out")
    _fails_clearly(run_train(["--preset", "local", "--epochs", "1"], env), tmp_path / "out",
                   "channel 'test'")


def test_class_folder_without_images(small_digits, tmp_path):
    for image in (small_digits / "train" / "7").iterdir():
        image.unlink()
    (small_digits / "train" / "7" / "notes.txt").write_text("not an image")
    env = channel_env(small_digits, tmp_path / "model", tmp_path / "out")
    _fails_clearly(run_train(["--preset", "local", "--epochs", "1"], env), tmp_path / "out",
                   "class folder '7' in channel 'train' holds no images")


def test_invalid_hyperparameter(small_digits, tmp_path):
    env = channel_env(small_digits, tmp_path / "model", tmp_path / "out")
    _fails_clearly(run_train(["--preset", "local", "--lr", "fast"], env), tmp_path / "out",
                   "argument --lr: invalid float value")


def test_corrupt_image_is_skipped_and_counted(small_digits, tmp_path):
    (small_digits / "train" / "3" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    good = next((small_digits / "train" / "4").glob("*.png")).read_bytes()
    (small_digits / "train" / "4" / "truncated.png").write_bytes(good[: len(good) // 2])
    env = channel_env(small_digits, tmp_path / "model", tmp_path / "out")
    result = run_train(["--preset", "local", "--epochs", "1", "--checkpoint-dir", str(tmp_path / "ckpt")], env)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "skipping corrupt image" in result.stdout and "broken.png" in result.stdout
    assert _last(result.stdout, contract.SKIPPED_IMAGES) == 2
    history = json.loads((tmp_path / "out" / "data" / contract.HISTORY_FILE).read_text())
    assert {Path(s["path"]).name for s in history["skipped_images"]} == {"broken.png", "truncated.png"}


def test_readme_by_hand_invocation_help():
    result = subprocess.run([sys.executable, *TRAIN_COMMAND, "--help"], capture_output=True, text=True,
                            cwd=ROOT, timeout=120)
    assert result.returncode == 0
    assert f"--{contract.BATCH_SIZE}" in result.stdout and "--preset" in result.stdout


# --- staged pretrained weights: no network in the job ---------------------------------------------------------
NO_NETWORK = '''
import socket, sys

def _unreachable(*args, **kwargs):
    raise OSError(101, "Network is unreachable (blocked by the test)")

socket.socket.connect = socket.socket.connect_ex = _unreachable
socket.create_connection = socket.getaddrinfo = _unreachable
print("network blocked", file=sys.stderr)
'''


def test_staged_weights_train_without_network(small_digits, tmp_path):
    """`--weights imagenet` with the pretrained channel (as the cloud profile runs every trial): the weights come
    from the channel (here made from a freshly initialised network: nothing is downloaded in tests either) and the
    job reaches no network at all."""
    import torch

    from ml.model import build_model

    staged = tmp_path / "pretrained"
    staged.mkdir()
    torch.manual_seed(7)
    donor = build_model("resnet18", 1000, "none", "all")  # torchvision's layout, ImageNet's 1000-class head
    torch.save(donor.state_dict(), staged / contract.PRETRAINED_FILE.format(backbone="resnet18"))
    blocker = tmp_path / "site"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(NO_NETWORK)
    env = {**channel_env(small_digits, tmp_path / "model", tmp_path / "out"),
           f"SM_CHANNEL_{contract.PRETRAINED_CHANNEL.upper()}": str(staged), "PYTHONPATH": str(blocker),
           "TORCH_HOME": str(tmp_path / "torch-home")}
    result = run_train(["--preset", "local", "--weights", "imagenet", "--finetune", "head", "--epochs", "1",
                        "--checkpoint-dir", str(tmp_path / "ckpt")], env)
    assert "network blocked" in result.stderr, "the network blocker was not loaded"
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert not (tmp_path / "torch-home").exists(), "torchvision's download cache was touched"
    trained = torch.load(tmp_path / "model" / contract.MODEL_WEIGHTS_FILE, weights_only=True)
    assert torch.equal(trained["layer1.0.conv1.weight"], donor.state_dict()["layer1.0.conv1.weight"]), \
        "the frozen backbone is the staged one"
