"""Training benchmarks on the local digits dataset (issue bars: accuracy >= 0.97 within 3 minutes on 2 cores;
real loader >= 0.90 of the throughput of the same loop on synthetic tensors).

    python bench/train_bench.py [--data data/digits] [--rounds 3]

1. One full run of ml/train.py with the default local hyperparameters, as a subprocess under the SageMaker
   contract: wall time and held-out test accuracy.
2. The training loop of ml/train.py (train.train_epoch) fed by the real DataLoader and by pre-made tensors
   of the same shape, alternated `rounds` times in one process: images/s of each and their ratio.
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
sys.path.insert(0, str(ROOT / "ml"))
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

import contract  # noqa: E402
import train  # noqa: E402
from imaging import TransformSettings, build_transforms  # noqa: E402
from model import build_model  # noqa: E402

HP = contract.LOCAL_HYPERPARAMETERS


def full_run(data: Path) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SM_")}
        env.update({f"SM_CHANNEL_{c.upper()}": str(data / c) for c in contract.CHANNELS})
        env.update(SM_MODEL_DIR=f"{tmp}/model", SM_OUTPUT_DATA_DIR=f"{tmp}/out", SM_OUTPUT_DIR=tmp)
        started = time.perf_counter()
        result = subprocess.run([sys.executable, str(ROOT / "ml" / "train.py"), "--preset", "local",
                                 "--checkpoint-dir", f"{tmp}/ckpt"], env=env, capture_output=True, text=True)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "digits")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-full-run", action="store_true")
    args = parser.parse_args()
    if not (args.data / contract.TRAIN).is_dir():
        sys.exit(f"no dataset at {args.data}: run `make data` first")
    print(f"machine: {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads")
    if not args.skip_full_run:
        wall, accuracy = full_run(args.data)
        print(f"full training run (local defaults {HP}):")
        print(f"  wall time      {wall:7.1f} s    (bar: <= 180 s)  {'PASS' if wall <= 180 else 'FAIL'}")
        print(f"  test accuracy  {accuracy:7.4f}      (bar: >= 0.97)   {'PASS' if accuracy >= 0.97 else 'FAIL'}")
    real, fake = pipeline(args.data, args.rounds)
    r, f = statistics.median(real), statistics.median(fake)
    print(f"data pipeline ({args.rounds} alternating epochs each, median):")
    print(f"  real loader    {r:7.1f} images/s   {', '.join(f'{x:.0f}' for x in real)}")
    print(f"  synthetic      {f:7.1f} images/s   {', '.join(f'{x:.0f}' for x in fake)}")
    print(f"  ratio          {r / f:7.3f}      (bar: >= 0.90)   {'PASS' if r / f >= 0.90 else 'FAIL'}")


if __name__ == "__main__":
    main()
