"""IAM on the calls local mode makes: each is authorized against the synthesized policies of the role that would
make it on AWS (moto's Action/Resource matching, IAM's condition operators here), on the resource ARN AWS would
authorize, resource-based policies (the bucket's) included:
- the state machine role (StateMachineAuthorizer): every Task state and the calls its .sync integrations make on
  the role's behalf (infra.security.STATE_MACHINE_NEEDS says which), Stop* when a .sync state is stopped;
- the SageMaker execution role (TemplateIAM.sagemaker_s3, used by local.sagemaker.s3): every S3 call of a job, rule
  job or endpoint;
- a Lambda function's role (ClientAuthorizer): every call of a boto3 client (the forwarder's InvokeEndpoint, the
  teardown handlers' calls).
A denial raises AccessDenied naming role, action and resource, as AWS words it
(https://docs.aws.amazon.com/IAM/latest/UserGuide/troubleshoot_access-denied.html), so the Task state, the job or
the call fails with it.
ARNs as the Service Authorization Reference builds them:
https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonsagemaker.html#amazonsagemaker-resources-for-iam-policies
(SageMaker lower-cases names in ARNs),
https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazoneventbridge.html#amazoneventbridge-resources-for-iam-policies,
https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazoncloudwatch.html#amazoncloudwatch-resources-for-iam-policies,
https://docs.aws.amazon.com/service-authorization/latest/reference/list_awsidentityandaccessmanagementiam.html#awsidentityandaccessmanagementiam-resources-for-iam-policies.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from moto.iam.access_control import IAMPolicyStatement, PermissionResult

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


NO_ALLOW = "no identity-based policy allows the {action} action"
IDENTITY_DENY = "an explicit deny in an identity-based policy"
RESOURCE_DENY = "an explicit deny in a resource-based policy"
# S3 answers a denied call with its own code, AccessDenied, HTTP 403
# (https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html#ErrorCodeList).
S3_ACCESS_DENIED = "AccessDenied"


class AccessDenied(SageMakerError):
    """A denied call, worded as AWS words it: the assumed role's session, the action, the resource, and why
    (https://docs.aws.amazon.com/IAM/latest/UserGuide/troubleshoot_access-denied.html#access_denied_error_messages)."""

    def __init__(self, role_arn: str, action: str, resource: str, *, session: str = "local", why: str | None = None,
                 code: str = ACCESS_DENIED, status: int = 400) -> None:
        _, _, _, _, account, role = role_arn.split(":", 5)
        because = f"with {why}" if why else f"because {NO_ALLOW.format(action=action)}"
        super().__init__(code, f"User: arn:aws:sts::{account}:assumed-role/{role.split('/')[-1]}/{session} is not "
                               f"authorized to perform: {action} on resource: {resource} {because}", status=status)
        self.role_arn, self.action, self.resource = role_arn, action, resource


# IAM's condition operators (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_condition_operators.html).
# moto's evaluator implements StringEquals only, ignores every other operator (a Bool Deny on aws:SecureTransport
# would always apply) and answers DENIED for an Allow whose condition is unmet: conditions are judged here, moto's
# matching of Action/Resource wildcards is kept.
def _like(pattern: str, value: str) -> bool:
    """IAM's ...Like match: * any run of characters (slashes too), ? one character, everything else literal."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, flags=re.DOTALL) is not None


_OPERATORS: dict[str, Callable[[str, str], bool]] = {
    "StringEquals": lambda expected, value: value == expected,
    "StringEqualsIgnoreCase": lambda expected, value: value.lower() == expected.lower(),
    "StringLike": _like,
    "ArnEquals": lambda expected, value: value == expected,
    "ArnLike": _like,
    "Bool": lambda expected, value: value.lower() == str(expected).lower(),
}
# The negated operators: "the condition returns true if the key is not present" (condition_operators page).
_NEGATED = {"StringNotEquals": "StringEquals", "StringNotEqualsIgnoreCase": "StringEqualsIgnoreCase",
            "StringNotLike": "StringLike", "ArnNotEquals": "ArnEquals", "ArnNotLike": "ArnLike"}


def conditions_met(conditions: Mapping[str, Mapping[str, Any]] | None, context: Mapping[str, str]) -> bool:
    """Whether a statement's Condition block holds for the request context (every operator, every key, any value
    of a key's list). An operator this evaluator does not know is an error, never a guess."""
    for operator, keys in (conditions or {}).items():
        base, if_exists = (operator[:-8], True) if operator.endswith("IfExists") else (operator, False)
        negated = base in _NEGATED
        test = _OPERATORS.get(_NEGATED.get(base, base))
        if test is None:
            raise ValueError(f"condition operator {operator!r} is not supported by the local IAM evaluator")
        for key, expected in keys.items():
            values = [expected] if isinstance(expected, str | bool) else list(expected)
            actual = _context_value(context, key)
            if actual is None:
                if not (if_exists or negated):
                    return False
                continue
            matched = any(test(str(v), actual) for v in values)
            if matched == negated:
                return False
    return True


def _context_value(context: Mapping[str, str], key: str) -> str | None:
    # Condition keys are case-insensitive (reference_policies_elements_condition.html).
    lowered = {k.lower(): v for k, v in context.items()}
    return lowered.get(key.lower())


def statement_result(statement: Mapping[str, Any], action: str, resource: str,
                     context: Mapping[str, str] | None = None) -> PermissionResult:
    """One statement's verdict: PERMITTED (an Allow that applies), DENIED (a Deny that applies) or NEUTRAL."""
    moto = IAMPolicyStatement(statement)  # Action/NotAction/Resource matching with IAM's wildcards
    if ("NotAction" in statement) == moto._check_element_matches("NotAction" if "NotAction" in statement
                                                                  else "Action", action):
        return PermissionResult.NEUTRAL
    if "NotResource" in statement:
        if moto._check_element_matches("NotResource", resource):
            return PermissionResult.NEUTRAL
    elif not moto._check_element_matches("Resource", resource):
        return PermissionResult.NEUTRAL
    if not conditions_met(statement.get("Condition"), context or {}):
        return PermissionResult.NEUTRAL
    return PermissionResult.PERMITTED if statement.get("Effect") == "Allow" else PermissionResult.DENIED


def statements(document: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    found = document.get("Statement", [])
    return list(found) if isinstance(found, list) else [found]


def evaluate(documents: Sequence[Mapping[str, Any]], action: str, resource: str,
             context: Mapping[str, str] | None = None) -> PermissionResult:
    """DENIED if any statement denies, else PERMITTED if any allows, else NEUTRAL (an implicit deny)."""
    results = {statement_result(s, action, resource, context) for d in documents for s in statements(d)}
    return PermissionResult.DENIED if PermissionResult.DENIED in results else \
        PermissionResult.PERMITTED if PermissionResult.PERMITTED in results else PermissionResult.NEUTRAL


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
        return evaluate(self.documents, action, resource, conditions) == PermissionResult.PERMITTED

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


def state_machine_role(resolver: Resolver, iam: TemplateIAM | None = None) -> RolePolicies:
    """The policies of the role the template's state machine runs as (its RoleArn: Fn::GetAtt [Role, Arn])."""
    role = state_machine_resource(resolver.template)["Properties"]["RoleArn"]
    logical_id = role["Fn::GetAtt"][0] if isinstance(role, dict) and "Fn::GetAtt" in role else None
    if logical_id is None:
        raise ValueError(f"the state machine's RoleArn {role!r} is not a role of the template")
    return iam.role_of(logical_id) if iam else RolePolicies.from_template(resolver, logical_id)


def _roles_passed(params: Mapping[str, Any]) -> list[str]:
    definitions = [params.get("TrainingJobDefinition") or {}, *params.get("TrainingJobDefinitions", [])]
    return [r for r in (params.get("RoleArn"), params.get("ExecutionRoleArn"),
                        *(d.get("RoleArn") for d in definitions)) if r]


class StateMachineAuthorizer:
    """Authorizes a Task state's calls: `authorize(Task resource ARN, request)`."""

    def __init__(self, policies: RolePolicies, *, region: str, account: str, partition: str = "aws",
                 iam: TemplateIAM | None = None) -> None:
        self.policies, self.region, self.account, self.partition = policies, region, account, partition
        self.iam = iam  # with it, resource-based policies (the bucket's, for the weights check) count too

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

    def calls(self, key: str, params: Mapping[str, Any], *, stopping: bool = False
              ) -> list[tuple[str, str, dict[str, str]]]:
        """(action, resource ARN, condition values) of every call AWS authorizes for this Task: a .sync job's Stop*
        only when `stopping` (a stopped or timed-out .sync state; then only those; an aws-sdk Stop* task is its
        own call), AddTags only when the request tags (as SageMaker checks it)."""
        out = []
        sync = key.endswith(".sync")
        for need in sec.STATE_MACHINE_NEEDS[key]:
            if (sync and need.action.startswith("sagemaker:Stop") != stopping) or (
                    need.action == "sagemaker:AddTags" and not params.get("Tags")):
                continue
            conditions = (PASSED_TO_SAGEMAKER if need.action == "iam:PassRole" else
                          SCALING_SERVICE_NAME if need.action == "iam:CreateServiceLinkedRole" else {})
            out += [(need.action, arn, conditions) for kind in need.kinds for arn in self.arns(kind, params)]
        return out

    def __call__(self, task_resource: str, params: Mapping[str, Any], *, stopping: bool = False) -> None:
        """Authorize the Task `arn:aws:states:::<integration>`'s calls for this request (`stopping`: the Stop*
        call of its job, `params` naming the job)."""
        for action, resource, conditions in self.calls(sec.integration_key(task_resource), params,
                                                       stopping=stopping):
            if self.iam is not None:
                self.iam.authorize(self.policies.role_arn, action, resource, conditions)
            else:
                self.policies.check(action, resource, conditions)


def state_machine_authorizer(resolver: Resolver, iam: TemplateIAM | None = None) -> StateMachineAuthorizer:
    """`iam`: share the role's record of used actions with the other roles' checks of the same run."""
    return StateMachineAuthorizer(state_machine_role(resolver, iam), region=resolver.region,
                                  account=resolver.account, partition=resolver.partition, iam=iam)


# --- every role of the template, and its buckets' policies -----------------------------------------------------
def _principals(statement: Mapping[str, Any]) -> list[str] | None:
    """The AWS principals a resource-based statement names ("*" for everyone); None when it names none (a service
    principal, say)."""
    principal = statement.get("Principal")
    if principal == "*":
        return ["*"]
    aws = principal.get("AWS") if isinstance(principal, dict) else None
    return None if aws is None else [aws] if isinstance(aws, str) else list(aws)


class TemplateIAM:
    """The synthesized template's roles (each a RolePolicies, by role ARN) and bucket policies: authorizes a call
    by one role as AWS evaluates one in the same account
    (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic.html): an explicit Deny
    in the role's or the bucket's policy wins, else an Allow in either permits, else it is denied."""

    def __init__(self, resolver: Resolver) -> None:
        self.resolver = resolver
        self.partition, self.region, self.account = resolver.partition, resolver.region, resolver.account
        resources = resolver.template.get("Resources", {})
        # Role ARN -> logical id; each role's policies are resolved when a call of it is first authorized.
        self._role_ids = {resolver.attribute(k, "Arn"): k for k, r in resources.items()
                          if r.get("Type") == "AWS::IAM::Role"}
        self.roles: dict[str, RolePolicies] = {}
        self.bucket_policies: dict[str, list[dict]] = {}
        for resource in resources.values():
            if resource.get("Type") == "AWS::S3::BucketPolicy":
                props = resource["Properties"]
                self.bucket_policies.setdefault(str(resolver(props["Bucket"])), []).append(
                    resolver(props["PolicyDocument"]))
        self.denied: list[AccessDenied] = []  # every denial, in order (what a test or a summary reports)
        self._lock = threading.RLock()

    def role(self, role_arn: str) -> RolePolicies:
        """The role's policies; KeyError when the template has no such role."""
        with self._lock:
            if role_arn not in self.roles:
                if role_arn not in self._role_ids:
                    raise KeyError(f"{role_arn} is not a role of the template")
                self.roles[role_arn] = RolePolicies.from_template(self.resolver, self._role_ids[role_arn])
            return self.roles[role_arn]

    def role_of(self, logical_id: str) -> RolePolicies:
        return self.role(self.resolver.attribute(logical_id, "Arn"))

    def function(self, handler: str) -> tuple[str, RolePolicies]:
        """The name and role of the template's Lambda function with this Handler (e.g. "forwarder.handler")."""
        found = [k for k, r in self.resolver.template.get("Resources", {}).items()
                 if r.get("Type") == "AWS::Lambda::Function" and r.get("Properties", {}).get("Handler") == handler]
        if len(found) != 1:
            raise ValueError(f"expected one Lambda function with handler {handler!r}, found {len(found)}")
        role = self.resolver(self.resolver.template["Resources"][found[0]]["Properties"]["Role"])
        return self.resolver.name(found[0]), self.role(str(role))

    def _resource_statements(self, resource: str, role_arn: str) -> list[Mapping[str, Any]]:
        """The statements of the bucket policy of an S3 ARN that apply to this role."""
        prefix = f"arn:{self.partition}:s3:::"
        if not resource.startswith(prefix):
            return []
        bucket = resource[len(prefix):].split("/", 1)[0]
        root = f"arn:{self.partition}:iam::{self.account}:root"
        return [st for document in self.bucket_policies.get(bucket, []) for st in statements(document)
                if (names := _principals(st)) is not None and {"*", role_arn, root, self.account} & set(names)]

    def authorize(self, role_arn: str, action: str, resource: str, context: Mapping[str, str] | None = None, *,
                  session: str = "local") -> None:
        """Raise AccessDenied (S3's AccessDenied for an s3: action) unless the role may make this call."""
        s3 = action.startswith("s3:")
        code, status = (S3_ACCESS_DENIED, 403) if s3 else (ACCESS_DENIED, 400)
        # Global condition keys AWS sets on every request (reference_policies_condition-keys.html); SageMaker and
        # the SDKs call over TLS.
        values = {"aws:SecureTransport": "true", "aws:PrincipalArn": role_arn, "aws:PrincipalAccount": self.account,
                  **(context or {})}
        policies = self.role(role_arn) if role_arn in self._role_ids else None  # another role: nothing allows
        identity = evaluate(policies.documents, action, resource, values) if policies else PermissionResult.NEUTRAL
        bucket = evaluate([{"Statement": self._resource_statements(resource, role_arn)}], action, resource, values)
        why = IDENTITY_DENY if identity == PermissionResult.DENIED else \
            RESOURCE_DENY if bucket == PermissionResult.DENIED else None
        if why is None and PermissionResult.PERMITTED in (identity, bucket):
            if policies is not None and identity == PermissionResult.PERMITTED:
                with policies._lock:
                    policies.used.add(action)
            return
        denial = AccessDenied(role_arn, action, resource, session=session, why=why, code=code, status=status)
        with self._lock:
            self.denied.append(denial)
        raise denial

    def sagemaker_s3(self, role_arn: str, action: str, resource: str, context: Mapping[str, str]) -> None:
        """local.sagemaker.s3's authorizer: S3 calls SageMaker makes with the role passed to it (session name
        "SageMaker", as SageMaker's assumed-role sessions are named)."""
        self.authorize(role_arn, action, resource, context, session="SageMaker")


# --- boto3 clients that call as a role (the Lambda functions' calls) ---------------------------------------------
# A denied call answers as the service does: AccessDeniedException, HTTP 400, for the JSON protocols (SageMaker,
# Application Auto Scaling, Step Functions: e.g. https://docs.aws.amazon.com/sagemaker/latest/APIReference/CommonErrors.html);
# AccessDenied, HTTP 403, for the query protocol (CloudFormation's "not authorized to perform" answer).
LIST_ACTIONS_URL = ("https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonsagemaker.html"
                    "#amazonsagemaker-actions-as-permissions")  # List* actions take no resource type: "*"
_STATE_PARAMS = {"states:ListExecutions": "stateMachineArn", "states:StopExecution": "executionArn",
                 "states:DescribeExecution": "executionArn", "cloudformation:DescribeStacks": "StackName",
                 "sagemaker:ListTags": "ResourceArn"}
_KIND_OF_ACTION = {
    "sagemaker:InvokeEndpoint": sec.ENDPOINT, "sagemaker:DeleteEndpoint": sec.ENDPOINT,
    "sagemaker:DescribeEndpoint": sec.ENDPOINT, "sagemaker:DeleteEndpointConfig": sec.CONFIG,
    "sagemaker:DeleteModel": sec.MODEL, "sagemaker:StopTrainingJob": sec.TRAINING,
    "sagemaker:StopHyperParameterTuningJob": sec.TUNING,
    "application-autoscaling:DeregisterScalableTarget": sec.SCALABLE_TARGET,
}


class ClientAuthorizer:
    """Makes boto3 clients call as one role of the template: `install(client)` authorizes every call the client
    makes (the IAM action is the signing name and the operation, e.g. sagemaker:InvokeEndpoint for
    sagemaker-runtime) against the role's policies before it is sent; a denied call never leaves and raises the
    ClientError AWS would answer with (AccessDeniedException naming role, action and resource)."""

    def __init__(self, iam: TemplateIAM, policies: RolePolicies, *, session: str = "local") -> None:
        self.iam, self.policies, self.session = iam, policies, session
        self._arns = StateMachineAuthorizer(policies, region=iam.region, account=iam.account,
                                            partition=iam.partition)

    def resources(self, action: str, params: Mapping[str, Any]) -> list[str]:
        if action in _STATE_PARAMS:
            return [str(params[_STATE_PARAMS[action]])]
        if action in _KIND_OF_ACTION:
            return self._arns.arns(_KIND_OF_ACTION[action], params) or ["*"]
        if action.split(":", 1)[1].startswith(("List", "DescribeScalableTargets")):
            return ["*"]  # LIST_ACTIONS_URL; DescribeScalableTargets likewise (list_applicationautoscaling.html)
        raise ValueError(f"no ARN rule for {action}: add it to local.iam._KIND_OF_ACTION or _STATE_PARAMS")

    def check(self, action: str, params: Mapping[str, Any]) -> None:
        # What the service authorizes on the caller's behalf besides the action itself (deregistering a target-
        # tracking target deletes its CloudWatch alarms as the caller): the integrations table knows it.
        service, operation = action.split(":", 1)
        key = f"aws-sdk:{service.replace('-', '')}:{operation[:1].lower()}{operation[1:]}"
        if key in sec.STATE_MACHINE_NEEDS:
            for needed, resource, conditions in self._arns.calls(key, params):
                self.iam.authorize(self.policies.role_arn, needed, resource, conditions, session=self.session)
            return
        for resource in self.resources(action, params):
            self.iam.authorize(self.policies.role_arn, action, resource, session=self.session)

    def install(self, client: Any) -> Any:
        service = client.meta.service_model
        service_id = service.service_id.hyphenize()
        code, status = (S3_ACCESS_DENIED, 403) if service.protocol == "query" else (ACCESS_DENIED, 400)

        def check(params: dict, model: Any, **_: Any) -> None:
            # Checked once the request's parameters are final, before it is built, signed or sent (or stubbed):
            # a denial raises what botocore raises for the service's answer.
            try:
                self.check(f"{service.signing_name}:{model.name}", params)
            except AccessDenied as denied:
                raise client.exceptions.from_code(code)({
                    "Error": {"Code": code, "Message": denied.message},
                    "ResponseMetadata": {"HTTPStatusCode": status,
                                         "RequestId": denied.response["ResponseMetadata"]["RequestId"]}},
                    model.name) from None

        client.meta.events.register(f"before-parameter-build.{service_id}", check)
        return client


def function_authorizer(resolver: Resolver, handler: str, iam: TemplateIAM | None = None) -> ClientAuthorizer:
    """The calls of the template's Lambda function with this Handler, as its role (the session is named after the
    function, as Lambda names it)."""
    iam = iam or TemplateIAM(resolver)
    name, policies = iam.function(handler)
    return ClientAuthorizer(iam, policies, session=name)
