"""upload-data: check an ImageFolder layout (train/valid/test, one folder per class), then sync it to S3."""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError
from PIL import Image

from awsshapes import collect, join_key
from cli.errors import error_code
from ml import contract

MULTIPART_THRESHOLD = 8 * 1024 * 1024  # boto3's default: below it an object's ETag is its MD5


@dataclass
class Layout:
    root: Path
    files: list[Path] = field(default_factory=list)  # images to upload, relative to root
    classes: dict[str, list[str]] = field(default_factory=dict)  # split -> class names
    counts: dict[str, int] = field(default_factory=dict)  # split -> images
    problems: list[str] = field(default_factory=list)
    non_images: list[Path] = field(default_factory=list)
    unreadable: list[tuple[Path, str]] = field(default_factory=list)  # named as images, but empty or not images
    outside: list[Path] = field(default_factory=list)  # symbolic links that lead out of the dataset folder


def printable(text: str | Path) -> str:
    """A file name as a terminal can show it: control characters (escape sequences, newlines) escaped."""
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in str(text))


def _listed(paths: list, limit: int = 3) -> str:
    shown = ", ".join(printable(p) for p in paths[:limit])
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def _hidden(path: Path) -> bool:
    return path.name.startswith(".") or path.name in ("Thumbs.db", "desktop.ini")


def image_problem(path: Path) -> str | None:
    """Why a file named as an image is not one (empty, or not a readable raster), or None. Cheap: Pillow reads the
    header, and verify() checks the structure without decoding the pixels."""
    try:
        if path.stat().st_size == 0:
            return "empty"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path, formats=contract.IMAGE_FORMATS) as img:
                img.verify()
    except Exception:  # Pillow's plugins raise many kinds on a broken file; any means "not an image"
        return "not an image"
    return None


def check_layout(root: Path, ignore_non_images: bool = False) -> Layout:
    """Every way the layout can be wrong, at once; train.py would refuse the same things one at a time.

    The one check of a dataset before it is used (upload-data, and the demo before it trains).
    """
    layout = Layout(root)
    if not root.is_dir():
        layout.problems.append(f"{printable(root)} is not a folder")
        return layout
    real_root = root.resolve()

    def inside(path: Path) -> bool:
        if path.resolve().is_relative_to(real_root):
            return True
        layout.outside.append(path.relative_to(root))
        return False

    for split in contract.CHANNELS:
        folder = root / split
        if not folder.is_dir():
            layout.problems.append(f"missing split: {split}/ (expected {'/, '.join(contract.CHANNELS)}/ in "
                                   f"{printable(root)})")
            continue
        if not inside(folder):
            continue
        class_dirs = [d for d in sorted(folder.iterdir()) if d.is_dir() and not _hidden(d) and inside(d)]
        classes = [d.name for d in class_dirs]
        layout.classes[split] = classes
        if not classes:
            layout.problems.append(f"{split}/ has no class folders (one sub-folder of images per class)")
        for stray in sorted(p for p in folder.iterdir() if p.is_file() and not _hidden(p)):
            if inside(stray):
                layout.non_images.append(stray.relative_to(root))
        count = 0
        for class_dir in class_dirs:
            images = 0
            for path in sorted(class_dir.rglob("*")):
                if not path.is_file() or any(part.startswith(".") for part in path.relative_to(root).parts) \
                        or _hidden(path) or not inside(path):
                    continue
                if path.suffix.lower() not in contract.IMAGE_EXTENSIONS:
                    layout.non_images.append(path.relative_to(root))
                elif why := image_problem(path):
                    layout.unreadable.append((path.relative_to(root), why))
                else:
                    layout.files.append(path.relative_to(root))
                    images += 1
            if images == 0:
                layout.problems.append(f"empty class: {split}/{printable(class_dir.name)}/ holds no images "
                                       f"({', '.join(contract.IMAGE_EXTENSIONS)})")
            count += images
        layout.counts[split] = count
    train = set(layout.classes.get(contract.TRAIN, []))
    for split in (contract.VALID, contract.TEST):
        if not train or split not in layout.classes:
            continue
        if extra := sorted(set(layout.classes[split]) - train):
            layout.problems.append(f"{split}/ has classes that train/ does not: {_listed(extra, 5)}")
        if missing := sorted(train - set(layout.classes[split])):
            # Nothing would measure these classes: their accuracy would silently count as perfect or absent.
            layout.problems.append(f"{split}/ lacks classes that train/ has: {_listed(missing, 5)}")
    if layout.outside:
        layout.problems.append(f"{len(layout.outside)} symbolic link(s) leading outside {printable(root)}: "
                               f"{_listed(layout.outside)} (copy the files in instead)")
    if layout.unreadable and not ignore_non_images:
        layout.problems.append(f"{len(layout.unreadable)} file(s) named as images that are not: "
                               f"{_listed([f'{p} ({why})' for p, why in layout.unreadable])} "
                               "(remove them or pass --ignore-non-images)")
    if layout.non_images and not ignore_non_images:
        layout.problems.append(f"{len(layout.non_images)} non-image file(s): {_listed(layout.non_images)} "
                               "(remove them or pass --ignore-non-images)")
    return layout


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def unchanged(path: Path, remote: dict | None) -> bool:
    """Same size, and same MD5 where the ETag is one (single-part uploads)."""
    if remote is None or remote.get("Size") != path.stat().st_size:
        return False
    etag = str(remote.get("ETag", "")).strip('"')
    return "-" in etag or not etag or etag == _md5(path)


@dataclass
class SyncPlan:
    bucket: str
    prefix: str
    uploads: list[tuple[Path, str]]  # (local path, key)
    unchanged: int
    bytes: int


def plan_sync(s3: Any, layout: Layout, bucket: str, prefix: str, bucket_may_be_new: bool = False) -> SyncPlan:
    try:
        existing = {o["Key"]: o for o in collect(s3, "s3", "list_objects_v2", Bucket=bucket,
                                                 Prefix=prefix.rstrip("/") + "/" if prefix else "")["Contents"]}
    except ClientError as exc:
        if not (bucket_may_be_new and error_code(exc) == "NoSuchBucket"):
            raise
        existing = {}  # a local run's bucket folder appears with its first upload
    uploads, same = [], 0
    for rel in layout.files:
        key = join_key(prefix, rel.as_posix())
        path = layout.root / rel
        if unchanged(path, existing.get(key)):
            same += 1
        else:
            uploads.append((path, key))
    return SyncPlan(bucket, prefix, uploads, same, sum(p.stat().st_size for p, _ in uploads))


def upload(s3: Any, plan: SyncPlan, on_bytes: Callable[[int], Any] | None = None,
           on_file: Callable[[Path], Any] | None = None, jobs: int = 1) -> None:
    """Upload the plan's files, `jobs` at a time (boto3 clients are thread-safe; small files are latency-bound)."""
    def one(item: tuple[Path, str]) -> Path:
        path, key = item
        s3.upload_file(str(path), plan.bucket, key, ExtraArgs={"ContentType": _content_type(path)},
                       Callback=on_bytes)
        return path

    if jobs <= 1:
        done = map(one, plan.uploads)
        for path in done:
            if on_file:
                on_file(path)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for path in pool.map(one, plan.uploads):  # the first failure surfaces here, in plan order
            if on_file:
                on_file(path)


def _content_type(path: Path) -> str:
    suffix = path.suffix.lower().lstrip(".")
    fmt = {"jpg": "JPEG", "tif": "TIFF"}.get(suffix, suffix.upper())
    return contract.MEDIA_TYPE_BY_FORMAT.get(fmt, "application/octet-stream")
