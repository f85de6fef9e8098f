"""A local S3: s3://<bucket>/<key> is <root>/<bucket>/<key>. Training subprocesses see real directories."""

from __future__ import annotations

from pathlib import Path

from awsshapes import S3UriError, parse_s3_uri
from local.sagemaker.errors import validation


class LocalS3:
    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def parse(uri: str) -> tuple[str, str]:
        """(bucket, key) of an s3:// or https:// S3 URI; ValidationException for anything else."""
        try:
            return parse_s3_uri(uri, strict=True)
        except S3UriError as exc:
            raise validation(f"Invalid S3 URI {uri!r}: {exc}") from None

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
