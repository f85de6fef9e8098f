"""POST /predict: API Gateway REST API (binary media types, validation, throttling, usage plan, access logs,
X-Ray, IAM auth by default) in front of lambda/forwarder.py, which calls the one stable endpoint."""

from __future__ import annotations

from pathlib import Path

from aws_cdk import Duration, Stack
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from infra.common import log_group
from infra.config import StackConfig
from infra.security import sagemaker_arn
from ml import contract

FORWARDER_HANDLER = "forwarder.handler"
FORWARDER_RUNTIME = lambda_.Runtime.PYTHON_3_12  # matches the Powertools layer's python312 build


class PredictApi(Construct):
    def __init__(self, scope: Construct, cid: str, *, cfg: StackConfig, bundle_dir: Path) -> None:
        super().__init__(scope, cid)
        stack = Stack.of(self)
        fc = cfg.function
        arm = fc.architecture == "arm64"
        self.function_logs = log_group(self, "ForwarderLogs", cfg)
        self.role = iam.Role(self, "ForwarderRole", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
                             description=f"{cfg.prefix}: the /predict forwarder; invokes one endpoint only")
        self.role.add_to_policy(iam.PolicyStatement(
            sid="Logs", actions=["logs:CreateLogStream", "logs:PutLogEvents"],
            resources=[self.function_logs.log_group_arn]))
        self.role.add_to_policy(iam.PolicyStatement(
            sid="InvokeEndpoint", actions=["sagemaker:InvokeEndpoint"],
            resources=[sagemaker_arn(self, "endpoint", cfg.endpoint_name)]))
        layer_arn = (f"arn:{stack.partition}:lambda:{stack.region}:{fc.powertools_layer_account}:layer:"
                     f"AWSLambdaPowertoolsPythonV3-python312-{'arm64' if arm else 'x86_64'}:"
                     f"{fc.powertools_layer_version}")
        self.function = lambda_.Function(
            self, "Forwarder",
            description="POST /predict: image bytes -> SageMaker InvokeEndpoint -> top-k labels",
            runtime=FORWARDER_RUNTIME,
            architecture=lambda_.Architecture.ARM_64 if arm else lambda_.Architecture.X86_64,
            handler=FORWARDER_HANDLER,
            code=lambda_.Code.from_asset(str(bundle_dir)),
            layers=[lambda_.LayerVersion.from_layer_version_arn(self, "Powertools", layer_arn)],
            memory_size=fc.memory_mb,
            timeout=Duration.seconds(fc.timeout_s),
            role=self.role,
            log_group=self.function_logs,
            tracing=lambda_.Tracing.ACTIVE,
            environment={"ENDPOINT_NAME": cfg.endpoint_name, "POWERTOOLS_SERVICE_NAME": "predict"},
        )

        api_cfg = cfg.api
        self.access_logs = log_group(self, "AccessLogs", cfg)
        self.api = apigw.RestApi(
            self, "Api",
            rest_api_name=f"{cfg.prefix}-api",
            description="Image classification: POST an image to /predict",
            endpoint_types=[apigw.EndpointType.REGIONAL],
            # Image bodies reach the Lambda base64-encoded (isBase64Encoded) instead of as mangled text.
            binary_media_types=list(contract.BINARY_MEDIA_TYPES),
            # Execution logging needs the account-level API Gateway -> CloudWatch role.
            cloud_watch_role=True,
            deploy_options=apigw.StageOptions(
                stage_name=api_cfg.stage_name,
                throttling_rate_limit=api_cfg.throttle_rate,
                throttling_burst_limit=api_cfg.throttle_burst,
                tracing_enabled=True,
                metrics_enabled=True,
                logging_level=apigw.MethodLoggingLevel.ERROR,
                data_trace_enabled=False,  # never log image bodies
                access_log_destination=apigw.LogGroupLogDestination(self.access_logs),
                access_log_format=apigw.AccessLogFormat.json_with_standard_fields(
                    caller=True, http_method=True, ip=True, protocol=True, request_time=True,
                    resource_path=True, response_length=True, status=True, user=True),
            ),
        )
        validator = self.api.add_request_validator(
            "Validator", request_validator_name=f"{cfg.prefix}-predict",
            validate_request_body=True, validate_request_parameters=True)
        predict = self.api.root.add_resource(contract.PREDICT_PATH.strip("/"))
        self.method = predict.add_method(
            "POST",
            apigw.LambdaIntegration(self.function, proxy=True),
            authorization_type=apigw.AuthorizationType.IAM if api_cfg.iam_auth else apigw.AuthorizationType.NONE,
            api_key_required=api_cfg.api_key_required,
            request_validator=validator,
            # A body without a media type cannot be told apart from text: refuse it at the edge.
            request_parameters={"method.request.header.Content-Type": True,
                                f"method.request.querystring.{contract.TOP_K_PARAM}": False},
        )
        self.usage_plan = self.api.add_usage_plan(
            "UsagePlan", name=f"{cfg.prefix}-predict",
            throttle=apigw.ThrottleSettings(rate_limit=api_cfg.throttle_rate, burst_limit=api_cfg.throttle_burst),
            quota=apigw.QuotaSettings(limit=api_cfg.quota_per_day, period=apigw.Period.DAY),
            api_stages=[apigw.UsagePlanPerApiStage(api=self.api, stage=self.api.deployment_stage)])
        self.api_key: apigw.IApiKey | None = None
        if api_cfg.api_key_required:
            self.api_key = self.api.add_api_key("ApiKey", api_key_name=f"{cfg.prefix}-predict")
            self.usage_plan.add_api_key(self.api_key)

    @property
    def predict_url(self) -> str:
        return self.api.url_for_path(contract.PREDICT_PATH)
