"""The synthesized autoscaling states run offline: local.engine sends aws-sdk:applicationautoscaling tasks to moto,
which keeps the scalable target and policy the requests describe."""

from __future__ import annotations

import copy

import boto3
import pytest

import infra
from infra import sagemaker_requests as req
from infra.definition import definition as definition_of
from infra.pipeline import S


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
