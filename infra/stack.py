"""The one stack: bucket, code asset, roles, the state machine, the endpoint's rollback alarms, the REST API, a
dashboard and the teardown custom resource."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from aws_cdk import (
    Aws,
    CfnMapping,
    CfnOutput,
    CfnRule,
    CfnRuleAssertion,
    DefaultStackSynthesizer,
    Environment,
    Fn,
    Stack,
)
from aws_cdk import aws_s3_assets as s3_assets
from constructs import Construct

import stackfacts as facts
from infra import images, packaging
from infra import sagemaker_requests as req
from infra.api import PredictApi
from infra.config import StackConfig
from infra.dashboard import Dashboard
from infra.monitoring import EndpointAlarms
from infra.pipeline import Pipeline
from infra.security import Roles
from infra.storage import Storage
from infra.teardown import Teardown, stack_uuid


def asset_prefix(cfg: StackConfig) -> str:
    """The key prefix of this app's file assets in the CDK bootstrap bucket (the synthesizer's bucket_prefix)."""
    return f"{cfg.prefix}/"


def image_request(cfg: StackConfig) -> images.ImageRequest:
    return images.ImageRequest(
        training_version=cfg.framework_version, inference_version=cfg.serving.framework_version,
        py_version=cfg.py_version, training_instance_type=cfg.training.instance_type,
        # Serverless endpoints run the CPU image.
        inference_instance_type="ml.m5.large" if cfg.serving.serverless else cfg.serving.instance_type,
        rules=cfg.debugger.enabled)


class ImageClassifierStack(Stack):
    def __init__(self, scope: Construct, cid: str, *, cfg: StackConfig, build_dir: Path) -> None:
        super().__init__(
            scope, cid, env=Environment(region=cfg.region) if cfg.region else None, analytics_reporting=False,
            synthesizer=DefaultStackSynthesizer(bucket_prefix=asset_prefix(cfg)),
            description="Image classifier: tune -> debugged training -> gate -> blue/green SageMaker endpoint -> "
                        "REST API")
        self.cfg = cfg
        self.storage = Storage(self, "Storage", cfg=cfg)
        bucket = self.storage.bucket
        self.sourcedir = s3_assets.Asset(self, "TrainingSource", path=str(packaging.build_sourcedir(build_dir)))
        image = self._images(cfg)
        # The SageMaker role reads every source bundle of this app (the asset prefix), not only the current key: a
        # `cdk deploy` during a running execution uploads a new bundle and updates the definition, while the
        # running execution still names the old bundle in the jobs it has yet to start. Bundles are immutable,
        # content-addressed objects of this app's own code.
        self.roles = Roles(self, "Roles", cfg=cfg, bucket=bucket, sourcedir_bucket=self.sourcedir.s3_bucket_name,
                           sourcedir_key=f"{asset_prefix(cfg)}*", image=image)
        substitutions = {
            req.BUCKET: bucket.bucket_name,
            req.ROLE_ARN: self.roles.sagemaker.role_arn,
            req.SOURCEDIR_URI: self.sourcedir.s3_object_url,
            req.REGION: self.region,
            req.TRAINING_IMAGE: image(images.TRAINING_IMAGE),
            req.INFERENCE_IMAGE: image(images.INFERENCE_IMAGE),
            req.STACK_UUID: stack_uuid(),
        }
        if cfg.debugger.enabled:
            substitutions[req.RULES_IMAGE] = image(images.RULES_IMAGE)
        self.alarms = EndpointAlarms(self, "EndpointAlarms", cfg=cfg)
        self.pipeline = Pipeline(self, "Pipeline", cfg=cfg, role=self.roles.state_machine,
                                 substitutions=substitutions)
        self.roles.grant_state_machine(self.pipeline.integrations)
        self.api = PredictApi(self, "PredictApi", cfg=cfg, bundle_dir=packaging.build_forwarder(build_dir))
        self.dashboard = Dashboard(self, "Dashboard", cfg=cfg, api=self.api.api, function=self.api.function)
        self.teardown = (Teardown(self, "Teardown", cfg=cfg, state_machine=self.pipeline.state_machine)
                         if cfg.teardown_on_destroy else None)

        CfnOutput(self, facts.OUTPUT_BUCKET, value=bucket.bucket_name)
        CfnOutput(self, facts.OUTPUT_DATASET, value=f"s3://{bucket.bucket_name}/{cfg.data_prefix}",
                  description="Default dataset: upload train/, valid/ and test/ (one folder per class) under it")
        CfnOutput(self, facts.OUTPUT_STATE_MACHINE, value=self.pipeline.state_machine.state_machine_arn)
        CfnOutput(self, facts.OUTPUT_ENDPOINT, value=cfg.endpoint_name)
        # What a run needs of the account's per-instance-type training quotas (`imgclf start` checks them).
        CfnOutput(self, facts.OUTPUT_TUNING_INSTANCE_TYPE, value=cfg.tuning.instance_type)
        CfnOutput(self, facts.OUTPUT_TUNING_PARALLEL, value=str(cfg.tuning.max_parallel_jobs))
        CfnOutput(self, facts.OUTPUT_TRAINING_INSTANCE_TYPE, value=cfg.training.instance_type)
        CfnOutput(self, facts.OUTPUT_TRAINING_INSTANCE_COUNT, value=str(cfg.training.instance_count))
        CfnOutput(self, facts.OUTPUT_TRAINING_SPOT, value="true" if cfg.training.spot else "false")
        CfnOutput(self, facts.OUTPUT_TUNING_SPOT, value="true" if cfg.tuning.spot else "false")
        if cfg.pretrained_key is not None:  # `imgclf stage-weights` uploads there; `imgclf start` checks it exists
            CfnOutput(self, facts.OUTPUT_PRETRAINED_URI, value=f"s3://{bucket.bucket_name}/{cfg.pretrained_key}",
                      description="Stage the backbone's ImageNet state dict here once: imgclf stage-weights")
            CfnOutput(self, facts.OUTPUT_PRETRAINED_BACKBONE, value=cfg.base_hyperparameters["backbone"])
        CfnOutput(self, facts.OUTPUT_RESOURCE_PREFIX, value=cfg.prefix,
                  description="Name prefix of what the state machine creates (<prefix>-<run id>): imgclf teardown")
        CfnOutput(self, facts.OUTPUT_API_URL, value=self.api.predict_url)
        CfnOutput(self, facts.OUTPUT_PREDICT_METHOD_ARN, value=self.api.method.method_arn,
                  description="Grant execute-api:Invoke on this ARN to the callers of POST /predict")
        CfnOutput(self, facts.OUTPUT_DASHBOARD, value=self.dashboard.url,
                  description="CloudWatch dashboard: API, forwarder, endpoint (instances, latency), training jobs")
        if self.api.api_key is not None:
            CfnOutput(self, facts.OUTPUT_API_KEY_ID, value=self.api.api_key.key_id,
                      description="aws apigateway get-api-key --include-value --api-key <id>")

    def _images(self, cfg: StackConfig) -> Callable[[str], str]:
        request = image_request(cfg)
        if cfg.region:
            supported = images.supported_regions(request)
            if cfg.region not in supported:
                raise ValueError(f"region {cfg.region} lacks one of the images or the Powertools layer this "
                                 f"configuration needs; all are published in: {', '.join(supported)}")
            regional = images.resolve(request, (cfg.region,))[cfg.region]
            return regional.__getitem__
        table = images.resolve(request)
        mapping = CfnMapping(self, "Images", mapping=table, lazy=True)
        CfnRule(self, "SupportedRegion", assertions=[CfnRuleAssertion(
            assert_=Fn.condition_contains(sorted(table), Aws.REGION),
            assert_description="This region lacks one of the pieces the stack needs (training DLC, inference DLC, "
                               "Debugger rule evaluator, Powertools layer); see the Images mapping.")])
        return lambda key: mapping.find_in_map(Aws.REGION, key)
