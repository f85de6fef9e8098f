"""cdk-nag 3.x (AwsSolutions pack) acknowledgements: the mechanism. Each construct acknowledges its own findings
beside the resource (as aws-solutions-constructs do), with its reasons; this module knows no construct.

cdk-nag 3 runs as a CDK policy-validation plugin and reads `Validations.of(construct).acknowledge(...)`; a
wildcard finding must be acknowledged one resource at a time (`AwsSolutions-IAM5[Resource::...]`). The IAM5 ids
are derived from the policies themselves (by statement Sid, reasons given by the construct that wrote the
statement), so a new wildcard fails synth until its construct gives a reason.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from aws_cdk import Acknowledgment, Stack, Validations
from aws_cdk import aws_iam as iam
from constructs import IConstruct

PACK = "AwsSolutions"  # cdk-nag 3 acknowledgement ids are "<pack>::<rule>[finding]"
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


def acknowledge(construct: IConstruct, rule: str, reason: str) -> None:
    """Keep one AwsSolutions finding on this construct, with why."""
    Validations.of(construct).acknowledge(Acknowledgment(id=f"{PACK}::{rule}", reason=reason))


def acknowledge_wildcards(policy: iam.Policy, reasons: Mapping[str, str]) -> list[str]:
    """One IAM5 acknowledgement per wildcard resource of this policy, with its statement's reason (by Sid)."""
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
            reason = reasons.get(sid) if sid else next(
                (r for a, r in CDK_WILDCARD_REASONS.items() if a in actions), None)
            if reason is None:
                raise ValueError(f"{policy.node.path}: wildcard resource {rendered} (Sid {sid}, {actions}) has no "
                                 f"acknowledgement reason beside its statement")
            rule = f"AwsSolutions-IAM5[Resource::{rendered}]"
            acknowledge(policy, rule, reason)
            ids.append(rule)
    return ids


def acknowledge_role(role: iam.IRole, reasons: Mapping[str, str]) -> list[str]:
    """The wildcards of a role's default policy (call once the construct has added every statement)."""
    policy = role.node.try_find_child("DefaultPolicy")
    return acknowledge_wildcards(policy, reasons) if isinstance(policy, iam.Policy) else []


def acknowledge_provider(provider: IConstruct) -> None:
    """aws-cdk-lib's custom-resource Provider framework: its waiter state machine (its functions run with the role
    the construct gives them, acknowledged there) and any role the framework makes itself (the waiter's)."""
    for role in (c for c in provider.node.find_all() if isinstance(c, iam.Role)):
        acknowledge_role(role, {})
    waiter = provider.node.try_find_child("waiter-state-machine")
    if waiter is not None:
        acknowledge(waiter, "AwsSolutions-SF2",
                    "The Provider framework's completion poller (aws-cdk-lib custom_resources) offers no X-Ray "
                    "setting; it logs ALL events to its own log group.")
