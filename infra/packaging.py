"""Code packages built at synth time, byte-for-byte reproducible, so asset hashes change only with the code.

- sourcedir.tar.gz: the training source (`sagemaker_submit_directory`): train.py (the entry shim) and the `ml`
  package. The training toolkit extracts a gzipped tar, which a CDK directory asset (a zip) is not; entries are
  sorted, owners and mtimes fixed, gzip header without name or time.
- the forwarder Lambda's bundle: lambda/*.py plus ml/__init__.py and ml/contract.py, as a directory that CDK
  zips (no docker bundling).
"""

from __future__ import annotations

import gzip
import io
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

from ml import contract

ROOT = Path(__file__).resolve().parent.parent
ML_DIR = ROOT / "ml"
LAMBDA_DIR = ROOT / "lambda"
FIXED_MTIME = 315532800  # 1980-01-01, the zip epoch: old enough to be obviously synthetic


def training_sources(ml_dir: Path = ML_DIR) -> dict[str, Path]:
    """Bundle path -> source file: the entry shim at the root (contract.TRAINING_PROGRAM), the `ml` package's
    modules under ml/, and smdebug's requirements file beside them.

    No `requirements.txt`: the training toolkit pip-installs that file before the entry point of every job
    (sagemaker-training's entry_point.install -> modules.install_requirements), so each tuning trial would
    install smdebug and downgrade protobuf for nothing. train.py installs contract.DEBUGGER_REQUIREMENTS
    itself, only in the job SageMaker gave a Debugger hook config.
    """
    package, entry = contract.PACKAGE, contract.ENTRY_DIR
    files = {contract.TRAINING_PROGRAM: ml_dir / entry / contract.TRAINING_PROGRAM}
    files.update({f"{package}/{p.name}": p for p in sorted(ml_dir.glob("*.py")) if p.is_file()})
    # The model's code/inference.py: train.py copies this shim from its own package into every model it saves.
    files[f"{package}/{entry}/{contract.INFERENCE_PROGRAM}"] = ml_dir / entry / contract.INFERENCE_PROGRAM
    requirements = ml_dir / contract.DEBUGGER_REQUIREMENTS
    if requirements.is_file():
        files[f"{package}/{contract.DEBUGGER_REQUIREMENTS}"] = requirements
    return files


def tarball_bytes(files: dict[str, Path]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name in sorted(files):
            data = files[name].read_bytes()
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), FIXED_MTIME, 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=9) as gz:
        gz.write(raw.getvalue())
    return out.getvalue()


def _write_if_changed(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_file() and path.read_bytes() == data:
        return path
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)  # concurrent synths see either the old or the new file, never half of one
    return path


def build_sourcedir(build_dir: Path, ml_dir: Path = ML_DIR) -> Path:
    return _write_if_changed(build_dir / "sourcedir.tar.gz", tarball_bytes(training_sources(ml_dir)))


def forwarder_files(lambda_dir: Path = LAMBDA_DIR, ml_dir: Path = ML_DIR) -> dict[str, Path]:
    """Bundle path -> source file."""
    files = {p.name: p for p in sorted(lambda_dir.glob("*.py")) if p.is_file()}
    files.update({f"ml/{name}": ml_dir / name for name in ("__init__.py", "contract.py")})
    return files


def build_forwarder(build_dir: Path, lambda_dir: Path = LAMBDA_DIR, ml_dir: Path = ML_DIR) -> Path:
    """A fresh directory holding exactly the bundle (stale files from an earlier synth would leak in)."""
    target = build_dir / "forwarder"
    staging = Path(tempfile.mkdtemp(dir=build_dir, prefix=".forwarder."))
    for name, source in forwarder_files(lambda_dir, ml_dir).items():
        dest = staging / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(source.read_bytes())
        os.utime(dest, (FIXED_MTIME, FIXED_MTIME))
    shutil.rmtree(target, ignore_errors=True)
    os.replace(staging, target)
    return target
