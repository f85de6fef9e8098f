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
        else:  # review 4 R7: the Provider framework's functions run with the teardown's FrameworkRole, no managed
            # AWSLambdaBasicExecutionRole (logs on every group)
            assert "AmazonAPIGatewayPushToCloudWatchLogs" in arns, lid


def test_sagemaker_role_reads_data_and_writes_artifacts_only(cloud):
    s = _by_sid(_statements(cloud, SAGEMAKER_ROLE))
    assert _actions(s["ReadDatasets"]) == ["s3:GetObject"]
    assert json.dumps(s["ReadDatasets"]["Resource"]).endswith('"/data/*"]]}')
    read_back = json.dumps(s["ReadWriteArtifacts"]["Resource"])
    for prefix in ("training/", "checkpoints/", "debugger/", "profiler/"):
        assert f"/{prefix}*" in read_back
    assert "data/*" not in read_back
    # Review 2 item 7: trial output and data capture are written, never read as this role.
    assert _actions(s["WriteOnlyOutputs"]) == ["s3:PutObject"]
    write_only = json.dumps(s["WriteOnlyOutputs"]["Resource"])
    assert "/tuning/*" in write_only and "/datacapture/*" in write_only
    for prefix in ("tuning/", "datacapture/"):
        assert f"/{prefix}*" not in read_back
    assert "datacapture/*" not in s["ListProjectPrefixes"]["Condition"]["StringLike"]["s3:prefix"]
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
    endpoint = json.dumps(s["EndpointOnly"]["Resource"])
    assert endpoint.endswith(f':endpoint/{cloud.config.endpoint_name}"]]}}')
    pass_role = s["PassSageMakerRole"]
    assert pass_role["Resource"] == {"Fn::GetAtt": [next(k for k in cloud.resources("AWS::IAM::Role")
                                                         if k.startswith(SAGEMAKER_ROLE)), "Arn"]}
    assert pass_role["Condition"] == {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}
    events = json.dumps(s["SyncEvents"]["Resource"])
    assert "StepFunctionsGetEventsForSageMakerTrainingJobsRule" in events
    assert "StepFunctionsGetEventsForSageMakerTuningJobsRule" in events
    iam_actions = {a for st in statements for a in _actions(st) if a.startswith("iam:")}
    assert iam_actions == {"iam:PassRole", "iam:CreateServiceLinkedRole"}  # the latter: autoscaling's role only
    # ListTags (sagemaker-iam.html) on what the state machine creates, not on "*".
    assert "sagemaker:ListTags" in _actions(s["Tags"]) and "*" not in json.dumps(s["Tags"]["Resource"])[-3:]


# What a Task needs, read off the definition alone (independently of infra.security's table): the API action
# itself; a .sync job also needs Describe/Stop of its job, ListTags and its EventBridge rule
# (step-functions/latest/dg/sagemaker-iam.html); Tags in the request need AddTags; a role in it, PassRole;
# rollback alarms, cloudwatch:DescribeAlarms (sagemaker/latest/dg/deployment-guardrails-configuration.html).
def _needed_by_definition(definition: dict) -> set[str]:
    needed: set[str] = set()
    for state in definition["States"].values():
        if state["Type"] != "Task":
            continue
        action = state["Resource"].rsplit(":", 1)[1]
        if state["Resource"].startswith("arn:aws:states:::aws-sdk:s3:"):
            # "To use HEAD, you must have the s3:GetObject permission"
            # (https://docs.aws.amazon.com/AmazonS3/latest/API/API_HeadObject.html)
            assert action == "headObject", action
            needed.add("s3:GetObject")
            continue
        sync = action.endswith(".sync")
        op = action.removesuffix(".sync")
        op = op[0].upper() + op[1:]
        params = json.dumps(state["Parameters"])
        if state["Resource"].startswith("arn:aws:states:::aws-sdk:applicationautoscaling:"):
            # endpoint-auto-scaling-prerequisites.html: the caller's permissions to scale a SageMaker variant.
            assert '"sagemaker:variant:DesiredInstanceCount"' in params
            needed |= {f"application-autoscaling:{op}", "sagemaker:DescribeEndpoint",
                       "sagemaker:DescribeEndpointConfig", "sagemaker:UpdateEndpointWeightsAndCapacities",
                       "iam:CreateServiceLinkedRole"}
            if op == "PutScalingPolicy":
                # A target-tracking policy makes and deletes its CloudWatch alarms with the caller's permissions
                # (autoscaling/application/userguide/security_iam_id-based-policy-examples.html).
                assert '"TargetTrackingScaling"' in params
                needed |= {"cloudwatch:PutMetricAlarm", "cloudwatch:DescribeAlarms", "cloudwatch:DeleteAlarms"}
            if op == "DeregisterScalableTarget":  # deleting the target deletes its policy's alarms (same page)
                needed |= {"cloudwatch:DescribeAlarms", "cloudwatch:DeleteAlarms"}
            continue
        needed.add(f"sagemaker:{op}")
        if sync:
            job = op.removeprefix("Create")
            needed |= {f"sagemaker:Describe{job}", f"sagemaker:Stop{job}", "sagemaker:ListTags",
                       "events:PutTargets", "events:PutRule", "events:DescribeRule"}
            if job == "HyperParameterTuningJob":
                needed.add("sagemaker:ListTrainingJobsForHyperParameterTuningJob")
        if state["Resource"].startswith("arn:aws:states:::sagemaker:create"):
            needed.add("sagemaker:ListTags")  # aws-cdk-lib's SageMaker tasks add it to every create
        if '"Tags"' in params:
            needed.add("sagemaker:AddTags")
        if '"RoleArn"' in params or '"ExecutionRoleArn"' in params:
            needed.add("iam:PassRole")
        if '"AutoRollbackConfiguration"' in params:
            needed.add("cloudwatch:DescribeAlarms")
    return needed


def test_autoscaling_grants_are_scoped_as_aws_documents(cloud, variant):
    """The service-linked role only, created only for Application Auto Scaling's SageMaker principal; the SageMaker
    side of scaling on this endpoint; none of it where serving is serverless (no scaling states)."""
    from infra.security import SCALING_ROLE_NAME, SCALING_SERVICE

    by_sid = {st["Sid"]: st for st in _statements(cloud, STATE_MACHINE_ROLE) if "Sid" in st}
    slr = by_sid["AutoscalingServiceLinkedRole"]
    assert _actions(slr) == ["iam:CreateServiceLinkedRole"]
    assert slr["Condition"] == {"StringLike": {"iam:AWSServiceName": SCALING_SERVICE}}
    assert json.dumps(slr["Resource"]).endswith(f':role/aws-service-role/{SCALING_SERVICE}/{SCALING_ROLE_NAME}"]]}}')
    endpoint_only = by_sid["EndpointOnly"]
    assert "sagemaker:UpdateEndpointWeightsAndCapacities" in _actions(endpoint_only)
    assert json.dumps(endpoint_only["Resource"]).endswith(f':endpoint/{cloud.config.endpoint_name}"]]}}')
    alarms = by_sid["ScalingAlarms"]
    assert _actions(alarms) == ["cloudwatch:DeleteAlarms", "cloudwatch:PutMetricAlarm"]
    assert json.dumps(alarms["Resource"]).endswith(
        f':alarm:TargetTracking-endpoint/{cloud.config.endpoint_name}/variant/*"]]}}')
    assert not variant.config.serving.scales
    granted = {a for st in _statements(variant, STATE_MACHINE_ROLE) for a in _actions(st)}
    assert not {a for a in granted if a.startswith("application-autoscaling:")} | (
        granted & {"iam:CreateServiceLinkedRole", "sagemaker:UpdateEndpointWeightsAndCapacities"})


def test_state_machine_role_grants_exactly_what_the_definition_needs(any_synth):
    """Rules everywhere: every SageMaker, EventBridge, CloudWatch and IAM action the role holds is needed by some
    Task of the definition, every needed one is granted, and each appears in exactly one statement."""
    from infra.security import STATE_MACHINE_NEEDS, integration_key, needed_actions

    statements = [st for st in _statements(any_synth, STATE_MACHINE_ROLE) if "Sid" in st]  # CDK's logs/X-Ray: no Sid
    granted = [a for st in statements for a in _actions(st)]
    assert len(granted) == len(set(granted)), sorted(a for a in granted if granted.count(a) > 1)
    derived = _needed_by_definition(any_synth.definition)
    assert set(granted) == derived, (sorted(set(granted) - derived), sorted(derived - set(granted)))
    # The table behind the grants: exactly the integrations the definition uses, each entry with its source.
    used = {integration_key(s["Resource"]) for s in any_synth.task_states().values()}
    assert set(needed_actions(used)) == derived
    if any_synth.config.debugger.enabled and any_synth.config.pretrained_key:
        assert used == set(STATE_MACHINE_NEEDS)
    for needs in STATE_MACHINE_NEEDS.values():
        assert all(n.source.startswith("https://") for n in needs)


def test_rollback_alarms_are_describable(cloud):
    """Issue 11 item 3: cloudwatch:DescribeAlarms on exactly the auto-rollback alarms, for the UpdateEndpoint
    caller and for SageMaker's execution role (the guardrails doc names the 'execution role')."""
    update = cloud.task_states()["Update endpoint"]["Parameters"]
    alarms = [a["AlarmName"] for a in update["DeploymentConfig"]["AutoRollbackConfiguration"]["Alarms"]]
    for role in (STATE_MACHINE_ROLE, SAGEMAKER_ROLE):
        (statement,) = [st for st in _statements(cloud, role) if "cloudwatch:DescribeAlarms" in _actions(st)]
        assert _actions(statement) == ["cloudwatch:DescribeAlarms"]
        resources = [json.dumps(r) for r in _resources(statement)]
        if role == STATE_MACHINE_ROLE:  # the same statement covers the target-tracking alarms of autoscaling
            resources = [r for r in resources if ":alarm:TargetTracking-" not in r]
        assert len(resources) == len(alarms)
        for name, resource in zip(sorted(alarms), sorted(resources), strict=True):
            assert resource.endswith(f':alarm:{name}"]]}}')


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


def test_weights_check_reads_only_the_one_weights_object(cloud):
    """"Check pretrained weights" (aws-sdk:s3:headObject) needs s3:GetObject: on the staged weights object alone."""
    check = cloud.task_states()["Check pretrained weights"]["Parameters"]
    assert check["Key"] == cloud.config.pretrained_key
    (statement,) = [st for st in _statements(cloud, STATE_MACHINE_ROLE) if "s3:GetObject" in _actions(st)]
    assert _actions(statement) == ["s3:GetObject"]
    (resource,) = _resources(statement)
    assert json.dumps(resource).endswith(f'/{cloud.config.pretrained_key}"]]}}')


def test_the_provider_framework_logs_to_the_teardown_group_only(any_synth):
    """Review 4 R7b: the framework's three functions run with roles that write the teardown's log group, invoke
    the handlers and (onEvent) start the waiter: nothing else, no managed policy."""
    resources = any_synth.template["Resources"]
    framework = [r["Properties"] for lid, r in resources.items()
                 if r["Type"] == "AWS::Lambda::Function" and lid.startswith("TeardownProviderframework")]
    if not any_synth.resources("Custom::SageMakerTeardown"):  # the local profile has no teardown
        assert not framework
        return
    assert len(framework) == 3
    role_ids = {f["Role"]["Fn::GetAtt"][0] for f in framework}
    assert len(role_ids) == 2
    (group,) = [lid for lid, r in resources.items()
                if r["Type"] == "AWS::Logs::LogGroup" and lid.startswith("TeardownLogs")]
    actions = set()
    for role_id in role_ids:
        assert "ManagedPolicyArns" not in resources[role_id]["Properties"]
        statements = [st for p in any_synth.resources("AWS::IAM::Policy").values()
                      if {"Ref": role_id} in p["Properties"]["Roles"]
                      for st in p["Properties"]["PolicyDocument"]["Statement"]]
        actions |= {a for st in statements for a in _actions(st)}
        (logs,) = [st for st in statements if st.get("Sid") == "Logs"]
        assert _resources(logs) == [{"Fn::GetAtt": [group, "Arn"]}]
    assert actions == {"logs:CreateLogStream", "logs:PutLogEvents", "lambda:InvokeFunction", "lambda:GetFunction",
                       "states:StartExecution"}


def test_the_teardown_deregisters_scalable_targets_only(cloud):
    """Review 4 R7a: only DescribeScalableTargets (no resource-level permissions) is on '*'."""
    wide = [a for p in cloud.resources("AWS::IAM::Policy").values()
            for st in p["Properties"]["PolicyDocument"]["Statement"]
            if "*" in _resources(st) for a in _actions(st) if a.startswith("application-autoscaling:")]
    assert wide == ["application-autoscaling:DescribeScalableTargets"]
