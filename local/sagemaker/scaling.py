"""Application Auto Scaling of the stand-in's endpoints: the target-tracking policy the state machine registers,
applied to the local server processes.

Where the policy comes from. The engine sends the state machine's aws-sdk:applicationautoscaling tasks to moto,
whose backend keeps the scalable target and the policy only while the run's mock lasts (moto drops its data when
the mock stops). So every RegisterScalableTarget / DeregisterScalableTarget / PutScalingPolicy / DeleteScalingPolicy
that moto's backend applies to a SageMaker variant of this stand-in's account and region is mirrored here at the
moment it is applied, and kept in hosting/state.json: in AWS a registration outlives the deployment that made it
(and goes with the endpoint: DeleteEndpoint forgets its targets here).

How it is applied. AWS's target tracking for SageMakerVariantInvocationsPerInstance (per-minute sums) creates two
CloudWatch alarms: scale out when the metric is above the target for 3 datapoints in a row, scale in when it is
below 90% of the target for 15 (the alarms Application Auto Scaling creates, as a user lists them:
https://repost.aws/questions/QUf450Wsd9RROGGOIwaolN9w; moto models the same 3 x 60 s and 15 x 60 s alarms). The new
capacity is ceil(capacity * metric / target), within MinCapacity..MaxCapacity
(https://docs.aws.amazon.com/autoscaling/application/userguide/target-tracking-scaling-policy-overview.html).
Cool-downs (TargetTrackingScalingPolicyConfiguration, Application Auto Scaling API reference): after a scale-out the
policy adds capacity again only for a larger scale-out (the capacity added counts as part of the desired capacity);
after a scale-in no other scale-in until ScaleInCooldown has passed, but a scale-out happens at once and ends that
cool-down. The change is made as Application Auto Scaling makes it, with UpdateEndpointWeightsAndCapacities.

Locally the metric period is `period_s` (LocalSageMaker(scaling_period_s=...), default 10 s instead of CloudWatch's
60 s, so that a demo scales within a minute): a datapoint is the period's invocations per instance, scaled to a
per-minute rate, so the policy's TargetValue keeps its meaning. The datapoint counts (3 and 15) and the cool-downs
are AWS's and the policy's, unscaled.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import math
import re
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from local.sagemaker.context import Context

if TYPE_CHECKING:
    from local.sagemaker.hosting import Endpoint

DEFAULT_PERIOD_S = 10.0  # CloudWatch publishes the metric per minute; locally shorter (see the module docs)
HIGH_DATAPOINTS = 3  # AlarmHigh: metric > target for 3 datapoints
LOW_DATAPOINTS = 15  # AlarmLow: metric < 90% of target for 15 datapoints
LOW_FRACTION = 0.9
# A SageMaker variant's ResourceId (RegisterScalableTarget, Application Auto Scaling API reference): the inverse of
# infra.sagemaker_requests.scaling_resource_id.
VARIANT_RESOURCE = re.compile(r"^endpoint/(?P<endpoint>[^/]+)/variant/(?P<variant>[^/]+)$")


def variant_resource_id(endpoint: str, variant: str) -> str:
    return f"endpoint/{endpoint}/variant/{variant}"


def _aws_names() -> tuple[str, str, str]:
    """(namespace, scalable dimension, predefined metric) from their one home; imported when first needed: infra
    pulls in the SageMaker SDK, seconds the stand-in does not spend unless a scaling target exists."""
    from infra.sagemaker_requests import SCALABLE_DIMENSION, SCALING_METRIC, SCALING_NAMESPACE

    return SCALING_NAMESPACE, SCALABLE_DIMENSION, SCALING_METRIC


# --- the registrations --------------------------------------------------------------------------------------------
@dataclass
class ScalableTarget:
    resource_id: str
    min_capacity: int
    max_capacity: int
    suspended: dict = field(default_factory=dict)  # SuspendedState
    policies: dict[str, dict] = field(default_factory=dict)  # PolicyName -> {"PolicyType", "Configuration"}

    def tracking_policy(self) -> dict | None:
        """The TargetTrackingScalingPolicyConfiguration on SageMakerVariantInvocationsPerInstance, if any (other
        policy kinds are kept but not evaluated locally)."""
        metric = _aws_names()[2]
        for policy in self.policies.values():
            configuration = policy.get("Configuration") or {}
            spec = configuration.get("PredefinedMetricSpecification") or {}
            if policy.get("PolicyType") == "TargetTrackingScaling" and spec.get("PredefinedMetricType") == metric:
                return configuration
        return None


class ScalingRegistry:
    """The scalable targets and policies of this stand-in's variants, mirrored from moto's backend."""

    _live: ClassVar[weakref.WeakSet[ScalingRegistry]] = weakref.WeakSet()

    def __init__(self, account: str, region: str, on_change: Callable[[], None] | None = None) -> None:
        self.account, self.region = account, region
        self.on_change = on_change
        self._lock = threading.Lock()
        self._targets: dict[str, ScalableTarget] = {}
        _install_moto_mirror()
        ScalingRegistry._live.add(self)

    def close(self) -> None:
        """Mirror nothing more (a closed stand-in must not write the state of a folder another one may open)."""
        ScalingRegistry._live.discard(self)

    def target(self, resource_id: str) -> ScalableTarget | None:
        with self._lock:
            found = self._targets.get(resource_id)
            return copy.deepcopy(found) if found else None

    def register(self, resource_id: str, min_capacity: int, max_capacity: int, suspended: dict | None = None,
                 policies: dict[str, dict] | None = None) -> None:
        with self._lock:
            self._targets[resource_id] = ScalableTarget(resource_id, int(min_capacity), int(max_capacity),
                                                        dict(suspended or {}), copy.deepcopy(policies or {}))
        self._changed()

    def deregister(self, resource_id: str) -> None:
        """Its policies go with it, as in AWS."""
        with self._lock:
            gone = self._targets.pop(resource_id, None)
        if gone:
            self._changed()

    def forget_endpoint(self, endpoint: str) -> None:
        with self._lock:
            gone = [r for r in self._targets if (m := VARIANT_RESOURCE.match(r)) and m["endpoint"] == endpoint]
            for resource_id in gone:
                del self._targets[resource_id]

    def state(self) -> dict:
        with self._lock:
            return {r: {"MinCapacity": t.min_capacity, "MaxCapacity": t.max_capacity, "SuspendedState": t.suspended,
                        "Policies": t.policies} for r, t in self._targets.items()}

    def load(self, state: dict) -> None:
        with self._lock:
            self._targets = {r: ScalableTarget(r, t["MinCapacity"], t["MaxCapacity"], t.get("SuspendedState", {}),
                                               t.get("Policies", {})) for r, t in state.items()}

    def mirror(self, backend: Any, resource_id: str) -> None:
        """Copy moto's record of one variant's target and policies (none: deregistered)."""
        _, dimension, _ = _aws_names()
        target = backend.targets.get(dimension, {}).get(resource_id)
        if target is None:
            self.deregister(resource_id)
            return
        policies = {p.policy_name: {"PolicyType": p.policy_type,
                                    "Configuration": copy.deepcopy(p.target_tracking_scaling_policy_configuration
                                                                   or p.step_scaling_policy_configuration)}
                    for p in backend.policies.values()
                    if p.resource_id == resource_id and p.scalable_dimension == dimension}
        self.register(resource_id, target.min_capacity, target.max_capacity, target.suspended_state or {}, policies)

    def _changed(self) -> None:
        if self.on_change:
            with contextlib.suppress(Exception):  # persisting is best effort: the registration itself stands
                self.on_change()


_MIRRORED = ("register_scalable_target", "deregister_scalable_target", "put_scaling_policy", "delete_scaling_policy")
_mirror_lock = threading.Lock()


def _install_moto_mirror() -> None:
    """Wrap moto's Application Auto Scaling backend once per process: after each change to a SageMaker variant's
    target or policy, every live registry of the same account and region copies that variant's record."""
    try:
        from moto.applicationautoscaling.models import ApplicationAutoscalingBackend
    except ImportError:  # moto is a test and local-run dependency; without it nothing registers locally
        return
    with _mirror_lock:
        for name in _MIRRORED:
            original = getattr(ApplicationAutoscalingBackend, name)
            if getattr(original, "_mirrored", False):
                continue
            signature = inspect.signature(original)

            def mirrored(self: Any, *args: Any, _original: Callable = original,
                         _signature: inspect.Signature = signature, **kwargs: Any) -> Any:
                result = _original(self, *args, **kwargs)
                arguments = _signature.bind(self, *args, **kwargs).arguments
                namespace = arguments.get("namespace") or arguments.get("service_namespace")
                resource_id = arguments.get("r_id") or arguments.get("resource_id")
                if namespace == "sagemaker" and resource_id:
                    for registry in list(ScalingRegistry._live):
                        if (registry.account, registry.region) == (self.account_id, self.region_name):
                            registry.mirror(self, resource_id)
                return result

            mirrored._mirrored = True  # type: ignore[attr-defined]
            setattr(ApplicationAutoscalingBackend, name, mirrored)


# --- the policy -----------------------------------------------------------------------------------------------------
class TargetTracker:
    """One variant's target-tracking evaluation: datapoints in, a new desired instance count out. Pure (the caller
    passes the time), so the rules can be tested without servers or waiting."""

    def __init__(self, high_datapoints: int = HIGH_DATAPOINTS, low_datapoints: int = LOW_DATAPOINTS) -> None:
        self.high, self.low = high_datapoints, low_datapoints
        self.points: deque[float] = deque(maxlen=max(high_datapoints, low_datapoints))
        self.last_scale_in: float | None = None

    def observe(self, value: float) -> None:
        """One datapoint: invocations per instance per minute over the last period."""
        self.points.append(value)

    def decide(self, now: float, in_service: float, desired: int, target: ScalableTarget,
               policy: dict) -> int | None:
        """The desired count the policy asks for now, or None for no change. `in_service`: the capacity the latest
        datapoint was measured on."""
        lo, hi = target.min_capacity, target.max_capacity
        if desired < lo or desired > hi:  # a registration with new bounds moves the count inside them
            return min(max(desired, lo), hi)
        if not self.points:
            return None
        goal = float(policy["TargetValue"])
        latest = self.points[-1]
        wanted = min(max(math.ceil(in_service * latest / goal - 1e-9), lo), hi)
        recent = list(self.points)
        high = len(recent) >= self.high and all(p > goal for p in recent[-self.high:])
        low = len(recent) >= self.low and all(p < LOW_FRACTION * goal for p in recent[-self.low:])
        if high and wanted > desired and not target.suspended.get("DynamicScalingOutSuspended"):
            # During the scale-out cool-down the capacity already added is part of `desired`: only a larger
            # scale-out passes this test, which is the cool-down's rule.
            return wanted
        if low and wanted < desired and not policy.get("DisableScaleIn") \
                and not target.suspended.get("DynamicScalingInSuspended"):
            cooldown = float(policy.get("ScaleInCooldown", 300))
            if self.last_scale_in is not None and now - self.last_scale_in < cooldown:
                return None
            return wanted
        return None

    def scaled(self, now: float, before: int, after: int) -> None:
        """Record a scaling activity that took place: a scale-in starts the scale-in cool-down, a scale-out ends
        it."""
        self.last_scale_in = now if after < before else None


def datapoint(variant: Any, start: float, end: float, period_s: float, in_service: int) -> tuple[float, float]:
    """(InvocationsPerInstance per minute over [start, end), the capacity it was measured on). The capacity is the
    instance count the period's invocations were spread over (invocations / their per-instance sum): instances
    that joined during the period count for the part of it they served, so capacity * metric is the period's
    whole rate and a scale-out that is still starting up is not counted twice."""
    count, per_instance = variant.invocations_in(start, end)
    capacity = count / per_instance if per_instance > 0 else float(max(in_service, 1))
    return per_instance * 60.0 / period_s, capacity


class Autoscaler:
    """Evaluates every registered variant once per period and scales it with UpdateEndpointWeightsAndCapacities:
    `endpoints()` lists the stand-in's endpoints, `scale(request)` makes that call (as Application Auto Scaling
    does, through the API: its checks and its Updating status)."""

    def __init__(self, context: Context, registry: ScalingRegistry, endpoints: Callable[[], list[Endpoint]],
                 scale: Callable[[dict], object], period_s: float = DEFAULT_PERIOD_S) -> None:
        if period_s <= 0:
            raise ValueError("scaling_period_s must be positive")
        self.context = context
        self.period_s = period_s
        self.registry = registry
        self.endpoints, self.scale = endpoints, scale
        self.trackers: dict[str, TargetTracker] = {}
        self.activities: list[dict] = []  # DescribeScalingActivities, in short
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="autoscaler", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self.registry.close()

    def _run(self) -> None:
        due = time.monotonic() + self.period_s
        while not self._stop.wait(max(0.0, due - time.monotonic())):
            with contextlib.suppress(Exception):  # one bad evaluation must not end scaling for good
                self.evaluate(due - self.period_s, due)
            due += self.period_s

    def evaluate(self, start: float, end: float) -> None:
        """One period [start, end): a datapoint per registered variant, and the scaling it calls for."""
        for endpoint in self.endpoints():
            for variant in list(endpoint.variants):
                resource_id = variant_resource_id(endpoint.name, variant.name)
                target = self.registry.target(resource_id)
                policy = target.tracking_policy() if target else None
                if target is None or policy is None:
                    self.trackers.pop(resource_id, None)
                    continue
                tracker = self.trackers.setdefault(resource_id, TargetTracker())
                with self.context.lock:
                    status, desired, in_service = endpoint.status, variant.desired, len(variant.in_service())
                value, capacity = datapoint(variant, start, end, self.period_s, in_service)
                variant.forget_invocations(before=end - self.period_s)
                tracker.observe(value)
                wanted = tracker.decide(time.monotonic(), capacity, desired, target, policy)
                if wanted is None or wanted == desired or status != "InService":
                    continue  # an endpoint being updated refuses the call: the next period tries again
                try:
                    self.scale({"EndpointName": endpoint.name,
                                "DesiredWeightsAndCapacities": [{"VariantName": variant.name,
                                                                 "DesiredInstanceCount": wanted}]})
                except Exception:
                    continue
                tracker.scaled(time.monotonic(), desired, wanted)
                activity = {"type": "EndpointScaling", "EndpointName": endpoint.name, "VariantName": variant.name,
                            "From": desired, "To": wanted, "InvocationsPerInstance": round(value, 1),
                            "TargetValue": float(policy["TargetValue"])}
                self.activities.append(activity)
                self.context.emit(activity)
