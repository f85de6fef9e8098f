"""awsshapes: the one home of botocore's models, JSON conversion and S3 URIs (local mode, the CLI and the tests use
it; these cases are where the two S3 URI parsers it replaced differed)."""

from __future__ import annotations

import datetime as dt

import pytest

import awsshapes
from awsshapes import S3UriError, parse_s3_uri


@pytest.mark.parametrize("uri", ["s3://bucket-1/a/b.tar.gz", "https://s3.us-west-2.amazonaws.com/bucket-1/a/b.tar.gz",
                                 "https://bucket-1.s3.eu-west-1.amazonaws.com/a/b.tar.gz",
                                 "https://s3.amazonaws.com/bucket-1/a/b.tar.gz",
                                 "https://bucket-1.s3.cn-north-1.amazonaws.com.cn/a/b.tar.gz"])
def test_s3_uri_forms(uri):
    assert parse_s3_uri(uri) == parse_s3_uri(uri, strict=True) == ("bucket-1", "a/b.tar.gz")


@pytest.mark.parametrize("uri", ["/local/path", "https://example.com/b/k", "s3:///k", "ftp://b/k",
                                 "https://ec2.amazonaws.com/b/k"])  # an AWS host, but not S3's
def test_not_s3(uri):
    with pytest.raises(S3UriError, match="not an S3 location"):
        parse_s3_uri(uri)


@pytest.mark.parametrize("uri", ["s3://UPPER/k", "s3://b/k", "s3://b-1/../escape"])
def test_strict_refuses_what_s3_would(uri):
    parse_s3_uri(uri)  # a reader takes what a response names
    with pytest.raises(S3UriError):
        parse_s3_uri(uri, strict=True)  # the stand-in refuses what S3 would


def test_json_round_trip_along_the_output_shape():
    at = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    response = {"TrainingJobName": "j", "CreationTime": at, "ResponseMetadata": {"HTTPStatusCode": 200}}
    recorded = awsshapes.jsonable(response)
    assert recorded == {"TrainingJobName": "j", "CreationTime": at.isoformat()}
    shape = awsshapes.operation_model("sagemaker", "describe_training_job").output_shape
    assert awsshapes.revive(recorded, shape)["CreationTime"] == at
    assert awsshapes.to_json({"t": at}, timestamps="millis") == {"t": int(at.timestamp() * 1000)}
    assert awsshapes.to_json(dt.datetime(2026, 1, 2)) == "2026-01-02T00:00:00+00:00"  # naive is UTC
    with pytest.raises(TypeError):
        awsshapes.jsonable({"Body": b"\x00"})


def test_request_and_output_checks():
    report, errors = awsshapes.request_problems("sagemaker", "DescribeTrainingJob", {})
    assert report and "TrainingJobName" in report and errors == []
    report, errors = awsshapes.request_problems("sagemaker", "DescribeTrainingJob", {"TrainingJobName": "bad name!"})
    assert report is None and "regular expression pattern" in errors[0] and "'trainingJobName'" in errors[0]
    assert awsshapes.output_problems("sagemaker", "describe_training_job", {"TrainingJobName": "j"})  # required ones
    assert awsshapes.operation_name("application-autoscaling", "describe_scalable_targets") == \
        awsshapes.operation_name("applicationautoscaling", "DescribeScalableTargets") == "DescribeScalableTargets"


def test_documented_only_constraints_are_refused_like_sagemaker():
    """Review 4 R2/R6: limits SageMaker states in a member's documentation, not in botocore's shape (the stand-in
    refuses them through request_problems, as SageMaker does)."""
    report, errors = awsshapes.request_problems("sagemaker", "UpdateEndpoint", {
        "EndpointName": "e", "EndpointConfigName": "c", "DeploymentConfig": {"BlueGreenUpdatePolicy": {
            "TrafficRoutingConfiguration": {"Type": "LINEAR", "WaitIntervalInSeconds": 300,
                                            "LinearStepSize": {"Type": "CAPACITY_PERCENT", "Value": 5}},
            "TerminationWaitInSeconds": 300, "MaximumExecutionTimeoutInSeconds": 1800}}})
    assert report is None
    assert any("LinearStepSize" in e and "10-50%" in e for e in errors)
    assert any("MaximumExecutionTimeoutInSeconds (1800)" in e for e in errors)  # 20 bakes of 300 s
    _, errors = awsshapes.request_problems("sagemaker", "UpdateEndpoint", {
        "EndpointName": "e", "EndpointConfigName": "c", "DeploymentConfig": {"BlueGreenUpdatePolicy": {
            "TrafficRoutingConfiguration": {"Type": "CANARY", "WaitIntervalInSeconds": 300,
                                            "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 50}},
            "TerminationWaitInSeconds": 300, "MaximumExecutionTimeoutInSeconds": 1800}}})
    assert errors == []
    params = {"ProfilingIntervalInMilliseconds": 300}
    assert awsshapes.documented_errors("ProfilerConfig", params)
    assert not awsshapes.documented_errors("ProfilerConfig", {"ProfilingIntervalInMilliseconds": 60000})
