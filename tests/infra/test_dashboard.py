"""The stack's CloudWatch dashboard: every widget reads a metric of this stack's own resources."""

from __future__ import annotations

import json
import re
from typing import Any

from infra import dashboard
from infra import sagemaker_requests as req


def _flatten(value: Any) -> str:
    """A Fn::Join'ed string with each Ref / GetAtt written as ${LogicalId} (enough to read the dashboard body)."""
    if isinstance(value, str):
        return value
    if "Fn::Join" in value:
        sep, parts = value["Fn::Join"]
        return sep.join(_flatten(p) for p in parts)
    if "Ref" in value:
        return "${" + value["Ref"] + "}"
    if "Fn::GetAtt" in value:
        return "${" + ".".join(value["Fn::GetAtt"]) + "}"
    raise AssertionError(f"unexpected intrinsic in the dashboard: {value}")


def _body(synth) -> dict[str, Any]:
    board = synth.one("AWS::CloudWatch::Dashboard")["Properties"]
    assert board["DashboardName"] == dashboard.dashboard_name(synth.config)
    return json.loads(_flatten(board["DashboardBody"]))


def _metrics(body: dict[str, Any]) -> dict[str, list[list[Any]]]:
    """Widget title -> its metric rows (namespace, name, dimension pairs..., options)."""
    return {w["properties"]["title"]: w["properties"].get("metrics", []) for w in body["widgets"]}


def test_dashboard_covers_api_lambda_endpoint_and_training(any_synth):
    body = _body(any_synth)
    widgets = _metrics(body)
    rows = [r for metrics in widgets.values() for r in metrics]
    named = {(r[0], r[1]) for r in rows if isinstance(r[0], str) and not r[0].startswith("...")}
    assert {("AWS/ApiGateway", m) for m in ("Count", "4XXError", "5XXError", "Latency")} <= named
    assert {("AWS/Lambda", m) for m in ("Duration", "Errors", "Throttles")} <= named
    endpoint = {"Invocations", "InvocationsPerInstance", "Invocation4XXErrors", "Invocation5XXErrors", "ModelLatency"}
    assert {("AWS/SageMaker", m) for m in endpoint} <= named
    cfg = any_synth.config
    for r in rows:
        if r[0] == "AWS/SageMaker":  # this endpoint's one variant, the name the state machine deploys
            assert r[2:6] == ["EndpointName", cfg.endpoint_name, "VariantName", req.VARIANT_NAME], r
        if r[0] == "AWS/ApiGateway":
            (api_id,) = any_synth.resources("AWS::ApiGateway::RestApi")
            api_name = any_synth.template["Resources"][api_id]["Properties"]["Name"]
            assert r[2:4] == ["ApiName", api_name], r
        if r[0] == "AWS/Lambda":
            (fn_id,) = [k for k in any_synth.resources("AWS::Lambda::Function") if "Forwarder" in k]
            assert r[2:4] == ["FunctionName", "${" + fn_id + "}"], r
    # Instances: a math expression over this variant's Invocations and InvocationsPerInstance.
    (instances,) = [r[0] for r in widgets["Endpoint instances"] if isinstance(r[0], dict)]
    assert instances["expression"] == "invocations / per_instance"
    used = {r[1]: r[-1]["id"] for r in widgets["Endpoint instances"] if r[0] == "AWS/SageMaker"}
    assert used == {"Invocations": "invocations", "InvocationsPerInstance": "per_instance"}
    # Training and tuning jobs: SEARCH over the per-run job names by this stack's prefix.
    searches = [r[0]["expression"] for title, m in widgets.items() if title.startswith("Training") for r in m]
    assert searches == [dashboard.training_search(cfg, m) for m in dashboard.TRAINING_METRICS]
    # Review 4 R1: MetricDefinitions' metrics are published per TrainingJobName (training-metrics.html); a SEARCH
    # on {namespace,Host} (the instance metrics' schema) matched nothing.
    assert all("{/aws/sagemaker/TrainingJobs,TrainingJobName} MetricName=" in s
               and s.split("'")[1].endswith(cfg.prefix) for s in searches)


_SCHEMA = re.compile(r"SEARCH\('\{([^}]*)\}")


def _alarm_metrics(synth) -> list[tuple[str, list[str]]]:
    out = []
    for res in synth.template["Resources"].values():
        if res["Type"] != "AWS::CloudWatch::Alarm":
            continue
        props = res["Properties"]
        queries = [q["MetricStat"]["Metric"] for q in props.get("Metrics", []) if "MetricStat" in q]
        if "Namespace" in props:
            queries.append(props)
        out += [(q["Namespace"], sorted(d["Name"] for d in q.get("Dimensions", []))) for q in queries]
    return out


def test_every_metric_the_stack_reads_has_its_documented_dimensions(any_synth):
    """Every dashboard row, SEARCH schema and alarm metric names a namespace of facts.METRIC_DIMENSIONS (each with
    its documentation) and exactly that dimension set: CloudWatch matches a metric only by its full set."""
    import stackfacts as facts

    seen = []
    for rows in _metrics(_body(any_synth)).values():
        for r in rows:
            if isinstance(r[0], dict):  # a math expression; a SEARCH names its schema
                seen += [(parts[0], sorted(parts[1:])) for parts in
                         (m.split(",") for m in _SCHEMA.findall(r[0]["expression"]))]
            elif not r[0].startswith("..."):
                dims = [x for x in r[2:] if not isinstance(x, dict)]
                seen.append((r[0], sorted(dims[0::2])))
    seen += _alarm_metrics(any_synth)
    assert {ns for ns, _ in seen} == set(facts.METRIC_DIMENSIONS)
    wrong = [(ns, dims) for ns, dims in seen if dims != sorted(facts.METRIC_DIMENSIONS[ns])]
    assert not wrong, wrong


def test_the_cli_queries_training_metrics_by_their_dimension():
    import stackfacts as facts
    from cli.model import metric_queries

    for q in metric_queries("imgclf-0123456789ab-train"):
        metric = q["MetricStat"]["Metric"]
        assert [d["Name"] for d in metric["Dimensions"]] == list(facts.METRIC_DIMENSIONS[metric["Namespace"]])
        assert metric["Dimensions"][0]["Value"] == "imgclf-0123456789ab-train"


def test_dashboard_url_is_an_output_the_cli_reads(any_synth):
    import stackfacts as facts

    url = _flatten(any_synth.template["Outputs"][facts.OUTPUT_DASHBOARD]["Value"])
    region = any_synth.config.region or "${AWS::Region}"
    assert url == (f"https://{region}.console.aws.amazon.com/cloudwatch/home?region={region}"
                   f"#dashboards:name={dashboard.dashboard_name(any_synth.config)}")
