"""infra/definition.py: the one CloudFormation resolver, strict where CloudFormation would fail."""

from __future__ import annotations

import json

import pytest

from infra.definition import Resolver, definition, definition_string


def _template(definition_string: object, substitutions: dict | None = None, **extra) -> dict:
    return {"Resources": {
        "Bucket": {"Type": "AWS::S3::Bucket"},
        "Role": {"Type": "AWS::IAM::Role", "Properties": {"RoleName": "pipeline-role"}},
        "Machine": {"Type": "AWS::StepFunctions::StateMachine", "Properties": {
            "DefinitionString": definition_string,
            "DefinitionSubstitutions": substitutions if substitutions is not None else {"Bucket": {"Ref": "Bucket"}}}},
    }, **extra}


PASS = '{"StartAt":"P","States":{"P":{"Type":"Pass","Result":"%s","End":true}}}'


def test_substitutions_resolve_json_safe():
    text = definition_string(_template(PASS % "s3://${Bucket}/x"), {"Bucket": 'a"b\\c'})
    assert json.loads(text)["States"]["P"]["Result"] == 's3://a"b\\c/x'
    resolved = definition(_template(PASS % "${Role}", {"Role": {"Fn::GetAtt": ["Role", "Arn"]}}),
                          region="eu-west-1", account="111122223333")
    assert resolved["States"]["P"]["Result"] == "arn:aws:iam::111122223333:role/pipeline-role"


def test_an_unknown_placeholder_is_an_error():
    with pytest.raises(ValueError, match=r"without a substitution: \['Missing'\]"):
        definition(_template(PASS % "${Bucket}/${Missing}"))
    with pytest.raises(ValueError, match=r"without a substitution: \['Not-a-key'\]"):
        definition(_template(PASS % "${Not-a-key}"))


@pytest.mark.parametrize("expression", [
    {"Fn::If": ["IsProd", "a", "b"]},
    {"Fn::ImportValue": "SharedBucket"},
    {"Fn::Base64": "x"},
    {"Fn::Join": ["", [{"Fn::GetAZs": ""}]]},
])
def test_an_unsupported_intrinsic_is_an_error(expression):
    with pytest.raises(ValueError, match=r"unsupported intrinsic Fn::"):
        definition(_template(PASS % "${Value}", {"Value": expression}))


@pytest.mark.parametrize("expression, message", [
    ({"Ref": "Nowhere"}, "'Nowhere', which is no parameter"),
    ({"Fn::Sub": "s3://${Nowhere}/x"}, "'Nowhere', which is no parameter"),
    ({"Fn::GetAtt": ["Bucket", "Madeup"]}, "attribute 'Madeup'"),
    ({"Fn::FindInMap": ["Images", "eu-west-1", "training"]}, "no Images/eu-west-1/training"),
])
def test_a_reference_to_nothing_is_an_error(expression, message):
    with pytest.raises(ValueError, match=message):
        definition(_template(PASS % "${Value}", {"Value": expression}))


def test_intrinsics_resolve_as_cloudformation_does():
    resolver = Resolver(_template(PASS % "x", Parameters={"Stage": {"Type": "String", "Default": "prod"}}),
                        region="eu-west-1", account="111122223333", stack_name="Demo")
    assert resolver({"Fn::Sub": ["${AWS::Region}/${Stage}/${Bucket}/${X}/${!Literal}", {"X": "y"}]}) == \
        "eu-west-1/prod/demo-bucket/y/${Literal}"
    assert resolver({"Fn::Join": ["-", ["a", {"Ref": "AWS::NoValue"}, "b"]]}) == "a-b"
    assert resolver({"Fn::Select": [1, {"Fn::Split": [",", "a,b,c"]}]}) == "b"
    assert resolver({"Ref": "Machine"}) == "arn:aws:states:eu-west-1:111122223333:stateMachine:Demo-Machine"
    assert resolver({"Fn::GetAtt": "Bucket.Arn"}) == "arn:aws:s3:::demo-bucket"
    assert Resolver(_template(PASS % "x"), refs={"Bucket": "mine"})({"Ref": "Bucket"}) == "mine"
