"""What a run cost: each training job's billable seconds x its instance's on-demand price (cli/prices.py), and the
endpoint's hourly cost at its current instance count. A local run is priced as the same run on AWS with the cloud
profile's instances (cdk.json), since its own jobs ran on this machine."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from cli.backend import Backend
from cli.errors import is_not_found
from cli.model import Job, Trial
from cli.prices import HOSTING_USD_PER_HOUR, PRICES_AS_OF, PRICES_REGION, PRICES_SOURCE, TRAINING_USD_PER_HOUR

TRIAL, FINAL = "trial", "final"


@dataclass(frozen=True)
class CloudInstances:
    """The instances the cloud profile runs a pipeline on (what a local run is priced as)."""

    tuning: str
    training: str
    training_count: int
    serving: str
    serverless: bool


@functools.cache
def cloud_instances() -> CloudInstances:
    from infra import load_config_for  # pydantic only; the CDK is not imported

    cfg = load_config_for({"profile": "cloud"})
    return CloudInstances(cfg.tuning.instance_type, cfg.training.instance_type, cfg.training.instance_count,
                          cfg.serving.instance_type, cfg.serving.serverless)


@dataclass(frozen=True)
class JobCost:
    name: str
    kind: str  # TRIAL or FINAL
    instance_type: str | None  # the instance it is priced at
    instance_count: int
    billable_seconds: int | None  # DescribeTrainingJob.BillableTimeInSeconds (spot savings included)
    usd_per_hour: float | None  # per instance, from the table; None: the table lacks the type

    @property
    def usd(self) -> float | None:
        """BillableTimeInSeconds is wall-clock time: x InstanceCount is the compute billed (API_DescribeTrainingJob)."""
        if self.billable_seconds is None or self.usd_per_hour is None:
            return None
        return self.billable_seconds * self.instance_count * self.usd_per_hour / 3600


def job_cost(job: Job, kind: str, *, local: bool) -> JobCost:
    instance_type, count = job.instance_type, job.instance_count
    if local:
        cloud = cloud_instances()
        instance_type, count = (cloud.tuning, 1) if kind == TRIAL else (cloud.training, cloud.training_count)
    price = TRAINING_USD_PER_HOUR.get(instance_type) if instance_type else None
    return JobCost(job.name, kind, instance_type, count, job.billable_seconds, price)


def trial_cost(trial: Trial, instance_type: str | None, *, local: bool) -> JobCost:
    """A trial from its summary alone (what `status` reads): its training time, TrainingEndTime - TrainingStartTime,
    at the on-demand price. That is the bill of an on-demand trial; with tuning.spot (managed spot trials) it is an
    upper bound, as the summary carries no BillableTimeInSeconds. The report uses BillableTimeInSeconds of each
    DescribeTrainingJob instead (spot savings included)."""
    if local:
        instance_type = cloud_instances().tuning
    seconds = None if trial.duration_s is None else round(trial.duration_s)
    price = TRAINING_USD_PER_HOUR.get(instance_type) if instance_type else None
    return JobCost(trial.name, TRIAL, instance_type, 1, seconds, price)


@dataclass(frozen=True)
class EndpointCost:
    name: str
    instance_type: str | None  # None: serverless (billed per request, not per hour)
    instance_count: int
    usd_per_hour: float | None  # the whole endpoint

    @property
    def serverless(self) -> bool:
        return self.instance_type is None


def endpoint_cost(backend: Backend, endpoint: dict, *, local: bool) -> EndpointCost | None:
    """The hourly cost of the endpoint's instances now: CurrentInstanceCount of each variant (DescribeEndpoint) x
    its InstanceType (DescribeEndpointConfig, the endpoint's current config). None when there is no config."""
    try:
        config = backend.sagemaker.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
    except (KeyError, ClientError) as exc:
        if isinstance(exc, ClientError) and not is_not_found(exc):
            raise
        return None
    counts = {v["VariantName"]: v.get("CurrentInstanceCount", v.get("DesiredInstanceCount", 0))
              for v in endpoint.get("ProductionVariants", [])}
    variants: list[dict[str, Any]] = config.get("ProductionVariants", [])
    if not variants or any("ServerlessConfig" in v for v in variants):
        return EndpointCost(endpoint["EndpointName"], None, 0, None)
    total, count, instance_type = 0.0, 0, None
    for v in variants:
        n = counts.get(v["VariantName"], v.get("InitialInstanceCount", 0)) or 0
        instance_type = cloud_instances().serving if local else v["InstanceType"]
        price = HOSTING_USD_PER_HOUR.get(instance_type)
        if price is None:
            return EndpointCost(endpoint["EndpointName"], instance_type, n, None)
        total += n * price
        count += n
    return EndpointCost(endpoint["EndpointName"], instance_type, count, total)


def fmt_usd(value: float | None) -> str:
    if value is None:
        return "-"
    return f"${value:.4f}" if value < 1 else f"${value:,.2f}"


def job_line(cost: JobCost) -> str:
    """`1234 s x 1 x ml.g4dn.xlarge at $0.736/h = $0.2523`: the arithmetic, so a reader can check it."""
    if cost.billable_seconds is None:
        return f"{cost.instance_type or '?'}: not billed yet"
    if cost.usd_per_hour is None:
        return f"{cost.billable_seconds} s on {cost.instance_type}: no price in the table ({PRICES_SOURCE})"
    return (f"{cost.billable_seconds} s x {cost.instance_count} x {cost.instance_type} at "
            f"${cost.usd_per_hour}/h = {fmt_usd(cost.usd)}")


def endpoint_line(cost: EndpointCost) -> str:
    if cost.serverless:
        return "serverless: billed per request (memory x duration), nothing while idle"
    if cost.usd_per_hour is None:
        return f"{cost.instance_count} x {cost.instance_type}: no price in the table ({PRICES_SOURCE})"
    return f"{cost.instance_count} x {cost.instance_type} = {fmt_usd(cost.usd_per_hour)}/hour while it runs"


def total_usd(costs: list[JobCost]) -> float | None:
    known = [c.usd for c in costs if c.usd is not None]
    return sum(known) if known else None


def basis(local: bool) -> str:
    """What the figures mean: the table's region and date, and for a local run the instances it is priced as."""
    text = f"estimate: on-demand prices of {PRICES_REGION}, table of {PRICES_AS_OF} (check {PRICES_SOURCE})"
    if local:
        c = cloud_instances()
        text = (f"what this run would cost on AWS with the cloud profile's instances (tuning {c.tuning}, training "
                f"{c.training_count} x {c.training}, endpoint {c.serving}) and the local billable seconds; " + text)
    return text
