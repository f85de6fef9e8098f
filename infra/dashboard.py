"""One CloudWatch dashboard for the whole path: REST API, forwarder Lambda, the endpoint, and the training jobs the
state machine starts (tuning trials are training jobs too, named <prefix>-<run id>-...)."""

from __future__ import annotations

from aws_cdk import Duration, Fn, Stack
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

import stackfacts as facts
from infra import sagemaker_requests as req
from infra.config import StackConfig
from ml import contract

PERIOD = Duration.minutes(1)
# Every metric's namespace and dimensions come from facts.METRIC_DIMENSIONS (with their documentation); the
# training jobs' names are per run, so a SEARCH expression finds every job of this stack by its prefix token.
ENDPOINT_NAMESPACE = facts.ENDPOINT_METRICS_NAMESPACE
TRAINING_METRICS: tuple[str, ...] = (contract.VALID_ACCURACY, contract.VALID_LOSS, contract.TRAIN_LOSS)


def endpoint_dimensions(cfg: StackConfig) -> dict[str, str]:
    """This stack's one variant, under the endpoint metrics' dimension names."""
    names = facts.METRIC_DIMENSIONS[facts.ENDPOINT_METRICS_NAMESPACE]
    return dict(zip(names, (cfg.endpoint_name, req.VARIANT_NAME), strict=True))


def dashboard_name(cfg: StackConfig) -> str:
    return f"{cfg.prefix}-{cfg.stack_name}"


def dashboard_url(name: str, region: str) -> str:
    """The console address of a dashboard (what the DashboardUrl output holds)."""
    return Fn.join("", ["https://", region, ".console.aws.amazon.com/cloudwatch/home?region=", region,
                        "#dashboards:name=", name])


def training_search(cfg: StackConfig, metric: str, stat: str = "Maximum") -> str:
    schema = ",".join((facts.TRAINING_METRICS_NAMESPACE, *facts.METRIC_DIMENSIONS[facts.TRAINING_METRICS_NAMESPACE]))
    return (f"SEARCH('{{{schema}}} MetricName=\"{metric}\" {cfg.prefix}', "
            f"'{stat}', {int(PERIOD.to_seconds())})")


class Dashboard(Construct):
    def __init__(self, scope: Construct, cid: str, *, cfg: StackConfig, api: apigw.RestApi,
                 function: lambda_.IFunction) -> None:
        super().__init__(scope, cid)
        self.name = dashboard_name(cfg)
        dims = endpoint_dimensions(cfg)

        def endpoint(metric: str, stat: str = "Sum", label: str | None = None) -> cw.Metric:
            return cw.Metric(namespace=ENDPOINT_NAMESPACE, metric_name=metric, dimensions_map=dims, statistic=stat,
                             period=PERIOD, label=label)

        # No CloudWatch metric counts a variant's instances; Invocations / InvocationsPerInstance over the same
        # period does while the endpoint serves (serverless endpoints have no instances to count).
        instances = cw.MathExpression(
            expression="invocations / per_instance", label="instances (while serving)", period=PERIOD,
            using_metrics={"invocations": endpoint("Invocations"), "per_instance": endpoint("InvocationsPerInstance")})
        training = [cw.MathExpression(expression=training_search(cfg, m), label=m, period=PERIOD,
                                      using_metrics={}) for m in TRAINING_METRICS]
        self.dashboard = cw.Dashboard(self, "Dashboard", dashboard_name=self.name,
                                      default_interval=Duration.hours(3))
        self.dashboard.add_widgets(
            cw.GraphWidget(title="API requests and errors", width=8,
                           left=[api.metric_count(period=PERIOD)],
                           right=[api.metric_client_error(period=PERIOD), api.metric_server_error(period=PERIOD)]),
            cw.GraphWidget(title="API latency (ms)", width=8,
                           left=[api.metric_latency(period=PERIOD, statistic="p50", label="p50"),
                                 api.metric_latency(period=PERIOD, statistic="p99", label="p99")]),
            cw.GraphWidget(title="Forwarder Lambda", width=8,
                           left=[function.metric_duration(period=PERIOD, statistic="p99", label="duration p99")],
                           right=[function.metric_errors(period=PERIOD), function.metric_throttles(period=PERIOD)]),
        )
        self.dashboard.add_widgets(
            cw.GraphWidget(title="Endpoint invocations and errors", width=8,
                           left=[endpoint("Invocations"), endpoint("InvocationsPerInstance")],
                           right=[endpoint("Invocation4XXErrors"), endpoint("Invocation5XXErrors"),
                                  endpoint("ModelSetupTime", "Average", "cold start (serverless)")]),
            cw.GraphWidget(title="Model latency (microseconds)", width=8,
                           left=[endpoint("ModelLatency", "p50", "p50"), endpoint("ModelLatency", "p99", "p99"),
                                 endpoint("OverheadLatency", "p99", "overhead p99")]),
            cw.GraphWidget(title="Endpoint instances", width=8, left=[instances]),
        )
        self.dashboard.add_widgets(
            cw.GraphWidget(title="Training and tuning jobs: accuracy", width=12, left=training[:1]),
            cw.GraphWidget(title="Training and tuning jobs: loss", width=12, left=training[1:]),
        )

    @property
    def url(self) -> str:
        return dashboard_url(self.name, Stack.of(self).region)
