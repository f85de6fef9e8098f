"""The project bucket and its access-log bucket."""

from __future__ import annotations

from aws_cdk.assertions import Match

from infra import sagemaker_requests as req


def _buckets(synth):
    buckets = synth.resources("AWS::S3::Bucket")
    (project,) = [b for b in buckets.values() if "LoggingConfiguration" in b["Properties"]]
    (logs,) = [b for b in buckets.values() if "LoggingConfiguration" not in b["Properties"]]
    return project, logs


def test_both_buckets_are_private_encrypted_and_ssl_only(cloud):
    t = cloud.assertions()
    t.resource_count_is("AWS::S3::Bucket", 2)
    t.all_resources_properties("AWS::S3::Bucket", {
        "BucketEncryption": {"ServerSideEncryptionConfiguration": [
            {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]},
        "PublicAccessBlockConfiguration": {"BlockPublicAcls": True, "BlockPublicPolicy": True,
                                           "IgnorePublicAcls": True, "RestrictPublicBuckets": True},
        "OwnershipControls": {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]},
    })
    for policy in cloud.resources("AWS::S3::BucketPolicy").values():
        statements = policy["Properties"]["PolicyDocument"]["Statement"]
        assert any(s["Effect"] == "Deny" and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
                   for s in statements)


def test_project_bucket_versioned_logged_and_expiring(cloud):
    project, logs = _buckets(cloud)
    props = project["Properties"]
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    assert props["LoggingConfiguration"]["LogFilePrefix"] == "project-bucket/"
    rules = {r["Id"]: r for r in props["LifecycleConfiguration"]["Rules"]}
    for prefix in (req.DEBUGGER_OUTPUT, req.PROFILER_OUTPUT, req.TUNING_OUTPUT, req.CHECKPOINTS):
        (rule,) = [r for r in rules.values() if r.get("Prefix") == prefix]
        assert rule["Status"] == "Enabled" and rule["ExpirationInDays"] >= 1
    assert rules["expire-checkpoints"]["ExpirationInDays"] == cloud.config.checkpoint_retention_days
    # Endpoint data capture would otherwise grow with every request served.
    assert rules["expire-data-capture"]["Prefix"] == req.DATA_CAPTURE
    assert rules["expire-data-capture"]["ExpirationInDays"] == cloud.config.data_capture_retention_days == 90
    assert rules["expire-noncurrent-versions"]["NoncurrentVersionExpiration"]["NoncurrentDays"] == 30
    assert logs["Properties"]["LifecycleConfiguration"]["Rules"][0]["ExpirationInDays"] == 365
    # The log bucket lets the S3 logging service write (bucket policy, not ACLs).
    logging_write = Match.object_like({"Principal": {"Service": "logging.s3.amazonaws.com"}, "Action": "s3:PutObject"})
    cloud.assertions().has_resource_properties(
        "AWS::S3::BucketPolicy", {"PolicyDocument": {"Statement": Match.array_with([logging_write])}})


def test_removal_policy_is_a_context_choice(cloud, variant):
    for bucket in cloud.resources("AWS::S3::Bucket").values():
        assert bucket["DeletionPolicy"] == "Retain" and bucket["UpdateReplacePolicy"] == "Retain"
    assert not cloud.resources("Custom::S3AutoDeleteObjects")
    for bucket in variant.resources("AWS::S3::Bucket").values():
        assert bucket["DeletionPolicy"] == "Delete"
    assert len(variant.resources("Custom::S3AutoDeleteObjects")) == 2


def test_data_capture_expiry_is_configurable(variant):
    project, _ = _buckets(variant)
    rules = {r["Id"]: r for r in project["Properties"]["LifecycleConfiguration"]["Rules"]}
    assert rules["expire-data-capture"]["ExpirationInDays"] == variant.config.data_capture_retention_days == 14


def test_versioned_expiry_removes_what_it_expires(any_synth):
    """Review 4 R5: on a versioned bucket an Expiration leaves a noncurrent version (billed) and a delete marker
    (lifecycle-expire-general-considerations.html). Every expiring rule of every versioned bucket also expires
    its noncurrent versions, and one rule removes expired delete markers (not allowed beside Expiration days)."""
    from infra.storage import EXPIRED_NONCURRENT_DAYS

    versioned = [b["Properties"] for b in any_synth.resources("AWS::S3::Bucket").values()
                 if b["Properties"].get("VersioningConfiguration", {}).get("Status") == "Enabled"]
    assert versioned
    for props in versioned:
        rules = props["LifecycleConfiguration"]["Rules"]
        expiring = [r for r in rules if "ExpirationInDays" in r]
        assert expiring
        for rule in expiring:
            assert rule["NoncurrentVersionExpiration"]["NoncurrentDays"] == EXPIRED_NONCURRENT_DAYS, rule["Id"]
        (markers,) = [r for r in rules if r.get("ExpiredObjectDeleteMarker")]
        assert "ExpirationInDays" not in markers and "ExpirationDate" not in markers and "Prefix" not in markers
