"""The synthesized autoscaling states run offline: local.engine sends aws-sdk:applicationautoscaling tasks to moto,
which keeps the scalable target and policy the requests describe."""

from __future__ import annotations

import copy
import json
import threading

import boto3
import pytest

import infra
import stackfacts as facts
from infra import sagemaker_requests as req
from infra.definition import definition as definition_of
from infra.pipeline import S
from tests.support.local import keep_invoking, runtime_client, wait_until
from tests.support.scratch import module_scratch


@pytest.fixture(scope="module")
def scaling_states(tmp_path_factory, request) -> dict:
    template = infra.synth({"profile": "local"}, outdir=module_scratch(request, tmp_path_factory, "synth"), nag=False)
    states = definition_of(template, {"Bucket": "b", "SageMakerRoleArn": f"arn:aws:iam::{facts.LOCAL_ACCOUNT}:role/r"},
                           region=facts.LOCAL_REGION, account=facts.LOCAL_ACCOUNT)["States"]
    picked = {n: copy.deepcopy(states[n]) for n in (S.REGISTER_SCALING, S.SCALING_POLICY, S.SCALING_FAILED)}
    picked[S.DEPLOYED] = {"Type": "Pass", "End": True}
    return {"StartAt": S.REGISTER_SCALING, "States": picked}


def test_scaling_states_register_the_variant_and_its_policy(scaling_states, tmp_path):
    from moto import mock_aws

    from local.engine import run_definition

    cfg = infra.load_config_for({"profile": "local"})
    with mock_aws():
        result = run_definition(scaling_states, {"names": {"endpoint": cfg.endpoint_name}}, timeout=120)
        assert result.status == "SUCCEEDED", (result.error, result.cause)
        aas = boto3.client("application-autoscaling", region_name=facts.LOCAL_REGION)
        (target,) = aas.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
        (policy,) = aas.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"]
        # A second deployment registers again: the same target, updated in place, and the same policy.
        again = run_definition(scaling_states, {"names": {"endpoint": cfg.endpoint_name}}, timeout=120)
        assert again.status == "SUCCEEDED"
        assert len(aas.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]) == 1
    a = cfg.serving.autoscaling
    assert (target["ResourceId"], target["MinCapacity"], target["MaxCapacity"]) == (
        req.scaling_resource_id(cfg), a.min_instances, a.max_instances)
    assert policy["PolicyName"] == req.scaling_policy_name(cfg)
    assert result.output["scaling"]["policy"]["arn"] == policy["PolicyARN"]


# --- the stand-in honours instance counts ---------------------------------------------------------------------------
SLOW_TOY = '''
import json, os, time

def model_fn(model_dir, context):
    return {"pid": os.getpid()}

def input_fn(data, content_type):
    return bytes(data) if not isinstance(data, str) else data.encode()

def predict_fn(data, model):
    if data.startswith(b"slow"):
        time.sleep(float(data.split(b":")[1]))
    return {"pid": model["pid"]}

def output_fn(prediction, accept):
    return json.dumps(prediction)
'''


def _tar(model_dir, archive):
    import tarfile

    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(model_dir.rglob("*")):
            tar.add(path, arcname=path.relative_to(model_dir).as_posix(), recursive=False)
    return archive


def _toy_endpoint(sm, name: str, count: int, config: str | None = None, routing: str | None = None) -> None:
    from tests.support.local import BUCKET, ROLE

    model_dir = sm.work_dir.parent / f"{name}-model"
    if not model_dir.exists():
        (model_dir / "code").mkdir(parents=True)
        (model_dir / "code" / "inference.py").write_text(SLOW_TOY)
        (sm.s3.root / BUCKET).mkdir(parents=True, exist_ok=True)
        _tar(model_dir, sm.s3.root / BUCKET / f"{name}.tar.gz")
        sm.create_model(ModelName=name, ExecutionRoleArn=ROLE,
                        PrimaryContainer={"Image": "pytorch-inference:2.6",
                                          "ModelDataUrl": f"s3://{BUCKET}/{name}.tar.gz"})
    variant = {"VariantName": facts.VARIANT_NAME, "ModelName": name, "InitialInstanceCount": count,
               "InstanceType": "ml.m5.large", **({"RoutingConfig": {"RoutingStrategy": routing}} if routing else {})}
    sm.create_endpoint_config(EndpointConfigName=config or f"{name}-config", ProductionVariants=[variant])


def _serve(sm, name: str, count: int, routing: str | None = None) -> dict:
    """A toy endpoint of `count` instances, in service (DescribeEndpoint's answer)."""
    _toy_endpoint(sm, name, count, routing=routing)
    sm.create_endpoint(EndpointName=name, EndpointConfigName=f"{name}-config")
    described = sm.wait_for_endpoint(name, timeout=180)
    assert described["EndpointStatus"] == "InService", described.get("FailureReason")
    return described


def _scale(sm, name: str, count: int) -> None:
    """UpdateEndpointWeightsAndCapacities: the endpoint's one variant to `count` instances."""
    sm.update_endpoint_weights_and_capacities(EndpointName=name, DesiredWeightsAndCapacities=[
        {"VariantName": facts.VARIANT_NAME, "DesiredInstanceCount": count}])


def _counts(sm, name: str) -> tuple[int, int]:
    (variant,) = sm.describe_endpoint(EndpointName=name)["ProductionVariants"]
    return variant["CurrentInstanceCount"], variant["DesiredInstanceCount"]


def _invoke(runtime, name: str, body: bytes = b"x") -> int:
    return json.loads(runtime.invoke_endpoint(EndpointName=name, Body=body, ContentType="image/png")["Body"].read())[
        "pid"]


@pytest.fixture
def sm(tmp_path):
    import moto.applicationautoscaling.models  # noqa: F401  (the engine's moto, loaded as make demo loads it)

    from local.sagemaker import LocalSageMaker

    with LocalSageMaker(tmp_path / "sm", stop_grace_seconds=2.0, endpoint_startup_timeout=120,
                        scaling_period_s=0.5) as standin:
        yield standin


def test_a_variant_runs_its_instance_count_and_requests_are_spread(sm):
    from local.sagemaker.api import validate_response

    described = _serve(sm, "three", 3)
    assert validate_response("DescribeEndpoint", described) == []
    assert _counts(sm, "three") == (3, 3)
    backends = sm.hosting.endpoints["three"].backends
    assert len({b.proc.pid for b in backends}) == 3 and all(b.proc.poll() is None for b in backends)
    runtime = runtime_client(sm)
    answered_by = {_invoke(runtime, "three") for _ in range(60)}
    assert answered_by == {b.proc.pid for b in backends}  # RANDOM routing: all three take requests


def test_least_outstanding_requests_routes_around_a_busy_instance(sm):
    _serve(sm, "lor", 2, routing="LEAST_OUTSTANDING_REQUESTS")
    from local.sagemaker.api import validate_response

    described = sm.describe_endpoint(EndpointName="lor")
    assert described["ProductionVariants"][0]["RoutingConfig"] == {"RoutingStrategy": "LEAST_OUTSTANDING_REQUESTS"}
    assert validate_response("DescribeEndpoint", described) == []
    runtime = runtime_client(sm)
    busy: list[int] = []
    slow = threading.Thread(target=lambda: busy.append(_invoke(runtime_client(sm), "lor", b"slow:15")))
    slow.start()
    wait_until(lambda: any(b.inflight for b in sm.hosting.endpoints["lor"].backends), timeout=30)
    quick = {_invoke(runtime, "lor") for _ in range(5)}  # well within the slow one's 15 s, even on a busy machine
    slow.join()
    assert len(quick) == 1 and quick != set(busy)


def test_scaling_in_drains_before_it_stops_and_out_adds_servers(sm):
    from local.sagemaker import SageMakerError

    _serve(sm, "elastic", 2, routing="LEAST_OUTSTANDING_REQUESTS")  # the slow requests land on both
    with pytest.raises(SageMakerError, match="not present"):
        sm.update_endpoint_weights_and_capacities(EndpointName="elastic", DesiredWeightsAndCapacities=[
            {"VariantName": "Nope", "DesiredInstanceCount": 1}])
    # A slow request on each instance, then scale in to 1: the retired one finishes its request first.
    results: list[int | str] = []

    def slow() -> None:
        try:
            results.append(_invoke(runtime_client(sm), "elastic", b"slow:3"))
        except Exception as exc:
            results.append(repr(exc))

    backends = list(sm.hosting.endpoints["elastic"].backends)
    workers = [threading.Thread(target=slow) for _ in range(6)]
    for w in workers:
        w.start()
    wait_until(lambda: all(b.inflight for b in backends), timeout=30)
    _scale(sm, "elastic", 1)
    assert sm.describe_endpoint(EndpointName="elastic")["EndpointStatus"] == "Updating"
    with pytest.raises(SageMakerError, match="in-progress"):
        sm.update_endpoint(EndpointName="elastic", EndpointConfigName="elastic-config")
    for w in workers:
        w.join()
    assert sm.wait_for_endpoint("elastic", timeout=60)["EndpointStatus"] == "InService"
    assert len(results) == 6 and all(isinstance(r, int) for r in results), results
    assert _counts(sm, "elastic") == (1, 1)
    retired = [b for b in backends if b not in sm.hosting.endpoints["elastic"].backends]
    assert len(retired) == 1 and wait_until(lambda: retired[0].proc.poll() is not None, timeout=30)
    # Out again: a new server joins once it answers /ping.
    _scale(sm, "elastic", 3)
    assert _counts(sm, "elastic") == (1, 3)  # asked for at once; in service once they answer /ping
    assert json.loads(sm.hosting.state_file.read_text())["endpoints"]["elastic"]["variants"] == {
        facts.VARIANT_NAME: {"desired": 3, "current": 1}}
    assert sm.wait_for_endpoint("elastic", timeout=180)["EndpointStatus"] == "InService"
    assert _counts(sm, "elastic") == (3, 3)
    assert json.loads(sm.hosting.state_file.read_text())["endpoints"]["elastic"]["variants"] == {
        facts.VARIANT_NAME: {"desired": 3, "current": 3}}


def test_blue_green_keeps_serving_with_many_instances_and_can_retain_the_count(sm):
    _serve(sm, "bg", 2)
    _scale(sm, "bg", 3)
    assert sm.wait_for_endpoint("bg", timeout=180)["EndpointStatus"] == "InService"
    _toy_endpoint(sm, "bg", 1, config="bg-green")
    blue = [b.proc for b in sm.hosting.endpoints["bg"].backends]
    with keep_invoking(sm, lambda client: _invoke(client, "bg")) as load:
        sm.update_endpoint(EndpointName="bg", EndpointConfigName="bg-green", RetainAllVariantProperties=True)
        assert sm.wait_for_endpoint("bg", timeout=180)["EndpointStatus"] == "InService"
    assert load.failures == []
    assert _counts(sm, "bg") == (3, 3)  # kept, not the new config's InitialInstanceCount of 1
    wait_until(lambda: all(p.poll() is not None for p in blue), timeout=60)
    sm.update_endpoint(EndpointName="bg", EndpointConfigName="bg-config")  # without: the config's count (2)
    assert sm.wait_for_endpoint("bg", timeout=180)["EndpointStatus"] == "InService"
    assert _counts(sm, "bg") == (2, 2)


# --- the policy ------------------------------------------------------------------------------------------------------
def _policy(target: float = 100.0, scale_in_cooldown: int = 300, **extra) -> dict:
    return {"TargetValue": target, "ScaleOutCooldown": 60, "ScaleInCooldown": scale_in_cooldown, **extra}


def _target(lo: int = 1, hi: int = 4, **suspended):
    from local.sagemaker.scaling import ScalableTarget, variant_resource_id

    return ScalableTarget(variant_resource_id("e", facts.VARIANT_NAME), lo, hi, suspended)


def test_target_tracking_scales_out_after_three_high_datapoints_in_proportion():
    from local.sagemaker.scaling import TargetTracker

    tracker, target, policy = TargetTracker(), _target(), _policy()
    for value in (250, 250):
        tracker.observe(value)
        assert tracker.decide(0, 1, 1, target, policy) is None  # AlarmHigh needs 3 datapoints above target
    tracker.observe(250)
    assert tracker.decide(0, 1, 1, target, policy) == 3  # ceil(1 * 250 / 100)
    tracker.scaled(0, 1, 3)
    # The new servers are still starting (1 in service): the same load asks for the capacity already added, so the
    # scale-out cool-down adds nothing; a larger one goes through.
    tracker.observe(250)
    assert tracker.decide(10, 1, 3, target, policy) is None
    tracker.observe(900)
    assert tracker.decide(20, 1, 3, target, policy) == 4  # ceil(9) capped at MaxCapacity
    tracker.observe(100)  # exactly on target: no alarm either way
    assert tracker.decide(30, 4, 4, target, policy) is None


def test_target_tracking_scales_in_after_fifteen_low_datapoints_and_honours_the_cooldown():
    from local.sagemaker.scaling import LOW_DATAPOINTS, TargetTracker

    tracker, target, policy = TargetTracker(), _target(), _policy(scale_in_cooldown=300)
    for _ in range(LOW_DATAPOINTS - 1):
        tracker.observe(40)
        assert tracker.decide(0, 4, 4, target, policy) is None
    tracker.observe(95)  # below target but not below 90% of it: AlarmLow is not breached
    assert tracker.decide(0, 4, 4, target, policy) is None
    for _ in range(LOW_DATAPOINTS):
        tracker.observe(40)
    assert tracker.decide(100, 4, 4, target, policy) == 2  # ceil(4 * 40 / 100)
    tracker.scaled(100, 4, 2)
    tracker.observe(10)
    assert tracker.decide(200, 2, 2, target, policy) is None  # within ScaleInCooldown of the last scale-in
    assert tracker.decide(401, 2, 2, target, policy) == 1
    # A scale-out during the scale-in cool-down happens at once, and ends that cool-down.
    tracker.scaled(401, 2, 1)
    for _ in range(3):
        tracker.observe(300)
    assert tracker.decide(402, 1, 1, target, policy) == 3
    tracker.scaled(402, 1, 3)
    for _ in range(LOW_DATAPOINTS):
        tracker.observe(10)
    assert tracker.decide(403, 3, 3, target, policy) == 1


def test_target_tracking_respects_bounds_disable_scale_in_and_suspension():
    from local.sagemaker.scaling import LOW_DATAPOINTS, TargetTracker

    tracker = TargetTracker()
    assert tracker.decide(0, 1, 1, _target(lo=2), _policy()) == 2  # a new MinCapacity moves the count at once
    assert tracker.decide(0, 5, 5, _target(hi=4), _policy()) == 4
    for _ in range(LOW_DATAPOINTS):
        tracker.observe(0)
    assert tracker.decide(0, 3, 3, _target(), _policy(DisableScaleIn=True)) is None
    assert tracker.decide(0, 3, 3, _target(DynamicScalingInSuspended=True), _policy()) is None
    assert tracker.decide(0, 3, 3, _target(), _policy()) == 1
    for _ in range(3):
        tracker.observe(500)
    assert tracker.decide(0, 1, 1, _target(DynamicScalingOutSuspended=True), _policy()) is None


def test_the_resource_id_pattern_reads_the_state_machines_resource_id():
    from local.sagemaker.scaling import VARIANT_RESOURCE, variant_resource_id

    cfg = infra.load_config_for({"profile": "local"})
    match = VARIANT_RESOURCE.match(req.scaling_resource_id(cfg))
    assert match and variant_resource_id(match["endpoint"], match["variant"]) == req.scaling_resource_id(cfg)
    assert match["endpoint"] == cfg.endpoint_name


def test_the_stand_in_keeps_what_the_state_machine_registered_after_moto_forgets_it(scaling_states, tmp_path):
    from local.engine import run_definition
    from local.sagemaker import LocalSageMaker

    cfg = infra.load_config_for({"profile": "local"})
    resource_id = req.scaling_resource_id(cfg)
    with LocalSageMaker(tmp_path / "sm") as sm:
        assert sm.scaling.registry.target(resource_id) is None
        result = run_definition(scaling_states, {"names": {"endpoint": cfg.endpoint_name}}, sm, timeout=120)
        assert result.status == "SUCCEEDED", (result.error, result.cause)
        # The run is over and its moto data is gone; the stand-in's copy is what the state machine sent.
        kept = sm.scaling.registry.target(resource_id)
    a = cfg.serving.autoscaling
    assert kept is not None and (kept.min_capacity, kept.max_capacity) == (a.min_instances, a.max_instances)
    sent = req.put_scaling_policy(cfg)
    assert kept.tracking_policy() == sent["TargetTrackingScalingPolicyConfiguration"]
    # Kept across restarts of the stand-in, as AWS keeps a registration across deployments.
    with LocalSageMaker(tmp_path / "sm", restore=True) as again:
        assert again.scaling.registry.target(resource_id).tracking_policy() == kept.tracking_policy()


def test_the_registered_policy_scales_the_endpoint_out_under_load_and_back_in(sm):
    """The whole path on a short metric period: a target and policy registered with moto (as the state machine
    registers them), load above the target, a second server, no load, back to one; no request fails."""
    from moto import mock_aws

    from local.sagemaker.scaling import variant_resource_id

    _serve(sm, "auto", 1)
    resource_id = variant_resource_id("auto", facts.VARIANT_NAME)
    with mock_aws():
        aas = boto3.client("application-autoscaling", region_name=sm.region)
        aas.register_scalable_target(ServiceNamespace=req.SCALING_NAMESPACE, ResourceId=resource_id,
                                     ScalableDimension=req.SCALABLE_DIMENSION, MinCapacity=1, MaxCapacity=2)
        aas.put_scaling_policy(
            PolicyName="auto-invocations", ServiceNamespace=req.SCALING_NAMESPACE, ResourceId=resource_id,
            ScalableDimension=req.SCALABLE_DIMENSION, PolicyType="TargetTrackingScaling",
            TargetTrackingScalingPolicyConfiguration={
                "TargetValue": 60.0, "PredefinedMetricSpecification": {"PredefinedMetricType": req.SCALING_METRIC},
                "ScaleOutCooldown": 1, "ScaleInCooldown": 1})
    # About 10 requests/s: 600 a minute against a target of 60 per instance.
    with keep_invoking(sm, lambda client: _invoke(client, "auto"), pause=0.1) as load:
        wait_until(lambda: _counts(sm, "auto") == (2, 2), timeout=120)
    out = [a for a in sm.scaling.activities if a["EndpointName"] == "auto"]
    assert out[0]["From"] == 1 and out[0]["To"] == 2 and out[0]["InvocationsPerInstance"] > 60
    wait_until(lambda: _counts(sm, "auto") == (1, 1), timeout=120)
    assert load.failures == []
    assert [(a["From"], a["To"]) for a in sm.scaling.activities if a["EndpointName"] == "auto"] == [(1, 2), (2, 1)]


def test_a_datapoint_is_measured_on_the_capacity_that_served_it():
    """A period in which two more instances joined halfway: the metric mixes 1 and 3 instances, and the capacity
    it was measured on is what the policy multiplies it by, not the count at the end (3), which would ask for
    more than the load needs (the bench once went 1 -> 3 -> 4 on a load for 3)."""
    from pathlib import Path

    from local.sagemaker.hosting import Variant
    from local.sagemaker.scaling import TargetTracker, datapoint

    variant = Variant(facts.VARIANT_NAME, "m", 1.0, "image", Path(facts.MODEL_ARCHIVE), {})
    variant.invocations.extend([(0.5 + i * 0.1, 1.0) for i in range(10)] + [(2.0 + i * 0.05, 1 / 3) for i in range(30)])
    value, capacity = datapoint(variant, 0.0, 4.0, 4.0, in_service=3)
    assert value == pytest.approx((10 + 10) * 15)  # per instance, per minute
    assert capacity == pytest.approx(2.0)  # 40 invocations over 20 per instance
    tracker = TargetTracker(high_datapoints=1)
    tracker.observe(value)
    # 40 invocations in 4 s is 600 a minute: 6 instances at a target of 100; at a target of 200, 3.
    assert tracker.decide(0, capacity, 3, _target(hi=10), _policy(target=200)) is None
    assert tracker.decide(0, capacity, 3, _target(hi=10), _policy(target=100)) == 6
    assert datapoint(Variant("v", "m", 1.0, "i", Path("x"), {}), 0, 4, 4, in_service=2) == (0.0, 2.0)


def test_a_restarted_stand_in_brings_back_each_variants_instance_count(tmp_path):
    from local.sagemaker import LocalSageMaker

    with LocalSageMaker(tmp_path / "sm", stop_grace_seconds=2.0, endpoint_startup_timeout=120) as first:
        _serve(first, "kept", 1)
        _scale(first, "kept", 2)
        assert first.wait_for_endpoint("kept", timeout=180)["EndpointStatus"] == "InService"
    with LocalSageMaker(tmp_path / "sm", restore=True, stop_grace_seconds=2.0) as second:
        assert _counts(second, "kept") == (2, 2)
        assert len({_invoke(runtime_client(second), "kept") for _ in range(40)}) == 2
