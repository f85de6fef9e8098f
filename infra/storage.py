"""The project bucket (datasets, training artefacts, Debugger/Profiler output, data capture) and its log bucket."""

from __future__ import annotations

from typing import Any

from aws_cdk import Duration
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra import sagemaker_requests as req
from infra.common import removal
from infra.config import StackConfig


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
        self.bucket = s3.Bucket(
            self, "Bucket", **common,
            versioned=True,
            server_access_logs_bucket=self.access_logs,
            server_access_logs_prefix="project-bucket/",
            lifecycle_rules=[
                # Tensors, profiles and trial models are large and only needed while a run is investigated.
                s3.LifecycleRule(id="expire-debugger-output", prefix=req.DEBUGGER_OUTPUT, expiration=days),
                s3.LifecycleRule(id="expire-profiler-output", prefix=req.PROFILER_OUTPUT, expiration=days),
                s3.LifecycleRule(id="expire-tuning-trials", prefix=req.TUNING_OUTPUT, expiration=days),
                # Data capture grows with every request the endpoint serves.
                s3.LifecycleRule(id="expire-data-capture", prefix=req.DATA_CAPTURE,
                                 expiration=Duration.days(cfg.data_capture_retention_days)),
                s3.LifecycleRule(id="expire-checkpoints", prefix=req.CHECKPOINTS,
                                 expiration=Duration.days(cfg.checkpoint_retention_days)),
                s3.LifecycleRule(id="expire-noncurrent-versions",
                                 noncurrent_version_expiration=Duration.days(cfg.artifact_retention_days),
                                 abort_incomplete_multipart_upload_after=Duration.days(7)),
            ],
        )
