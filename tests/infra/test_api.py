"""POST /predict: REST API settings and the forwarder Lambda."""

from __future__ import annotations

import json
import re
from importlib import metadata

import pytest
from aws_cdk.assertions import Match

import infra
from infra import api
from ml import contract


def test_rest_api_accepts_images(cloud):
    api = cloud.one("AWS::ApiGateway::RestApi")["Properties"]
    assert api["BinaryMediaTypes"] == list(contract.BINARY_MEDIA_TYPES)
    assert api["EndpointConfiguration"] == {"Types": ["REGIONAL"]}
    (resource,) = cloud.resources("AWS::ApiGateway::Resource").values()
    assert "/" + resource["Properties"]["PathPart"] == contract.PREDICT_PATH


def test_post_predict_is_authenticated_and_validated(cloud, variant):
    (method,) = cloud.resources("AWS::ApiGateway::Method").values()
    props = method["Properties"]
    assert props["HttpMethod"] == "POST"
    assert props["AuthorizationType"] == "AWS_IAM"
    assert props["ApiKeyRequired"] is False
    assert props["RequestParameters"] == {"method.request.header.Content-Type": True,
                                          f"method.request.querystring.{contract.TOP_K_PARAM}": False}
    assert props["Integration"]["Type"] == "AWS_PROXY"
    validator = cloud.one("AWS::ApiGateway::RequestValidator")["Properties"]
    assert validator["ValidateRequestBody"] is True and validator["ValidateRequestParameters"] is True
    (method,) = variant.resources("AWS::ApiGateway::Method").values()
    assert method["Properties"]["AuthorizationType"] == "NONE" and method["Properties"]["ApiKeyRequired"] is True
    assert variant.one("AWS::ApiGateway::ApiKey")
    variant.assertions().resource_count_is("AWS::ApiGateway::UsagePlanKey", 1)
    cloud.assertions().resource_count_is("AWS::ApiGateway::ApiKey", 0)


def test_stage_throttles_logs_and_traces(cloud):
    stage = cloud.one("AWS::ApiGateway::Stage")["Properties"]
    api_cfg = cloud.config.api
    assert stage["StageName"] == api_cfg.stage_name
    assert stage["TracingEnabled"] is True
    (settings,) = stage["MethodSettings"]
    assert settings["ThrottlingRateLimit"] == api_cfg.throttle_rate
    assert settings["ThrottlingBurstLimit"] == api_cfg.throttle_burst
    assert settings["LoggingLevel"] == "ERROR" and settings["DataTraceEnabled"] is False
    access = stage["AccessLogSetting"]
    assert "Fn::GetAtt" in access["DestinationArn"] and "$context.requestId" in access["Format"]



def test_usage_plan_only_meters_api_keys(cloud, variant):
    """A usage plan counts requests per API key: without keys (the default, IAM auth) there is no plan and no
    quota, only the stage throttle; with keys the plan throttles and caps each key."""
    assert cloud.config.api.quota_per_day is None
    cloud.assertions().resource_count_is("AWS::ApiGateway::UsagePlan", 0)
    api_cfg = variant.config.api
    plan = variant.one("AWS::ApiGateway::UsagePlan")["Properties"]
    assert plan["Throttle"] == {"RateLimit": api_cfg.throttle_rate, "BurstLimit": api_cfg.throttle_burst}
    assert plan["Quota"] == {"Limit": api_cfg.quota_per_day, "Period": "DAY"} and api_cfg.quota_per_day == 5000
    assert plan["ApiStages"][0]["Stage"] == {"Ref": next(iter(variant.resources("AWS::ApiGateway::Stage")))}


def test_a_quota_without_api_keys_is_refused():
    with pytest.raises(ValueError, match=r"quota_per_day needs api\.api_key_required"):
        infra.load_config_for({"api.quota_per_day": 1000})
    assert infra.load_config_for({"api.quota_per_day": 1000, "api.api_key_required": True}).api.quota_per_day == 1000


def test_gateway_errors_carry_the_contract_json(cloud):
    """API Gateway's own refusals (IAM 403, body over 10 MB, 29 s timeout, missing Content-Type, throttling, any
    other 4xx/5xx) answer `{"error": {"code", "message"}}` with a contract code, like the Lambda."""
    responses = {r["Properties"]["ResponseType"]: r["Properties"]
                 for r in cloud.resources("AWS::ApiGateway::GatewayResponse").values()}
    assert {"ACCESS_DENIED", "MISSING_AUTHENTICATION_TOKEN", "REQUEST_TOO_LARGE", "INTEGRATION_TIMEOUT",
            "BAD_REQUEST_PARAMETERS", "UNSUPPORTED_MEDIA_TYPE", "THROTTLED", "QUOTA_EXCEEDED", "DEFAULT_4XX",
            "DEFAULT_5XX"} <= set(responses)
    codes = {e.code: e for e in contract.API_ERRORS}
    for kind, props in responses.items():
        template = props["ResponseTemplates"][contract.JSON_CONTENT_TYPE]
        # $context.error.messageString is a quoted JSON string at run time.
        body = json.loads(template.replace("$context.error.messageString", json.dumps("gateway said no")))
        assert set(body) == {"error"} and body["error"]["message"] == "gateway said no", kind
        error = codes[body["error"]["code"]]
        if kind.startswith("DEFAULT_"):
            assert "StatusCode" not in props  # keeps API Gateway's own status
        else:
            assert props["StatusCode"] == str(error.status), kind
    assert codes[json.loads(responses["ACCESS_DENIED"]["ResponseTemplates"][contract.JSON_CONTENT_TYPE].replace(
        "$context.error.messageString", '""'))["error"]["code"]].status == 403


def test_forwarder_function(cloud):
    fn = [f for f in cloud.resources("AWS::Lambda::Function").values()
          if f["Properties"]["Handler"] == "forwarder.handler"]
    (props,) = [f["Properties"] for f in fn]
    assert props["Runtime"] == "python3.12"
    assert props["Architectures"] == ["arm64"]
    assert props["Timeout"] >= 28
    assert props["TracingConfig"] == {"Mode": "Active"}
    assert props["Environment"]["Variables"]["ENDPOINT_NAME"] == cloud.config.endpoint_name
    (layer,) = props["Layers"]
    # One pin: requirements.txt's aws-lambda-powertools (what these tests run) is the layer version deployed.
    pin = re.search(r"^aws-lambda-powertools==(\S+)$", (infra.ROOT / "requirements.txt").read_text(), re.M)[1]
    assert pin == metadata.version("aws-lambda-powertools")
    assert layer == f"{{{{resolve:ssm:/aws/service/powertools/python/arm64/python3.12/{pin}}}}}"
    assert "LoggingConfig" in props  # its own log group, with retention


def _forwarder_env(synth) -> dict[str, str]:
    (props,) = [f["Properties"] for f in synth.resources("AWS::Lambda::Function").values()
                if f["Properties"]["Handler"] == "forwarder.handler"]
    return props["Environment"]["Variables"]


def test_forwarder_limits_follow_the_serving_mode(cloud, variant):
    """Serverless endpoints take at most 4 MB and start cold: the forwarder's size limit and waits follow."""
    assert not cloud.config.serving.serverless and variant.config.serving.serverless
    instance, serverless = _forwarder_env(cloud), _forwarder_env(variant)
    assert int(instance[contract.ENV_MAX_IMAGE_BYTES]) == contract.API_MAX_IMAGE_BYTES
    assert int(serverless[contract.ENV_MAX_IMAGE_BYTES]) <= api.SERVERLESS_MAX_PAYLOAD_BYTES <= 4 * 1024 * 1024
    for env in (instance, serverless):
        # Every attempt (plus a 2 s connect each and a 1 s backoff) ends inside API Gateway's 29 s.
        attempts, read = int(env[contract.ENV_ATTEMPTS]), float(env[contract.ENV_READ_TIMEOUT_S])
        assert attempts * (read + 2) + 1 < 29
    assert float(serverless[contract.ENV_READ_TIMEOUT_S]) > float(instance[contract.ENV_READ_TIMEOUT_S])


def test_forwarder_bundle_needs_no_docker(cloud):
    assets = json.loads((cloud.outdir / "ImageClassifier.assets.json").read_text())["files"]
    bundles = [cloud.outdir / a["source"]["path"] for a in assets.values()
               if (cloud.outdir / a["source"]["path"] / "ml" / "contract.py").is_file()]
    assert len(bundles) == 1
    names = sorted(p.relative_to(bundles[0]).as_posix() for p in bundles[0].rglob("*") if p.is_file())
    assert "ml/contract.py" in names and "ml/__init__.py" in names
    assert not [n for n in names if n.startswith(("local/", "infra/", "tests/")) or n.endswith(".pyc")]


def test_outputs(cloud, variant):
    outputs = cloud.template["Outputs"]
    assert {"BucketName", "DatasetUri", "StateMachineArn", "EndpointName", "PredictUrl",
            "PredictMethodArn"} <= set(outputs)
    assert "ApiKeyId" in variant.template["Outputs"] and "ApiKeyId" not in outputs
    cloud.assertions().has_output("EndpointName", {"Value": cloud.config.endpoint_name})
    cloud.assertions().has_output("PredictUrl", {"Value": Match.object_like({"Fn::Join": Match.any_value()})})
