"""`cdk destroy` also removes what the state machine created (endpoint, endpoint configs, models) and stops its
running executions and jobs, so nothing outside CloudFormation is left billing."""

from __future__ import annotations

from pathlib import Path

from aws_cdk import ArnFormat, CustomResource, Duration, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from infra.common import log_group
from infra.config import StackConfig
from infra.security import sagemaker_arn

HANDLER_DIR = Path(__file__).resolve().parent / "teardown_handler"
RESOURCE_TYPE = "Custom::SageMakerTeardown"


class Teardown(Construct):
    def __init__(self, scope: Construct, cid: str, *, cfg: StackConfig, state_machine: sfn.StateMachine) -> None:
        super().__init__(scope, cid)
        p = cfg.prefix
        stack = Stack.of(self)
        logs = log_group(self, "Logs", cfg)
        role = iam.Role(self, "Role", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
                        description=f"{p}: deletes the state machine's SageMaker resources on stack deletion")
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
        role.add_to_policy(iam.PolicyStatement(
            sid="StopJobs", actions=["sagemaker:StopHyperParameterTuningJob", "sagemaker:StopTrainingJob"],
            resources=[sagemaker_arn(self, "hyper-parameter-tuning-job", f"{p}-*"),
                       sagemaker_arn(self, "training-job", f"{p}-*")]))
        role.add_to_policy(iam.PolicyStatement(
            sid="ListExecutions", actions=["states:ListExecutions"], resources=[state_machine.state_machine_arn]))
        role.add_to_policy(iam.PolicyStatement(
            sid="StopExecutions", actions=["states:StopExecution"],
            resources=[stack.format_arn(service="states", resource="execution",
                                        resource_name=f"{cfg.state_machine_name}:*",
                                        arn_format=ArnFormat.COLON_RESOURCE_NAME)]))
        self.function = lambda_.Function(
            self, "Function",
            description=f"{p}: on stack deletion, remove endpoints/configs/models named {p}-*",
            runtime=lambda_.Runtime.PYTHON_3_14,
            architecture=lambda_.Architecture.ARM_64,
            handler="handler.handler",
            code=lambda_.Code.from_asset(str(HANDLER_DIR), exclude=["__pycache__", "*.pyc", "__init__.py"]),
            timeout=Duration.minutes(5),
            memory_size=256,
            role=role,
            log_group=logs,
            tracing=lambda_.Tracing.ACTIVE,
        )
        # Depends on the state machine (its ARN), so CloudFormation deletes this first: executions stop before
        # the state machine goes, and the endpoint before the roles it was created with.
        self.resource = CustomResource(
            self, "Resource", service_token=self.function.function_arn, resource_type=RESOURCE_TYPE,
            properties={"Prefix": p, "StateMachineArn": state_machine.state_machine_arn})
        self.resource.node.add_dependency(role)
