"""The project bucket (datasets, training artefacts, Debugger/Profiler output, data capture) and its log bucket."""

from __future__ import annotations

from typing import Any

from aws_cdk import Duration
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra import sagemaker_requests as req
from infra.common import removal
from infra.config import StackConfig

# Days an expired (or overwritten) object of an expiring prefix stays as a noncurrent version.
EXPIRED_NONCURRENT_DAYS = 1


class Storage(Construct):
    def __init__(self, scope: Construct, cid: str, *, cfg: StackConfig) -> None:
        super().__init__(scope, cid)
        destroy = cfg.removal_policy == "destroy"
        common: dict[str, Any] = {
            "encryption": s3.BucketEncryption.S3_MANAGED,  # server access logs cannot be written to SSE-KMS
            "block_public_access": s3.BlockPublicAccess.BLOCK_ALL,
            "enforce_ssl": True,
            "object_ownership": s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            "removal_policy": removal(cfg),
            "auto_delete_objects": destroy,
        }
        self.access_logs = s3.Bucket(
            self, "AccessLogs", **common,
            lifecycle_rules=[s3.LifecycleRule(id="expire-access-logs", expiration=Duration.days(365))])
        days = Duration.days(cfg.artifact_retention_days)
        # The bucket is versioned: an Expiration only puts a delete marker over the object, which stays billed as a
        # noncurrent version until a NoncurrentVersionExpiration removes it, and a marker left alone is removed only
        # by ExpiredObjectDeleteMarker (which S3 refuses in a rule with Expiration days):
        # https://docs.aws.amazon.com/AmazonS3/latest/userguide/lifecycle-expire-general-considerations.html
        # So every expiring prefix also drops its noncurrent versions (overwritten checkpoints, expired captures)
        # after a day; where rules overlap S3 applies the shortest expiration
        # (https://docs.aws.amazon.com/AmazonS3/latest/userguide/lifecycle-conflicts.html).

        def expire(rule_id: str, prefix: str, after: Duration) -> s3.LifecycleRule:
            return s3.LifecycleRule(id=rule_id, prefix=prefix, expiration=after,
                                    noncurrent_version_expiration=Duration.days(EXPIRED_NONCURRENT_DAYS))

        self.bucket = s3.Bucket(
            self, "Bucket", **common,
            versioned=True,
            server_access_logs_bucket=self.access_logs,
            server_access_logs_prefix="project-bucket/",
            lifecycle_rules=[
                # Tensors, profiles and trial models are large and only needed while a run is investigated.
                expire("expire-debugger-output", req.DEBUGGER_OUTPUT, days),
                expire("expire-profiler-output", req.PROFILER_OUTPUT, days),
                expire("expire-tuning-trials", req.TUNING_OUTPUT, days),
                # Data capture grows with every request the endpoint serves.
                expire("expire-data-capture", req.DATA_CAPTURE, Duration.days(cfg.data_capture_retention_days)),
                expire("expire-checkpoints", req.CHECKPOINTS, Duration.days(cfg.checkpoint_retention_days)),
                s3.LifecycleRule(id="expire-noncurrent-versions",
                                 noncurrent_version_expiration=Duration.days(cfg.artifact_retention_days),
                                 abort_incomplete_multipart_upload_after=Duration.days(7)),
                s3.LifecycleRule(id="remove-expired-delete-markers", expired_object_delete_marker=True),
            ],
        )
