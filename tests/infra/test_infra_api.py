"""POST /predict: REST API settings and the forwarder Lambda."""

from __future__ import annotations

import json

from aws_cdk.assertions import Match

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
    plan = cloud.one("AWS::ApiGateway::UsagePlan")["Properties"]
    assert plan["Throttle"] == {"RateLimit": api_cfg.throttle_rate, "BurstLimit": api_cfg.throttle_burst}
    assert plan["Quota"] == {"Limit": api_cfg.quota_per_day, "Period": "DAY"}
    assert plan["ApiStages"][0]["Stage"] == {"Ref": next(iter(cloud.resources("AWS::ApiGateway::Stage")))}


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
    text = json.dumps(layer)
    version = cloud.config.function.powertools_layer_version
    assert f":017000801446:layer:AWSLambdaPowertoolsPythonV3-python312-arm64:{version}" in text
    assert "LoggingConfig" in props  # its own log group, with retention


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
