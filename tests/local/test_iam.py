"""local.iam on a small hand-written template: IAM's condition operators (where moto's evaluator falls short),
bucket policies (an explicit Deny wins), the S3 calls the SageMaker stand-in makes for a role (local.sagemaker.s3)
and boto3 clients that call as a role (the Lambda functions)."""

from __future__ import annotations

import copy
import json

import boto3
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from moto.iam.access_control import IAMPolicy, PermissionResult

import stackfacts as facts
from infra.definition import Resolver
from local.iam import AccessDenied, ClientAuthorizer, RolePolicies, TemplateIAM, conditions_met, function_authorizer
from local.sagemaker.s3 import LocalS3, S3Denied

ACCOUNT = facts.LOCAL_ACCOUNT
BUCKET = "project-bucket"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/exec"
BUCKET_ARN = f"arn:aws:s3:::{BUCKET}"


def _template(*, bucket_statements: list[dict] | None = None) -> dict:
    """A bucket with CDK's enforceSSL policy, an execution role that lists and reads data/ and writes out/, and a
    function whose role may invoke one endpoint."""
    bucket = {"Fn::GetAtt": ["Bucket", "Arn"]}
    return {"Resources": {
        "Bucket": {"Type": "AWS::S3::Bucket", "Properties": {"BucketName": BUCKET}},
        "BucketPolicy": {"Type": "AWS::S3::BucketPolicy", "Properties": {
            "Bucket": {"Ref": "Bucket"}, "PolicyDocument": {"Version": "2012-10-17", "Statement": [
                {"Effect": "Deny", "Principal": {"AWS": "*"}, "Action": "s3:*",
                 "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                 "Resource": [bucket, {"Fn::Join": ["", [bucket, "/*"]]}]},
                # a grant to a service principal: never one for a role
                {"Effect": "Allow", "Principal": {"Service": "logging.s3.amazonaws.com"}, "Action": "s3:PutObject",
                 "Resource": {"Fn::Join": ["", [bucket, "/*"]]}},
                *(bucket_statements or [])]}}},
        "Exec": {"Type": "AWS::IAM::Role", "Properties": {"RoleName": "exec"}},
        "ExecPolicy": {"Type": "AWS::IAM::Policy", "Properties": {"Roles": [{"Ref": "Exec"}], "PolicyDocument": {
            "Version": "2012-10-17", "Statement": [
                {"Sid": "List", "Effect": "Allow", "Action": "s3:ListBucket", "Resource": bucket,
                 "Condition": {"StringLike": {"s3:prefix": ["data/*", "out/*"]}}},
                {"Sid": "Read", "Effect": "Allow", "Action": "s3:GetObject",
                 "Resource": {"Fn::Join": ["", [bucket, "/data/*"]]}},
                {"Sid": "Write", "Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject"],
                 "Resource": {"Fn::Join": ["", [bucket, "/out/*"]]}}]}}},
        "FnRole": {"Type": "AWS::IAM::Role", "Properties": {"RoleName": "fn"}},
        "FnPolicy": {"Type": "AWS::IAM::Policy", "Properties": {"Roles": [{"Ref": "FnRole"}], "PolicyDocument": {
            "Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Action": "sagemaker:InvokeEndpoint", "Resource": {
                    "Fn::Sub": "arn:aws:sagemaker:${AWS::Region}:${AWS::AccountId}:endpoint/my-endpoint"}}]}}},
        "Fn": {"Type": "AWS::Lambda::Function", "Properties": {
            "FunctionName": "predict", "Handler": "forwarder.handler", "Role": {"Fn::GetAtt": ["FnRole", "Arn"]}}},
    }}


def _iam(template: dict | None = None) -> TemplateIAM:
    return TemplateIAM(Resolver(template or _template(), region="us-east-1", account=ACCOUNT))


# --- the evaluator -------------------------------------------------------------------------------------------------
def test_condition_operators_as_iam_defines_them():
    """reference_policies_elements_condition_operators.html: ...Like wildcards, Bool, negation true on a missing
    key, ...IfExists, any value of a list; an unknown operator is an error."""
    like = {"StringLike": {"s3:prefix": ["data/*", "out/*"]}}
    assert conditions_met(like, {"s3:prefix": "data/train/"})
    assert not conditions_met(like, {"s3:prefix": "other/"})
    assert not conditions_met(like, {})  # a key the request lacks does not match
    brackets = {"StringLike": {"s3:prefix": "data/[a]?/*"}}  # only * and ? are wildcards
    assert conditions_met(brackets, {"s3:prefix": "data/[a]b/c/d"})
    assert not conditions_met(brackets, {"s3:prefix": "data/ab/c"})
    assert conditions_met({"Bool": {"aws:SecureTransport": "false"}}, {"aws:SecureTransport": "false"})
    assert not conditions_met({"Bool": {"aws:SecureTransport": "false"}}, {"aws:SecureTransport": "true"})
    assert conditions_met({"StringNotEquals": {"aws:PrincipalAccount": ACCOUNT}}, {})
    assert not conditions_met({"StringNotEquals": {"aws:PrincipalAccount": ACCOUNT}},
                              {"aws:principalaccount": ACCOUNT})  # keys are case-insensitive
    assert conditions_met({"StringEqualsIfExists": {"iam:PassedToService": "x"}}, {})
    with pytest.raises(ValueError, match="NumericLessThan"):
        conditions_met({"NumericLessThan": {"s3:max-keys": "10"}}, {"s3:max-keys": "5"})


def test_an_unmet_condition_neither_allows_nor_denies():
    """moto's IAMPolicy ignores StringLike (so any prefix is listed) and answers DENIED for an Allow whose
    StringEquals is unmet (so a second Allow cannot apply): both would differ from AWS."""
    document = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": BUCKET_ARN,
         "Condition": {"StringLike": {"s3:prefix": "data/*"}}},
        {"Effect": "Allow", "Action": "iam:PassRole", "Resource": ROLE,
         "Condition": {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}},
        {"Effect": "Allow", "Action": "iam:PassRole", "Resource": "*"}]}
    moto = IAMPolicy(json.dumps(document))
    assert moto.is_action_permitted("s3:ListBucket", BUCKET_ARN, incoming_condition_values={
        "s3:prefix": "secret/"}) == PermissionResult.PERMITTED  # what this module does not rely on
    policies = RolePolicies(ROLE, [document])
    assert not policies.allowed("s3:ListBucket", BUCKET_ARN, {"s3:prefix": "secret/"})
    assert policies.allowed("s3:ListBucket", BUCKET_ARN, {"s3:prefix": "data/x/"})
    assert policies.allowed("iam:PassRole", ROLE, {"iam:PassedToService": "lambda.amazonaws.com"})


def test_bucket_policy_explicit_deny_wins_and_tls_is_assumed():
    deny = {"Effect": "Deny", "Principal": "*", "Action": "s3:PutObject",
            "Resource": f"{BUCKET_ARN}/out/locked/*"}
    iam = _iam(_template(bucket_statements=[deny]))
    iam.authorize(ROLE, "s3:PutObject", f"{BUCKET_ARN}/out/model.tar.gz")  # enforceSSL's Deny: not over TLS
    with pytest.raises(AccessDenied) as denied:
        iam.authorize(ROLE, "s3:PutObject", f"{BUCKET_ARN}/out/locked/model.tar.gz", session="SageMaker")
    assert denied.value.code == "AccessDenied" and denied.value.status == 403  # S3's code, not ...Exception
    assert denied.value.message == (
        f"User: arn:aws:sts::{ACCOUNT}:assumed-role/exec/SageMaker is not authorized to perform: s3:PutObject on "
        f"resource: {BUCKET_ARN}/out/locked/model.tar.gz with an explicit deny in a resource-based policy")
    # A bucket policy that names the role allows what its own policies do not; one for a service does not.
    grant = {"Effect": "Allow", "Principal": {"AWS": ROLE}, "Action": "s3:GetObject",
             "Resource": f"{BUCKET_ARN}/shared/*"}
    iam = _iam(_template(bucket_statements=[grant]))
    iam.authorize(ROLE, "s3:GetObject", f"{BUCKET_ARN}/shared/weights.pt")
    with pytest.raises(AccessDenied, match="because no identity-based policy allows the s3:PutObject action"):
        iam.authorize(ROLE, "s3:PutObject", f"{BUCKET_ARN}/logs/x")
    assert [d.action for d in iam.denied] == ["s3:PutObject"]


def test_a_role_the_template_does_not_have_is_denied():
    with pytest.raises(AccessDenied, match="assumed-role/stranger/"):
        _iam().authorize(f"arn:aws:iam::{ACCOUNT}:role/stranger", "s3:GetObject", f"{BUCKET_ARN}/data/x")


# --- the stand-in's S3 calls ---------------------------------------------------------------------------------------
@pytest.fixture
def s3(tmp_path) -> LocalS3:
    store = LocalS3(tmp_path, authorize=_iam().sagemaker_s3)
    for key in ("data/train/a.png", "data/train/b.png", "secret/x.png"):
        (tmp_path / BUCKET / key).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / BUCKET / key).write_bytes(b"x")
    return store


def test_prefix_downloads_list_with_the_prefix_and_get_every_object(s3, tmp_path):
    calls: list[tuple[str, str, dict]] = []
    iam = _iam()
    s3.authorize = lambda role, action, resource, context: (calls.append((action, resource, dict(context))),
                                                            iam.sagemaker_s3(role, action, resource, context))
    assert s3.read_prefix(f"s3://{BUCKET}/data/train/", ROLE, "Data download failed") == \
        tmp_path.resolve() / BUCKET / "data" / "train"
    assert calls == [("s3:ListBucket", BUCKET_ARN, {"s3:prefix": "data/train/"}),
                     ("s3:GetObject", f"{BUCKET_ARN}/data/train/a.png", {}),
                     ("s3:GetObject", f"{BUCKET_ARN}/data/train/b.png", {})]
    with pytest.raises(S3Denied) as denied:
        s3.read_prefix(f"s3://{BUCKET}/secret/", ROLE, "Data download failed: channel train")
    assert str(denied.value) == (
        "ClientError: Data download failed: channel train: An error occurred (AccessDenied) when calling the "
        f"ListObjectsV2 operation: User: arn:aws:sts::{ACCOUNT}:assumed-role/exec/SageMaker is not authorized to "
        f"perform: s3:ListBucket on resource: {BUCKET_ARN} because no identity-based policy allows the "
        "s3:ListBucket action")


def test_reads_and_writes_are_checked_on_the_object(s3):
    s3.read(f"https://s3.us-east-1.amazonaws.com/{BUCKET}/out/model.tar.gz", ROLE, "x")
    with pytest.raises(S3Denied, match=r"calling the GetObject operation: .* s3:GetObject on resource: "
                                       rf"{BUCKET_ARN}/secret/x.png"):
        s3.read(f"s3://{BUCKET}/secret/x.png", ROLE, "x")
    assert s3.write(f"s3://{BUCKET}/out/job/model.tar.gz", ROLE, "x").name == "model.tar.gz"
    with pytest.raises(S3Denied, match=rf"s3:PutObject on resource: {BUCKET_ARN}/data/job/model.tar.gz"):
        s3.write(f"s3://{BUCKET}/data/job/model.tar.gz", ROLE, "Please ensure that the role has access")
    # A folder written by the job: its objects' prefix.
    assert s3.write_prefix(f"s3://{BUCKET}/out/job/debug-output", ROLE, "x").is_dir()
    with pytest.raises(S3Denied, match=rf"{BUCKET_ARN}/data/job/debug-output/ "):
        s3.write_prefix(f"s3://{BUCKET}/data/job/debug-output", ROLE, "x")
    with pytest.raises(S3Denied, match="no role"):  # a model created without an execution role
        s3.read(f"s3://{BUCKET}/out/model.tar.gz", None, "x")


def test_without_an_authorizer_nothing_is_checked(tmp_path):
    s3 = LocalS3(tmp_path)
    assert s3.write(f"s3://{BUCKET}/anything", None, "x") == tmp_path.resolve() / BUCKET / "anything"


# --- clients that call as a role -----------------------------------------------------------------------------------
def _client(service: str):
    return boto3.client(service, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x",
                        endpoint_url="http://127.0.0.1:9")  # nothing listens: an allowed call fails to connect


def test_a_function_client_calls_as_the_functions_role():
    authorizer = function_authorizer(Resolver(_template(), region="us-east-1", account=ACCOUNT), "forwarder.handler")
    runtime = authorizer.install(_client("sagemaker-runtime"))
    with pytest.raises(ClientError) as denied:
        runtime.invoke_endpoint(EndpointName="Other-Endpoint", Body=b"x", ContentType="application/x-image")
    error = denied.value.response
    assert error["Error"]["Code"] == "AccessDeniedException" and error["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert error["Error"]["Message"] == (
        f"User: arn:aws:sts::{ACCOUNT}:assumed-role/fn/predict is not authorized to perform: sagemaker:InvokeEndpoint"
        f" on resource: arn:aws:sagemaker:us-east-1:{ACCOUNT}:endpoint/other-endpoint because no identity-based "
        "policy allows the sagemaker:InvokeEndpoint action")
    # The granted endpoint passes the check and goes on to the network (where nothing answers here).
    with pytest.raises(EndpointConnectionError):
        runtime.invoke_endpoint(EndpointName="my-endpoint", Body=b"x", ContentType="application/x-image")
    assert authorizer.policies.used == {"sagemaker:InvokeEndpoint"}


def test_query_protocol_services_answer_access_denied_403():
    iam = _iam()
    cloudformation = ClientAuthorizer(iam, iam.role(ROLE)).install(_client("cloudformation"))
    with pytest.raises(ClientError) as denied:
        cloudformation.describe_stacks(StackName=f"arn:aws:cloudformation:us-east-1:{ACCOUNT}:stack/s/1")
    assert denied.value.response["Error"]["Code"] == "AccessDenied"
    assert denied.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_an_operation_without_an_arn_rule_is_an_error():
    iam = _iam()
    with pytest.raises(ValueError, match="no ARN rule for sagemaker:CreateModel"):
        ClientAuthorizer(iam, iam.role(ROLE)).resources("sagemaker:CreateModel", {"ModelName": "m"})


def test_templates_are_not_modified():
    template = _template()
    before = copy.deepcopy(template)
    _iam(template).authorize(ROLE, "s3:GetObject", f"{BUCKET_ARN}/data/x")
    assert template == before
