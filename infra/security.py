"""Least-privilege roles: SageMaker's execution role and the state machine's role (no managed *FullAccess).

Everything is scoped to the project's bucket prefixes and to SageMaker names that start with "<prefix>-"
(SageMaker lower-cases names in ARNs; the prefix is validated lowercase).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from aws_cdk import ArnFormat, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from constructs import Construct

import stackfacts as facts
from infra import images, nag
from infra import sagemaker_requests as req
from infra.config import StackConfig

# Managed EventBridge rules through which Step Functions learns that a .sync SageMaker job ended.
SYNC_EVENT_RULES = ("StepFunctionsGetEventsForSageMakerTrainingJobsRule",
                    "StepFunctionsGetEventsForSageMakerTuningJobsRule")

# --- the state machine role: what each integration (Task Resource + pattern) needs, from ONE table -------------
# Resource kinds the table refers to; Roles turns each into ARNs (scoped to the project's names).
TUNING, TRAINING, MODEL, CONFIG, ENDPOINT = "tuning", "training", "model", "config", "endpoint"
ALARMS, TRAINING_RULE, TUNING_RULE, SAGEMAKER_ROLE = "alarms", "training-rule", "tuning-rule", "sagemaker-role"
SCALABLE_TARGET, SCALING_ROLE = "scalable-target", "scaling-service-linked-role"
SCALING_ALARMS = "target-tracking-alarms"  # the CloudWatch alarms a target-tracking policy makes for the variant
PRETRAINED = "pretrained-weights"  # the one staged weights object (StackConfig.pretrained_key)

SFN_SAGEMAKER_IAM = "https://docs.aws.amazon.com/step-functions/latest/dg/sagemaker-iam.html"
SAGEMAKER_TAGGING = ("https://docs.aws.amazon.com/sagemaker/latest/dg/security_iam_id-based-policy-examples.html"
                     "#api-access-policy")  # tags given on Create* need sagemaker:AddTags
GUARDRAILS = "https://docs.aws.amazon.com/sagemaker/latest/dg/deployment-guardrails-configuration.html"
SFN_AWS_SDK = "https://docs.aws.amazon.com/step-functions/latest/dg/supported-services-awssdk.html"
# "To use HEAD, you must have the s3:GetObject permission" (no s3:HeadObject action exists).
S3_HEAD_OBJECT = "https://docs.aws.amazon.com/AmazonS3/latest/API/API_HeadObject.html"
CDK_TASKS = "https://github.com/aws/aws-cdk/tree/main/packages/aws-cdk-lib/aws-stepfunctions-tasks/lib/sagemaker"
# What registering a variant for autoscaling needs of the caller: SageMaker reads and capacity updates on the
# endpoint, Application Auto Scaling itself, and creating its service-linked role the first time (condition on
# iam:AWSServiceName).
SCALING_PERMISSIONS = "https://docs.aws.amazon.com/sagemaker/latest/dg/endpoint-auto-scaling-prerequisites.html"
SCALING_SLR = ("https://docs.aws.amazon.com/autoscaling/application/userguide/"
               "application-auto-scaling-service-linked-roles.html")
# A target-tracking policy's alarms are made and deleted with the caller's CloudWatch permissions ("Permissions
# required for API actions on target services and CloudWatch"); Application Auto Scaling names them
# TargetTracking-<ResourceId>-AlarmHigh/Low-<uuid>.
SCALING_CLOUDWATCH = ("https://docs.aws.amazon.com/autoscaling/application/userguide/"
                      "security_iam_id-based-policy-examples.html#application-auto-scaling-additional-permissions")
# "If the update would change the instance type for any model that is a target for auto scaling, the update
# fails ... deregister the variant as a scalable target by calling DeregisterScalableTarget".
SCALING_UPDATE = "https://docs.aws.amazon.com/sagemaker/latest/dg/endpoint-scaling-update.html"
SCALING_SERVICE = "sagemaker.application-autoscaling.amazonaws.com"
SCALING_ROLE_NAME = "AWSServiceRoleForApplicationAutoScaling_SageMakerEndpoint"


@dataclass(frozen=True)
class Need:
    """One IAM action an integration needs, on which kinds of resource, and where AWS says so."""

    action: str
    kinds: tuple[str, ...]
    source: str


def _sync_job(create: str, describe: str, stop: str, kind: str, rule: str, *extra: str) -> tuple[Need, ...]:
    # sagemaker-iam.html, ".sync" policies: Create/Describe/Stop on the job, ListTags (Step Functions reads the
    # job's tags), PassRole, and the managed EventBridge rule that reports the job's end.
    return (Need(f"sagemaker:{create}", (kind,), SFN_SAGEMAKER_IAM),
            Need(f"sagemaker:{describe}", (kind,), SFN_SAGEMAKER_IAM),
            Need(f"sagemaker:{stop}", (kind,), SFN_SAGEMAKER_IAM),
            *(Need(f"sagemaker:{a}", (kind,), SFN_SAGEMAKER_IAM) for a in extra),
            Need("sagemaker:ListTags", (kind,), SFN_SAGEMAKER_IAM),
            Need("sagemaker:AddTags", (kind,), SAGEMAKER_TAGGING),
            Need("iam:PassRole", (SAGEMAKER_ROLE,), SFN_SAGEMAKER_IAM),
            *(Need(f"events:{a}", (rule,), SFN_SAGEMAKER_IAM) for a in ("PutTargets", "PutRule", "DescribeRule")))


_SCALED = (Need("sagemaker:DescribeEndpoint", (ENDPOINT,), SCALING_PERMISSIONS),
           Need("sagemaker:DescribeEndpointConfig", (CONFIG,), SCALING_PERMISSIONS),
           Need("sagemaker:UpdateEndpointWeightsAndCapacities", (ENDPOINT,), SCALING_PERMISSIONS),
           Need("iam:CreateServiceLinkedRole", (SCALING_ROLE,), SCALING_SLR))


# Key: the Task's Resource without "arn:<partition>:states:::" (pattern suffix included).
STATE_MACHINE_NEEDS: dict[str, tuple[Need, ...]] = {
    "sagemaker:createHyperParameterTuningJob.sync": _sync_job(
        "CreateHyperParameterTuningJob", "DescribeHyperParameterTuningJob", "StopHyperParameterTuningJob", TUNING,
        TUNING_RULE, "ListTrainingJobsForHyperParameterTuningJob"),
    "sagemaker:createTrainingJob.sync": _sync_job(
        "CreateTrainingJob", "DescribeTrainingJob", "StopTrainingJob", TRAINING, TRAINING_RULE),
    # Request/response integrations: aws-cdk-lib's SageMakerCreateModel/-EndpointConfig/-Endpoint add ListTags
    # (citing sagemaker-iam.html); CreateEndpoint and UpdateEndpoint authorize the endpoint config too.
    "sagemaker:createModel": (Need("sagemaker:CreateModel", (MODEL,), CDK_TASKS),
                              Need("sagemaker:ListTags", (MODEL,), CDK_TASKS),
                              Need("sagemaker:AddTags", (MODEL,), SAGEMAKER_TAGGING),
                              Need("iam:PassRole", (SAGEMAKER_ROLE,), SFN_SAGEMAKER_IAM)),
    "sagemaker:createEndpointConfig": (Need("sagemaker:CreateEndpointConfig", (CONFIG,), CDK_TASKS),
                                       Need("sagemaker:ListTags", (CONFIG,), CDK_TASKS),
                                       Need("sagemaker:AddTags", (CONFIG,), SAGEMAKER_TAGGING)),
    "sagemaker:createEndpoint": (Need("sagemaker:CreateEndpoint", (ENDPOINT, CONFIG), CDK_TASKS),
                                 Need("sagemaker:ListTags", (ENDPOINT,), CDK_TASKS),
                                 Need("sagemaker:AddTags", (ENDPOINT,), SAGEMAKER_TAGGING)),
    # UpdateEndpoint's AutoRollbackConfiguration names CloudWatch alarms that SageMaker describes for the caller.
    "sagemaker:updateEndpoint": (Need("sagemaker:UpdateEndpoint", (ENDPOINT, CONFIG), CDK_TASKS),
                                 Need("cloudwatch:DescribeAlarms", (ALARMS,), GUARDRAILS)),
    # aws-sdk integrations: exactly the API action (https://docs.aws.amazon.com/step-functions/latest/dg/
    # supported-services-awssdk.html: "the IAM action of the API called").
    "aws-sdk:sagemaker:describeHyperParameterTuningJob": (
        Need("sagemaker:DescribeHyperParameterTuningJob", (TUNING,), SFN_SAGEMAKER_IAM),),
    "aws-sdk:sagemaker:describeTrainingJob": (Need("sagemaker:DescribeTrainingJob", (TRAINING,), SFN_SAGEMAKER_IAM),),
    "aws-sdk:sagemaker:describeEndpoint": (Need("sagemaker:DescribeEndpoint", (ENDPOINT,), SFN_SAGEMAKER_IAM),),
    # "Describe live endpoint config": the live variant's instance type decides whether an update must leave
    # Application Auto Scaling first (SCALING_UPDATE); the live config is one of this stack's ('<prefix>-<run id>').
    "aws-sdk:sagemaker:describeEndpointConfig": (
        Need("sagemaker:DescribeEndpointConfig", (CONFIG,), SFN_AWS_SDK),),
    # "Stop tuning job": a tuning job still running when its .sync task failed is stopped before the run ends
    # (https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_StopHyperParameterTuningJob.html).
    "aws-sdk:sagemaker:stopHyperParameterTuningJob": (
        Need("sagemaker:StopHyperParameterTuningJob", (TUNING,), SFN_AWS_SDK),),
    # "Stop training job": the run's training job, when its task failed while it may still run (review 4 R9;
    # https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_StopTrainingJob.html).
    "aws-sdk:sagemaker:stopTrainingJob": (Need("sagemaker:StopTrainingJob", (TRAINING,), SFN_AWS_SDK),),
    "aws-sdk:applicationautoscaling:registerScalableTarget": (
        Need("application-autoscaling:RegisterScalableTarget", (SCALABLE_TARGET,), SCALING_PERMISSIONS), *_SCALED),
    "aws-sdk:applicationautoscaling:putScalingPolicy": (
        Need("application-autoscaling:PutScalingPolicy", (SCALABLE_TARGET,), SCALING_PERMISSIONS), *_SCALED,
        *(Need(f"cloudwatch:{a}", (SCALING_ALARMS,), SCALING_CLOUDWATCH)
          for a in ("PutMetricAlarm", "DescribeAlarms", "DeleteAlarms"))),
    # Before a blue/green update (SCALING_UPDATE): deregistering deletes the target's policy and so its
    # target-tracking alarms, with the caller's CloudWatch permissions (SCALING_CLOUDWATCH).
    "aws-sdk:applicationautoscaling:deregisterScalableTarget": (
        Need("application-autoscaling:DeregisterScalableTarget", (SCALABLE_TARGET,), SCALING_UPDATE),
        *(Need(f"cloudwatch:{a}", (SCALING_ALARMS,), SCALING_CLOUDWATCH) for a in ("DescribeAlarms", "DeleteAlarms"))),
    # "Check pretrained weights" (SFN_AWS_SDK): HeadObject is authorized by s3:GetObject (S3_HEAD_OBJECT), here on
    # the one weights object. Without s3:ListBucket a missing object answers 403, not 404: either fails the state.
    "aws-sdk:s3:headObject": (Need("s3:GetObject", (PRETRAINED,), S3_HEAD_OBJECT),),
}
# Statement ids by resource-kind set: one statement per set, so every action appears exactly once.
_SIDS: dict[frozenset[str], str] = {
    frozenset({TUNING}): "Tune", frozenset({TRAINING}): "Train", frozenset({MODEL}): "Model",
    frozenset({CONFIG}): "EndpointConfig", frozenset({ENDPOINT}): "EndpointOnly",
    frozenset({ENDPOINT, CONFIG}): "Endpoint", frozenset({ALARMS}): "RollbackAlarms",
    frozenset({SAGEMAKER_ROLE}): "PassSageMakerRole", frozenset({TRAINING_RULE, TUNING_RULE}): "SyncEvents",
    frozenset({TRAINING_RULE}): "SyncEvents", frozenset({TUNING_RULE}): "SyncEvents",
    frozenset({TUNING, TRAINING, MODEL, CONFIG, ENDPOINT}): "Tags", frozenset({PRETRAINED}): "PretrainedWeights",
    frozenset({SCALABLE_TARGET}): "Autoscaling", frozenset({SCALING_ROLE}): "AutoscalingServiceLinkedRole",
    frozenset({SCALING_ALARMS}): "ScalingAlarms", frozenset({ALARMS, SCALING_ALARMS}): "Alarms",
}


# Why each wildcard of the state machine role is as narrow as it can be (cdk-nag IAM5, by the Sids of _SIDS).
STATE_MACHINE_ROLE_WILDCARDS: dict[str, str] = {
    "Tune": "Tuning jobs are named '<prefix>-<run id>' per execution: scoped to the project's name prefix.",
    "Train": "Training jobs are named '<prefix>-<run id>' per execution: scoped to the project's name prefix.",
    "Model": "Models are named '<prefix>-<run id>' per execution: scoped to the project's name prefix.",
    "EndpointConfig": "Endpoint configs are immutable and named '<prefix>-<run id>' per execution: scoped to the "
                      "project's name prefix.",
    "Endpoint": "CreateEndpoint/UpdateEndpoint also authorize the per-execution endpoint config "
                "('<prefix>-<run id>'); the endpoint itself is named exactly.",
    "Tags": "Tags are set when the per-execution resources ('<prefix>-<run id>') are created, and Step Functions "
            "lists the tags of what it created (sagemaker-iam.html): scoped to the project's name prefix.",
    "Autoscaling": "Application Auto Scaling gives scalable targets generated ids (scalable-target/<id>), unknown "
                   "before registration: scoped to this account and region; the variant itself is named in the "
                   "request, and the SageMaker actions scaling needs are scoped to the endpoint. Not narrowed by "
                   "ABAC (aws:ResourceTag): the target registered by earlier executions carries no tag, so a tag "
                   "condition would deny the deregistration every update needs, and which of these actions honour "
                   "the key is not confirmed (service-authorization/latest/reference/"
                   "list_awsapplicationautoscaling.html).",
    "ScalingAlarms": "The target-tracking policy's CloudWatch alarms get generated names "
                     "(TargetTracking-endpoint/<endpoint>/variant/<variant>-AlarmHigh-<uuid>): scoped to this "
                     "endpoint's alarms.",
    "Alarms": "The rollback alarms by name, and this endpoint's target-tracking alarms (generated names, scoped "
              "to the endpoint).",
}


def _sid(kinds: frozenset[str]) -> str:
    return _SIDS.get(kinds) or "On" + "".join(k.title().replace("-", "") for k in sorted(kinds))


def integration_key(resource: str) -> str:
    """'arn:aws:states:::sagemaker:createTrainingJob.sync' -> 'sagemaker:createTrainingJob.sync'."""
    return resource.split(":::", 1)[1] if ":::" in resource else resource


def needed_actions(integrations: Iterable[str]) -> dict[str, set[str]]:
    """Action -> the resource kinds it is needed on, for these integrations (KeyError names an unknown one)."""
    out: dict[str, set[str]] = {}
    for key in integrations:
        if key not in STATE_MACHINE_NEEDS:
            raise KeyError(f"no IAM entry for integration {key!r}: add it to infra.security.STATE_MACHINE_NEEDS")
        for need in STATE_MACHINE_NEEDS[key]:
            out.setdefault(need.action, set()).update(need.kinds)
    return out


def sagemaker_arn(scope: Construct, resource: str, name: str) -> str:
    return Stack.of(scope).format_arn(service="sagemaker", resource=resource, resource_name=name)


def log_group_arn(scope: Construct, name: str) -> str:
    return Stack.of(scope).format_arn(service="logs", resource="log-group", resource_name=f"{name}:*",
                                      arn_format=ArnFormat.COLON_RESOURCE_NAME)


# Why each wildcard of the SageMaker execution role is as narrow as it can be (cdk-nag IAM5, by Sid).
SAGEMAKER_ROLE_WILDCARDS: dict[str, str] = {
    "ReadDatasets": "SageMaker reads any dataset the execution names, but only under the project bucket's data "
                    "prefix (datasets are folders of images).",
    "ReadWriteArtifacts": "Training, checkpoint, Debugger and Profiler output: SageMaker writes per-job keys under "
                          "these project prefixes only, and reads them back (CreateModel's model.tar.gz, checkpoint "
                          "sync, Debugger and Profiler rule jobs).",
    "WriteOnlyOutputs": "Tuning-trial output and data capture: SageMaker writes per-job keys under these project "
                        "prefixes only; nothing in the stack reads them as this role.",
    "ReadTrainingSource": "Training source bundles of this app only (its asset prefix in the CDK bootstrap bucket): "
                          "a running execution keeps reading the bundle its definition named before a redeploy.",
    "SyncCheckpoints": "Checkpoint sync may remove stale checkpoint files, under checkpoints/ only.",
    "EcrToken": "ecr:GetAuthorizationToken has no resource-level permissions; image pulls are scoped to the "
                "three repositories.",
    "Logs": "SageMaker names log streams per job inside its fixed log groups (TrainingJobs, ProcessingJobs for "
            "Debugger rules, Endpoints/<endpoint>); the ':*' is the log-stream part of those groups.",
    "Metrics": "cloudwatch:PutMetricData has no resource-level permissions; limited to SageMaker namespaces.",
}


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
        # Read back: the final model (CreateModel), checkpoint sync, Debugger tensors and profiler data (rule jobs).
        read_back = (req.TRAINING_OUTPUT, req.CHECKPOINTS, req.DEBUGGER_OUTPUT, req.PROFILER_OUTPUT)
        # Written only (review 2 item 7): trial output (CreateModel reads training/, warm start reads no S3) and data
        # capture; local/sagemaker/s3.py enforces this in the stand-in (nothing reads them as this role).
        write_only = (req.TUNING_OUTPUT, req.DATA_CAPTURE)
        listed = (data, req.TUNING_OUTPUT, *read_back)  # a training job's output path (trials' too); not capture
        sm.add_to_policy(iam.PolicyStatement(
            sid="ListProjectPrefixes", actions=["s3:ListBucket"], resources=[bucket.bucket_arn],
            conditions={"StringLike": {"s3:prefix": [f"{x}*" for x in listed]}}))
        sm.add_to_policy(iam.PolicyStatement(
            sid="BucketLocation", actions=["s3:GetBucketLocation"], resources=[bucket.bucket_arn]))
        sm.add_to_policy(iam.PolicyStatement(
            sid="ReadDatasets", actions=["s3:GetObject"], resources=[bucket.arn_for_objects(f"{data}*")]))
        sm.add_to_policy(iam.PolicyStatement(
            sid="ReadWriteArtifacts", actions=["s3:GetObject", "s3:PutObject"],
            resources=[bucket.arn_for_objects(f"{x}*") for x in read_back]))
        sm.add_to_policy(iam.PolicyStatement(
            sid="WriteOnlyOutputs", actions=["s3:PutObject"],
            resources=[bucket.arn_for_objects(f"{x}*") for x in write_only]))
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
            resources=[log_group_arn(self, facts.TRAINING_LOG_GROUP),
                       log_group_arn(self, "/aws/sagemaker/ProcessingJobs"),  # Debugger rule evaluations
                       log_group_arn(self, f"/aws/sagemaker/Endpoints/{cfg.endpoint_name}")]))
        sm.add_to_policy(iam.PolicyStatement(
            sid="Metrics", actions=["cloudwatch:PutMetricData"], resources=["*"],
            conditions={"StringLike": {"cloudwatch:namespace": ["/aws/sagemaker/*", "aws/sagemaker/*"]}}))

        # The rollback alarms of blue/green updates: "Ensure that your IAM execution role has permission to
        # perform the cloudwatch:DescribeAlarms action on the auto-rollback alarms you specify" (GUARDRAILS).
        sm.add_to_policy(iam.PolicyStatement(
            sid="RollbackAlarms", actions=["cloudwatch:DescribeAlarms"], resources=alarm_arns(self, cfg)))
        nag.acknowledge_role(sm, SAGEMAKER_ROLE_WILDCARDS)

        self.state_machine = iam.Role(
            self, "StateMachine", assumed_by=iam.ServicePrincipal("states.amazonaws.com"),
            description=f"{p}: runs the tune/train/gate/deploy state machine")
        self._cfg = cfg
        self._bucket = bucket

    def grant_state_machine(self, integrations: Iterable[str]) -> None:
        """The state machine role's SageMaker, EventBridge, CloudWatch and PassRole statements, derived from the
        integrations its definition uses (STATE_MACHINE_NEEDS): one statement per resource set, each action once."""
        cfg, p = self._cfg, self._cfg.prefix
        stack = Stack.of(self)
        arns: dict[str, list[str]] = {
            TUNING: [sagemaker_arn(self, "hyper-parameter-tuning-job", f"{p}-*")],
            TRAINING: [sagemaker_arn(self, "training-job", f"{p}-*")],
            MODEL: [sagemaker_arn(self, "model", f"{p}-*")],
            CONFIG: [sagemaker_arn(self, "endpoint-config", f"{p}-*")],
            ENDPOINT: [sagemaker_arn(self, "endpoint", cfg.endpoint_name)],
            ALARMS: alarm_arns(self, cfg),
            SCALING_ALARMS: [stack.format_arn(service="cloudwatch", resource="alarm",
                                              resource_name=f"TargetTracking-endpoint/{cfg.endpoint_name}/variant/*",
                                              arn_format=ArnFormat.COLON_RESOURCE_NAME)],
            TRAINING_RULE: [stack.format_arn(service="events", resource="rule", resource_name=SYNC_EVENT_RULES[0])],
            TUNING_RULE: [stack.format_arn(service="events", resource="rule", resource_name=SYNC_EVENT_RULES[1])],
            SAGEMAKER_ROLE: [self.sagemaker.role_arn],
            # Scalable targets have generated ARNs (scalable-target/<id>): scoped to this account and region; the
            # SageMaker side of scaling is scoped to the endpoint above.
            SCALABLE_TARGET: [stack.format_arn(service="application-autoscaling", resource="scalable-target",
                                               resource_name="*")],
            SCALING_ROLE: [stack.format_arn(service="iam", region="", resource="role",
                                            resource_name=f"aws-service-role/{SCALING_SERVICE}/{SCALING_ROLE_NAME}")],
            PRETRAINED: [self._bucket.arn_for_objects(cfg.pretrained_key)] if cfg.pretrained_key else [],
        }
        groups: dict[frozenset[str], list[str]] = {}
        for action, needed_on in sorted(needed_actions(integrations).items()):
            groups.setdefault(frozenset(needed_on), []).append(action)
        for kinds, actions in groups.items():
            conditions = ({"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}
                          if kinds == {SAGEMAKER_ROLE} else
                          {"StringLike": {"iam:AWSServiceName": SCALING_SERVICE}} if kinds == {SCALING_ROLE} else None)
            self.state_machine.add_to_policy(iam.PolicyStatement(
                sid=_sid(kinds), actions=actions, conditions=conditions,
                resources=[arn for kind in sorted(kinds) for arn in arns[kind]]))
        nag.acknowledge_role(self.state_machine, STATE_MACHINE_ROLE_WILDCARDS)


def alarm_arns(scope: Construct, cfg: StackConfig) -> list[str]:
    return [Stack.of(scope).format_arn(service="cloudwatch", resource="alarm", resource_name=name,
                                       arn_format=ArnFormat.COLON_RESOURCE_NAME) for name in cfg.alarm_names]
