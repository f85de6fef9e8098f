"""Least-privilege roles: SageMaker's execution role and the state machine's role (no managed *FullAccess).

Everything is scoped to the project's bucket prefixes and to SageMaker names that start with "<prefix>-"
(SageMaker lower-cases names in ARNs; the prefix is validated lowercase).
"""

from __future__ import annotations

from collections.abc import Callable

from aws_cdk import ArnFormat, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra import images
from infra import sagemaker_requests as req
from infra.config import StackConfig

# Managed EventBridge rules through which Step Functions learns that a .sync SageMaker job ended.
SYNC_EVENT_RULES = ("StepFunctionsGetEventsForSageMakerTrainingJobsRule",
                    "StepFunctionsGetEventsForSageMakerTuningJobsRule")


def sagemaker_arn(scope: Construct, resource: str, name: str) -> str:
    return Stack.of(scope).format_arn(service="sagemaker", resource=resource, resource_name=name)


def log_group_arn(scope: Construct, name: str) -> str:
    return Stack.of(scope).format_arn(service="logs", resource="log-group", resource_name=f"{name}:*",
                                      arn_format=ArnFormat.COLON_RESOURCE_NAME)


class Roles(Construct):
    def __init__(self, scope: Construct, cid: str, *, cfg: StackConfig, bucket: s3.IBucket,
                 sourcedir_bucket: str, sourcedir_key: str, image: Callable[[str], str]) -> None:
        super().__init__(scope, cid)
        p = cfg.prefix
        self.sagemaker = iam.Role(
            self, "SageMakerExecution", assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"),
            description=f"{p}: tuning trials, the training job, Debugger rule jobs and the endpoint's model")
        sm = self.sagemaker
        data = cfg.data_prefix
        written = (req.TUNING_OUTPUT, req.TRAINING_OUTPUT, req.CHECKPOINTS, req.DEBUGGER_OUTPUT,
                   req.PROFILER_OUTPUT, req.DATA_CAPTURE)
        sm.add_to_policy(iam.PolicyStatement(
            sid="ListProjectPrefixes", actions=["s3:ListBucket"], resources=[bucket.bucket_arn],
            conditions={"StringLike": {"s3:prefix": [f"{x}*" for x in (data, *written)]}}))
        sm.add_to_policy(iam.PolicyStatement(
            sid="BucketLocation", actions=["s3:GetBucketLocation"], resources=[bucket.bucket_arn]))
        sm.add_to_policy(iam.PolicyStatement(
            sid="ReadDatasets", actions=["s3:GetObject"], resources=[bucket.arn_for_objects(f"{data}*")]))
        sm.add_to_policy(iam.PolicyStatement(
            sid="ReadWriteArtifacts", actions=["s3:GetObject", "s3:PutObject"],
            resources=[bucket.arn_for_objects(f"{x}*") for x in written]))
        sm.add_to_policy(iam.PolicyStatement(
            sid="SyncCheckpoints", actions=["s3:DeleteObject"],
            resources=[bucket.arn_for_objects(f"{req.CHECKPOINTS}*")]))
        sm.add_to_policy(iam.PolicyStatement(
            sid="ReadTrainingSource", actions=["s3:GetObject"],
            resources=[f"arn:{Stack.of(self).partition}:s3:::{sourcedir_bucket}/{sourcedir_key}"]))
        repositories = [image(f"{k}Repository") for k in (images.TRAINING_IMAGE, images.INFERENCE_IMAGE)]
        if cfg.debugger.enabled:
            repositories.append(image(f"{images.RULES_IMAGE}Repository"))
        sm.add_to_policy(iam.PolicyStatement(
            sid="PullImages", resources=repositories,
            actions=["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"]))
        sm.add_to_policy(iam.PolicyStatement(
            sid="EcrToken", actions=["ecr:GetAuthorizationToken"], resources=["*"]))
        sm.add_to_policy(iam.PolicyStatement(
            sid="Logs", actions=["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents",
                                 "logs:DescribeLogStreams"],
            resources=[log_group_arn(self, "/aws/sagemaker/TrainingJobs"),
                       log_group_arn(self, "/aws/sagemaker/ProcessingJobs"),  # Debugger rule evaluations
                       log_group_arn(self, f"/aws/sagemaker/Endpoints/{cfg.endpoint_name}")]))
        sm.add_to_policy(iam.PolicyStatement(
            sid="Metrics", actions=["cloudwatch:PutMetricData"], resources=["*"],
            conditions={"StringLike": {"cloudwatch:namespace": ["/aws/sagemaker/*", "aws/sagemaker/*"]}}))

        self.state_machine = iam.Role(
            self, "StateMachine", assumed_by=iam.ServicePrincipal("states.amazonaws.com"),
            description=f"{p}: runs the tune/train/gate/deploy state machine")
        tuning = sagemaker_arn(self, "hyper-parameter-tuning-job", f"{p}-*")
        training = sagemaker_arn(self, "training-job", f"{p}-*")
        model = sagemaker_arn(self, "model", f"{p}-*")
        config = sagemaker_arn(self, "endpoint-config", f"{p}-*")
        endpoint = sagemaker_arn(self, "endpoint", cfg.endpoint_name)
        sfr = self.state_machine
        sfr.add_to_policy(iam.PolicyStatement(
            sid="Tune", resources=[tuning],
            actions=["sagemaker:CreateHyperParameterTuningJob", "sagemaker:DescribeHyperParameterTuningJob",
                     "sagemaker:StopHyperParameterTuningJob", "sagemaker:ListTrainingJobsForHyperParameterTuningJob"]))
        sfr.add_to_policy(iam.PolicyStatement(
            sid="Train", resources=[training],
            actions=["sagemaker:CreateTrainingJob", "sagemaker:DescribeTrainingJob", "sagemaker:StopTrainingJob"]))
        sfr.add_to_policy(iam.PolicyStatement(sid="Model", actions=["sagemaker:CreateModel"], resources=[model]))
        sfr.add_to_policy(iam.PolicyStatement(
            sid="EndpointConfig", actions=["sagemaker:CreateEndpointConfig"], resources=[config]))
        # CreateEndpoint/UpdateEndpoint authorize against both the endpoint and the config they use.
        sfr.add_to_policy(iam.PolicyStatement(
            sid="Endpoint", actions=["sagemaker:CreateEndpoint", "sagemaker:UpdateEndpoint"],
            resources=[endpoint, config]))
        sfr.add_to_policy(iam.PolicyStatement(
            sid="DescribeEndpoint", actions=["sagemaker:DescribeEndpoint"], resources=[endpoint]))
        sfr.add_to_policy(iam.PolicyStatement(
            sid="TagOnCreate", actions=["sagemaker:AddTags"], resources=[tuning, training, model, config, endpoint]))
        sfr.add_to_policy(iam.PolicyStatement(
            sid="PassSageMakerRole", actions=["iam:PassRole"], resources=[sm.role_arn],
            conditions={"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}))
        sfr.add_to_policy(iam.PolicyStatement(
            sid="SyncEvents", actions=["events:PutTargets", "events:PutRule", "events:DescribeRule"],
            resources=[Stack.of(self).format_arn(service="events", resource="rule", resource_name=name)
                       for name in SYNC_EVENT_RULES]))
