"""cdk-nag 3.x (AwsSolutions pack) acknowledgements: every finding this stack keeps, each with its reason.

cdk-nag 3 runs as a CDK policy-validation plugin and reads `Validations.of(construct).acknowledge(...)`; a
wildcard finding must be acknowledged one resource at a time (`AwsSolutions-IAM5[Resource::...]`). The IAM5 ids
are derived from the policies themselves (by statement Sid), so a new wildcard fails synth until it gets a
reason here.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from aws_cdk import Acknowledgment, Stack, Validations
from aws_cdk import aws_iam as iam
from constructs import IConstruct

if TYPE_CHECKING:  # the stack calls acknowledge(self): a runtime import would be a circle
    from infra.stack import ImageClassifierStack

PACK = "AwsSolutions"  # cdk-nag 3 acknowledgement ids are "<pack>::<rule>[finding]"
# Why each wildcard statement is as narrow as it can be, by the Sid given in infra.security / api / teardown.
WILDCARD_REASONS: dict[str, str] = {
    "ReadDatasets": "SageMaker reads any dataset the execution names, but only under the project bucket's data "
                    "prefix (datasets are folders of images).",
    "ReadWriteArtifacts": "Training, tuning, checkpoint, Debugger, Profiler and data-capture output: SageMaker "
                          "writes per-job keys under these project prefixes only.",
    "ReadTrainingSource": "Training source bundles of this app only (its asset prefix in the CDK bootstrap bucket): "
                          "a running execution keeps reading the bundle its definition named before a redeploy.",
    "SyncCheckpoints": "Checkpoint sync may remove stale checkpoint files, under checkpoints/ only.",
    "EcrToken": "ecr:GetAuthorizationToken has no resource-level permissions; image pulls are scoped to the "
                "three repositories.",
    "Logs": "SageMaker names log streams per job inside its fixed log groups (TrainingJobs, ProcessingJobs for "
            "Debugger rules, Endpoints/<endpoint>); the ':*' is the log-stream part of those groups.",
    "Metrics": "cloudwatch:PutMetricData has no resource-level permissions; limited to SageMaker namespaces.",
    "Autoscaling": "Application Auto Scaling gives scalable targets generated ids (scalable-target/<id>), unknown "
                   "before registration: scoped to this account and region; the variant itself is named in the "
                   "request, and the SageMaker actions scaling needs are scoped to the endpoint.",
    "ScalingAlarms": "The target-tracking policy's CloudWatch alarms get generated names "
                     "(TargetTracking-endpoint/<endpoint>/variant/<variant>-AlarmHigh-<uuid>): scoped to this "
                     "endpoint's alarms.",
    "Alarms": "The rollback alarms by name, and this endpoint's target-tracking alarms (generated names, scoped "
              "to the endpoint).",
    "DeregisterScaling": "Teardown: DescribeScalableTargets has no resource-level permissions and scalable targets "
                         "have generated ids; the handler deregisters only the variants of endpoints it deletes "
                         "(named '<prefix>-*' and tagged by this stack).",
    "Tune": "Tuning jobs are named '<prefix>-<run id>' per execution: scoped to the project's name prefix.",
    "Train": "Training jobs are named '<prefix>-<run id>' per execution: scoped to the project's name prefix.",
    "Model": "Models are named '<prefix>-<run id>' per execution: scoped to the project's name prefix.",
    "EndpointConfig": "Endpoint configs are immutable and named '<prefix>-<run id>' per execution: scoped to the "
                      "project's name prefix.",
    "Endpoint": "CreateEndpoint/UpdateEndpoint also authorize the per-execution endpoint config "
                "('<prefix>-<run id>'); the endpoint itself is named exactly.",
    "Tags": "Tags are set when the per-execution resources ('<prefix>-<run id>') are created, and Step Functions "
            "lists the tags of what it created (sagemaker-iam.html): scoped to the project's name prefix.",
    "List": "SageMaker List* calls have no resource-level permissions; the teardown only deletes names with the "
            "project prefix.",
    "Delete": "The teardown deletes what the state machine created: names with the project prefix only.",
    "StopJobs": "The teardown stops the project's running jobs: names with the project prefix only.",
    "ReadTags": "The teardown reads the owner tag of the project's resources (names with the project prefix only) "
                "to act only on what this stack's state machine created.",
    "StopExecutions": "The teardown stops this state machine's running executions (execution ARNs are "
                      "'<state machine>:<execution name>').",
}
# Statements CDK adds itself (no Sid): X-Ray and Step Functions' log delivery take no resource ARNs.
CDK_WILDCARD_REASONS: dict[str, str] = {
    "xray:PutTraceSegments": "X-Ray tracing (Lambda active tracing / Step Functions tracing): X-Ray actions have "
                             "no resource-level permissions.",
    "logs:CreateLogDelivery": "Step Functions vended-log delivery to the state machine's log group: the "
                              "CloudWatch Logs delivery actions have no resource-level permissions.",
    "lambda:InvokeFunction": "The custom-resource Provider framework invokes the teardown's own functions; ':*' "
                             "is their versions and aliases (aws-cdk-lib's grantInvoke), nothing else.",
}


def _render(value: Any) -> str:
    """An IAM resource the way cdk-nag prints it: Ref -> <Id>, GetAtt -> <Id.Attr>, joins flattened."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        if "Ref" in value:
            return f"<{value['Ref']}>"
        if "Fn::GetAtt" in value:
            return f"<{'.'.join(value['Fn::GetAtt'])}>"
        if "Fn::Join" in value:
            sep, parts = value["Fn::Join"]
            return sep.join(_render(p) for p in parts)
        if "Fn::Sub" in value and isinstance(value["Fn::Sub"], str):
            return re.sub(r"\$\{([^}]+)\}", r"<\1>", value["Fn::Sub"])
    return json.dumps(value, sort_keys=True)  # other intrinsics (FindInMap) carry no wildcard


def _ack(construct: IConstruct, rule: str, reason: str) -> None:
    Validations.of(construct).acknowledge(Acknowledgment(id=f"{PACK}::{rule}", reason=reason))


def acknowledge_wildcards(policy: iam.Policy) -> list[str]:
    """One IAM5 acknowledgement per wildcard resource of this policy, with its statement's reason."""
    stack = Stack.of(policy)
    doc = stack.resolve(policy.document.to_json())
    ids: list[str] = []
    for statement in doc.get("Statement", []):
        resources = statement.get("Resource", [])
        resources = resources if isinstance(resources, list) else [resources]
        actions = statement.get("Action", [])
        actions = actions if isinstance(actions, list) else [actions]
        for resource in resources:
            rendered = _render(resource)
            if "*" not in rendered:
                continue
            sid = statement.get("Sid")
            reason = WILDCARD_REASONS.get(sid) if sid else next(
                (r for a, r in CDK_WILDCARD_REASONS.items() if a in actions), None)
            if reason is None:
                raise ValueError(f"{policy.node.path}: wildcard resource {rendered} (Sid {sid}, {actions}) has no "
                                 f"acknowledgement reason in infra/nag.py")
            rule = f"AwsSolutions-IAM5[Resource::{rendered}]"
            _ack(policy, rule, reason)
            ids.append(rule)
    return ids


def acknowledge(stack: ImageClassifierStack) -> None:
    """Acknowledge the stack's remaining findings; called once the stack is complete."""
    cfg = stack.cfg
    roles: list[iam.Role] = [stack.roles.sagemaker, stack.roles.state_machine, stack.api.role]
    if stack.teardown is not None:
        roles.append(stack.teardown.function.role)  # type: ignore[arg-type]
        roles += [c for c in stack.teardown.provider.node.find_all() if isinstance(c, iam.Role)]
        _acknowledge_provider(stack.teardown.provider)
    for role in roles:
        policy = role.node.try_find_child("DefaultPolicy")
        if isinstance(policy, iam.Policy):
            acknowledge_wildcards(policy)

    api = stack.api
    _ack(api.function, "AwsSolutions-L1",
         "python3.12 on purpose: a runtime the AWS-published Powertools v3 layer is built for (its version is "
         "requirements.txt's pin) and the runtime the forwarder is tested on; upgrade both together.")
    cloudwatch_role = api.api.node.try_find_child("CloudWatchRole")
    if cloudwatch_role is not None:
        _ack(cloudwatch_role,
             "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
             "AmazonAPIGatewayPushToCloudWatchLogs]",
             "API Gateway's account-level CloudWatch role (needed for execution and access logs) uses AWS's own "
             "narrow service-role policy; it is not a *FullAccess policy.")
    _ack(api.method, "AwsSolutions-COG4",
         "Callers authenticate with IAM SigV4 (execute-api:Invoke on the method ARN) or an API key; the project "
         "has no Cognito user pool.")
    if not cfg.api.iam_auth:
        _ack(api.method, "AwsSolutions-APIG4",
             "Configured for API-key access (api.iam_auth false, api.api_key_required true): every request needs "
             "the usage plan's key; anonymous access is refused by configuration validation.")
    _ack(api.api.deployment_stage, "AwsSolutions-APIG3",
         "No WAF by default: IAM auth, stage throttling and a usage-plan quota bound abuse; a WAFv2 web ACL is a "
         "fixed monthly cost to add when the API faces untrusted callers.")


def _acknowledge_provider(provider: IConstruct) -> None:
    """aws-cdk-lib's custom-resource Provider framework: its own Lambda roles and waiter state machine."""
    for role in (c for c in provider.node.find_all() if isinstance(c, iam.Role)):
        _ack(role, "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
                   "AWSLambdaBasicExecutionRole]",
             "The Provider framework's own functions (aws-cdk-lib custom_resources) use the narrow "
             "AWSLambdaBasicExecutionRole for their logs; they run only during the teardown resource's events.")
    waiter = provider.node.try_find_child("waiter-state-machine")
    if waiter is not None:
        _ack(waiter, "AwsSolutions-SF2",
             "The Provider framework's completion poller (aws-cdk-lib custom_resources) offers no X-Ray setting; it "
             "logs ALL events to its own log group.")
