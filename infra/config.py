"""Typed stack configuration, read from CDK context (cdk.json, `-c key=value`, or `synth_template(context)`).

Resolution order (later wins): the profile's defaults (`profile` = "cloud" | "local") < `profiles.<name>` in
context < top-level context keys named after a field (`prefix`, `gate`, ...) < dotted keys
(`-c gate.min_test_accuracy=0.9`). Hyperparameters, tuning ranges, metric names and channels come from
ml/contract.py; context may only narrow or override them by name.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

import awsshapes
import stackfacts as facts
from ml import contract

PROFILES = ("cloud", "local")
# Debugger's built-in rules of the seed: the script's own HEALTH_CHECKS mirror all but Overtraining.
DEBUG_RULES: tuple[str, ...] = (*contract.HEALTH_CHECKS, "Overtraining")
# The rules that gate a deploy by default: those whose IssuesFound says the model is broken (gradients gone,
# memorized training data, a bad start). Overtraining and LossNotDecreasing fire when the loss flattens (a model
# trained to convergence: the digits within an epoch or two, a fine-tuned backbone too), which says training could
# have stopped sooner, not that the model is bad; they are evaluated and reported, and the test-accuracy gate and
# the script's own whole-set loss check judge whether it learned.
GATE_RULES: tuple[str, ...] = ("VanishingGradient", "Overfit", "PoorWeightInitialization")
PROFILER_RULES: tuple[str, ...] = (facts.PROFILER_REPORT_RULE, "LowGPUUtilization")
# SageMaker caps a tuning job name at 32 characters: "<prefix>-<12 hex run id>".
RUN_ID_LENGTH = 12
MAX_PREFIX_LENGTH = 32 - 1 - RUN_ID_LENGTH
_PREFIX = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")  # SageMaker's endpoint / job name pattern


# HyperParameterTuningJobConfig.ResourceLimits.MaxRuntimeInSeconds (botocore HyperParameterTuningMaxRuntimeInSeconds:
# min 120, max 15768000).
TUNING_MAX_RUNTIME = (120, 15_768_000)
# Time an execution spends outside the bounded budgets: job start-up (instances, image pull, data download are not
# in MaxRuntimeInSeconds), Describe calls and their retries, the lookups.
EXECUTION_MARGIN_S = 1800
# Each round of tuning trials also spends start-up time (instance provisioning, the GPU image pull, the data download)
# that no trial's StoppingCondition counts but the tuning job's ResourceLimits.MaxRuntimeInSeconds does ("the
# maximum time in seconds that a hyperparameter tuning job can run":
# https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_ResourceLimits.html).
TRIAL_STARTUP_S = 600
# The teardown custom resource's budget (infra.teardown: the Provider framework's total timeout, inside the one hour
# a custom resource has to answer) and what it needs once an update of the endpoint has ended: a rollback to the
# old fleet, stopping jobs, deleting the endpoint.
TEARDOWN_TOTAL_S = 50 * 60
TEARDOWN_AFTER_UPDATE_S = 15 * 60


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RangeOverride(_Model):
    """Narrows one of the contract's tuning ranges (by hyperparameter name)."""

    values: tuple[str, ...] | None = None  # categorical
    min: float | None = None
    max: float | None = None
    scaling: Literal["Auto", "Linear", "Logarithmic", "ReverseLogarithmic"] | None = None


# Managed spot training: StoppingCondition.MaxWaitTimeInSeconds (botocore shape StoppingCondition, min 1) is how
# long a spot job may take including waits for capacity and must be >= MaxRuntimeInSeconds
# (https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_StoppingCondition.html); a job's runtime is capped
# at 28 days (MaxRuntimeInSeconds) and so is the wait.
MAX_JOB_SECONDS = 28 * 24 * 3600


def _spot_wait(section: str, spot: bool, max_wait_s: int | None, max_runtime_s: int) -> None:
    if max_wait_s is not None and max_wait_s < max_runtime_s:
        raise ValueError(f"{section}.max_wait_s must be at least {section}.max_runtime_s")
    if max_wait_s is not None and not spot:
        raise ValueError(f"{section}.max_wait_s applies to spot training only: set {section}.spot true")


class TuningConfig(_Model):
    max_jobs: int = Field(6, ge=1, le=500)
    max_parallel_jobs: int = Field(2, ge=1, le=100)
    strategy: Literal["Bayesian", "Random"] = "Bayesian"
    early_stopping: Literal["Auto", "Off"] = "Auto"
    instance_type: str = "ml.g4dn.xlarge"
    volume_size_gb: int = Field(30, ge=1)
    max_runtime_s: int = Field(7200, ge=60)
    warm_start_parent: str | None = None  # default parent tuning job; the execution input may override it
    warm_start_type: Literal["IdenticalDataAndAlgorithm", "TransferLearning"] = "TransferLearning"
    ranges: dict[str, RangeOverride] = Field(default_factory=dict)
    # Managed spot for every trial (HyperParameterTrainingJobDefinition.EnableManagedSpotTraining); an interrupted
    # trial resumes from its own checkpoint (train.py --checkpoint-scope job).
    spot: bool = False
    max_wait_s: int | None = Field(None, ge=1, le=MAX_JOB_SECONDS)  # spot only; default 2 x max_runtime_s

    @model_validator(mode="after")
    def _parallel(self) -> TuningConfig:
        if self.max_parallel_jobs > self.max_jobs:
            raise ValueError("tuning.max_parallel_jobs cannot exceed tuning.max_jobs")
        _spot_wait("tuning", self.spot, self.max_wait_s, self.max_runtime_s)
        return self

    @property
    def spot_max_wait_s(self) -> int:
        return self.max_wait_s or min(2 * self.max_runtime_s, MAX_JOB_SECONDS)


class TrainingConfig(_Model):
    instance_type: str = "ml.g4dn.xlarge"
    instance_count: int = Field(1, ge=1)
    volume_size_gb: int = Field(30, ge=1)
    max_runtime_s: int = Field(10800, ge=60)
    spot: bool = False  # managed spot; train.py resumes from /opt/ml/checkpoints
    max_wait_s: int | None = None  # spot only; default 2 x max_runtime_s
    hyperparameters: dict[str, str] = Field(default_factory=dict)  # static overrides on the profile's values

    @model_validator(mode="after")
    def _spot(self) -> TrainingConfig:
        if self.max_wait_s is not None and self.max_wait_s < self.max_runtime_s:
            raise ValueError("training.max_wait_s must be at least training.max_runtime_s")
        return self

    @property
    def spot_max_wait_s(self) -> int:
        return self.max_wait_s or 2 * self.max_runtime_s


class PretrainedConfig(_Model):
    """ImageNet weights staged once in the project bucket and handed to every job as an input channel, so no
    trial downloads them (slow, and impossible in a VPC without internet). Used when the profile's `weights`
    hyperparameter is "imagenet"; `key` defaults to <data_prefix>pretrained/<backbone>.pt."""

    key: str | None = None


class DebuggerConfig(_Model):
    """SageMaker Debugger is closed to new customers (2026): `enabled: false` keeps a gated pipeline."""

    enabled: bool = True
    rules: tuple[str, ...] = DEBUG_RULES
    profiler: bool = True
    profiler_rules: tuple[str, ...] = PROFILER_RULES
    # Rules whose IssuesFound (or failed evaluation) blocks the deploy; the others, profiler rules included, inform.
    gate_rules: tuple[str, ...] = GATE_RULES
    # Steps between tensor saves; None: derived in the job from its steps per epoch (saves_per_epoch per mode).
    save_interval: int | None = Field(None, ge=1)
    saves_per_epoch: int = Field(10, ge=1, le=1000)
    # One of awsshapes.PROFILING_INTERVALS_MS (SageMaker refuses others, after the tuning hours).
    profiling_interval_ms: int = 500
    poll_s: int = Field(60, ge=1)  # wait between DescribeTrainingJob calls while rules run
    max_polls: int = Field(180, ge=1)

    @field_validator("profiling_interval_ms")
    @classmethod
    def _interval(cls, value: int) -> int:
        if value not in awsshapes.PROFILING_INTERVALS_MS:
            raise ValueError(f"debugger.profiling_interval_ms must be one of {list(awsshapes.PROFILING_INTERVALS_MS)} "
                             f"(ProfilerConfig.ProfilingIntervalInMilliseconds, API_ProfilerConfig.html): {value}")
        return value

    @model_validator(mode="after")
    def _gate_subset(self) -> DebuggerConfig:
        configured = set(self.rules) | (set(self.profiler_rules) if self.profiler else set())
        unknown = [r for r in self.gate_rules if r not in configured]
        if self.enabled and unknown:
            raise ValueError(f"debugger.gate_rules {unknown} are not among the configured rules {sorted(configured)}")
        return self

    @property
    def active_rules(self) -> tuple[str, ...]:
        return self.rules if self.enabled else ()

    @property
    def active_profiler_rules(self) -> tuple[str, ...]:
        return self.profiler_rules if self.enabled and self.profiler else ()

    @property
    def active_gate_rules(self) -> tuple[str, ...]:
        return self.gate_rules if self.enabled else ()


class GateConfig(_Model):
    min_test_accuracy: float = Field(0.8, ge=0.0, le=1.0)  # the execution input may override it
    health_checks: bool = True  # block on the script's own checks (health_issues > 0)


class AutoscalingConfig(_Model):
    """Target tracking on SageMakerVariantInvocationsPerInstance (instance endpoints only; serverless scales
    itself): https://docs.aws.amazon.com/sagemaker/latest/dg/endpoint-auto-scaling-add-code-define.html"""

    enabled: bool = True
    min_instances: int = Field(1, ge=1)
    max_instances: int = Field(4, ge=1)
    target_invocations_per_instance: float = Field(100.0, gt=0)  # per minute, per instance
    scale_out_cooldown_s: int = Field(60, ge=0)
    scale_in_cooldown_s: int = Field(300, ge=0)

    @model_validator(mode="after")
    def _bounds(self) -> AutoscalingConfig:
        if self.max_instances < self.min_instances:
            raise ValueError("serving.autoscaling.max_instances must be at least min_instances")
        return self


class ServingConfig(_Model):
    endpoint_name: str | None = None  # default "<prefix>-endpoint"; stable, so the Lambda never changes
    instance_type: str = "ml.m5.large"
    instance_count: int = Field(1, ge=1)
    serverless: bool = False
    serverless_memory_mb: Literal[1024, 2048, 3072, 4096, 5120, 6144] = 3072
    serverless_max_concurrency: int = Field(5, ge=1, le=200)
    data_capture_percent: int = Field(100, ge=0, le=100)  # 0 turns capture off (serverless cannot capture)
    traffic: Literal["ALL_AT_ONCE", "CANARY", "LINEAR"] = "ALL_AT_ONCE"
    traffic_step_percent: int = Field(25, ge=1, le=100)  # canary size / linear step, % of capacity
    wait_interval_s: int = Field(300, ge=0, le=3600)
    termination_wait_s: int = Field(300, ge=0, le=3600)  # baking period the rollback alarms watch
    # MaximumExecutionTimeoutInSeconds (botocore 600-28800; narrower here so `cdk destroy` can wait out an update):
    # the whole blue/green update, baking period included.
    max_execution_s: int = Field(1800, ge=600, le=14400)
    alarm_5xx_errors: int = Field(1, ge=1)  # rollback when the new fleet returns this many 5xx in a minute
    alarm_latency_ms: int = Field(2000, ge=1)  # ... or its p99 model latency exceeds this
    poll_s: int = Field(30, ge=1)
    # Creating an endpoint takes minutes; an update runs at most max_execution_s plus the baking period.
    settle_allowance_s: int = Field(3600, ge=60)
    framework_version: str = "2.6"  # the last PyTorch inference DLC
    py_version: str = "py312"
    autoscaling: AutoscalingConfig = Field(default_factory=AutoscalingConfig)

    @model_validator(mode="after")
    def _shifting(self) -> ServingConfig:
        if self.traffic != "ALL_AT_ONCE" and not self.serverless and self.instance_count < 2:
            raise ValueError("serving.traffic CANARY/LINEAR needs serving.instance_count >= 2")
        a = self.autoscaling
        if self.scales and not a.min_instances <= self.instance_count <= a.max_instances:
            raise ValueError("serving.instance_count must lie within serving.autoscaling.min_instances.."
                             "max_instances")
        step = self.traffic_step_percent
        if self.traffic == "CANARY" and step > awsshapes.CANARY_MAX_PERCENT:
            raise ValueError(f"serving.traffic_step_percent: a CANARY step is at most {awsshapes.CANARY_MAX_PERCENT}% "
                             f"of the fleet (TrafficRoutingConfig.CanarySize, API_TrafficRoutingConfig.html): {step}")
        low, high = awsshapes.LINEAR_PERCENT
        if self.traffic == "LINEAR" and not low <= step <= high:
            raise ValueError(f"serving.traffic_step_percent: a LINEAR step is {low}-{high}% of the fleet "
                             f"(TrafficRoutingConfig.LinearStepSize, API_TrafficRoutingConfig.html): {step}")
        return self

    @property
    def capture(self) -> bool:
        return self.data_capture_percent > 0 and not self.serverless

    @property
    def scales(self) -> bool:
        """The state machine registers the variant with Application Auto Scaling (off for serverless)."""
        return self.autoscaling.enabled and not self.serverless

    @property
    def max_polls(self) -> int:
        """DescribeEndpoint checks before the state machine stops waiting for a deployment (every loop is bounded)."""
        return -(-(self.max_execution_s + self.termination_wait_s + self.settle_allowance_s) // self.poll_s)


class ApiConfig(_Model):
    stage_name: str = "prod"
    iam_auth: bool = True  # SigV4 (execute-api:Invoke)
    api_key_required: bool = False
    throttle_rate: float = Field(10.0, gt=0)
    throttle_burst: int = Field(20, ge=1)
    # A usage plan meters and caps API keys only: without keys a quota would count nothing, so it needs them
    # (https://docs.aws.amazon.com/apigateway/latest/developerguide/api-gateway-api-usage-plans.html). Without keys
    # the stage's throttle_rate/throttle_burst apply to all callers together and there is no daily cap.
    quota_per_day: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _no_anonymous(self) -> ApiConfig:
        if not (self.iam_auth or self.api_key_required):
            raise ValueError("api: enable iam_auth or api_key_required; anonymous access is not offered")
        if self.quota_per_day is not None and not self.api_key_required:
            raise ValueError("api.quota_per_day needs api.api_key_required: true (a usage-plan quota counts requests "
                             "per API key; without keys it meters nothing). Without keys only the stage throttle "
                             "(api.throttle_rate / api.throttle_burst) applies.")
        return self


class LambdaConfig(_Model):
    architecture: Literal["arm64", "x86_64"] = "arm64"
    memory_mb: int = Field(512, ge=128, le=10240)
    timeout_s: int = Field(29, ge=28, le=900)  # forwarder.py: at least 28 s, API Gateway cuts at 29 s


class StackConfig(_Model):
    profile: Literal["cloud", "local"] = "cloud"
    stack_name: str = facts.STACK_NAME
    prefix: str = facts.RESOURCE_PREFIX
    region: str | None = None  # None: one region-agnostic template (images from a per-region mapping)
    removal_policy: Literal["retain", "destroy"] = "retain"
    teardown_on_destroy: bool = True
    data_prefix: str = facts.DATA_PREFIX  # the SageMaker role reads datasets under s3://<bucket>/<data_prefix>
    log_retention_days: int = 30
    artifact_retention_days: int = Field(30, ge=1)  # debugger/, profiler/, tuning/ outputs
    checkpoint_retention_days: int = Field(7, ge=1)
    execution_timeout_hours: int = Field(24, ge=1)
    # First wait before a refused (throttled) SageMaker create call is tried again; it doubles, 3 tries.
    retry_interval_s: int = Field(2, ge=1, le=60)
    framework_version: str = "2.6"  # training DLC; keep equal to serving's so torch matches
    py_version: str = "py312"
    nag: bool = True  # cdk-nag AwsSolutions as a synth-time validation plugin (app.py)
    tuning: TuningConfig = Field(default_factory=TuningConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    debugger: DebuggerConfig = Field(default_factory=DebuggerConfig)
    pretrained: PretrainedConfig = Field(default_factory=PretrainedConfig)
    gate: GateConfig = Field(default_factory=GateConfig)
    serving: ServingConfig = Field(default_factory=ServingConfig)
    api: ApiConfig = Field(default_factory=ApiConfig)
    function: LambdaConfig = Field(default_factory=LambdaConfig, alias="lambda")
    # --- data retention ---
    data_capture_retention_days: int = Field(90, ge=1)  # endpoint data capture (requests and predictions)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if len(value) > MAX_PREFIX_LENGTH or not _PREFIX.match(value):
            raise ValueError(f"prefix must be lowercase letters, digits and single hyphens, at most "
                             f"{MAX_PREFIX_LENGTH} characters (tuning job names are capped at 32): {value!r}")
        return value

    @field_validator("data_prefix")
    @classmethod
    def _data_prefix(cls, value: str) -> str:
        if not value.endswith("/") or value.startswith("/") or "*" in value:
            raise ValueError(f"data_prefix must be a key prefix ending with '/': {value!r}")
        return value

    @model_validator(mode="after")
    def _checks(self) -> StackConfig:
        name = self.endpoint_name
        if not name.startswith(f"{self.prefix}-") or not _NAME.match(name) or name != name.lower():
            raise ValueError(f"serving.endpoint_name must be lowercase and start with '{self.prefix}-' (IAM and "
                             f"teardown are scoped to the prefix): {name!r}")
        unknown = set(self.tuning.ranges) - {r.name for r in self.tuning_space.ranges}
        if unknown:
            raise ValueError(f"tuning.ranges names unknown hyperparameters: {sorted(unknown)}")
        key = self.pretrained_key
        if key is not None and (not key.startswith(self.data_prefix) or key.endswith("/") or "*" in key):
            # The SageMaker role reads s3://<bucket>/<data_prefix>* only (infra.security ReadDatasets).
            raise ValueError(f"pretrained.key must name one object under data_prefix {self.data_prefix!r} "
                             f"(the SageMaker role reads only there): {key!r}")
        return self

    @model_validator(mode="after")
    def _teardown_budget(self) -> StackConfig:
        # `cdk destroy` waits out an endpoint that is Updating (SageMaker may refuse DeleteEndpoint until the update
        # ends): the longest update the config allows must fit the teardown's budget, or the stack ends
        # DELETE_FAILED.
        longest = self.serving.max_execution_s + TEARDOWN_AFTER_UPDATE_S
        if self.teardown_on_destroy and longest > TEARDOWN_TOTAL_S:
            raise ValueError(f"serving.max_execution_s ({self.serving.max_execution_s} s) + "
                             f"{TEARDOWN_AFTER_UPDATE_S} s to roll back and delete exceed the teardown's "
                             f"{TEARDOWN_TOTAL_S} s: lower serving.max_execution_s to at most "
                             f"{TEARDOWN_TOTAL_S - TEARDOWN_AFTER_UPDATE_S}, or set teardown_on_destroy false")
        s = self.serving
        waits = s.termination_wait_s + awsshapes.blue_green_waits(s.traffic, s.traffic_step_percent, s.wait_interval_s)
        if s.max_execution_s <= waits:
            # "the timeout value should be larger than the total waiting time specified in
            # TerminationWaitInSeconds and WaitIntervalInSeconds" (API_BlueGreenUpdatePolicy); LINEAR bakes per step.
            raise ValueError(f"serving.max_execution_s ({s.max_execution_s}) must exceed the update's total waiting "
                             f"time: serving.termination_wait_s + serving.wait_interval_s per traffic step ({waits} s)")
        return self

    @model_validator(mode="after")
    def _time_budget(self) -> StackConfig:
        # The execution's TimeoutSeconds ends it TIMED_OUT, which no Catch takes
        # (https://docs.aws.amazon.com/step-functions/latest/dg/concepts-error-handling.html): the defaults must fit.
        budget = self.tuning_budget_s
        if budget < TUNING_MAX_RUNTIME[0]:
            raise ValueError(f"execution_timeout_hours ({self.execution_timeout_hours}) leaves {budget} s for tuning "
                             f"after training, rules and deployment ({self.after_tuning_s} s): raise it")
        need = self.tuning_time_s(self.tuning.max_jobs, self.tuning.max_parallel_jobs)
        if need > budget:
            raise ValueError(f"tuning.max_jobs / max_parallel_jobs need up to {need} s of tuning, but "
                             f"execution_timeout_hours ({self.execution_timeout_hours}) leaves {budget} s after "
                             f"training, rules and deployment: raise it, or run fewer rounds")
        return self

    # --- derived values ---------------------------------------------------------------------------
    @property
    def after_tuning_s(self) -> int:
        """The longest the execution may still run once tuning ends: the final training job (its spot wait), the
        rule polling, the settle and deploy loops (each bounded by serving.max_polls), and EXECUTION_MARGIN_S."""
        t, d, s = self.training, self.debugger, self.serving
        training = t.spot_max_wait_s if t.spot else t.max_runtime_s
        rules = d.poll_s * d.max_polls if d.active_rules or d.active_profiler_rules else 0
        return training + rules + 2 * s.max_polls * s.poll_s + EXECUTION_MARGIN_S

    @property
    def tuning_budget_s(self) -> int:
        """What the execution timeout leaves for the tuning job: its ResourceLimits.MaxRuntimeInSeconds (capped at
        botocore's maximum), and the bound "Check input" holds max_jobs / max_parallel_jobs to."""
        return min(self.execution_timeout_hours * 3600 - self.after_tuning_s, TUNING_MAX_RUNTIME[1])

    @property
    def trial_s(self) -> int:
        """The longest one round of tuning trials may take: a trial's limit (its spot wait included) plus its
        start-up (TRIAL_STARTUP_S)."""
        return (self.tuning.spot_max_wait_s if self.tuning.spot else self.tuning.max_runtime_s) + TRIAL_STARTUP_S

    @property
    def tuning_rounds(self) -> int:
        """How many rounds of parallel trials fit the tuning budget."""
        return self.tuning_budget_s // self.trial_s

    def tuning_time_s(self, max_jobs: int, max_parallel_jobs: int) -> int:
        return -(-max_jobs // max_parallel_jobs) * self.trial_s

    @property
    def endpoint_name(self) -> str:
        return self.serving.endpoint_name or f"{self.prefix}-endpoint"

    @property
    def state_machine_name(self) -> str:
        return f"{self.prefix}-train-deploy"

    @property
    def base_hyperparameters(self) -> dict[str, str]:
        base = contract.LOCAL_HYPERPARAMETERS if self.profile == "local" else contract.CLOUD_HYPERPARAMETERS
        return {**base, **self.training.hyperparameters}

    @property
    def pretrained_key(self) -> str | None:
        """S3 key (in the project bucket) of the staged weights the jobs get as the pretrained channel, or None
        when the hyperparameters do not ask for pretrained weights."""
        hps = self.base_hyperparameters
        if hps.get("weights") != contract.PRETRAINED_WEIGHTS:
            return None
        default = f"{self.data_prefix}{contract.PRETRAINED_CHANNEL}/" \
                  f"{contract.PRETRAINED_FILE.format(backbone=hps['backbone'])}"
        return self.pretrained.key or default

    @property
    def tuning_space(self) -> contract.TuningSpace:
        space = contract.LOCAL_TUNING_SPACE if self.profile == "local" else contract.TuningSpace()
        return _narrow(space, self.tuning.ranges)

    @property
    def tuned_names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.tuning_space.ranges)

    @property
    def alarm_names(self) -> tuple[str, str]:
        return f"{self.endpoint_name}-5xx", f"{self.endpoint_name}-latency"


def _narrow(space: contract.TuningSpace, overrides: Mapping[str, RangeOverride]) -> contract.TuningSpace:
    ranges: list[contract.ParameterRange] = []
    for r in space.ranges:
        o = overrides.get(r.name)
        if o is None:
            ranges.append(r)
        elif isinstance(r, contract.CategoricalRange):
            ranges.append(contract.CategoricalRange(r.name, tuple(o.values or r.values)))
        elif isinstance(r, contract.IntegerRange):
            ranges.append(contract.IntegerRange(r.name, int(o.min if o.min is not None else r.min_value),
                                                int(o.max if o.max is not None else r.max_value),
                                                o.scaling or r.scaling))
        else:
            ranges.append(contract.ContinuousRange(r.name, o.min if o.min is not None else r.min_value,
                                                   o.max if o.max is not None else r.max_value,
                                                   o.scaling or r.scaling))
    for r in ranges:
        if not isinstance(r, contract.CategoricalRange) and r.min_value >= r.max_value:
            raise ValueError(f"tuning range {r.name}: min {r.min_value} must be below max {r.max_value}")
    return contract.TuningSpace(tuple(ranges))


# --- profile defaults ------------------------------------------------------------------------------
# Local mode runs the same definition against a stand-in on a CPU: CPU instance types (so the image URIs
# are the CPU DLCs), short polls, a gate the digits dataset can pass, and a pinned region so the template holds
# literal image URIs rather than a per-region mapping.
PROFILE_DEFAULTS: dict[str, dict[str, Any]] = {
    "cloud": {},
    "local": {
        "region": facts.LOCAL_REGION,
        # No CloudFormation deletion runs locally (`imgclf teardown --local` cleans a run), and the teardown's
        # Provider framework would add a second state machine to the template the local engine runs.
        "teardown_on_destroy": False,
        "tuning": {"instance_type": "ml.m5.xlarge", "max_runtime_s": 1800},
        "training": {"instance_type": "ml.m5.xlarge", "max_runtime_s": 1800},
        "debugger": {"poll_s": 1, "max_polls": 600, "saves_per_epoch": 4},
        "gate": {"min_test_accuracy": 0.5},
        "retry_interval_s": 1,
        "serving": {"poll_s": 1, "wait_interval_s": 0, "termination_wait_s": 0, "max_execution_s": 600},
    },
}
_FIELDS = set(StackConfig.model_fields) | {"lambda"}


def _deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _deep_merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def _parse_cli(value: Any) -> Any:
    """`-c key={"a": 1}` arrives as a string: parse JSON objects and lists (pydantic coerces "true", "0.9")."""
    if isinstance(value, str) and value.lstrip()[:1] in ("{", "["):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


class ConfigError(ValueError):
    """A context or input value this stack refuses: one line that names the key."""


# Plain (no ':', '/', '@') context keys that belong to the CDK CLI, not to this app.
CDK_CONTEXT_KEYS = frozenset({"cli-telemetry", "acknowledged-issue-numbers"})


def _cdk_key(key: str) -> bool:
    # Feature flags (@aws-cdk/...), CLI settings (aws:cdk:...), lookups (availability-zones:..., ssm:...).
    return key in CDK_CONTEXT_KEYS or any(c in key for c in ":/@")


def _one_line(exc: Exception, what: str = "context") -> ConfigError:
    """pydantic's multi-line report -> one line per the first problem, naming its dotted key."""
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        key = ".".join(str(part) for part in first["loc"])
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            message = "unknown key (misspelt?)"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        return ConfigError(f"{what} '{key}': {message}{more}" if key else f"{what}: {message}{more}")
    return ConfigError(f"{what}: {exc}")


def load_config(context: Mapping[str, Any] | None = None) -> StackConfig:
    """The effective configuration for these context values (CDK's own keys are ignored; unknown keys of this
    app's are errors). ConfigError (a ValueError) names the key in one line."""
    try:
        return _load_config(dict(context or {}))
    except ConfigError:
        raise
    except ValueError as exc:
        raise _one_line(exc) from None


def _load_config(context: dict[str, Any]) -> StackConfig:
    unknown = sorted(k for k in context
                     if k.partition(".")[0] not in _FIELDS | {"profiles"} and not _cdk_key(k))
    if unknown:
        raise ConfigError(f"context '{unknown[0]}': unknown key (misspelt?); this app's keys are "
                          f"{', '.join(sorted(_FIELDS))}")
    profile = str(context.get("profile", "cloud"))
    if profile not in PROFILES:
        raise ConfigError(f"context 'profile' must be one of {PROFILES}: {profile!r}")
    merged: dict[str, Any] = _deep_merge(PROFILE_DEFAULTS[profile], {"profile": profile})
    profiles = _parse_cli(context.get("profiles", {})) or {}
    if not isinstance(profiles, Mapping) or set(profiles) - set(PROFILES):
        raise ConfigError(f"context 'profiles' may hold only {', '.join(PROFILES)}")
    merged = _deep_merge(merged, profiles.get(profile) or {})
    for key, value in context.items():
        if key in _FIELDS and key not in ("profile", "profiles"):
            merged = _deep_merge(merged, {key: _parse_cli(value)})
    for key, value in context.items():
        head, _, rest = key.partition(".")
        if rest and head in _FIELDS:
            nested: Any = _parse_cli(value)
            for part in reversed(rest.split(".")):
                nested = {part: nested}
            merged = _deep_merge(merged, {head: nested})
    return StackConfig.model_validate(merged)


# --- the execution input ---------------------------------------------------------------------------------
# The keys the state machine's "Check input" accepts (stackfacts.INPUT_KEYS); bounds from the typed config.
def _bounds(model: type[BaseModel], name: str) -> tuple[float, float]:
    low = high = None
    for meta in model.model_fields[name].metadata:
        low = getattr(meta, "ge", low)
        high = getattr(meta, "le", high)
    if low is None or high is None:
        raise ValueError(f"{model.__name__}.{name} needs ge and le bounds")
    return low, high


def input_limits() -> dict[str, tuple[float, float]]:
    return {"max_jobs": _bounds(TuningConfig, "max_jobs"),
            "max_parallel_jobs": _bounds(TuningConfig, "max_parallel_jobs"),
            "min_test_accuracy": _bounds(GateConfig, "min_test_accuracy")}


# botocore (sagemaker service model): HyperParameterTuningJobName pattern and length (max 32: the pattern alone
# lets hyphens make it longer); S3Uri at most 1024 chars.
TUNING_JOB_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,31}$")
TUNING_JOB_NAME_MAX = 32
S3_URI_MAX = 1024


def validate_input(value: Any, cfg: StackConfig, *, dataset_prefix: str | None = None) -> dict[str, Any]:
    """The checks of the state machine's "Check input", in Python, before a run starts (ConfigError names the
    key in one line). `dataset_prefix`: s3://<bucket>/<data_prefix> when the bucket is known."""
    if not isinstance(value, Mapping):
        raise ConfigError("input: must be a JSON object")
    unknown = sorted(set(value) - set(facts.INPUT_KEYS))
    if unknown:
        raise ConfigError(f"input '{unknown[0]}': unknown key (misspelt?); the input may hold "
                          f"{', '.join(facts.INPUT_KEYS)}")
    limits = input_limits()
    for key in ("max_jobs", "max_parallel_jobs"):
        if key in value:
            v, (low, high) = value[key], limits[key]
            if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
                raise ConfigError(f"input '{key}': must be an integer from {low} to {high} (got {v!r})")
    jobs = value.get("max_jobs", cfg.tuning.max_jobs)
    parallel = value.get("max_parallel_jobs", cfg.tuning.max_parallel_jobs)
    if parallel > jobs:
        raise ConfigError(f"input 'max_parallel_jobs': cannot exceed max_jobs ({jobs})")
    if cfg.tuning_time_s(jobs, parallel) > cfg.tuning_budget_s:
        raise ConfigError(f"input 'max_jobs': {jobs} trials {parallel} at a time need up to "
                          f"{cfg.tuning_time_s(jobs, parallel)} s, more than the {cfg.tuning_budget_s} s the execution "
                          f"timeout leaves for tuning (at most {cfg.tuning_rounds} rounds of max_parallel_jobs)")
    if "min_test_accuracy" in value:
        v, (low, high) = value["min_test_accuracy"], limits["min_test_accuracy"]
        if isinstance(v, bool) or not isinstance(v, int | float) or not low <= v <= high:
            raise ConfigError(f"input 'min_test_accuracy': must be a number from {low} to {high} (got {v!r})")
    parent = value.get("warm_start_parent")
    if parent not in (None, "") and (not isinstance(parent, str) or not parent.startswith(f"{cfg.prefix}-")
                                     or not TUNING_JOB_NAME.match(parent) or len(parent) > TUNING_JOB_NAME_MAX):
        raise ConfigError(f"input 'warm_start_parent': must name a tuning job of this stack ('{cfg.prefix}-...', "
                              f"at most 32 letters, digits, hyphens), or be empty (got {parent!r})")
    if "dataset" in value:
        v = value["dataset"]
        longest = max(len(f"{c}/") for c in contract.CHANNELS)
        prefix = dataset_prefix or f"s3://<bucket>/{cfg.data_prefix}"
        ok = (isinstance(v, str) and v.endswith("/") and len(v) + longest <= S3_URI_MAX
              and (v.startswith(dataset_prefix) if dataset_prefix else
                   v.startswith("s3://") and v.split("/", 3)[-1].startswith(cfg.data_prefix)))
        if not ok:
            raise ConfigError(f"input 'dataset': must be an s3:// prefix under {prefix} ending with '/' "
                              f"(got {v!r})")
    return dict(value)
