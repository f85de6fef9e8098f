"""The synthesized autoscaling states run offline: local.engine sends aws-sdk:applicationautoscaling tasks to moto,
which keeps the scalable target and policy the requests describe."""

from __future__ import annotations

import copy
import json
import threading

import boto3
import pytest

import infra
from infra import sagemaker_requests as req
from infra.definition import definition as definition_of
from infra.pipeline import S
from tests.test_local_support import wait_until


@pytest.fixture(scope="module")
def scaling_states(tmp_path_factory) -> dict:
    template = infra.synth({"profile": "local"}, outdir=tmp_path_factory.mktemp("synth"), nag=False)
    states = definition_of(template, {"Bucket": "b", "SageMakerRoleArn": "arn:aws:iam::123456789012:role/r"},
                           region="us-east-1", account="123456789012")["States"]
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
        aas = boto3.client("application-autoscaling", region_name="us-east-1")
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
    from tests.test_local_support import BUCKET, ROLE

    model_dir = sm.work_dir.parent / f"{name}-model"
    if not model_dir.exists():
        (model_dir / "code").mkdir(parents=True)
        (model_dir / "code" / "inference.py").write_text(SLOW_TOY)
        (sm.s3.root / BUCKET).mkdir(parents=True, exist_ok=True)
        _tar(model_dir, sm.s3.root / BUCKET / f"{name}.tar.gz")
        sm.create_model(ModelName=name, ExecutionRoleArn=ROLE,
                        PrimaryContainer={"Image": "pytorch-inference:2.6",
                                          "ModelDataUrl": f"s3://{BUCKET}/{name}.tar.gz"})
    variant = {"VariantName": "AllTraffic", "ModelName": name, "InitialInstanceCount": count,
               "InstanceType": "ml.m5.large", **({"RoutingConfig": {"RoutingStrategy": routing}} if routing else {})}
    sm.create_endpoint_config(EndpointConfigName=config or f"{name}-config", ProductionVariants=[variant])


def _runtime(sm):
    return boto3.client("sagemaker-runtime", region_name="us-east-1", endpoint_url=sm.runtime_url,
                        aws_access_key_id="local", aws_secret_access_key="local")


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

    _toy_endpoint(sm, "three", 3)
    sm.create_endpoint(EndpointName="three", EndpointConfigName="three-config")
    described = sm.wait_for_endpoint("three", timeout=180)
    assert described["EndpointStatus"] == "InService", described.get("FailureReason")
    assert validate_response("DescribeEndpoint", described) == []
    assert _counts(sm, "three") == (3, 3)
    backends = sm.hosting.endpoints["three"].backends
    assert len({b.proc.pid for b in backends}) == 3 and all(b.proc.poll() is None for b in backends)
    runtime = _runtime(sm)
    answered_by = {_invoke(runtime, "three") for _ in range(60)}
    assert answered_by == {b.proc.pid for b in backends}  # RANDOM routing: all three take requests


def test_least_outstanding_requests_routes_around_a_busy_instance(sm):
    _toy_endpoint(sm, "lor", 2, routing="LEAST_OUTSTANDING_REQUESTS")
    sm.create_endpoint(EndpointName="lor", EndpointConfigName="lor-config")
    assert sm.wait_for_endpoint("lor", timeout=180)["EndpointStatus"] == "InService"
    assert sm.describe_endpoint(EndpointName="lor")["ProductionVariants"][0]["RoutingConfig"] == {
        "RoutingStrategy": "LEAST_OUTSTANDING_REQUESTS"}
    runtime = _runtime(sm)
    busy: list[int] = []
    slow = threading.Thread(target=lambda: busy.append(_invoke(_runtime(sm), "lor", b"slow:4")))
    slow.start()
    wait_until(lambda: any(b.inflight for b in sm.hosting.endpoints["lor"].backends), timeout=30)
    quick = {_invoke(runtime, "lor") for _ in range(10)}
    slow.join()
    assert len(quick) == 1 and quick != set(busy)


def test_scaling_in_drains_before_it_stops_and_out_adds_servers(sm):
    from local.sagemaker import SageMakerError

    _toy_endpoint(sm, "elastic", 2)
    sm.create_endpoint(EndpointName="elastic", EndpointConfigName="elastic-config")
    assert sm.wait_for_endpoint("elastic", timeout=180)["EndpointStatus"] == "InService"
    with pytest.raises(SageMakerError, match="not present"):
        sm.update_endpoint_weights_and_capacities(EndpointName="elastic", DesiredWeightsAndCapacities=[
            {"VariantName": "Nope", "DesiredInstanceCount": 1}])
    # A slow request on each instance, then scale in to 1: the retired one finishes its request first.
    results: list[int | str] = []

    def slow() -> None:
        try:
            results.append(_invoke(_runtime(sm), "elastic", b"slow:3"))
        except Exception as exc:
            results.append(repr(exc))

    backends = list(sm.hosting.endpoints["elastic"].backends)
    workers = [threading.Thread(target=slow) for _ in range(6)]
    for w in workers:
        w.start()
    wait_until(lambda: all(b.inflight for b in backends), timeout=30)
    sm.update_endpoint_weights_and_capacities(EndpointName="elastic", DesiredWeightsAndCapacities=[
        {"VariantName": "AllTraffic", "DesiredInstanceCount": 1}])
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
    sm.update_endpoint_weights_and_capacities(EndpointName="elastic", DesiredWeightsAndCapacities=[
        {"VariantName": "AllTraffic", "DesiredInstanceCount": 3}])
    assert sm.wait_for_endpoint("elastic", timeout=180)["EndpointStatus"] == "InService"
    assert _counts(sm, "elastic") == (3, 3)
    assert json.loads(sm.hosting.state_file.read_text())["endpoints"]["elastic"]["variants"] == {
        "AllTraffic": {"desired": 3, "current": 3}}


def test_blue_green_keeps_serving_with_many_instances_and_can_retain_the_count(sm):
    _toy_endpoint(sm, "bg", 2)
    sm.create_endpoint(EndpointName="bg", EndpointConfigName="bg-config")
    assert sm.wait_for_endpoint("bg", timeout=180)["EndpointStatus"] == "InService"
    sm.update_endpoint_weights_and_capacities(EndpointName="bg", DesiredWeightsAndCapacities=[
        {"VariantName": "AllTraffic", "DesiredInstanceCount": 3}])
    assert sm.wait_for_endpoint("bg", timeout=180)["EndpointStatus"] == "InService"
    _toy_endpoint(sm, "bg", 1, config="bg-green")
    blue = [b.proc for b in sm.hosting.endpoints["bg"].backends]
    failures: list[str] = []
    stop = threading.Event()

    def hammer() -> None:
        client = _runtime(sm)
        while not stop.is_set():
            try:
                _invoke(client, "bg")
            except Exception as exc:
                failures.append(repr(exc))

    worker = threading.Thread(target=hammer)
    worker.start()
    try:
        sm.update_endpoint(EndpointName="bg", EndpointConfigName="bg-green", RetainAllVariantProperties=True)
        assert sm.wait_for_endpoint("bg", timeout=180)["EndpointStatus"] == "InService"
    finally:
        stop.set()
        worker.join()
    assert failures == []
    assert _counts(sm, "bg") == (3, 3)  # kept, not the new config's InitialInstanceCount of 1
    wait_until(lambda: all(p.poll() is not None for p in blue), timeout=60)
    sm.update_endpoint(EndpointName="bg", EndpointConfigName="bg-config")  # without: the config's count (2)
    assert sm.wait_for_endpoint("bg", timeout=180)["EndpointStatus"] == "InService"
    assert _counts(sm, "bg") == (2, 2)
