"""Least privilege: no managed *FullAccess, SageMaker scoped to the prefix, PassRole to one role."""

from __future__ import annotations

import json

SAGEMAKER_ROLE = "RolesSageMakerExecution"
STATE_MACHINE_ROLE = "RolesStateMachine"


def _statements(synth, role_prefix: str) -> list[dict]:
    out = []
    for policy in synth.resources("AWS::IAM::Policy").values():
        roles = [r["Ref"] for r in policy["Properties"]["Roles"]]
        if any(r.startswith(role_prefix) for r in roles):
            out.extend(policy["Properties"]["PolicyDocument"]["Statement"])
    return out


def _by_sid(statements) -> dict[str, dict]:
    return {s["Sid"]: s for s in statements if "Sid" in s}


def _actions(statement) -> list[str]:
    a = statement["Action"]
    return a if isinstance(a, list) else [a]


def _resources(statement) -> list:
    r = statement["Resource"]
    return r if isinstance(r, list) else [r]


def test_no_full_access_and_no_action_wildcards(any_synth):
    text = json.dumps(any_synth.template)
    assert "FullAccess" not in text
    for policy in any_synth.resources("AWS::IAM::Policy").values():
        for s in policy["Properties"]["PolicyDocument"]["Statement"]:
            for action in _actions(s):
                assert not action.endswith("*"), (action, s)
    managed = {lid: json.dumps(role["Properties"]["ManagedPolicyArns"])
               for lid, role in any_synth.resources("AWS::IAM::Role").items()
               if "ManagedPolicyArns" in role["Properties"]}
    for lid, arns in managed.items():
        if lid.startswith("CustomS3AutoDeleteObjects"):  # CDK's own provider, removal_policy "destroy" only
            assert "AWSLambdaBasicExecutionRole" in arns and any_synth.config.removal_policy == "destroy"
        elif lid.startswith("TeardownProviderframework"):  # aws-cdk-lib's custom-resource Provider framework
            assert arns.count("arn:") == 1 and "AWSLambdaBasicExecutionRole" in arns
        else:
            assert "AmazonAPIGatewayPushToCloudWatchLogs" in arns, lid


def test_sagemaker_role_reads_data_and_writes_artifacts_only(cloud):
    s = _by_sid(_statements(cloud, SAGEMAKER_ROLE))
    assert _actions(s["ReadDatasets"]) == ["s3:GetObject"]
    assert json.dumps(s["ReadDatasets"]["Resource"]).endswith('"/data/*"]]}')
    written = json.dumps(s["ReadWriteArtifacts"]["Resource"])
    for prefix in ("tuning/", "training/", "checkpoints/", "debugger/", "profiler/", "datacapture/"):
        assert f"/{prefix}*" in written
    assert "data/*" not in written
    assert s["ListProjectPrefixes"]["Condition"]["StringLike"]["s3:prefix"][0] == "data/*"
    source = json.dumps(s["ReadTrainingSource"]["Resource"])
    assert "cdk-hnb659fds-assets-" in source and source.endswith('"/imgclf/*"]]}')  # the app's asset prefix
    pulls = s["PullImages"]["Resource"]
    assert len(pulls) == 3 and all("FindInMap" in json.dumps(r) for r in pulls)
    assert s["Metrics"]["Condition"] == {"StringLike": {"cloudwatch:namespace": ["/aws/sagemaker/*",
                                                                                 "aws/sagemaker/*"]}}


def test_state_machine_role_is_scoped_to_the_prefix(cloud):
    statements = _statements(cloud, STATE_MACHINE_ROLE)
    s = _by_sid(statements)
    prefix = cloud.config.prefix
    for sid, kind in (("Tune", "hyper-parameter-tuning-job"), ("Train", "training-job"), ("Model", "model"),
                      ("EndpointConfig", "endpoint-config")):
        (resource,) = _resources(s[sid])
        assert json.dumps(resource).endswith(f':{kind}/{prefix}-*"]]}}'), sid
    endpoint = json.dumps(s["DescribeEndpoint"]["Resource"])
    assert endpoint.endswith(f':endpoint/{cloud.config.endpoint_name}"]]}}')
    sagemaker_actions = {a for st in statements for a in _actions(st) if a.startswith("sagemaker:")}
    assert sagemaker_actions == {
        "sagemaker:CreateHyperParameterTuningJob", "sagemaker:DescribeHyperParameterTuningJob",
        "sagemaker:StopHyperParameterTuningJob", "sagemaker:ListTrainingJobsForHyperParameterTuningJob",
        "sagemaker:CreateTrainingJob", "sagemaker:DescribeTrainingJob", "sagemaker:StopTrainingJob",
        "sagemaker:CreateModel", "sagemaker:CreateEndpointConfig", "sagemaker:CreateEndpoint",
        "sagemaker:UpdateEndpoint", "sagemaker:DescribeEndpoint", "sagemaker:AddTags"}
    pass_role = s["PassSageMakerRole"]
    assert pass_role["Resource"] == {"Fn::GetAtt": [next(k for k in cloud.resources("AWS::IAM::Role")
                                                         if k.startswith(SAGEMAKER_ROLE)), "Arn"]}
    assert pass_role["Condition"] == {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}
    events = json.dumps(s["SyncEvents"]["Resource"])
    assert "StepFunctionsGetEventsForSageMakerTrainingJobsRule" in events
    assert "StepFunctionsGetEventsForSageMakerTuningJobsRule" in events
    iam_actions = {a for st in statements for a in _actions(st) if a.startswith("iam:")}
    assert iam_actions == {"iam:PassRole"}


def test_forwarder_may_invoke_the_one_endpoint_only(cloud):
    statements = _statements(cloud, "PredictApiForwarderRole")
    s = _by_sid(statements)
    assert _actions(s["InvokeEndpoint"]) == ["sagemaker:InvokeEndpoint"]
    assert json.dumps(s["InvokeEndpoint"]["Resource"]).endswith(f':endpoint/{cloud.config.endpoint_name}"]]}}')
    assert {a for st in statements for a in _actions(st) if a.startswith("sagemaker:")} == {
        "sagemaker:InvokeEndpoint"}


def test_service_principals(cloud):
    principals = {lid.split("Roles")[-1][:20]: r["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]
                  ["Principal"]["Service"] for lid, r in cloud.resources("AWS::IAM::Role").items()}
    assert "sagemaker.amazonaws.com" in principals.values()
    assert "states.amazonaws.com" in principals.values()
