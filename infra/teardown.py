"""`cdk destroy` also removes what the state machine created (endpoint, endpoint configs, models) and stops its
running executions and jobs, so nothing outside CloudFormation is left billing.

aws-cdk-lib's custom-resource Provider framework runs the handlers (infra/teardown_handler/handler.py): it answers
CloudFormation, polls `is_complete` every QUERY_INTERVAL until the endpoint is gone and no job runs, and reports
FAILED when a handler raises or TOTAL_TIMEOUT passes
(https://docs.aws.amazon.com/cdk/api/v2/docs/aws-cdk-lib.custom_resources-readme.html#provider-framework).
The handlers act only while the stack itself is being deleted (see the handler's docstring).
"""

from __future__ import annotations

from pathlib import Path

from aws_cdk import ArnFormat, Aws, CustomResource, Duration, Fn, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import custom_resources as cr
from constructs import Construct

from infra import nag
from infra import sagemaker_requests as req
from infra.common import log_group, state_machine_log_group
from infra.config import TEARDOWN_TOTAL_S, StackConfig
from infra.security import sagemaker_arn

HANDLER_DIR = Path(__file__).resolve().parent / "teardown_handler"
RESOURCE_TYPE = "Custom::SageMakerTeardown"
# A custom resource gets one hour to answer (AWS::CloudFormation::CustomResource ServiceTimeout, at most 3600 s:
# https://docs.aws.amazon.com/AWSCloudFormation/latest/TemplateReference/aws-resource-cloudformation-customresource.html);
# stopping jobs and waiting out a Creating endpoint fit well inside it.
TOTAL_TIMEOUT = Duration.seconds(TEARDOWN_TOTAL_S)
QUERY_INTERVAL = Duration.seconds(30)


def stack_uuid() -> str:
    """The UUID at the end of the stack id (arn:...:stack/<name>/<uuid>): unique to this stack, also against a
    deleted and re-created stack of the same name."""
    return Fn.select(2, Fn.split("/", Aws.STACK_ID))


def owner_tag(cfg: StackConfig) -> tuple[str, str]:
    """The tag every SageMaker request of the state machine sets to the stack's UUID (DefinitionSubstitutions
    STACK_UUID): what marks a resource as this stack's. Returns the key and the CloudFormation value."""
    stack = [t for t in req._tags(cfg) if t.get("Key") == req.STACK_TAG and t.get("Value") == req.sub(req.STACK_UUID)]
    if not stack:
        raise ValueError("the state machine's SageMaker requests carry no stack tag: teardown could not tell "
                         "this stack's resources from others named like them")
    return req.STACK_TAG, stack_uuid()


# Why each wildcard of the teardown role is as narrow as it can be (cdk-nag IAM5, by Sid).
TEARDOWN_ROLE_WILDCARDS: dict[str, str] = {
    "List": "SageMaker List* calls have no resource-level permissions; the teardown only deletes names with the "
            "project prefix.",
    "Delete": "The teardown deletes what the state machine created: names with the project prefix only.",
    "StopJobs": "The teardown stops the project's running jobs: names with the project prefix only.",
    "ReadTags": "The teardown reads the owner tag of the project's resources (names with the project prefix only) "
                "to act only on what this stack's state machine created.",
    "StopExecutions": "The teardown stops this state machine's running executions (execution ARNs are "
                      "'<state machine>:<execution name>').",
    "DescribeScaling": "DescribeScalableTargets has no resource-level permissions "
                       "(list_applicationautoscaling.html); the handler reads only the variants of the endpoints it "
                       "deletes.",
    "DeregisterScaling": "Scalable targets have generated ids (scalable-target/<id>): this account and region's; the "
                         "handler deregisters only the variants of endpoints it deletes (named '<prefix>-*' and "
                         "tagged by this stack). No aws:ResourceTag condition: targets registered before any tag "
                         "existed must still be deregistered (see Autoscaling in infra/security.py).",
    "ScalingAlarms": "Deregistering a target-tracking target deletes its CloudWatch alarms, which Application Auto "
                     "Scaling names TargetTracking-endpoint/<endpoint>/variant/<variant>-Alarm*-<uuid>: scoped to the "
                     "project's endpoints ('<prefix>-*').",
    "Logs": "The teardown functions' own log group; the ':*' is its log streams, which Lambda names per "
            "execution environment.",
}


class Teardown(Construct):
    def __init__(self, scope: Construct, cid: str, *, cfg: StackConfig, state_machine: sfn.StateMachine) -> None:
        super().__init__(scope, cid)
        p = cfg.prefix
        stack = Stack.of(self)
        logs = log_group(self, "Logs", cfg)
        role = iam.Role(self, "Role", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
                        description=f"{p}: deletes the state machine's SageMaker resources on stack deletion")
        # Is the stack itself being deleted, or did the resource only leave the template?
        role.add_to_policy(iam.PolicyStatement(
            sid="StackStatus", actions=["cloudformation:DescribeStacks"], resources=[Aws.STACK_ID]))
        role.add_to_policy(iam.PolicyStatement(
            sid="Logs", actions=["logs:CreateLogStream", "logs:PutLogEvents"], resources=[logs.log_group_arn]))
        # List calls have no resource-level permissions; every write below is scoped to the prefix.
        role.add_to_policy(iam.PolicyStatement(
            sid="List", resources=["*"],
            actions=["sagemaker:ListEndpoints", "sagemaker:ListEndpointConfigs", "sagemaker:ListModels",
                     "sagemaker:ListTrainingJobs", "sagemaker:ListHyperParameterTuningJobs"]))
        role.add_to_policy(iam.PolicyStatement(
            sid="Delete", resources=[sagemaker_arn(self, "endpoint", f"{p}-*"),
                                     sagemaker_arn(self, "endpoint-config", f"{p}-*"),
                                     sagemaker_arn(self, "model", f"{p}-*")],
            actions=["sagemaker:DeleteEndpoint", "sagemaker:DeleteEndpointConfig", "sagemaker:DeleteModel"]))
        # Ownership is the owner tag, read per resource (ListTags authorizes on the resource's ARN:
        # https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonsagemaker.html).
        role.add_to_policy(iam.PolicyStatement(
            sid="ReadTags", actions=["sagemaker:ListTags"],
            resources=[sagemaker_arn(self, kind, f"{p}-*") for kind in (
                "endpoint", "endpoint-config", "model", "hyper-parameter-tuning-job", "training-job")]))
        role.add_to_policy(iam.PolicyStatement(
            sid="StopJobs", actions=["sagemaker:StopHyperParameterTuningJob", "sagemaker:StopTrainingJob"],
            resources=[sagemaker_arn(self, "hyper-parameter-tuning-job", f"{p}-*"),
                       sagemaker_arn(self, "training-job", f"{p}-*")]))
        # DescribeScalableTargets has no resource-level permissions; DeregisterScalableTarget takes the
        # scalable-target resource type, whose ids are generated
        # (https://docs.aws.amazon.com/service-authorization/latest/reference/list_applicationautoscaling.html).
        role.add_to_policy(iam.PolicyStatement(
            sid="DescribeScaling", resources=["*"], actions=["application-autoscaling:DescribeScalableTargets"]))
        role.add_to_policy(iam.PolicyStatement(
            sid="DeregisterScaling", actions=["application-autoscaling:DeregisterScalableTarget"],
            resources=[stack.format_arn(service="application-autoscaling", resource="scalable-target",
                                        resource_name="*")]))
        # Deregistering a target deletes its target-tracking policy, whose CloudWatch alarms go with the caller's
        # permissions (infra.security.SCALING_CLOUDWATCH): the TargetTracking-* alarms of this prefix's endpoints.
        role.add_to_policy(iam.PolicyStatement(
            sid="ScalingAlarms", actions=["cloudwatch:DescribeAlarms", "cloudwatch:DeleteAlarms"],
            resources=[stack.format_arn(service="cloudwatch", resource="alarm",
                                        resource_name=f"TargetTracking-endpoint/{p}-*",
                                        arn_format=ArnFormat.COLON_RESOURCE_NAME)]))
        role.add_to_policy(iam.PolicyStatement(
            sid="ListExecutions", actions=["states:ListExecutions"], resources=[state_machine.state_machine_arn]))
        role.add_to_policy(iam.PolicyStatement(
            sid="StopExecutions", actions=["states:StopExecution"],
            resources=[stack.format_arn(service="states", resource="execution",
                                        resource_name=f"{cfg.state_machine_name}:*",
                                        arn_format=ArnFormat.COLON_RESOURCE_NAME)]))
        code = lambda_.Code.from_asset(str(HANDLER_DIR), exclude=["__pycache__", "*.pyc", "__init__.py"])

        def handler(cid: str, name: str, what: str) -> lambda_.Function:
            return lambda_.Function(
                self, cid, description=f"{p}: teardown {what}", runtime=lambda_.Runtime.PYTHON_3_14,
                architecture=lambda_.Architecture.ARM_64, handler=f"handler.{name}", code=code,
                timeout=Duration.minutes(5), memory_size=256, role=role, log_group=logs,
                tracing=lambda_.Tracing.ACTIVE)

        self.on_event = handler("OnEvent", "on_event", "(acts only when the stack itself is being deleted)")
        self.is_complete = handler("IsComplete", "is_complete", "progress: stop jobs, delete endpoint/configs/models")
        self.function = self.is_complete
        # The framework's own functions get roles that log to the teardown's log group only (its default role
        # carries AWSLambdaBasicExecutionRole: logs on every group). The framework adds to them what it needs:
        # invoking the handlers (and lambda:GetFunction on them), and for onEvent starting the waiter state machine.
        # Two roles, as aws-cdk-lib offers: one would be a cycle (onEvent's role names the waiter, which names the
        # isComplete function, which waits for its role's policy).

        def framework_role(cid: str, what: str) -> iam.Role:
            role = iam.Role(self, cid, assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
                            description=f"{p}: the teardown's custom-resource Provider framework ({what})")
            role.add_to_policy(iam.PolicyStatement(
                sid="Logs", actions=["logs:CreateLogStream", "logs:PutLogEvents"], resources=[logs.log_group_arn]))
            return role

        self.framework_roles = (framework_role("FrameworkOnEventRole", "onEvent"),
                                framework_role("FrameworkWaiterRole", "isComplete, onTimeout"))
        self.provider = cr.Provider(
            self, "Provider", on_event_handler=self.on_event, is_complete_handler=self.is_complete,
            framework_on_event_role=self.framework_roles[0],
            framework_complete_and_timeout_role=self.framework_roles[1],
            query_interval=QUERY_INTERVAL, total_timeout=TOTAL_TIMEOUT, log_group=logs,
            disable_waiter_state_machine_logging=False,
            waiter_state_machine_log_options=cr.LogOptions(
                destination=state_machine_log_group(self, "WaiterLogs", cfg, f"{p}-teardown-waiter"),
                level=sfn.LogLevel.ALL))
        tag_key, tag_value = owner_tag(cfg)
        # Depends on the state machine (its ARN), so CloudFormation deletes this first: executions stop before
        # the state machine goes, and the endpoint before the roles it was created with.
        self.resource = CustomResource(
            self, "Resource", service_token=self.provider.service_token, resource_type=RESOURCE_TYPE,
            properties={"Prefix": p, "StateMachineArn": state_machine.state_machine_arn,
                        "OwnerTagKey": tag_key, "OwnerTagValue": tag_value})
        self.resource.node.add_dependency(role, *self.framework_roles)
        nag.acknowledge_role(role, TEARDOWN_ROLE_WILDCARDS)
        for framework in self.framework_roles:
            nag.acknowledge_role(framework, {"Logs": TEARDOWN_ROLE_WILDCARDS["Logs"]})
        nag.acknowledge_provider(self.provider)
