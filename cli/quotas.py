"""`imgclf start` checks the account's SageMaker training-instance quotas before an execution starts.

A fresh account often allows fewer instances of a GPU type than the tuning job runs at once; SageMaker then fails
the tuning job with ResourceLimitExceeded after the execution has started. Each instance type has its own quota,
named "<type> for training job usage" (on-demand) and "<type> for spot training job usage" (managed spot), in
Service Quotas under the service code "sagemaker" (https://docs.aws.amazon.com/general/latest/gr/sagemaker.html).
The quota codes are read from the service itself (ListServiceQuotas / ListAWSDefaultServiceQuotas:
https://docs.aws.amazon.com/servicequotas/2019-06-24/apireference/API_ListServiceQuotas.html), never hard-coded.
A region where SageMaker does not offer the instance type has no such quota at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

import stackfacts as facts
from cli.errors import describe_aws_error

SERVICE_CODE = "sagemaker"


def quota_name(instance_type: str, spot: bool) -> str:
    return f"{instance_type} for {'spot ' if spot else ''}training job usage"


@dataclass(frozen=True)
class Need:
    instance_type: str
    spot: bool
    count: int
    why: str

    @property
    def quota(self) -> str:
        return quota_name(self.instance_type, self.spot)


def needs(outputs: dict[str, str], parallel: int | None) -> list[Need]:
    """Instances of each type one execution runs at once: the tuning trials, then (later, not at the same time)
    the final training job. None when the stack does not say (an older stack)."""
    keys = (facts.OUTPUT_TUNING_INSTANCE_TYPE, facts.OUTPUT_TUNING_PARALLEL, facts.OUTPUT_TRAINING_INSTANCE_TYPE,
            facts.OUTPUT_TRAINING_INSTANCE_COUNT)
    if not all(outputs.get(k) for k in keys):
        return []
    trials = parallel if parallel is not None else int(outputs[facts.OUTPUT_TUNING_PARALLEL])
    spot = outputs.get(facts.OUTPUT_TRAINING_SPOT) == "true"
    # With tuning.spot every trial is a managed-spot training job (HyperParameterTrainingJobDefinition.
    # EnableManagedSpotTraining): the spot quota of its type applies.
    tuning_spot = outputs.get(facts.OUTPUT_TUNING_SPOT) == "true"
    wanted = [Need(outputs[facts.OUTPUT_TUNING_INSTANCE_TYPE], tuning_spot, trials, f"{trials} tuning trials at once"),
              Need(outputs[facts.OUTPUT_TRAINING_INSTANCE_TYPE], spot,
                   int(outputs[facts.OUTPUT_TRAINING_INSTANCE_COUNT]), "the final training job")]
    merged: dict[str, Need] = {}
    for need in wanted:  # the phases run one after the other: the larger count is what the quota must allow
        if need.quota not in merged or merged[need.quota].count < need.count:
            merged[need.quota] = need
    return list(merged.values())


def _quotas(client: Any, operation: str) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for page in client.get_paginator(operation).paginate(ServiceCode=SERVICE_CODE):
        for quota in page.get("Quotas", []):
            found.setdefault(quota["QuotaName"], quota)
    return found


def problems(client: Any, wanted: list[Need], region: str) -> list[str]:
    """One line per quota below what the execution needs (empty: it fits)."""
    if not wanted:
        return []
    applied = _quotas(client, "list_service_quotas")
    defaults = _quotas(client, "list_aws_default_service_quotas") if any(
        n.quota not in applied for n in wanted) else {}
    lines: list[str] = []
    for need in wanted:
        quota = applied.get(need.quota) or defaults.get(need.quota)
        if quota is None:
            lines.append(f"SageMaker offers no {need.instance_type} for "
                         f"{'spot ' if need.spot else ''}training in {region} (Service Quotas has no "
                         f"'{need.quota}'): choose another instance type or region")
            continue
        value = float(quota.get("Value", 0))
        if value < need.count:
            lines.append(
                f"quota '{need.quota}' is {value:g} in {region}, this execution needs {need.count} ({need.why}): "
                f"request more with `aws service-quotas request-service-quota-increase --service-code {SERVICE_CODE} "
                f"--quota-code {quota['QuotaCode']} --desired-value {need.count} --region {region}`"
                + (f" or start with --parallel {int(value)}" if "tuning" in need.why and value >= 1 else ""))
    return lines


def check(client: Any, outputs: dict[str, str], parallel: int | None, region: str) -> tuple[list[str], str | None]:
    """(problems, note): a note instead when the quotas cannot be read (the run may still fit: not a refusal)."""
    if client is None:
        return [], None
    try:
        return problems(client, needs(outputs, parallel), region), None
    except (ClientError, BotoCoreError) as exc:
        return [], f"could not check the training-instance quotas ({describe_aws_error(exc)}); starting anyway"
