"""Training benchmarks on the local digits dataset (issue bars: accuracy >= 0.97 within 3 minutes on 2 cores;
real loader >= 0.90 of the throughput of the same loop on synthetic tensors; health checks <= 3 % of step time on
CPU; mixed precision >= 1.5x fp32 images/s for resnet50 at 224 px, whole network, on a CUDA GPU).

    python bench/train_bench.py [--data data/digits] [--rounds 3] [--skip-full-run] [--skip-pipeline]

1. One full run of ml/train.py with the default local hyperparameters, as a subprocess under the SageMaker
   contract: wall time and held-out test accuracy (on CUDA: once with --amp off and once with --amp auto,
   whose accuracies must agree within 1 point).
2. The training loop of ml/train.py (train.train_epoch) fed by the real DataLoader and by pre-made tensors
   of the same shape, alternated `rounds` times in one process: images/s of each and their ratio.
3. On whatever device is present (CUDA if any, else CPU), the same loop on synthetic batches in fp32 and in mixed
   precision (train.choose_precision: fp16 + scaler or bf16 on CUDA, bf16 autocast on CPU): images/s of each;
   and the share of step time the health checks take (HealthMonitor.observe_step per step plus the one
   read-back per epoch), timed directly on CPU and by difference (with and without) everywhere.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from ml import contract, train  # noqa: E402
from ml.health import HealthMonitor  # noqa: E402
from ml.imaging import TransformSettings, build_transforms  # noqa: E402
from ml.model import build_model  # noqa: E402

HP = contract.LOCAL_HYPERPARAMETERS


def full_run(data: Path, *extra: str) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SM_")}
        env.update({f"SM_CHANNEL_{c.upper()}": str(data / c) for c in contract.CHANNELS})
        env.update(SM_MODEL_DIR=f"{tmp}/model", SM_OUTPUT_DATA_DIR=f"{tmp}/out", SM_OUTPUT_DIR=tmp)
        # ml/ is a package (the containers put the source root on the path); a host without this project
        # installed, e.g. a bare GPU machine, needs the root on PYTHONPATH for `from ml import ...`.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        started = time.perf_counter()
        result = subprocess.run([sys.executable, str(ROOT / "ml" / "train.py"), "--preset", "local",
                                 "--checkpoint-dir", f"{tmp}/ckpt", *extra], env=env, capture_output=True,
                                text=True)
        wall = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"training failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    return wall, contract.parse_metrics(result.stdout)[contract.TEST_ACCURACY][-1]


def pipeline(data: Path, rounds: int) -> tuple[list[float], list[float]]:
    settings = TransformSettings.for_size(int(HP["image-size"]), "crop")
    train_tf, _ = build_transforms(settings)
    split = train.load_split(contract.TRAIN, str(data / contract.TRAIN), settings)
    batch = int(HP[contract.BATCH_SIZE])
    loader = DataLoader(train.ImageDataset(split, train_tf, settings.resize_size), batch_size=batch, shuffle=True,
                        num_workers=0)
    # The same number of batches of the same shape, already tensors: the loop's ceiling without data loading.
    synthetic = [(torch.randn(len(y), 3, settings.image_size, settings.image_size), y) for _, y in loader]
    model = build_model(HP["backbone"], len(split.classes), HP["weights"], HP["finetune"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=float(HP[contract.LR]))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    loss_fn, device = nn.CrossEntropyLoss(), torch.device("cpu")
    real, fake = [], []
    train.train_epoch(model, synthetic[:3], loss_fn, optimizer, scheduler, device)  # warm-up
    for _ in range(rounds):
        for batches, out in ((loader, real), (synthetic, fake)):
            started = time.perf_counter()
            _, seen = train.train_epoch(model, batches, loss_fn, optimizer, scheduler, device)
            out.append(seen / (time.perf_counter() - started))
    return real, fake


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def precision_and_health(rounds: int, steps: int, backbone: str | None, image_size: int | None,
                         batch_size: int | None) -> None:
    """fp32 vs mixed precision images/s, and the health checks' share of step time, on the present device."""
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    # The GPU bar is resnet50 at 224 px with the whole network training; on a CPU the local defaults.
    backbone = backbone or ("resnet50" if cuda else HP["backbone"])
    size = image_size or (224 if cuda else int(HP["image-size"]))
    batch = batch_size or (64 if cuda else int(HP[contract.BATCH_SIZE]))
    if cuda:
        torch.backends.cudnn.benchmark = True
    mixed = train.choose_precision("auto" if cuda else "bf16", device)
    fp32 = train.Precision()
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(batch, 3, size, size, generator=g), torch.randint(0, 10, (batch,), generator=g))
               for _ in range(steps)]
    if cuda:
        batches = [(x.pin_memory(), y.pin_memory()) for x, y in batches]
    loss_fn = nn.CrossEntropyLoss()
    name = torch.cuda.get_device_name(device) if cuda else f"CPU ({torch.get_num_threads()} threads)"
    print(f"precision and health checks on {name}: {backbone}, {size} px, batch {batch}, whole network, "
          f"{steps} steps x {rounds} rounds (median)")

    def setup(precision: train.Precision):
        torch.manual_seed(0)
        model = build_model(backbone, 10, "none", "all").to(device)
        if precision.channels_last:
            model = model.to(memory_format=torch.channels_last)
        optimizer = train.make_optimizer(list(model.parameters()), 1e-3, 0.0, device)  # as train.py builds it
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
        return model, optimizer, scheduler, precision.grad_scaler(device)

    def timed(precision, model, optimizer, scheduler, scaler, on_step=None, finish=None) -> float:
        _sync(device)
        started = time.perf_counter()
        _, seen = train.train_epoch(model, batches, loss_fn, optimizer, scheduler, device, on_step, precision,
                                    scaler)
        if finish:
            finish()
        _sync(device)
        return seen / (time.perf_counter() - started)

    speeds: dict[str, list[float]] = {"fp32": [], mixed.name: []}
    states = {p.name: (p, *setup(p)) for p in (fp32, mixed)}
    for p, *rest in states.values():
        train.train_epoch(rest[0], batches[:2], loss_fn, rest[1], rest[2], device, None, p, rest[3])  # warm-up
    for _ in range(rounds):
        for key, (p, *rest) in states.items():
            speeds[key].append(timed(p, *rest))
    f, m = statistics.median(speeds["fp32"]), statistics.median(speeds[mixed.name])
    print(f"  fp32           {f:8.1f} images/s   {', '.join(f'{x:.0f}' for x in speeds['fp32'])}")
    print(f"  {mixed.name:<14} {m:8.1f} images/s   {', '.join(f'{x:.0f}' for x in speeds[mixed.name])}")
    verdict = ("PASS" if m / f >= 1.5 else "FAIL") if cuda and backbone == "resnet50" and size == 224 else "n/a"
    print(f"  speed-up       {m / f:8.2f} x          (bar on CUDA, resnet50 224 px: >= 1.5)  {verdict}")

    # Health checks: the loop's on_step hook exactly as train.py wires it, in the precision train.py would use.
    p, model, optimizer, scheduler, scaler = states[(mixed if cuda else fp32).name]
    monitor = HealthMonitor(grad_interval=train.HEALTH_GRAD_INTERVAL)  # as train.py configures it
    spent = [0.0]

    def observe(loss):
        started = time.perf_counter()
        monitor.observe_step(loss, model)
        spent[0] += time.perf_counter() - started

    def end_epoch():
        started = time.perf_counter()
        monitor.end_epoch(1, 1.0, 1.0)
        spent[0] += time.perf_counter() - started

    without, with_health, direct = [], [], []
    for _ in range(rounds):
        without.append(timed(p, model, optimizer, scheduler, scaler))
        spent[0] = 0.0
        started = time.perf_counter()
        with_health.append(timed(p, model, optimizer, scheduler, scaler, observe, end_epoch))
        direct.append(spent[0] / (time.perf_counter() - started))
    a, b = statistics.median(without), statistics.median(with_health)
    by_difference = max(0.0, 1 - b / a)
    share = statistics.median(direct) if not cuda else by_difference
    print(f"  health checks  {100 * statistics.median(direct):7.2f} % of step time, timed directly "
          f"({'CPU: exact' if not cuda else 'CUDA: launch cost only'})")
    print(f"                 {100 * by_difference:7.2f} % by difference ({a:.0f} vs {b:.0f} images/s without/with)")
    print(f"  health share   {100 * share:7.2f} %          (bar: <= 3 %)  {'PASS' if share <= 0.03 else 'FAIL'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "digits")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-full-run", action="store_true")
    parser.add_argument("--skip-pipeline", action="store_true")
    parser.add_argument("--steps", type=int, default=12, help="synthetic batches per timed epoch (precision/health)")
    parser.add_argument("--backbone", help="precision/health model (default: resnet50 on CUDA, else local)")
    parser.add_argument("--image-size", type=int)
    parser.add_argument("--batch-size", type=int)
    args = parser.parse_args()
    if not (args.data / contract.TRAIN).is_dir():
        sys.exit(f"no dataset at {args.data}: run `make data` first")
    print(f"machine: {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads")
    if not args.skip_full_run:
        wall, accuracy = full_run(args.data)
        print(f"full training run (local defaults {HP}):")
        print(f"  wall time      {wall:7.1f} s    (bar: <= 180 s)  {'PASS' if wall <= 180 else 'FAIL'}")
        print(f"  test accuracy  {accuracy:7.4f}      (bar: >= 0.97)   {'PASS' if accuracy >= 0.97 else 'FAIL'}")
        if torch.cuda.is_available():  # --amp auto above; the same run in fp32 for the accuracy bar
            _, fp32_accuracy = full_run(args.data, "--amp", "off")
            gap = abs(accuracy - fp32_accuracy)
            print(f"  fp32 accuracy  {fp32_accuracy:7.4f}      (bar: mixed within 0.01)  "
                  f"{'PASS' if gap <= 0.01 else 'FAIL'}")
    if not args.skip_pipeline:
        real, fake = pipeline(args.data, args.rounds)
        r, f = statistics.median(real), statistics.median(fake)
        print(f"data pipeline ({args.rounds} alternating epochs each, median):")
        print(f"  real loader    {r:7.1f} images/s   {', '.join(f'{x:.0f}' for x in real)}")
        print(f"  synthetic      {f:7.1f} images/s   {', '.join(f'{x:.0f}' for x in fake)}")
        print(f"  ratio          {r / f:7.3f}      (bar: >= 0.90)   {'PASS' if r / f >= 0.90 else 'FAIL'}")
    precision_and_health(args.rounds, args.steps, args.backbone, args.image_size, args.batch_size)


if __name__ == "__main__":
    main()
