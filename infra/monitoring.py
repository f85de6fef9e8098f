"""CloudWatch alarms on the serving endpoint: UpdateEndpoint's AutoRollbackConfiguration watches them during the
blue/green baking period and rolls back to the previous endpoint config when one fires."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cw
from constructs import Construct

import stackfacts as facts
from infra.config import StackConfig
from infra.dashboard import endpoint_dimensions


class EndpointAlarms(Construct):
    def __init__(self, scope: Construct, cid: str, *, cfg: StackConfig) -> None:
        super().__init__(scope, cid)
        dims = endpoint_dimensions(cfg)
        errors_name, latency_name = cfg.alarm_names  # named: the state machine's UpdateEndpoint request cites them
        self.errors = cw.Alarm(
            self, "Errors5xx", alarm_name=errors_name,
            alarm_description=f"{cfg.endpoint_name}: model 5xx errors (blue/green rollback trigger)",
            metric=cw.Metric(namespace=facts.ENDPOINT_METRICS_NAMESPACE, metric_name="Invocation5XXErrors",
                             dimensions_map=dims,
                             statistic="Sum", period=Duration.minutes(1)),
            threshold=cfg.serving.alarm_5xx_errors, evaluation_periods=1,
            comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cw.TreatMissingData.NOT_BREACHING)
        self.latency = cw.Alarm(
            self, "Latency", alarm_name=latency_name,
            alarm_description=f"{cfg.endpoint_name}: p99 model latency (blue/green rollback trigger)",
            metric=cw.Metric(namespace=facts.ENDPOINT_METRICS_NAMESPACE, metric_name="ModelLatency",
                             dimensions_map=dims,
                             statistic="p99", period=Duration.minutes(1)),
            threshold=cfg.serving.alarm_latency_ms * 1000,  # ModelLatency is in microseconds
            evaluation_periods=3, datapoints_to_alarm=2,
            comparison_operator=cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
            treat_missing_data=cw.TreatMissingData.NOT_BREACHING)
