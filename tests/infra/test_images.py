"""Image URIs from the SageMaker SDK's tables, per region, and how the template carries them."""

from __future__ import annotations

import pytest

from infra import images
from infra.stack import image_request

# Published DLC/Debugger registries (AWS docs), as a cross-check of the SDK lookup.
DLC_ACCOUNT = "763104351884"
RULES_ACCOUNTS = {"us-east-1": "503895931360", "us-west-2": "895741380848"}
REGIONS = ("us-east-1", "us-west-2", "eu-west-1", "eu-central-1", "ap-northeast-1", "ap-southeast-2", "sa-east-1")


@pytest.fixture(scope="module")
def table():
    from infra.config import load_config

    return images.resolve(image_request(load_config({})))


@pytest.mark.parametrize("region", REGIONS)
def test_images_resolve_per_region(table, region):
    row = table[region]
    assert row[images.TRAINING_IMAGE] == f"{DLC_ACCOUNT}.dkr.ecr.{region}.amazonaws.com/pytorch-training:2.6-gpu-py312"
    inference = f"{DLC_ACCOUNT}.dkr.ecr.{region}.amazonaws.com/pytorch-inference:2.6-cpu-py312"
    assert row[images.INFERENCE_IMAGE] == inference
    assert row[images.RULES_IMAGE].endswith(f".dkr.ecr.{region}.amazonaws.com/sagemaker-debugger-rules:latest")
    if region in RULES_ACCOUNTS:
        assert row[images.RULES_IMAGE].startswith(RULES_ACCOUNTS[region])
    assert row[f"{images.TRAINING_IMAGE}Repository"] == (
        f"arn:aws:ecr:{region}:{DLC_ACCOUNT}:repository/pytorch-training")


def test_every_sdk_region_of_the_partition_is_covered(table):
    from infra.config import load_config

    request = image_request(load_config({}))
    assert sorted(table) == images.supported_regions(request)
    assert len(table) >= 20
    assert not [r for r in table if r.startswith(("cn-", "us-gov-"))]
    # Without Debugger, regions that lack the rule evaluator are deployable too.
    no_rules = images.supported_regions(image_request(load_config({"debugger.enabled": False})))
    assert set(table) < set(no_rules)


def test_local_profile_uses_cpu_training_images():
    from infra.config import load_config

    row = images.resolve(image_request(load_config({"profile": "local"})), ("us-east-1",))["us-east-1"]
    assert row[images.TRAINING_IMAGE].endswith("pytorch-training:2.6-cpu-py312")


def test_template_maps_regions_and_refuses_others(cloud, table):
    assert cloud.template["Mappings"]["Images"] == table
    rule = cloud.template["Rules"]["SupportedRegion"]["Assertions"][0]["Assert"]["Fn::Contains"]
    assert rule == [sorted(table), {"Ref": "AWS::Region"}]
    subs = cloud.state_machine["Properties"]["DefinitionSubstitutions"]
    assert subs["TrainingImage"] == {"Fn::FindInMap": ["Images", {"Ref": "AWS::Region"}, "TrainingImage"]}


def test_pinned_region_gets_literals(variant, local):
    subs = variant.state_machine["Properties"]["DefinitionSubstitutions"]
    assert subs["TrainingImage"] == f"{DLC_ACCOUNT}.dkr.ecr.eu-west-1.amazonaws.com/pytorch-training:2.6-gpu-py312"
    assert "Mappings" not in local.template


def test_unsupported_pinned_region_fails_at_synth(tmp_path):
    import infra

    with pytest.raises(ValueError, match="lacks one of the images"):
        infra.build_app({"region": "ap-southeast-5"}, outdir=str(tmp_path), nag=False)


def test_repository_arn_parsing():
    assert images.repository_arn("123456789012.dkr.ecr.eu-west-1.amazonaws.com/repo/name:tag", "aws") == (
        "arn:aws:ecr:eu-west-1:123456789012:repository/repo/name")
    with pytest.raises(ValueError):
        images.repository_arn("docker.io/library/python:3", "aws")


def test_regions_without_the_powertools_layer_are_left_out():
    """The SDK publishes the DLCs in regions where the forwarder's layer does not exist (yet): every piece must."""
    from infra.config import load_config

    no_rules = images.supported_regions(image_request(load_config({"debugger.enabled": False})))
    assert set(no_rules) <= images.POWERTOOLS_LAYER_REGIONS
    assert "ca-west-1" not in no_rules  # DLCs are there, the Powertools layer is not
    with pytest.raises(ValueError, match="Powertools layer"):
        import infra

        infra.synth_template({"region": "ca-west-1", "debugger.enabled": False})
