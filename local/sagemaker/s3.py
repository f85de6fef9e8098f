"""A local S3: s3://<bucket>/<key> is <root>/<bucket>/<key>. Training subprocesses see real directories."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote, urlparse

from local.sagemaker.errors import validation

# Path-style (https://s3.<region>.amazonaws.com/bucket/key, CDK's L2 tasks) and virtual-hosted style.
_PATH_STYLE = re.compile(r"^s3([.-][a-z0-9-]+)?\.amazonaws\.com(\.cn)?$")
_VIRTUAL_HOSTED = re.compile(r"^(?P<bucket>[a-z0-9.-]+)\.s3([.-][a-z0-9-]+)?\.amazonaws\.com(\.cn)?$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


class LocalS3:
    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def parse(uri: str) -> tuple[str, str]:
        """(bucket, key) of an s3:// or https:// S3 URI; ValidationException for anything else."""
        parsed = urlparse(uri)
        if parsed.scheme == "s3":
            bucket, key = parsed.netloc, parsed.path.lstrip("/")
        elif parsed.scheme in ("https", "http"):
            host = parsed.netloc.split(":")[0].lower()
            path = unquote(parsed.path).lstrip("/")
            if _PATH_STYLE.match(host):
                bucket, _, key = path.partition("/")
            elif m := _VIRTUAL_HOSTED.match(host):
                bucket, key = m["bucket"], path
            else:
                raise validation(f"S3 URI {uri!r} is not an Amazon S3 URL")
        else:
            raise validation(f"Invalid S3 URI {uri!r}: expected s3://bucket/key or https://s3.<region>.amazonaws.com/"
                             "bucket/key")
        if not _BUCKET.match(bucket or ""):
            raise validation(f"Invalid S3 bucket name {bucket!r} in {uri!r}")
        if ".." in Path(key).parts:
            raise validation(f"Invalid S3 key in {uri!r}")
        return bucket, key

    def normalise(self, uri: str) -> str:
        bucket, key = self.parse(uri)
        return f"s3://{bucket}/{key}"

    def path(self, uri: str) -> Path:
        bucket, key = self.parse(uri)
        return self.root / bucket / key

    def join(self, uri: str, *parts: str) -> str:
        """s3://b/prefix + ('job', 'output') -> s3://b/prefix/job/output (one slash between parts)."""
        base = self.normalise(uri).rstrip("/")
        return "/".join([base, *(p.strip("/") for p in parts if p)])

    def uri_for(self, path: Path) -> str:
        rel = Path(path).resolve().relative_to(self.root)
        bucket, *key = rel.parts
        return f"s3://{bucket}/{'/'.join(key)}"
