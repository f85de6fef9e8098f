"""`imgclf stage-weights`: put the backbone's ImageNet state dict where every job reads it (its pretrained input
channel, s3://<bucket>/<StackConfig.pretrained_key>), and tell `start` / `upload-data` when it is not there yet.

Jobs download nothing (a VPC without internet, and every trial downloading the same file): the user's machine
stages the weights once. A file is checked before upload (torch.load(weights_only=True), then its keys and shapes
against the network ml/model.py builds), so a wrong file fails here, not in every tuning trial.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

import stackfacts as facts
from cli.aws import s3_location
from cli.backend import Backend
from cli.errors import CliError, UsageError, error_code

STAGE_COMMAND = "imgclf stage-weights"


@dataclass(frozen=True)
class Target:
    bucket: str
    key: str
    backbone: str | None  # None: an older stack without the PretrainedBackbone output (stage-weights needs it)

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def target(backend: Backend) -> Target | None:
    """Where the stack's jobs read their pretrained weights; None when its hyperparameters want none."""
    uri = backend.optional_output(facts.OUTPUT_PRETRAINED_URI)
    if not uri:
        return None
    bucket, key = s3_location(uri)
    return Target(bucket, key, backend.optional_output(facts.OUTPUT_PRETRAINED_BACKBONE))


def staged(s3: Any, where: Target) -> bool | None:
    """Whether the object exists (HeadObject answers 404 without a body:
    https://docs.aws.amazon.com/AmazonS3/latest/API/API_HeadObject.html); None when S3 would not say."""
    try:
        s3.head_object(Bucket=where.bucket, Key=where.key)
        return True
    except ClientError as exc:
        if error_code(exc) in ("404", "NoSuchKey", "NotFound"):
            return False
        return None


def missing_message(where: Target) -> str:
    return (f"the pretrained weights {where.uri} are missing (every tuning trial reads them): stage them with "
            f"`{STAGE_COMMAND}` (on a machine with internet) or `{STAGE_COMMAND} FILE` (a "
            f"{where.backbone or 'backbone'} state dict)")


def _model_module() -> Any:
    from ml import model  # torch: imported only when weights are checked

    return model


def load_checked(path: Path, backbone: str) -> None:
    """Refuse, in one line, a file that is not a state dict fitting `backbone`."""
    import torch

    if not path.is_file():
        raise UsageError(f"{path} is not a file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError... for a file it cannot read
        raise UsageError(f"{path} is not a PyTorch state dict torch.load(weights_only=True) can read "
                         f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    problem = _model_module().state_dict_problem(backbone, state)
    if problem:
        raise UsageError(f"{path}: {problem}")


def build_from_torchvision(backbone: str, folder: Path) -> Path:
    """The backbone's default ImageNet weights from torchvision (downloads: the user's machine, never a job)."""
    import torch
    from torchvision import models

    path = folder / f"{backbone}.pt"
    try:
        state = models.get_model(backbone, weights="DEFAULT").state_dict()
    except (OSError, RuntimeError) as exc:  # URLError (an OSError) offline; RuntimeError for a corrupt download
        raise CliError(f"could not get {backbone}'s ImageNet weights from torchvision ({exc}): on a machine "
                       f"without internet, pass a state-dict file: `{STAGE_COMMAND} FILE`") from None
    torch.save(state, path)
    return path


def stage(backend: Backend, file: str | None, out: Any) -> Target:
    where = target(backend)
    if where is None:
        raise CliError(f"stack {backend.stack_name} asks for no pretrained weights (its `weights` hyperparameter is "
                       "not imagenet): nothing to stage")
    backbone = where.backbone or backend.output(facts.OUTPUT_PRETRAINED_BACKBONE,
                                                "to know which network the weights must fit")
    with tempfile.TemporaryDirectory(prefix="imgclf-weights-") as tmp:
        if file is None:
            out.print(f"building {backbone}'s ImageNet weights from torchvision")
            path = build_from_torchvision(backbone, Path(tmp))
        else:
            path = Path(file)
        load_checked(path, backbone)
        size = path.stat().st_size
        with path.open("rb") as body:
            backend.s3.put_object(Bucket=where.bucket, Key=where.key, Body=body)
    out.print(f"staged {size / 1e6:.1f} MB of {backbone} weights at {where.uri}")
    return where
