"""Container image URIs per region, from the SageMaker SDK's own tables (no AWS call, no hand-kept account ids).

The stack is region-agnostic unless context pins a region: every URI goes into a CfnMapping keyed by region, so
one template deploys to every region where the training DLC, the inference DLC and (with Debugger on) the rule
evaluator are all published.
"""

from __future__ import annotations

import functools
import re
from contextlib import contextmanager
from dataclasses import dataclass
from unittest import mock

PARTITION = "aws"
TRAINING_IMAGE = "TrainingImage"
INFERENCE_IMAGE = "InferenceImage"
RULES_IMAGE = "RuleEvaluatorImage"
# Regions where AWS publishes the Powertools for AWS Lambda (Python) v3 layer that the forwarder uses (and its SSM
# parameter), commercial partition:
# https://docs.aws.amazon.com/powertools/python/latest/getting-started/install/#lambda-layer (all regional ARNs).
POWERTOOLS_LAYER_REGIONS = frozenset({
    "af-south-1", "ap-east-1", "ap-northeast-1", "ap-northeast-2", "ap-northeast-3", "ap-south-1", "ap-south-2",
    "ap-southeast-1", "ap-southeast-2", "ap-southeast-3", "ap-southeast-4", "ap-southeast-5", "ap-southeast-7",
    "ca-central-1", "eu-central-1", "eu-central-2", "eu-north-1", "eu-south-1", "eu-south-2", "eu-west-1",
    "eu-west-2", "eu-west-3", "il-central-1", "me-central-1", "me-south-1", "mx-central-1", "sa-east-1",
    "us-east-1", "us-east-2", "us-west-1", "us-west-2",
})
_URI = re.compile(r"^(?P<account>\d{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?/"
                  r"(?P<repository>[^:@]+)[:@].+$")


@dataclass(frozen=True)
class ImageRequest:
    training_version: str
    inference_version: str
    py_version: str
    training_instance_type: str
    inference_instance_type: str
    rules: bool


@contextmanager
def _cached_endpoint_resolver():
    """The SDK re-reads botocore's endpoints.json on every retrieve() (~60 ms): share one resolver."""
    from sagemaker.core import common_utils

    with mock.patch.object(common_utils, "_botocore_resolver", functools.lru_cache(maxsize=1)(
            common_utils._botocore_resolver)):
        yield


def _full_version(scope: dict, version: str) -> str:
    return scope.get("version_aliases", {}).get(version, version)


def supported_regions(request: ImageRequest) -> list[str]:
    """Regions of the aws partition where every piece the stack needs is published: the training and inference
    DLCs and (with Debugger) the rule evaluator per the SDK's tables, and the forwarder's Powertools layer.

    China and GovCloud are left out: the state machine's task ARNs are `arn:aws:states:::...`. Instance types are
    checked at run time: `imgclf start` reads the region's per-instance-type quotas (Service Quotas lists one only
    where SageMaker offers the type).
    """
    from sagemaker.core import image_uris
    from sagemaker.core.common_utils import aws_partition

    pytorch = image_uris.config_for_framework("pytorch")
    regions: set[str] | None = None
    for scope, version in (("training", request.training_version), ("inference", request.inference_version)):
        table = pytorch[scope]
        found = set(table["versions"][_full_version(table, version)]["registries"])
        regions = found if regions is None else regions & found
    assert regions is not None  # both scopes above set it
    if request.rules:
        debugger = image_uris.config_for_framework("debugger")
        regions &= set(next(iter(debugger["versions"].values()))["registries"])
    return sorted(r for r in regions or () if aws_partition(r) == PARTITION and r in POWERTOOLS_LAYER_REGIONS)


def repository_arn(uri: str, partition: str) -> str:
    m = _URI.match(uri)
    if not m:
        raise ValueError(f"not an ECR image URI: {uri}")
    return f"arn:{partition}:ecr:{m['region']}:{m['account']}:repository/{m['repository']}"


@functools.lru_cache(maxsize=8)
def resolve(request: ImageRequest, regions: tuple[str, ...] | None = None) -> dict[str, dict[str, str]]:
    """region -> {TrainingImage, InferenceImage[, RuleEvaluatorImage]} plus each one's ECR repository ARN."""
    from sagemaker.core import image_uris
    from sagemaker.core.common_utils import aws_partition
    from sagemaker.core.debugger import get_rule_container_image_uri

    out: dict[str, dict[str, str]] = {}
    with _cached_endpoint_resolver():
        for region in regions or supported_regions(request):
            images = {
                TRAINING_IMAGE: image_uris.retrieve(
                    "pytorch", region, version=request.training_version, py_version=request.py_version,
                    instance_type=request.training_instance_type, image_scope="training"),
                INFERENCE_IMAGE: image_uris.retrieve(
                    "pytorch", region, version=request.inference_version, py_version=request.py_version,
                    instance_type=request.inference_instance_type, image_scope="inference"),
            }
            if request.rules:
                images[RULES_IMAGE] = get_rule_container_image_uri(None, region)
            partition = aws_partition(region)
            out[region] = {**images, **{f"{k}Repository": repository_arn(v, partition) for k, v in images.items()}}
    return out
