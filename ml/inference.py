"""SageMaker PyTorch inference handlers: image bytes in, labels with scores out.

Training copies this file and the modules it imports into <model>/code/, where the inference toolkit looks
for user code. The request checks, decoding and evaluation transform are training's own (contract.py,
imaging.py), so serving cannot drift from what the model was trained on.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch

# The PyTorch inference DLC's toolkit (sagemaker-pytorch-inference ships this module; the local endpoint server runs
# the same package). Its Transformer keeps the status of this class only: any other exception is a 500.
from sagemaker_inference.errors import BaseInferenceToolkitError

from ml import contract
from ml.contract import ApiException
from ml.imaging import TransformSettings, build_transforms, decode_image
from ml.model import build_model

log = logging.getLogger(__name__)


def _toolkit_error(exc: ApiException) -> BaseInferenceToolkitError:
    # The toolkit answers status_code with reason phrase `phrase` (the error code) and body "message\ntraceback";
    # the message is the contract's JSON error on one line, so the Lambda reads code and text from the first line
    # of InvokeEndpoint's OriginalMessage.
    return BaseInferenceToolkitError(exc.status_code, json.dumps(exc.body()), exc.error.code)


class ModelConfigError(ValueError):
    """A model.json this code cannot serve: the endpoint fails to load (as SageMaker's does), never answers 502."""


def read_model_config(model_dir: Path) -> dict:
    """model.json, every value the handlers use checked (ModelConfigError naming the file and the value)."""
    path = model_dir / contract.MODEL_CONFIG_FILE
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(config, dict):
            raise ValueError(f"an object is expected, not {type(config).__name__}")
        classes = config.get("classes")
        if not isinstance(classes, list) or not classes or not all(isinstance(c, str) and c for c in classes):
            raise ValueError(f"classes must be a non-empty list of names, not {str(classes)[:80]!r}")
        if len(set(classes)) != len(classes):
            raise ValueError("classes has duplicate names")
        if not isinstance(config.get("backbone"), str):
            raise ValueError(f"backbone must be a torchvision model name, not {config.get('backbone')!r}")
        if not isinstance(config.get("training_job") or "", str):
            raise ValueError(f"training_job must be a name, not {config.get('training_job')!r}")
        TransformSettings.from_dict(config.get("transforms"))  # type: ignore[arg-type]  # it refuses a non-dict
    except (OSError, ValueError) as exc:
        raise ModelConfigError(f"{path}: {exc}") from None
    return config


@dataclass
class ImageRequest:
    body: bytes
    format: str


class Predictor:
    """A loaded model with its classes and the exact evaluation transform it was trained with."""

    def __init__(self, model_dir: str | Path, device: str | None = None) -> None:
        model_dir = Path(model_dir)
        config = read_model_config(model_dir)
        self.classes: list[str] = list(config["classes"])
        self.name: str = config.get("training_job") or model_dir.name
        self.settings = TransformSettings.from_dict(config["transforms"])
        self.transform = build_transforms(self.settings)[1]
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        model = build_model(config["backbone"], len(self.classes), weights="none", finetune="all")
        state = torch.load(model_dir / contract.MODEL_WEIGHTS_FILE, map_location=self.device, weights_only=True)
        model.load_state_dict(state)
        self.model = model.to(self.device).eval()

    def preprocess(self, body: bytes) -> torch.Tensor:
        image = decode_image(body, min_side=self.settings.resize_size)
        return self.transform(image).unsqueeze(0)

    @torch.inference_mode()
    def probabilities(self, batch: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(batch.to(self.device)).float(), dim=1).cpu()

    def predict(self, body: bytes, top_k: int | None = None) -> dict:
        probs = self.probabilities(self.preprocess(body))[0].double()
        k = len(self.classes) if top_k is None else max(1, min(top_k, len(self.classes)))
        scores, indices = torch.topk(probs, k)
        return {
            # Floored, not rounded, to 6 decimals: the scores a client adds up never exceed 1.
            "predictions": [{"label": self.classes[i], "score": math.floor(s * 1e6) / 1e6}
                            for s, i in zip(scores.tolist(), indices.tolist(), strict=True)],
            "model": self.name,
        }


# --- the four functions the SageMaker PyTorch inference toolkit calls --------------------------------
def model_fn(model_dir: str, context=None) -> Predictor:
    predictor = Predictor(model_dir)
    log.info("loaded %s: %d classes on %s", predictor.name, len(predictor.classes), predictor.device)
    return predictor


def input_fn(input_data: bytes | bytearray | str, content_type: str, context=None) -> ImageRequest:
    # The toolkit decodes JSON/CSV/text bodies to str before calling us.
    body = input_data.encode("utf-8") if isinstance(input_data, str) else bytes(input_data)
    try:
        fmt = contract.check_image_request(body, content_type, contract.ENDPOINT_MAX_BODY_BYTES)
    except ApiException as exc:
        raise _toolkit_error(exc) from None
    return ImageRequest(body, fmt)


def predict_fn(data: ImageRequest, model: Predictor, context=None) -> dict:
    try:
        return model.predict(data.body)
    except ApiException as exc:
        raise _toolkit_error(exc) from None


def output_fn(prediction: dict, accept: str | None = None, context=None) -> tuple[str, str]:
    # Every class, best first: callers (the Lambda) cut to their top_k.
    return json.dumps(prediction), contract.JSON_CONTENT_TYPE
