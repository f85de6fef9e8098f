"""Render the 1,797 8x8 handwritten digits as an RGB ImageFolder with train/valid/test splits.

No download: digits.csv.gz beside this file is the test set of the UCI "Optical Recognition of Handwritten Digits"
data set (E. Alpaydin, C. Kaynak, 1998; CC BY 4.0, https://doi.org/10.24432/C50P49), byte for byte the copy that
scikit-learn ships as sklearn/datasets/data/digits.csv.gz: 64 pixel values (0..16) and the digit, per line.
Deterministic for a given seed.
    python -m local.digits data/digits [--size 32] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from ml import contract

SPLITS = {contract.TRAIN: 0.7, contract.VALID: 0.15, contract.TEST: 0.15}
DIGITS_FILE = Path(__file__).with_name("digits.csv.gz")


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """(images: 1797x8x8 floats in 0..16, targets: 1797 ints)."""
    table = np.loadtxt(DIGITS_FILE, delimiter=",")
    return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(int)


def render(out: Path, size: int = 32, seed: int = 0) -> dict[str, int]:
    """Write <out>/<split>/<digit>/<index>.png; return the number of images per split."""
    images, targets = load_digits()
    order = np.random.default_rng(seed).permutation(len(images))
    n_train = int(len(order) * SPLITS[contract.TRAIN])
    n_valid = int(len(order) * SPLITS[contract.VALID])
    parts = {
        contract.TRAIN: order[:n_train],
        contract.VALID: order[n_train:n_train + n_valid],
        contract.TEST: order[n_train + n_valid:],
    }
    inner = size - 2 * max(1, size // 8)  # a margin, as handwriting has on paper
    counts = {}
    for split, indices in parts.items():
        for i in indices:
            pixels = (images[i] * (255.0 / 16.0)).astype(np.uint8)
            glyph = Image.fromarray(pixels, "L").resize((inner, inner), Image.Resampling.BICUBIC)
            canvas = Image.new("L", (size, size), 0)
            canvas.paste(glyph, ((size - inner) // 2, (size - inner) // 2))
            target = out / split / str(targets[i])
            target.mkdir(parents=True, exist_ok=True)
            canvas.convert("RGB").save(target / f"{i:04d}.png", optimize=False)
        counts[split] = len(indices)
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="output folder (gets train/ valid/ test/)")
    parser.add_argument("--size", type=int, default=32, help="image side in pixels (default 32)")
    parser.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    args = parser.parse_args(argv)
    if args.size < 8:
        parser.error("--size must be at least 8")
    if args.out.exists() and any(args.out.iterdir()):
        print(f"{args.out} already holds files; not overwriting", file=sys.stderr)
        return 0 if all((args.out / s).is_dir() for s in SPLITS) else 1
    counts = render(args.out, args.size, args.seed)
    print(f"wrote {sum(counts.values())} images to {args.out} " + " ".join(f"{k}={v}" for k, v in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
