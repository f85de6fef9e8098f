"""IAM on the calls local mode makes: each is authorized against the synthesized policies of the role that would
make it on AWS, with moto's policy evaluator, on the resource ARN AWS would authorize.

Today: the state machine role, for every SageMaker Task state and the calls its .sync integrations make on the
role's behalf (infra.security.STATE_MACHINE_NEEDS says which). A denial raises AccessDeniedException naming role,
action and resource, as AWS words it (https://docs.aws.amazon.com/IAM/latest/UserGuide/troubleshoot_access-denied.html),
so the Task state fails with it in the execution history.
ARNs as the Service Authorization Reference builds them:
https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonsagemaker.html#amazonsagemaker-resources-for-iam-policies
(SageMaker lower-cases names in ARNs),
https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazoneventbridge.html#amazoneventbridge-resources-for-iam-policies,
https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazoncloudwatch.html#amazoncloudwatch-resources-for-iam-policies,
https://docs.aws.amazon.com/service-authorization/latest/reference/list_awsidentityandaccessmanagementiam.html#awsidentityandaccessmanagementiam-resources-for-iam-policies.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from typing import Any

from moto.iam.access_control import IAMPolicy, PermissionResult

from infra import security as sec
from infra.definition import Resolver, state_machine_resource
from local.sagemaker.errors import SageMakerError

ACCESS_DENIED = "AccessDeniedException"  # botocore: the error code SageMaker answers a denied call with
# iam:PassRole's condition key, set by the service the role is passed to
# (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_iam-condition-keys.html#ck_PassedToService).
PASSED_TO_SAGEMAKER = {"iam:PassedToService": "sagemaker.amazonaws.com"}
SCALING_SERVICE_NAME = {"iam:AWSServiceName": sec.SCALING_SERVICE}


def _scaled_endpoint(params: Mapping[str, Any]) -> str | None:
    """The endpoint of an Application Auto Scaling request: ResourceId "endpoint/<name>/variant/<variant>"
    (https://docs.aws.amazon.com/autoscaling/application/APIReference/API_RegisterScalableTarget.html)."""
    parts = str(params.get("ResourceId", "")).split("/")
    return parts[1] if len(parts) == 4 and parts[0] == "endpoint" and parts[2] == "variant" else None


class AccessDenied(SageMakerError):
    def __init__(self, role_arn: str, action: str, resource: str) -> None:
        _, _, _, _, account, role = role_arn.split(":", 5)
        super().__init__(ACCESS_DENIED, f"User: arn:aws:sts::{account}:assumed-role/{role.split('/')[-1]}/local is "
                                        f"not authorized to perform: {action} on resource: {resource} because no "
                                        f"identity-based policy allows the {action} action")
        self.role_arn, self.action, self.resource = role_arn, action, resource


class RolePolicies:
    """The identity-based policies of one role of the template, resolved; `check` raises AccessDenied."""

    def __init__(self, role_arn: str, documents: list[dict]) -> None:
        self.role_arn = role_arn
        self.documents = documents
        self.used: set[str] = set()  # actions authorized so far (granted-but-unused = granted - used)
        self._lock = threading.Lock()

    @classmethod
    def from_template(cls, resolver: Resolver, role_logical_id: str) -> RolePolicies:
        resources = resolver.template.get("Resources", {})
        role = resources[role_logical_id]
        documents = [p["PolicyDocument"] for p in role.get("Properties", {}).get("Policies", [])]
        for resource in resources.values():  # AWS::IAM::Policy / ManagedPolicy attached with Roles: [Ref role]
            if resource.get("Type") in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy") and \
                    {"Ref": role_logical_id} in resource.get("Properties", {}).get("Roles", []):
                documents.append(resource["Properties"]["PolicyDocument"])
        return cls(resolver.attribute(role_logical_id, "Arn"), [resolver(d) for d in documents])

    def allowed(self, action: str, resource: str, conditions: Mapping[str, str] | None = None) -> bool:
        values = dict(conditions or {})
        results = [IAMPolicy(json.dumps(d)).is_action_permitted(action, resource, incoming_condition_values=values)
                   for d in self.documents]
        return PermissionResult.DENIED not in results and PermissionResult.PERMITTED in results

    def check(self, action: str, resource: str, conditions: Mapping[str, str] | None = None) -> None:
        if not self.allowed(action, resource, conditions):
            raise AccessDenied(self.role_arn, action, resource)
        with self._lock:
            self.used.add(action)

    def granted(self) -> set[str]:
        """Every action an Allow statement names."""
        out: set[str] = set()
        for document in self.documents:
            statements = document["Statement"] if isinstance(document["Statement"], list) else [document["Statement"]]
            for statement in statements:
                if statement.get("Effect") == "Allow":
                    actions = statement.get("Action", [])
                    out.update([actions] if isinstance(actions, str) else actions)
        return out


def state_machine_role(resolver: Resolver) -> RolePolicies:
    """The policies of the role the template's state machine runs as (its RoleArn: Fn::GetAtt [Role, Arn])."""
    role = state_machine_resource(resolver.template)["Properties"]["RoleArn"]
    logical_id = role["Fn::GetAtt"][0] if isinstance(role, dict) and "Fn::GetAtt" in role else None
    if logical_id is None:
        raise ValueError(f"the state machine's RoleArn {role!r} is not a role of the template")
    return RolePolicies.from_template(resolver, logical_id)


def _roles_passed(params: Mapping[str, Any]) -> list[str]:
    definitions = [params.get("TrainingJobDefinition") or {}, *params.get("TrainingJobDefinitions", [])]
    return [r for r in (params.get("RoleArn"), params.get("ExecutionRoleArn"),
                        *(d.get("RoleArn") for d in definitions)) if r]


class StateMachineAuthorizer:
    """Authorizes a Task state's calls: `authorize(Task resource ARN, request)`."""

    def __init__(self, policies: RolePolicies, *, region: str, account: str, partition: str = "aws") -> None:
        self.policies, self.region, self.account, self.partition = policies, region, account, partition

    def _sagemaker(self, resource: str, name: str | None) -> list[str]:
        return [f"arn:{self.partition}:sagemaker:{self.region}:{self.account}:{resource}/{name.lower()}"] \
            if name else []

    def arns(self, kind: str, params: Mapping[str, Any]) -> list[str]:
        p, r, a = self.partition, self.region, self.account
        if kind == sec.TUNING:
            return self._sagemaker("hyper-parameter-tuning-job", params.get("HyperParameterTuningJobName"))
        if kind == sec.TRAINING:
            return self._sagemaker("training-job", params.get("TrainingJobName"))
        if kind == sec.MODEL:
            return self._sagemaker("model", params.get("ModelName"))
        if kind == sec.CONFIG:
            # A scaling request does not name the endpoint's config: Application Auto Scaling checks
            # DescribeEndpointConfig on the config in use, which the request does not carry (nothing to build here).
            return self._sagemaker("endpoint-config", params.get("EndpointConfigName"))
        if kind == sec.ENDPOINT:
            return self._sagemaker("endpoint", params.get("EndpointName") or _scaled_endpoint(params))
        if kind == sec.SCALABLE_TARGET:
            # Scalable-target ARNs carry an id Application Auto Scaling generates (Service Authorization Reference,
            # https://docs.aws.amazon.com/service-authorization/latest/reference/list_applicationautoscaling.html):
            # any id stands for it here; the role's grant is scoped to scalable-target/* of the account and region.
            target = (params.get("ResourceId") or "target").replace("/", "-")
            return [f"arn:{p}:application-autoscaling:{r}:{a}:scalable-target/{target}"] if _scaled_endpoint(params) \
                else []
        if kind == sec.PRETRAINED:  # HeadObject on the staged weights: the object's ARN (no region or account)
            return [f"arn:{p}:s3:::{params['Bucket']}/{params['Key']}"] if params.get("Key") else []
        if kind == sec.SCALING_ROLE:
            return [f"arn:{p}:iam::{a}:role/aws-service-role/{sec.SCALING_SERVICE}/{sec.SCALING_ROLE_NAME}"]
        if kind == sec.ALARMS:
            rollback = (params.get("DeploymentConfig") or {}).get("AutoRollbackConfiguration") or {}
            return [f"arn:{p}:cloudwatch:{r}:{a}:alarm:{alarm['AlarmName']}" for alarm in rollback.get("Alarms", [])]
        if kind == sec.SCALING_ALARMS:  # the high and low alarms of a target-tracking policy
            target = _scaled_endpoint(params) and params["ResourceId"]
            return [f"arn:{p}:cloudwatch:{r}:{a}:alarm:TargetTracking-{target}-Alarm{side}-local"
                    for side in ("High", "Low")] if target else []
        if kind in (sec.TRAINING_RULE, sec.TUNING_RULE):
            return [f"arn:{p}:events:{r}:{a}:rule/{sec.SYNC_EVENT_RULES[0 if kind == sec.TRAINING_RULE else 1]}"]
        if kind == sec.SAGEMAKER_ROLE:
            return _roles_passed(params)
        raise ValueError(f"no ARN rule for resource kind {kind!r}")

    def calls(self, key: str, params: Mapping[str, Any]) -> list[tuple[str, str, dict[str, str]]]:
        """(action, resource ARN, condition values) of every call AWS authorizes for this Task, Stop* aside (made
        only when the state is stopped) and AddTags only when the request tags (as SageMaker checks it)."""
        out = []
        for need in sec.STATE_MACHINE_NEEDS[key]:
            if need.action.startswith("sagemaker:Stop") or (need.action == "sagemaker:AddTags"
                                                            and not params.get("Tags")):
                continue
            conditions = (PASSED_TO_SAGEMAKER if need.action == "iam:PassRole" else
                          SCALING_SERVICE_NAME if need.action == "iam:CreateServiceLinkedRole" else {})
            out += [(need.action, arn, conditions) for kind in need.kinds for arn in self.arns(kind, params)]
        return out

    def __call__(self, task_resource: str, params: Mapping[str, Any]) -> None:
        """Authorize the Task `arn:aws:states:::<integration>`'s calls for this request."""
        for action, resource, conditions in self.calls(sec.integration_key(task_resource), params):
            self.policies.check(action, resource, conditions)


def state_machine_authorizer(resolver: Resolver) -> StateMachineAuthorizer:
    return StateMachineAuthorizer(state_machine_role(resolver), region=resolver.region, account=resolver.account,
                                  partition=resolver.partition)
