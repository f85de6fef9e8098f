"""teardown: the endpoints, endpoint configs and models the state machine created (not CloudFormation resources, so
`cdk destroy` leaves them running and billing)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

import stackfacts as facts
from awsshapes import collect
from cli.backend import Backend, StackMissing
from cli.errors import describe_aws_error, is_not_found

KINDS = (  # deletion order: an endpoint holds its config, a config its models
    ("endpoint", "list_endpoints", "Endpoints", "EndpointName", "delete_endpoint"),
    ("endpoint config", "list_endpoint_configs", "EndpointConfigs", "EndpointConfigName", "delete_endpoint_config"),
    ("model", "list_models", "Models", "ModelName", "delete_model"),
)


@dataclass
class Plan:
    prefix: str
    items: list[tuple[str, str]] = field(default_factory=list)  # (kind, name) in deletion order

    def __len__(self) -> int:
        return len(self.items)


def stack_outputs(backend: Backend) -> tuple[dict[str, str], str | None]:
    """The stack's outputs, or none with a note: after `cdk destroy` the stack is gone but its endpoints are not."""
    try:
        return backend.stack_outputs(), None
    except StackMissing as exc:
        return {}, f"{exc.message}; looking for names that start with the resource prefix instead"


def resource_prefix(outputs: dict[str, str], backend: Backend, prefix: str | None) -> str:
    return prefix or outputs.get(facts.OUTPUT_RESOURCE_PREFIX) or facts.RESOURCE_PREFIX


def plan(backend: Backend, prefix: str, outputs: dict[str, str]) -> Plan:
    """What carries the prefix (case-insensitive, as SageMaker's NameContains), plus the stack's own endpoint."""
    stack_endpoint = outputs.get(facts.OUTPUT_ENDPOINT)
    result = Plan(prefix)
    for kind, list_method, key, member, _ in KINDS:
        names = [item[member] for item in collect(backend.sagemaker, "sagemaker", list_method,
                                                  NameContains=prefix)[key]
                 if item[member].lower().startswith(prefix.lower())]
        if kind == "endpoint" and stack_endpoint and stack_endpoint not in names:
            listed = collect(backend.sagemaker, "sagemaker", list_method, NameContains=stack_endpoint)[key]
            names += [item[member] for item in listed if item[member] == stack_endpoint]
        result.items += [(kind, name) for name in sorted(names)]
    return result


def execute(backend: Backend, todo: Plan, report: Callable[[str, str, str | None], Any]) -> int:
    """Delete in order; `report(kind, name, problem)` after each. Returns how many could not be deleted."""
    methods = {kind: delete for kind, *_, delete in KINDS}
    members = {kind: member for kind, _, _, member, _ in KINDS}
    failures = 0
    for kind, name in todo.items:
        try:
            getattr(backend.sagemaker, methods[kind])(**{members[kind]: name})
            report(kind, name, None)
        except ClientError as exc:
            if is_not_found(exc):
                report(kind, name, "already gone")
            else:
                failures += 1
                report(kind, name, describe_aws_error(exc))
    return failures
