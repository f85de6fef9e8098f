"""upload-data: check an ImageFolder layout (train/valid/test, one folder per class), then sync it to S3."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from cli.aws import collect, join_key
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


def _hidden(path: Path) -> bool:
    return path.name.startswith(".") or path.name in ("Thumbs.db", "desktop.ini")


def check_layout(root: Path, ignore_non_images: bool = False) -> Layout:
    """Every way the layout can be wrong, at once; train.py would refuse the same things one at a time."""
    layout = Layout(root)
    if not root.is_dir():
        layout.problems.append(f"{root} is not a folder")
        return layout
    for split in contract.CHANNELS:
        folder = root / split
        if not folder.is_dir():
            layout.problems.append(f"missing split: {split}/ (expected {'/, '.join(contract.CHANNELS)}/ in {root})")
            continue
        classes = sorted(d.name for d in folder.iterdir() if d.is_dir() and not _hidden(d))
        layout.classes[split] = classes
        if not classes:
            layout.problems.append(f"{split}/ has no class folders (one sub-folder of images per class)")
        for stray in sorted(p for p in folder.iterdir() if p.is_file() and not _hidden(p)):
            layout.non_images.append(stray.relative_to(root))
        count = 0
        for name in classes:
            images = 0
            for path in sorted((folder / name).rglob("*")):
                if not path.is_file() or any(part.startswith(".") for part in path.relative_to(root).parts) \
                        or _hidden(path):
                    continue
                if path.suffix.lower() in contract.IMAGE_EXTENSIONS:
                    layout.files.append(path.relative_to(root))
                    images += 1
                else:
                    layout.non_images.append(path.relative_to(root))
            if images == 0:
                layout.problems.append(f"empty class: {split}/{name}/ holds no images "
                                       f"({', '.join(contract.IMAGE_EXTENSIONS)})")
            count += images
        layout.counts[split] = count
    train = set(layout.classes.get(contract.TRAIN, []))
    for split in (contract.VALID, contract.TEST):
        if train and (extra := sorted(set(layout.classes.get(split, [])) - train)):
            layout.problems.append(f"{split}/ has classes that train/ does not: {', '.join(extra[:5])}"
                                   + (f" and {len(extra) - 5} more" if len(extra) > 5 else ""))
    if layout.non_images and not ignore_non_images:
        shown = ", ".join(str(p) for p in layout.non_images[:3])
        more = f" and {len(layout.non_images) - 3} more" if len(layout.non_images) > 3 else ""
        layout.problems.append(f"{len(layout.non_images)} non-image file(s): {shown}{more} "
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
