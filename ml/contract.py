"""The one home of every contract shared by training, serving, the CDK stack and local mode.

Standard library only: this file ships in the training source directory, in every model's ``code/``
directory and in the Lambda bundle, and the CDK app imports it at synth time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# --- Data channels (SM_CHANNEL_<NAME>) -------------------------------------------------------------
TRAIN, VALID, TEST = "train", "valid", "test"
CHANNELS: tuple[str, ...] = (TRAIN, VALID, TEST)
# Optional channel: ImageNet weights staged once in the bucket (a torchvision state dict named
# PRETRAINED_FILE.format(backbone=...)), so no job downloads them; `--weights imagenet` reads it.
PRETRAINED_CHANNEL = "pretrained"
PRETRAINED_WEIGHTS = "imagenet"
PRETRAINED_FILE = "{backbone}.pt"
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")

# --- SageMaker container paths (defaults when the SM_* variables are unset) ------------------------
DEFAULT_MODEL_DIR = "/opt/ml/model"
DEFAULT_OUTPUT_DATA_DIR = "/opt/ml/output/data"
DEFAULT_CHECKPOINT_DIR = "/opt/ml/checkpoints"
FAILURE_FILE = "/opt/ml/output/failure"
DEFAULT_INPUT_CONFIG_DIR = "/opt/ml/input/config"

# --- Files a training job writes ------------------------------------------------------------------
MODEL_WEIGHTS_FILE = "model.pt"
MODEL_CONFIG_FILE = "model.json"
MODEL_CODE_DIR = "code"
HEALTH_FILE = "health.json"
HISTORY_FILE = "history.json"
CHECKPOINT_FILE = "checkpoint.pt"
# Hyperparameter: "job" puts the checkpoint under <checkpoint dir>/<TRAINING_JOB_NAME>/ (tuning trials).
CHECKPOINT_SCOPE = "checkpoint-scope"
CHECKPOINT_SCOPES: tuple[str, ...] = ("shared", "job")
# The `ml` modules copied into <model>/code/ml/ (beside the entry shim ml/entry/inference.py, which becomes
# code/inference.py) so the inference container needs neither network nor a second copy of the network definition.
INFERENCE_MODULES: tuple[str, ...] = ("__init__.py", "inference.py", "model.py", "imaging.py", "contract.py")
PACKAGE = "ml"  # the package name inside every bundle: <bundle root>/ml/
ENTRY_DIR = "entry"  # ml/entry/<program>: the shims SageMaker runs, copied to each bundle's root

# --- Hyperparameters -------------------------------------------------------------------------------
# SageMaker passes every hyperparameter as "--name value" with a string value.
BATCH_SIZE, LR, EPOCHS = "batch-size", "lr", "epochs"


@dataclass(frozen=True)
class CategoricalRange:
    name: str
    values: tuple[str, ...]


@dataclass(frozen=True)
class ContinuousRange:
    name: str
    min_value: float
    max_value: float
    scaling: str = "Logarithmic"  # SageMaker ScalingType


@dataclass(frozen=True)
class IntegerRange:
    name: str
    min_value: int
    max_value: int
    scaling: str = "Linear"


ParameterRange = CategoricalRange | ContinuousRange | IntegerRange


@dataclass(frozen=True)
class TuningSpace:
    """The seed's three tuned hyperparameters; cdk.json context may narrow them."""

    ranges: tuple[ParameterRange, ...] = field(
        default_factory=lambda: (
            CategoricalRange(BATCH_SIZE, ("128", "256", "512")),
            ContinuousRange(LR, 0.001, 0.1),
            IntegerRange(EPOCHS, 2, 5),
        )
    )


# Defaults of train.py. The cloud ones follow the seed (resnet50, ImageNet weights, frozen backbone);
# LOCAL_HYPERPARAMETERS are what tests, benchmarks and local mode use on 2 CPU cores with no downloads.
CLOUD_HYPERPARAMETERS: dict[str, str] = {
    "backbone": "resnet50",
    "weights": "imagenet",
    "finetune": "head",
    "image-size": "224",
    BATCH_SIZE: "256",
    LR: "0.003",
    EPOCHS: "3",
}
LOCAL_HYPERPARAMETERS: dict[str, str] = {
    "backbone": "resnet18",
    "weights": "none",
    "finetune": "all",
    "image-size": "32",
    BATCH_SIZE: "64",
    LR: "0.001",
    EPOCHS: "6",
}
LOCAL_TUNING_SPACE = TuningSpace(
    (
        CategoricalRange(BATCH_SIZE, ("32", "64", "128")),
        # From scratch with Adam; above ~0.005 the first epochs diverge on 1,257 images.
        ContinuousRange(LR, 0.0003, 0.003),
        IntegerRange(EPOCHS, 3, 6),
    )
)

# --- Metrics (MetricDefinitions and local FinalMetricDataList read the same regexes) --------------
# train.py prints "<name>=<value>;" tokens; each regex captures one float.
_FLOAT = r"([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"


@dataclass(frozen=True)
class Metric:
    name: str
    regex: str


def _metric(name: str) -> Metric:
    return Metric(name, rf"\b{re.escape(name)}={_FLOAT};")


TRAIN_LOSS, VALID_LOSS, VALID_ACCURACY = "train_loss", "valid_loss", "valid_accuracy"
TEST_LOSS, TEST_ACCURACY = "test_loss", "test_accuracy"
THROUGHPUT, HEALTH_ISSUES, SKIPPED_IMAGES = "images_per_second", "health_issues", "skipped_images"
METRICS: tuple[Metric, ...] = tuple(
    _metric(n)
    for n in (TRAIN_LOSS, VALID_LOSS, VALID_ACCURACY, TEST_LOSS, TEST_ACCURACY, THROUGHPUT,
              HEALTH_ISSUES, SKIPPED_IMAGES)
)
METRICS_BY_NAME: dict[str, Metric] = {m.name: m for m in METRICS}
OBJECTIVE_METRIC = VALID_ACCURACY
OBJECTIVE_TYPE = "Maximize"


def format_metrics(**values: float) -> str:
    """One log line that every regex in METRICS can read back."""
    return " ".join(f"{name}={float(value):.6g};" for name, value in values.items())


def parse_metrics(text: str) -> dict[str, list[float]]:
    """Every value of every metric in a log, in order (what SageMaker's metric scraper sees)."""
    found: dict[str, list[float]] = {}
    for metric in METRICS:
        values = [float(v) for v in re.findall(metric.regex, text)]
        if values:
            found[metric.name] = values
    return found


# --- Health checks (the training script's own rule verdicts) ---------------------------------------
NO_ISSUES, ISSUES_FOUND = "NoIssuesFound", "IssuesFound"  # Debugger's own verdict words
HEALTH_CHECKS: tuple[str, ...] = ("VanishingGradient", "Overfit", "LossNotDecreasing",
                                  "PoorWeightInitialization")

# --- Prediction API --------------------------------------------------------------------------------
PREDICT_PATH = "/predict"
ACCEPTED_CONTENT_TYPES: tuple[str, ...] = (
    "image/jpeg", "image/png", "application/x-image", "application/octet-stream",
)
# API Gateway turns these into base64 for the Lambda; anything else arrives as text.
BINARY_MEDIA_TYPES: tuple[str, ...] = ("image/*", "application/x-image", "application/octet-stream")
JSON_CONTENT_TYPE = "application/json"
DEFAULT_TOP_K = 5
TOP_K_PARAM = "top_k"
# InvokeEndpoint caps a request body at 6 MB. Through API Gateway -> Lambda the body is base64
# inside a 6 MB JSON event: 4/3 growth plus headroom for headers leaves ~4.4 MB of image.
ENDPOINT_MAX_BODY_BYTES = 6_291_456
API_MAX_IMAGE_BYTES = 4_400_000
# Decoding bounds: refuse before decoding what would not fit (decompression bombs, absurd strips).
MAX_IMAGE_PIXELS = 40_000_000
MAX_ASPECT_RATIO = 50.0
# ...and a budget in bytes, as Pillow holds the pixels (after a JPEG's reduced-scale draft, with the conversion a
# mode needs before it can be reduced): a 170 KB PNG within the pixel budget can otherwise need ~1 GB and seconds.
MAX_DECODED_BYTES = 64 * 1024 * 1024
# The largest input side a served model may declare in model.json: each request allocates 3 x side^2 floats.
MAX_MODEL_IMAGE_SIZE = 2048


@dataclass(frozen=True)
class ApiError:
    status: int
    code: str


EMPTY_BODY = ApiError(400, "empty_body")
INVALID_IMAGE = ApiError(400, "invalid_image")
INVALID_PARAMETER = ApiError(400, "invalid_parameter")
NOT_FOUND = ApiError(404, "not_found")
METHOD_NOT_ALLOWED = ApiError(405, "method_not_allowed")
PAYLOAD_TOO_LARGE = ApiError(413, "payload_too_large")
UNSUPPORTED_MEDIA_TYPE = ApiError(415, "unsupported_media_type")
UNPROCESSABLE_IMAGE = ApiError(422, "unprocessable_image")
MODEL_ERROR = ApiError(502, "model_error")
SERVICE_UNAVAILABLE = ApiError(503, "service_unavailable")
GATEWAY_TIMEOUT = ApiError(504, "timeout")
API_ERRORS: tuple[ApiError, ...] = (
    EMPTY_BODY, INVALID_IMAGE, INVALID_PARAMETER, NOT_FOUND, METHOD_NOT_ALLOWED, PAYLOAD_TOO_LARGE,
    UNSUPPORTED_MEDIA_TYPE, UNPROCESSABLE_IMAGE, MODEL_ERROR, SERVICE_UNAVAILABLE, GATEWAY_TIMEOUT,
)


def error_body(error: ApiError, message: str) -> dict:
    return {"error": {"code": error.code, "message": message}}


def media_type(content_type: str | None) -> str:
    """'Image/JPEG; charset=binary' -> 'image/jpeg'."""
    return (content_type or "").split(";", 1)[0].strip().lower()


# Magic numbers of the raster formats the model accepts, and of what clients send by mistake.
_IMAGE_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"GIF87a", "GIF"), (b"GIF89a", "GIF"),
    (b"BM", "BMP"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"),
)


def sniff_image_format(body: bytes) -> str | None:
    """The raster format the bytes start with, or None; cheap enough for the Lambda."""
    if body[:4] == b"RIFF" and body[8:12] == b"WEBP":
        return "WEBP"
    for magic, fmt in _IMAGE_MAGIC:
        if body.startswith(magic):
            return fmt
    return None


IMAGE_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP")
MEDIA_TYPE_BY_FORMAT: dict[str, str] = {fmt: f"image/{fmt.lower()}" for fmt in IMAGE_FORMATS}


class ApiException(Exception):
    """A request the service refuses; `status_code` is the name SageMaker's toolkits read."""

    def __init__(self, error: ApiError, message: str) -> None:
        super().__init__(message)
        self.error = error
        self.status_code = error.status
        self.message = message

    def body(self) -> dict:
        return error_body(self.error, self.message)


def check_image_request(body: bytes | None, content_type: str | None, max_bytes: int) -> str:
    """Validate a prediction request before any decoding; return the sniffed image format.

    The bytes decide when they are a real image (clients often send the wrong header); otherwise a
    non-image media type is a 415 and an image media type over non-image bytes is a 400.
    """
    if not body:
        raise ApiException(EMPTY_BODY, "the request body is empty: send the image bytes as the body")
    if len(body) > max_bytes:
        raise ApiException(
            PAYLOAD_TOO_LARGE, f"the image is {len(body):,} bytes; the limit is {max_bytes:,} bytes"
        )
    fmt = sniff_image_format(body)
    if fmt is not None:
        return fmt
    declared = media_type(content_type)
    if declared.startswith("image/") or declared in ACCEPTED_CONTENT_TYPES:
        raise ApiException(INVALID_IMAGE, f"the body is not a decodable image ({', '.join(IMAGE_FORMATS)})")
    raise ApiException(
        UNSUPPORTED_MEDIA_TYPE,
        f"unsupported media type {declared or '(none)'!r}: send {' or '.join(ACCEPTED_CONTENT_TYPES[:2])}",
    )


# --- Serving: AWS limits in front of the Lambda, and a fault of the service itself -------------------
API_GATEWAY_MAX_BODY_BYTES = 10_485_760  # API Gateway REST payload limit
# Lambda synchronous invocation payload limit (the event JSON; gettingstarted-limits.html). A body from about 4.7 MB
# to API_GATEWAY_MAX_BODY_BYTES passes API Gateway but not Lambda: in the cloud it never reaches the forwarder's 413
# and API Gateway answers its integration error (status undocumented); the local REST API answers 413 for it.
LAMBDA_MAX_EVENT_BYTES = 6_291_456
INTERNAL_ERROR = ApiError(500, "internal_error")  # a bug of ours, never a client's mistake
# What API Gateway itself refuses before the Lambda runs (infra/api.py's gateway responses carry these codes).
BAD_REQUEST = ApiError(400, "bad_request")
FORBIDDEN = ApiError(403, "forbidden")  # no/invalid SigV4 signature or API key, IAM denies execute-api:Invoke
THROTTLED = ApiError(429, "throttled")  # stage throttle or usage-plan quota
API_ERRORS = (*API_ERRORS, INTERNAL_ERROR, BAD_REQUEST, FORBIDDEN, THROTTLED)

# The forwarder Lambda's serving-mode limits: infra/api.py sets them from the serving mode, lambda/forwarder.py
# reads them (unset: an instance endpoint's).
ENV_MAX_IMAGE_BYTES = "MAX_IMAGE_BYTES"
ENV_READ_TIMEOUT_S = "ENDPOINT_READ_TIMEOUT_S"
ENV_ATTEMPTS = "ENDPOINT_ATTEMPTS"

# --- Entry points SageMaker runs (sagemaker_program / SAGEMAKER_PROGRAM) ------------------------------
TRAINING_PROGRAM = "train.py"  # at the training source bundle's root: the shim ml/entry/train.py
# smdebug and its pins, installed by train.py only in a job that has a Debugger hook config. Not named
# requirements.txt: the training toolkit pip-installs that file in every job, tuning trials included.
DEBUGGER_REQUIREMENTS = "debugger-requirements.txt"
INFERENCE_PROGRAM = "inference.py"  # at the root of model.tar.gz's code/ (MODEL_CODE_DIR): ml/entry/inference.py


# --- Debugger save interval -----------------------------------------------------------------------------------
# smdebug's default (500 steps, the SDK rules' collection setting) saves step 0 only in a 2-5 epoch job on a few
# thousand images, and the rules compare nothing. The steps per epoch are known only inside the job (dataset size
# / batch size), so DebugHookConfig.HookParameters carries this key (ignored by smdebug itself) and ml/debugger.py
# turns it into train.save_interval / eval.save_interval before it creates the hook.
DEBUGGER_SAVES_PER_EPOCH = "saves_per_epoch"
