"""The stand-in's UpdateEndpoint as AWS documents it: RetainAllVariantProperties / ExcludeRetainedVariantProperties
keep or override the live DesiredInstanceCount and weight (API_UpdateEndpoint.html, API_VariantProperty.html), and an
update that changes the instance type of a variant registered with Application Auto Scaling is refused
(sagemaker/latest/dg/endpoint-scaling-update.html), so local mode fails wherever AWS would."""

from __future__ import annotations

import tarfile

import pytest

from local.sagemaker import LocalSageMaker, SageMakerError
from local.sagemaker.scaling import variant_resource_id
from tests.support.local import BUCKET, ROLE
from tests.support.serve import write_toy_model

pytestmark = pytest.mark.slow  # real endpoint-server processes


@pytest.fixture
def sm(tmp_path):
    with LocalSageMaker(tmp_path / "sm", stop_grace_seconds=2.0, endpoint_startup_timeout=120) as standin:
        model_dir = write_toy_model(tmp_path / "model")
        (standin.s3.root / BUCKET).mkdir(parents=True, exist_ok=True)
        with tarfile.open(standin.s3.root / BUCKET / "toy.tar.gz", "w:gz") as tar:
            for path in sorted(model_dir.rglob("*")):
                tar.add(path, arcname=path.relative_to(model_dir).as_posix(), recursive=False)
        standin.create_model(ModelName="toy", ExecutionRoleArn=ROLE, PrimaryContainer={
            "Image": "pytorch-inference:2.6", "ModelDataUrl": f"s3://{BUCKET}/toy.tar.gz"})
        yield standin


def _config(sm, name: str, count: int, instance_type: str = "ml.m5.large", weight: float = 1.0) -> str:
    sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[{
        "VariantName": "AllTraffic", "ModelName": "toy", "InitialInstanceCount": count,
        "InstanceType": instance_type, "InitialVariantWeight": weight}])
    return name


def _variant(sm) -> dict:
    (variant,) = sm.describe_endpoint(EndpointName="ep")["ProductionVariants"]
    return variant


def _scaled_out(sm, to: int) -> None:
    sm.create_endpoint(EndpointName="ep", EndpointConfigName=_config(sm, "c1", 1))
    assert sm.wait_for_endpoint("ep", timeout=180)["EndpointStatus"] == "InService"
    sm.update_endpoint_weights_and_capacities(EndpointName="ep", DesiredWeightsAndCapacities=[
        {"VariantName": "AllTraffic", "DesiredInstanceCount": to, "DesiredWeight": 2.0}])
    assert sm.wait_for_endpoint("ep", timeout=180)["EndpointStatus"] == "InService"


@pytest.mark.parametrize(("retain", "exclude", "expected"), [
    (False, [], (1, 1.0)),  # the new config's InitialInstanceCount and InitialVariantWeight
    (True, [], (2, 2.0)),  # the live DesiredInstanceCount and DesiredWeight
    (True, ["DesiredWeight"], (2, 1.0)),  # the count retained, the weight from the new config
    (True, ["DesiredInstanceCount"], (1, 2.0)),
])
def test_update_retains_or_overrides_variant_properties_as_aws_documents(sm, retain, exclude, expected):
    _scaled_out(sm, 2)
    request = {"EndpointName": "ep", "EndpointConfigName": _config(sm, "c2", 1), "RetainAllVariantProperties": retain}
    if exclude:
        request["ExcludeRetainedVariantProperties"] = [{"VariantPropertyType": t} for t in exclude]
    sm.update_endpoint(**request)
    described = sm.wait_for_endpoint("ep", timeout=180)
    assert described["EndpointStatus"] == "InService" and described["EndpointConfigName"] == "c2"
    variant = _variant(sm)
    assert (variant["DesiredInstanceCount"], variant["CurrentWeight"]) == expected


def test_an_instance_type_change_of_a_scalable_target_is_refused(sm):
    _scaled_out(sm, 1)
    sm.scaling.registry.register(variant_resource_id("ep", "AllTraffic"), 1, 4)
    with pytest.raises(SageMakerError, match="instance type") as refused:
        sm.update_endpoint(EndpointName="ep", EndpointConfigName=_config(sm, "bigger", 1, "ml.c5.xlarge"))
    assert refused.value.code == "ValidationException"
    assert sm.describe_endpoint(EndpointName="ep")["EndpointStatus"] == "InService"  # nothing started
    # The same type updates with the target registered; another type once it is deregistered.
    sm.update_endpoint(EndpointName="ep", EndpointConfigName=_config(sm, "same", 1))
    assert sm.wait_for_endpoint("ep", timeout=180)["EndpointConfigName"] == "same"
    sm.scaling.registry.deregister(variant_resource_id("ep", "AllTraffic"))
    sm.update_endpoint(EndpointName="ep", EndpointConfigName="bigger")
    assert sm.wait_for_endpoint("ep", timeout=180)["EndpointConfigName"] == "bigger"
