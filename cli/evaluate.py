"""Predictions on a test set for the report's confusion matrix: from a file, or by running the trained model (the
same inference code the endpoint runs, ml/inference.py) over an ImageFolder test split."""

from __future__ import annotations

import csv
import json
import tarfile
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cli.errors import CliError, UsageError
from ml import contract

BATCH = 64


@dataclass
class Prediction:
    label: str  # the true class
    predicted: str
    score: float | None = None
    image: str | None = None


@dataclass
class Predictions:
    items: list[Prediction]
    source: str
    classes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.classes:
            self.classes = sorted({p.label for p in self.items} | {p.predicted for p in self.items})

    @property
    def accuracy(self) -> float:
        return sum(p.label == p.predicted for p in self.items) / max(len(self.items), 1)

    def matrix(self) -> list[list[int]]:
        index = {c: i for i, c in enumerate(self.classes)}
        rows = [[0] * len(self.classes) for _ in self.classes]
        for p in self.items:
            if p.label in index and p.predicted in index:
                rows[index[p.label]][index[p.predicted]] += 1
        return rows

    def top_confusions(self, n: int = 10) -> list[tuple[str, str, int]]:
        counts = Counter((p.label, p.predicted) for p in self.items if p.label != p.predicted)
        return [(t, q, c) for (t, q), c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]]

    def to_json(self) -> dict:
        return {"source": self.source, "classes": self.classes, "accuracy": self.accuracy,
                "predictions": [asdict(p) for p in self.items]}


def load_predictions(path: Path) -> Predictions:
    """A predictions file: JSON ({"predictions": [...]} or a list) or CSV, rows of label, predicted[, score, image]."""
    if not path.is_file():
        raise UsageError(f"no such predictions file: {path}")
    try:
        if path.suffix.lower() == ".csv":
            with path.open(newline="") as handle:
                rows: list[dict] = list(csv.DictReader(handle))
            classes: list[str] = []
        else:
            data = json.loads(path.read_text())
            rows = data["predictions"] if isinstance(data, dict) else data
            classes = list(data.get("classes", [])) if isinstance(data, dict) else []
        items = [Prediction(str(r["label"]), str(r["predicted"]),
                            float(r["score"]) if r.get("score") not in (None, "") else None, r.get("image") or None)
                 for r in rows]
    except (ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"{path}: not a predictions file (rows need 'label' and 'predicted'): {exc}") from None
    if not items:
        raise UsageError(f"{path} holds no predictions")
    return Predictions(items, str(path), classes)


def _predictor(model_dir: Path) -> Any:
    if not (model_dir / contract.MODEL_CONFIG_FILE).is_file():
        raise UsageError(f"{model_dir} is not a model directory written by ml/train.py "
                         f"(no {contract.MODEL_CONFIG_FILE})")
    from ml.inference import Predictor  # torch: imported only when a model is evaluated

    return Predictor(model_dir, device="cpu")


def list_test_images(test_dir: Path) -> list[tuple[Path, str]]:
    if not test_dir.is_dir():
        raise UsageError(f"no such test folder: {test_dir}")
    images = [(f, d.name) for d in sorted(p for p in test_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
              for f in sorted(d.rglob("*")) if f.is_file() and f.suffix.lower() in contract.IMAGE_EXTENSIONS]
    if not images:
        raise UsageError(f"{test_dir} holds no class folders of images")
    return images


def evaluate(model_dir: Path, test_dir: Path, source: str | None = None,
             progress: Callable[[int, int], Any] | None = None) -> Predictions:
    """Run the model on every test image, in batches, with serving's own decoding and transform."""
    predictor = _predictor(model_dir)
    import torch

    images = list_test_images(test_dir)
    items: list[Prediction] = []
    for start in range(0, len(images), BATCH):
        chunk, tensors = images[start:start + BATCH], []
        kept = []
        for path, label in chunk:
            try:
                tensors.append(predictor.preprocess(path.read_bytes()))
                kept.append((path, label))
            except contract.ApiException:
                continue  # an undecodable file: training skipped it too
        if tensors:
            probabilities = predictor.probabilities(torch.cat(tensors))
            scores, indices = probabilities.max(dim=1)
            items += [Prediction(label, predictor.classes[i], round(float(s), 6), str(path))
                      for (path, label), s, i in zip(kept, scores.tolist(), indices.tolist(), strict=True)]
        if progress:
            progress(min(start + BATCH, len(images)), len(images))
    if not items:
        raise CliError(f"no test image in {test_dir} could be decoded")
    return Predictions(items, source or f"{model_dir} on {test_dir}", list(predictor.classes))


def extract_model(archive: bytes | Path, target: Path) -> Path:
    """model.tar.gz -> a model directory (refusing members that would land outside it)."""
    import io

    target.mkdir(parents=True, exist_ok=True)
    fileobj = io.BytesIO(archive) if isinstance(archive, bytes) else open(archive, "rb")  # noqa: SIM115
    with fileobj, tarfile.open(fileobj=fileobj, mode="r:gz") as tar:
        tar.extractall(target, filter="data")
    return target
