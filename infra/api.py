"""POST /predict: API Gateway REST API (binary media types, validation, throttling, usage plan, access logs,
X-Ray, IAM auth by default) in front of lambda/forwarder.py, which calls the one stable endpoint."""

from __future__ import annotations

import re
from pathlib import Path

from aws_cdk import Duration
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from infra import nag
from infra.common import log_group
from infra.config import StackConfig
from infra.packaging import ROOT
from infra.security import sagemaker_arn
from ml import contract

FORWARDER_HANDLER = "forwarder.handler"
FORWARDER_RUNTIME = lambda_.Runtime.PYTHON_3_12  # a runtime the Powertools layer is built for
REQUIREMENTS = ROOT / "requirements.txt"
# Powertools publishes each layer version's ARN as a public SSM parameter per architecture, runtime and library
# version: https://docs.aws.amazon.com/powertools/python/latest/getting-started/install/#using-ssm-parameter-store
POWERTOOLS_PARAMETER = "/aws/service/powertools/python/{arch}/{runtime}/{version}"

# Serving mode -> what the forwarder may send and how long it waits (lambda/forwarder.py reads these variables).
# Serverless endpoints take at most 4 MB per request and may start cold for many seconds
# (https://docs.aws.amazon.com/sagemaker/latest/dg/serverless-endpoints-invoke.html): one long attempt that still
# ends inside API Gateway's 29 s integration timeout
# (https://docs.aws.amazon.com/apigateway/latest/developerguide/api-gateway-execution-service-limits-table.html).
# Instance endpoints answer warm: two short attempts.
SERVERLESS_MAX_PAYLOAD_BYTES = 4_000_000


def serving_limits(cfg: StackConfig) -> dict[str, str]:
    if cfg.serving.serverless:
        return {contract.ENV_MAX_IMAGE_BYTES: str(min(contract.API_MAX_IMAGE_BYTES, SERVERLESS_MAX_PAYLOAD_BYTES)),
                contract.ENV_READ_TIMEOUT_S: "24", contract.ENV_ATTEMPTS: "1"}
    return {contract.ENV_MAX_IMAGE_BYTES: str(contract.API_MAX_IMAGE_BYTES), contract.ENV_READ_TIMEOUT_S: "10",
            contract.ENV_ATTEMPTS: "2"}


def powertools_version(requirements: Path = REQUIREMENTS) -> str:
    """The one pin: requirements.txt's aws-lambda-powertools==X (what the tests run) is the layer deployed."""
    match = re.search(r"^aws-lambda-powertools(?:\[[^\]]*\])?==([0-9][0-9.]*)\s*$", requirements.read_text(), re.M)
    if not match:
        raise ValueError(f"{requirements} pins no aws-lambda-powertools==<version>")
    return match.group(1)


def powertools_layer_arn(architecture: lambda_.Architecture) -> str:
    name = POWERTOOLS_PARAMETER.format(arch=architecture.name, runtime=FORWARDER_RUNTIME.name,
                                       version=powertools_version())
    return "{{resolve:ssm:" + name + "}}"  # a CloudFormation dynamic reference, resolved at deploy time


# API Gateway's own refusals (before the Lambda runs) carry the contract's error JSON, like the Lambda's:
# https://docs.aws.amazon.com/apigateway/latest/developerguide/supported-gateway-response-types.html
# $context.error.messageString is already a quoted JSON string.
GATEWAY_ERRORS: dict[str, contract.ApiError] = {
    "ACCESS_DENIED": contract.FORBIDDEN,  # IAM denies execute-api:Invoke
    "MISSING_AUTHENTICATION_TOKEN": contract.FORBIDDEN,  # unsigned request (or an unknown path)
    "INVALID_SIGNATURE": contract.FORBIDDEN,
    "EXPIRED_TOKEN": contract.FORBIDDEN,
    "INVALID_API_KEY": contract.FORBIDDEN,
    "WAF_FILTERED": contract.FORBIDDEN,
    # Body over 10 MB. Reported (unverified): API Gateway does not apply a customized REQUEST_TOO_LARGE and answers
    # its default 413 body; harmless if so, and the README says it.
    "REQUEST_TOO_LARGE": contract.PAYLOAD_TOO_LARGE,
    "UNSUPPORTED_MEDIA_TYPE": contract.UNSUPPORTED_MEDIA_TYPE,
    "BAD_REQUEST_PARAMETERS": contract.UNSUPPORTED_MEDIA_TYPE,  # the validator's required Content-Type is missing
    "BAD_REQUEST_BODY": contract.BAD_REQUEST,
    "RESOURCE_NOT_FOUND": contract.NOT_FOUND,
    "THROTTLED": contract.THROTTLED,
    "QUOTA_EXCEEDED": contract.THROTTLED,
    "INTEGRATION_TIMEOUT": contract.GATEWAY_TIMEOUT,  # the 29 s integration timeout
    "INTEGRATION_FAILURE": contract.SERVICE_UNAVAILABLE,
}
# Every other 4xx/5xx keeps its status and gets a generic code.
GATEWAY_DEFAULTS: dict[str, contract.ApiError] = {"DEFAULT_4XX": contract.BAD_REQUEST,
                                                   "DEFAULT_5XX": contract.INTERNAL_ERROR}


def gateway_template(error: contract.ApiError) -> str:
    return '{"error": {"code": "' + error.code + '", "message": $context.error.messageString}}'


# Why each wildcard of the forwarder's role is as narrow as it can be (cdk-nag IAM5, by Sid).
FORWARDER_ROLE_WILDCARDS: dict[str, str] = {
    "Logs": "The forwarder's own log group; the ':*' is its log streams, which Lambda names per execution "
            "environment.",
}


class PredictApi(Construct):
    def __init__(self, scope: Construct, cid: str, *, cfg: StackConfig, bundle_dir: Path) -> None:
        super().__init__(scope, cid)
        self._cfg = cfg
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
        architecture = lambda_.Architecture.ARM_64 if arm else lambda_.Architecture.X86_64
        layer_arn = powertools_layer_arn(architecture)
        self.function = lambda_.Function(
            self, "Forwarder",
            description="POST /predict: image bytes -> SageMaker InvokeEndpoint -> top-k labels",
            runtime=FORWARDER_RUNTIME,
            architecture=architecture,
            handler=FORWARDER_HANDLER,
            code=lambda_.Code.from_asset(str(bundle_dir)),
            layers=[lambda_.LayerVersion.from_layer_version_arn(self, "Powertools", layer_arn)],
            memory_size=fc.memory_mb,
            timeout=Duration.seconds(fc.timeout_s),
            role=self.role,
            log_group=self.function_logs,
            tracing=lambda_.Tracing.ACTIVE,
            environment={"ENDPOINT_NAME": cfg.endpoint_name, "POWERTOOLS_SERVICE_NAME": "predict",
                         **serving_limits(cfg)},
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
        for response_type, error in {**GATEWAY_ERRORS, **GATEWAY_DEFAULTS}.items():
            self.api.add_gateway_response(
                f"Gateway{response_type.title().replace('_', '')}",
                type=apigw.ResponseType.of(response_type),
                status_code=None if response_type in GATEWAY_DEFAULTS else str(error.status),
                templates={contract.JSON_CONTENT_TYPE: gateway_template(error)},
                response_headers={"Cache-Control": "'no-store'"})
        # Usage plans meter API keys: with keys, a plan caps each key (throttle, optional daily quota); without
        # keys only the stage's throttle applies (configuration refuses a quota without keys).
        self.usage_plan: apigw.UsagePlan | None = None
        self.api_key: apigw.IApiKey | None = None
        if api_cfg.api_key_required:
            quota = (apigw.QuotaSettings(limit=api_cfg.quota_per_day, period=apigw.Period.DAY)
                     if api_cfg.quota_per_day else None)
            self.usage_plan = self.api.add_usage_plan(
                "UsagePlan", name=f"{cfg.prefix}-predict",
                throttle=apigw.ThrottleSettings(rate_limit=api_cfg.throttle_rate,
                                                burst_limit=api_cfg.throttle_burst),
                quota=quota, api_stages=[apigw.UsagePlanPerApiStage(api=self.api, stage=self.api.deployment_stage)])
            self.api_key = self.api.add_api_key("ApiKey", api_key_name=f"{cfg.prefix}-predict")
            self.usage_plan.add_api_key(self.api_key)
        self._acknowledge()

    def _acknowledge(self) -> None:
        """The findings this construct keeps, with why (cdk-nag AwsSolutions)."""
        ack = nag.acknowledge
        nag.acknowledge_role(self.role, FORWARDER_ROLE_WILDCARDS)
        ack(self.function, "AwsSolutions-L1",
            "python3.12 on purpose: a runtime the AWS-published Powertools v3 layer is built for (its version is "
            "requirements.txt's pin) and the runtime the forwarder is tested on; upgrade both together.")
        cloudwatch_role = self.api.node.try_find_child("CloudWatchRole")
        if cloudwatch_role is not None:
            ack(cloudwatch_role,
                "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
                "AmazonAPIGatewayPushToCloudWatchLogs]",
                "API Gateway's account-level CloudWatch role (needed for execution and access logs) uses AWS's own "
                "narrow service-role policy; it is not a *FullAccess policy.")
        ack(self.method, "AwsSolutions-COG4",
            "Callers authenticate with IAM SigV4 (execute-api:Invoke on the method ARN) or an API key; the project "
            "has no Cognito user pool.")
        if not self._cfg.api.iam_auth:
            ack(self.method, "AwsSolutions-APIG4",
                "Configured for API-key access (api.iam_auth false, api.api_key_required true): every request needs "
                "the usage plan's key; anonymous access is refused by configuration validation.")
        ack(self.api.deployment_stage, "AwsSolutions-APIG3",
            "No WAF by default: IAM auth, stage throttling and a usage-plan quota bound abuse; a WAFv2 web ACL is a "
            "fixed monthly cost to add when the API faces untrusted callers.")

    @property
    def predict_url(self) -> str:
        return self.api.url_for_path(contract.PREDICT_PATH)
