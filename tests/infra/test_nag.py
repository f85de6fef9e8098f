"""cdk-nag 3.x (AwsSolutions) runs at synth as a validation plugin: no finding left unacknowledged."""

from __future__ import annotations

import contextlib
import json

import aws_cdk as cdk
from aws_cdk import aws_s3 as s3
from cdk_nag import AwsSolutionsChecks


def _violations(synth) -> list[str]:
    return [f"{v['ruleName']} at {c['constructPath']}"
            for report in synth.validation_report.get("pluginReports", [])
            for v in report["violations"] for c in v["violatingConstructs"]]


def test_default_deploy_has_no_unacknowledged_findings(cloud):
    assert cloud.validation_error is None, cloud.validation_error
    assert _violations(cloud) == []  # warnings included (they do not fail the synth)


def test_variant_has_no_unacknowledged_findings(variant):
    assert variant.validation_error is None, variant.validation_error
    assert _violations(variant) == []


def test_every_acknowledgement_has_a_reason(cloud, variant):
    for synth in (cloud, variant):
        metadata = json.loads((synth.outdir / "ImageClassifier.metadata.json").read_text())
        acks = {rule: reason for entries in metadata.values() for e in entries
                if e["type"] == "aws:cdk:acknowledged-rules" for rule, reason in e["data"].items()}
        assert len(acks) >= 10
        for rule, reason in acks.items():
            assert rule.startswith("AwsSolutions::AwsSolutions-"), rule
            assert len(reason.split()) >= 8, (rule, reason)
        # Wildcards are acknowledged one resource at a time, never the whole rule.
        assert "AwsSolutions::AwsSolutions-IAM5" not in acks


def test_each_construct_acknowledges_its_own_findings(cloud, variant):
    """Acknowledgements sit beside the resource they are about (as aws-solutions-constructs do), never on the stack
    or on a whole construct tree, so a new resource's findings are never covered by someone else's reason."""
    for synth in (cloud, variant):
        metadata = json.loads((synth.outdir / "ImageClassifier.metadata.json").read_text())
        paths = [path for path, entries in metadata.items()
                 if any(e["type"] == "aws:cdk:acknowledged-rules" for e in entries)]
        assert paths
        for path in paths:
            parts = path.strip("/").split("/")
            assert len(parts) >= 3, f"{path}: acknowledge on the resource, not on the stack or a whole construct"


def test_the_plugin_reports_what_it_finds(tmp_path):
    """Negative control: the same plugin wiring flags an unprotected bucket in the report."""
    app = cdk.App(outdir=str(tmp_path))
    stack = cdk.Stack(app, "Control")
    s3.Bucket(stack, "Open")
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    with contextlib.suppress(RuntimeError):  # ValidationFailed: the report is what this test reads
        app.synth()
    report = json.loads((tmp_path / "validation-report.json").read_text())
    rules = {v["ruleName"] for r in report["pluginReports"] for v in r["violations"]}
    assert {"AwsSolutions-S1", "AwsSolutions-S10"} <= rules
