"""`cdk destroy` removes what the state machine created outside CloudFormation: handlers for aws-cdk-lib's
custom-resource Provider framework (custom_resources.Provider), which answers CloudFormation itself, polls
`is_complete` until it says done, and reports FAILED when a handler raises or the total timeout passes.

CloudFormation sends Delete both when the stack is deleted and when the resource leaves the template (removed,
renamed, replaced, or the update that added it rolled back):
https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/crpg-ref-requesttypes-delete.html
Only the first may touch the live endpoint, so `on_event` acts only while the stack itself is DELETE_IN_PROGRESS
(DescribeStacks' StackStatus, https://docs.aws.amazon.com/AWSCloudFormation/latest/APIReference/API_Stack.html);
any other status (UPDATE_COMPLETE_CLEANUP_IN_PROGRESS, UPDATE_ROLLBACK_IN_PROGRESS, ROLLBACK_IN_PROGRESS...)
is a template change, and nothing is touched.

What is "ours": names that start with "<prefix>-" AND carry the owner tag that every request of the state machine
sets (ResourceProperties OwnerTagKey/OwnerTagValue), never everything named <prefix>-* in the account.

Order: stop the state machine's running executions (nothing new gets created), stop running tuning and training
jobs and wait until none is InProgress/Stopping, deregister each endpoint's autoscaling and delete endpoints once
they are not Creating (an endpoint Creating is waited for, then deleted; one Updating is asked to go at once and
waited for while SageMaker refuses), and once no endpoint is
left, the endpoint configs and models.
Standard library and boto3 only (the Lambda runtime's).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import boto3
from botocore.exceptions import ClientError

log = logging.getLogger()
log.setLevel(logging.INFO)

DELETING_STACK = "DELETE_IN_PROGRESS"
# Training job / tuning job statuses that still run (and bill): DescribeTrainingJob.TrainingJobStatus,
# DescribeHyperParameterTuningJob.HyperParameterTuningJobStatus (botocore sagemaker service-2.json).
RUNNING_JOB = ("InProgress", "Stopping")
# EndpointStatus values in which the teardown only waits: being created, or already being deleted
# (https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_DescribeEndpoint.html#sagemaker-DescribeEndpoint-response-EndpointStatus).
# An Updating / SystemUpdating / RollingBack endpoint gets DeleteEndpoint too, so that a long blue/green update does
# not hold the teardown; SageMaker's answer is not documented for these states, so a ValidationException ("cannot
# delete while ...") is pending, and the config bounds an update to fit the teardown's budget anyway
# (infra.config TEARDOWN_TOTAL_S).
ENDPOINT_WAIT = ("Creating", "Deleting")
# Application Auto Scaling's namespace and ResourceId of an endpoint variant
# (https://docs.aws.amazon.com/autoscaling/application/APIReference/API_RegisterScalableTarget.html): the state
# machine registers its endpoint's variant; DeregisterScalableTarget also deletes the target's scaling policies
# (https://docs.aws.amazon.com/autoscaling/application/APIReference/API_DeregisterScalableTarget.html).
SCALING_NAMESPACE = "sagemaker"
TEARDOWN = "TearDown"  # the Data flag on_event hands to is_complete ("true": the stack is being deleted)


class Clients:
    def __init__(self, sagemaker=None, stepfunctions=None, cloudformation=None, autoscaling=None) -> None:
        self._sagemaker, self._stepfunctions, self._cloudformation = sagemaker, stepfunctions, cloudformation
        self._autoscaling = autoscaling

    @property
    def autoscaling(self):
        self._autoscaling = self._autoscaling or boto3.client("application-autoscaling")
        return self._autoscaling

    @property
    def sagemaker(self):
        self._sagemaker = self._sagemaker or boto3.client("sagemaker")
        return self._sagemaker

    @property
    def stepfunctions(self):
        self._stepfunctions = self._stepfunctions or boto3.client("stepfunctions")
        return self._stepfunctions

    @property
    def cloudformation(self):
        self._cloudformation = self._cloudformation or boto3.client("cloudformation")
        return self._cloudformation


class Owner:
    """What this stack made: a name prefix and an owner tag, both required."""

    def __init__(self, props: dict[str, Any]) -> None:
        self.prefix = str(props["Prefix"])
        self.tag_key = str(props["OwnerTagKey"])
        self.tag_value = str(props["OwnerTagValue"])
        self.state_machine_arn = props.get("StateMachineArn")

    def named(self, name: str) -> bool:
        # SageMaker's NameContains is case-insensitive; names the state machine makes are lowercase.
        return name.lower().startswith(f"{self.prefix}-")

    def tagged(self, sagemaker, arn: str) -> bool:
        """A resource that disappears between List* and ListTags (deleted meanwhile) is not ours to act on."""
        tags: list[dict[str, str]] = []
        try:
            for page in sagemaker.get_paginator("list_tags").paginate(ResourceArn=arn):
                tags += page.get("Tags", [])
        except ClientError as exc:
            if _gone(exc):
                return False
            raise
        return any(t.get("Key") == self.tag_key and t.get("Value") == self.tag_value for t in tags)


def _code(exc: ClientError) -> str:
    return exc.response.get("Error", {}).get("Code", "")


def _gone(exc: ClientError) -> bool:
    """SageMaker answers 'not there' with ValidationException + a message, or ResourceNotFound."""
    message = str(exc).lower()
    return _code(exc) in ("ResourceNotFound", "ResourceNotFoundException") or (
        _code(exc) == "ValidationException" and ("could not find" in message or "does not exist" in message
                                                 or "not found" in message))


def _list(sagemaker, operation: str, key: str, owner: Owner, **kwargs: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for page in sagemaker.get_paginator(operation).paginate(NameContains=owner.prefix, **kwargs):
        items += page.get(key, [])
    return items


def stack_status(cloudformation, stack_id: str) -> str:
    (stack,) = cloudformation.describe_stacks(StackName=stack_id)["Stacks"]
    return stack["StackStatus"]


def stop_executions(stepfunctions, state_machine_arn: str | None) -> list[str]:
    stopped: list[str] = []
    if not state_machine_arn:
        return stopped
    for page in stepfunctions.get_paginator("list_executions").paginate(
            stateMachineArn=state_machine_arn, statusFilter="RUNNING"):
        for execution in page.get("executions", []):
            try:
                stepfunctions.stop_execution(executionArn=execution["executionArn"], error="StackDeleted",
                                             cause="The CloudFormation stack is being deleted.")
                stopped.append(execution["name"])
            except ClientError as exc:
                if _code(exc) != "ExecutionDoesNotExist":
                    raise
    return stopped


def _jobs(clients: Clients, owner: Owner, progress: dict[str, list[str]]) -> None:
    """Stop our running tuning and training jobs; the ones still InProgress/Stopping are pending.

    A trial job is stopped by its tuning job (StopHyperParameterTuningJob stops all its trials), so a trial already
    Stopping when its own StopTrainingJob arrives is normal: SageMaker refuses a stop of a job that is not
    InProgress with a ValidationException, which is only "pending" here, never a failure.
    """
    sm = clients.sagemaker
    kinds = (
        ("tuning job", "list_hyper_parameter_tuning_jobs", "HyperParameterTuningJobSummaries",
         "HyperParameterTuningJobName", "HyperParameterTuningJobArn", "HyperParameterTuningJobStatus",
         sm.stop_hyper_parameter_tuning_job),
        ("training job", "list_training_jobs", "TrainingJobSummaries", "TrainingJobName", "TrainingJobArn",
         "TrainingJobStatus", sm.stop_training_job),
    )
    for kind, operation, key, name_key, arn_key, status_key, stop in kinds:
        seen: set[str] = set()
        for status in RUNNING_JOB:
            for job in _list(sm, operation, key, owner, StatusEquals=status):
                name = job[name_key]
                if name in seen or not owner.named(name) or not owner.tagged(sm, job[arn_key]):
                    continue
                seen.add(name)  # a job stopped while listing InProgress shows up again as Stopping
                if job.get(status_key, status) == "InProgress":
                    try:
                        stop(**{name_key: name})
                        progress["stopped"].append(f"{kind} {name}")
                    except ClientError as exc:
                        if _code(exc) != "ValidationException":
                            raise
                progress["pending"].append(f"{kind} {name} ({job.get(status_key, status)})")


def _deregister_scaling(clients: Clients, endpoint: str, progress: dict[str, list[str]]) -> None:
    """The endpoint's variants leave Application Auto Scaling before the endpoint goes (their policies with them)."""
    aas = clients.autoscaling
    prefix = f"endpoint/{endpoint}/variant/"
    for page in aas.get_paginator("describe_scalable_targets").paginate(ServiceNamespace=SCALING_NAMESPACE):
        for target in page.get("ScalableTargets", []):
            if not target["ResourceId"].startswith(prefix):
                continue
            try:
                aas.deregister_scalable_target(ServiceNamespace=SCALING_NAMESPACE, ResourceId=target["ResourceId"],
                                               ScalableDimension=target["ScalableDimension"])
                progress["deleted"].append(f"scalable target {target['ResourceId']}")
            except ClientError as exc:
                if _code(exc) != "ObjectNotFoundException":
                    raise


def _endpoints(clients: Clients, owner: Owner, progress: dict[str, list[str]]) -> None:
    sm = clients.sagemaker
    for endpoint in _list(sm, "list_endpoints", "Endpoints", owner):
        name, status = endpoint["EndpointName"], endpoint.get("EndpointStatus", "")
        if not owner.named(name) or not owner.tagged(sm, endpoint["EndpointArn"]):
            continue
        if status not in ENDPOINT_WAIT:
            _deregister_scaling(clients, name, progress)
            try:
                sm.delete_endpoint(EndpointName=name)
                progress["deleted"].append(f"endpoint {name}")
            except ClientError as exc:
                if _gone(exc):
                    continue
                if _code(exc) != "ValidationException":  # busy again since it was listed: the next poll retries
                    raise
        progress["pending"].append(f"endpoint {name} ({status})")


def _definitions(clients: Clients, owner: Owner, progress: dict[str, list[str]]) -> None:
    """Endpoint configs, then models: an endpoint config names its models."""
    sm = clients.sagemaker
    for kind, operation, key, name_key, arn_key, delete in (
        ("endpoint config", "list_endpoint_configs", "EndpointConfigs", "EndpointConfigName", "EndpointConfigArn",
         sm.delete_endpoint_config),
        ("model", "list_models", "Models", "ModelName", "ModelArn", sm.delete_model),
    ):
        for item in _list(sm, operation, key, owner):
            name = item[name_key]
            if not owner.named(name) or not owner.tagged(sm, item[arn_key]):
                continue
            try:
                delete(**{name_key: name})
                progress["deleted"].append(f"{kind} {name}")
            except ClientError as exc:
                if not _gone(exc):
                    raise


def teardown_step(owner: Owner, clients: Clients) -> dict[str, list[str]]:
    """One idempotent pass; `pending` lists what is still running or being deleted (empty: done)."""
    progress: dict[str, list[str]] = {"stopped": [], "deleted": [], "pending": []}
    progress["stopped"] += [f"execution {n}" for n in stop_executions(clients.stepfunctions, owner.state_machine_arn)]
    _jobs(clients, owner, progress)
    _endpoints(clients, owner, progress)
    if not any(p.startswith("endpoint ") for p in progress["pending"]):
        _definitions(clients, owner, progress)
    return progress


def on_event(event: dict, context: Any = None, clients: Clients | None = None) -> dict[str, Any]:
    request = event["RequestType"]
    physical_id = event.get("PhysicalResourceId") or f"{event['ResourceProperties']['Prefix']}-teardown"
    log.info("%s for %s (%s)", request, event.get("LogicalResourceId"), physical_id)
    if request != "Delete":
        return {"PhysicalResourceId": physical_id, "Data": {TEARDOWN: "false"}}
    clients = clients or Clients()
    status = stack_status(clients.cloudformation, event["StackId"])
    if status != DELETING_STACK:
        log.info("stack is %s, not %s: the resource left the template; nothing is touched", status, DELETING_STACK)
        return {"PhysicalResourceId": physical_id, "Data": {TEARDOWN: "false"}}
    owner = Owner(event["ResourceProperties"])
    stopped = stop_executions(clients.stepfunctions, owner.state_machine_arn)
    log.info("stack %s: stopped executions %s", status, stopped)
    return {"PhysicalResourceId": physical_id, "Data": {TEARDOWN: "true"}}


def is_complete(event: dict, context: Any = None, clients: Clients | None = None) -> dict[str, Any]:
    if event["RequestType"] != "Delete" or (event.get("Data") or {}).get(TEARDOWN) != "true":
        return {"IsComplete": True}
    progress = teardown_step(Owner(event["ResourceProperties"]), clients or Clients())
    log.info("teardown step %s", json.dumps(progress))
    return {"IsComplete": not progress["pending"]}
