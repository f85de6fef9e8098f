"""The rollback alarms the blue/green update watches."""

from __future__ import annotations

from infra import sagemaker_requests as req


def test_alarms_watch_the_endpoint_and_match_the_update_request(cloud):
    alarms = {a["Properties"]["AlarmName"]: a["Properties"] for a in cloud.resources("AWS::CloudWatch::Alarm").values()}
    errors, latency = cloud.config.alarm_names
    assert set(alarms) == {errors, latency}
    dims = [{"Name": "EndpointName", "Value": cloud.config.endpoint_name},
            {"Name": "VariantName", "Value": req.VARIANT_NAME}]
    assert alarms[errors]["MetricName"] == "Invocation5XXErrors" and alarms[errors]["Dimensions"] == dims
    assert alarms[errors]["Namespace"] == "AWS/SageMaker" and alarms[errors]["TreatMissingData"] == "notBreaching"
    assert alarms[latency]["MetricName"] == "ModelLatency" and alarms[latency]["ExtendedStatistic"] == "p99"
    assert alarms[latency]["Threshold"] == cloud.config.serving.alarm_latency_ms * 1000  # microseconds
    update = cloud.task_states()["Update endpoint"]["Parameters"]
    rollback = update["DeploymentConfig"]["AutoRollbackConfiguration"]["Alarms"]
    assert {a["AlarmName"] for a in rollback} == set(alarms)
