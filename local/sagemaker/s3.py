"""A local S3: s3://<bucket>/<key> is <root>/<bucket>/<key>. Training subprocesses see real directories.

The one place the stand-in touches S3 on a role's behalf: `read`, `read_prefix`, `write` and `write_prefix` take the
role SageMaker would use (a job's RoleArn, a model's ExecutionRoleArn) and, when the stand-in enforces IAM
(`authorize`, local.iam.TemplateIAM), authorize each S3 call first with the ARNs AWS authorizes
(https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazons3.html#amazons3-resources-for-iam-policies):
GetObject/PutObject on the object (arn:aws:s3:::bucket/key), ListBucket on the bucket (arn:aws:s3:::bucket) with
the s3:prefix condition key set to the listed prefix (#amazons3-policy-keys). A denial raises S3Denied, whose text
is the FailureReason SageMaker reports ("ClientError: ... An error occurred (AccessDenied) when calling the GetObject
operation: User: ... is not authorized to perform: s3:GetObject on resource: ...").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from awsshapes import S3UriError, parse_s3_uri
from local.sagemaker.errors import SageMakerError, validation

# authorize(role ARN, IAM action, resource ARN, request context): raises a SageMakerError (local.iam.AccessDenied).
S3Authorizer = Callable[[str, str, str, Mapping[str, str]], None]
# S3's API operation per IAM action checked here (HeadObject/GetObject both need s3:GetObject).
_OPERATIONS = {"s3:GetObject": "GetObject", "s3:PutObject": "PutObject", "s3:ListBucket": "ListObjectsV2"}


class S3Denied(Exception):
    """A transfer the role may not make; str() is the FailureReason SageMaker reports for it."""

    def __init__(self, purpose: str, denial: SageMakerError) -> None:
        super().__init__(f"ClientError: {purpose}: {denial}")
        self.denial = denial


class LocalS3:
    def __init__(self, root: Path, authorize: S3Authorizer | None = None, partition: str = "aws") -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.authorize = authorize  # None: nothing is checked (a stand-in without a template's IAM)
        self.partition = partition

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

    # --- S3 calls on a role's behalf (IAM enforced when `authorize` is set) -------------------------------------
    def _check(self, role: str | None, action: str, bucket: str, key: str | None, purpose: str,
               context: Mapping[str, str] | None = None) -> None:
        if self.authorize is None:
            return
        resource = f"arn:{self.partition}:s3:::{bucket}" + ("" if key is None else f"/{key}")
        try:
            if role is None:
                raise SageMakerError("AccessDenied", f"no role to perform {action} on resource: {resource}",
                                     _OPERATIONS[action], 403)
            self.authorize(role, action, resource, context or {})
        except SageMakerError as denial:
            raise S3Denied(purpose, denial.with_operation(_OPERATIONS[action])) from None

    def read(self, uri: str, role: str | None, purpose: str) -> Path:
        """GetObject of one object (a source bundle, a model.tar.gz): its local path."""
        bucket, key = self.parse(uri)
        self._check(role, "s3:GetObject", bucket, key, purpose)
        return self.root / bucket / key

    def read_prefix(self, uri: str, role: str | None, purpose: str) -> Path:
        """A prefix download as SageMaker makes it (S3DataType S3Prefix, checkpoint restore): ListObjectsV2 with
        Prefix=<key>, then GetObject of every object listed. Its local path (a folder or one file)."""
        bucket, key = self.parse(uri)
        self._check(role, "s3:ListBucket", bucket, None, purpose, {"s3:prefix": key})
        local = self.root / bucket / key
        found = [local] if local.is_file() else sorted(p for p in local.rglob("*") if p.is_file()) \
            if local.is_dir() else []
        for path in found:
            self._check(role, "s3:GetObject", bucket, path.relative_to(self.root / bucket).as_posix(), purpose)
        return local

    def write(self, uri: str, role: str | None, purpose: str) -> Path:
        """PutObject of one object (model.tar.gz, a data-capture file): its local path (the caller writes it)."""
        bucket, key = self.parse(uri)
        self._check(role, "s3:PutObject", bucket, key, purpose)
        return self.root / bucket / key

    def write_prefix(self, uri: str, role: str | None, purpose: str) -> Path:
        """The folder a job writes objects under (checkpoints, Debugger tensors, profiler samples, rule output):
        their names are not known before they are written, so PutObject is checked on "<prefix>/", which every
        grant by key prefix covers as it covers them. Made; its local path."""
        bucket, key = self.parse(uri)
        self._check(role, "s3:PutObject", bucket, key.rstrip("/") + "/", purpose)
        path = self.root / bucket / key
        path.mkdir(parents=True, exist_ok=True)
        return path
