"""CloudFormation custom resource: on stack Delete, remove what the state machine created outside CloudFormation.

Stops the state machine's running executions first (so nothing new is created), then in-progress tuning and
training jobs, then deletes endpoints, endpoint configs and models whose names start with "<prefix>-".
Create and Update do nothing. Standard library and boto3 only (the Lambda runtime's).
"""

from __future__ import annotations

import json
import logging
import urllib.request
from typing import Any

import boto3
from botocore.exceptions import ClientError

log = logging.getLogger()
log.setLevel(logging.INFO)


def _mine(name: str, prefix: str) -> bool:
    return name.lower().startswith(f"{prefix}-")


def _paginate(client, operation: str, key: str, name_key: str, prefix: str, **kwargs: Any) -> list[str]:
    names: list[str] = []
    for page in client.get_paginator(operation).paginate(NameContains=prefix, **kwargs):
        names.extend(item[name_key] for item in page.get(key, []) if _mine(item[name_key], prefix))
    return names


def _ignore_missing(call, **kwargs: Any) -> bool:
    try:
        call(**kwargs)
        return True
    except ClientError as exc:
        message = str(exc)
        if exc.response.get("Error", {}).get("Code") in ("ValidationException", "ResourceNotFound") and (
                "not find" in message or "does not exist" in message or "not found" in message
                or "not in progress" in message.lower()):
            return False
        raise


def teardown(prefix: str, state_machine_arn: str | None, sagemaker=None, stepfunctions=None) -> dict[str, list[str]]:
    """Remove the prefix's SageMaker resources; returns what was stopped or deleted, by kind."""
    sagemaker = sagemaker or boto3.client("sagemaker")
    done: dict[str, list[str]] = {k: [] for k in ("executions", "tuning_jobs", "training_jobs", "endpoints",
                                                  "endpoint_configs", "models")}
    if state_machine_arn:
        stepfunctions = stepfunctions or boto3.client("stepfunctions")
        for page in stepfunctions.get_paginator("list_executions").paginate(
                stateMachineArn=state_machine_arn, statusFilter="RUNNING"):
            for execution in page.get("executions", []):
                stepfunctions.stop_execution(executionArn=execution["executionArn"], error="StackDeleted",
                                             cause="The CloudFormation stack is being deleted.")
                done["executions"].append(execution["name"])
    for name in _paginate(sagemaker, "list_hyper_parameter_tuning_jobs", "HyperParameterTuningJobSummaries",
                          "HyperParameterTuningJobName", prefix, StatusEquals="InProgress"):
        if _ignore_missing(sagemaker.stop_hyper_parameter_tuning_job, HyperParameterTuningJobName=name):
            done["tuning_jobs"].append(name)
    for name in _paginate(sagemaker, "list_training_jobs", "TrainingJobSummaries", "TrainingJobName", prefix,
                          StatusEquals="InProgress"):
        if _ignore_missing(sagemaker.stop_training_job, TrainingJobName=name):
            done["training_jobs"].append(name)
    for kind, operation, key, name_key, delete, arg in (
        ("endpoints", "list_endpoints", "Endpoints", "EndpointName", sagemaker.delete_endpoint, "EndpointName"),
        ("endpoint_configs", "list_endpoint_configs", "EndpointConfigs", "EndpointConfigName",
         sagemaker.delete_endpoint_config, "EndpointConfigName"),
        ("models", "list_models", "Models", "ModelName", sagemaker.delete_model, "ModelName"),
    ):
        for name in _paginate(sagemaker, operation, key, name_key, prefix):
            if _ignore_missing(delete, **{arg: name}):
                done[kind].append(name)
    return done


def send(event: dict, context: Any, status: str, reason: str = "", data: dict | None = None) -> None:
    body = json.dumps({
        "Status": status,
        "Reason": (reason or f"see CloudWatch log stream {getattr(context, 'log_stream_name', '?')}")[:3000],
        "PhysicalResourceId": event.get("PhysicalResourceId") or f"{event['ResourceProperties']['Prefix']}-teardown",
        "StackId": event["StackId"],
        "RequestId": event["RequestId"],
        "LogicalResourceId": event["LogicalResourceId"],
        "Data": data or {},
    }).encode()
    request = urllib.request.Request(event["ResponseURL"], data=body, method="PUT",
                                     headers={"Content-Type": ""})
    with urllib.request.urlopen(request, timeout=30) as response:
        response.read()


def handler(event: dict, context: Any) -> None:
    log.info("request %s for %s", event.get("RequestType"), event.get("LogicalResourceId"))
    try:
        data: dict = {}
        if event["RequestType"] == "Delete":
            props = event["ResourceProperties"]
            removed = teardown(props["Prefix"], props.get("StateMachineArn"))
            log.info("removed %s", json.dumps(removed))
            data = {k: len(v) for k, v in removed.items()}
        send(event, context, "SUCCESS", data=data)
    except Exception as exc:  # CloudFormation waits an hour for an answer that never comes otherwise
        log.exception("teardown failed")
        send(event, context, "FAILED", f"{type(exc).__name__}: {exc}")
