"""One synthesis per configuration per test session (synth takes seconds on 2 cores)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import infra
import stackfacts as facts

# Every branch the default deploy does not take: removal destroy (auto-delete), serverless serving, API key
# instead of IAM, Debugger off, managed spot, a default warm-start parent and a pinned region (literal images).
VARIANT_CONTEXT: dict[str, Any] = {
    "prefix": "imgvar",
    "region": "eu-west-1",
    "removal_policy": "destroy",
    "debugger.enabled": False,
    "training.spot": True,
    "tuning.warm_start_parent": "imgvar-0123456789ab",
    "serving.serverless": True,
    "serving.traffic": "CANARY",
    "api.iam_auth": False,
    "api.api_key_required": True,
    "api.quota_per_day": 5000,
    "data_capture_retention_days": 14,
}


ACCOUNT = facts.LOCAL_ACCOUNT
SUBSTITUTION_VALUES = {
    "Bucket": "imageclassifier-storagebucket-1a2b3c4d5e6f",
    "SageMakerRoleArn": f"arn:aws:iam::{ACCOUNT}:role/ImageClassifier-RolesSageMakerExecution-AbC123",
}


@dataclass
class Synth:
    context: dict[str, Any]
    outdir: Path
    template: dict[str, Any]
    validation_error: str | None  # cdk-nag's verdict when the synth ran it

    @property
    def validation_report(self) -> dict[str, Any]:
        path = self.outdir / "validation-report.json"
        return json.loads(path.read_text()) if path.is_file() else {"pluginReports": []}

    def resources(self, type_: str) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in self.template["Resources"].items() if v["Type"] == type_}

    def one(self, type_: str) -> dict[str, Any]:
        found = list(self.resources(type_).values())
        assert len(found) == 1, f"{len(found)} {type_}"
        return found[0]

    @property
    def state_machine(self) -> dict[str, Any]:
        """The pipeline's state machine resource (the teardown's Provider framework adds a poller of its own)."""
        from infra.definition import state_machine_resource

        return state_machine_resource(self.template)

    @property
    def config(self):
        return infra.load_config_for(self.context)

    @property
    def definition(self) -> dict[str, Any]:
        """The definition as Step Functions receives it (CloudFormation's substitution, with realistic values)."""
        from infra.definition import definition

        return definition(self.template, SUBSTITUTION_VALUES, region=self.config.region or "us-east-1",
                          account=ACCOUNT)

    def task_states(self) -> dict[str, dict[str, Any]]:
        return {name: s for name, s in self.definition["States"].items() if s["Type"] == "Task"}

    def assertions(self):
        from aws_cdk.assertions import Template

        return Template.from_json(self.template)


def _synth(tmp_path_factory, name: str, context: dict[str, Any], nag: bool) -> Synth:
    outdir = tmp_path_factory.mktemp(name)
    error = None
    try:
        template = infra.synth(context, outdir=outdir, nag=nag)
    except RuntimeError as exc:  # ValidationFailed: the templates are written, the report says why
        error = str(exc)
        template = json.loads((outdir / f"{infra.load_config_for(context).stack_name}.template.json").read_text())
    return Synth(context, outdir, template, error)


@pytest.fixture(scope="session")
def cloud(tmp_path_factory) -> Synth:
    """The default deploy (cdk.json as is), with cdk-nag."""
    return _synth(tmp_path_factory, "cloud", {}, nag=True)


@pytest.fixture(scope="session")
def local(tmp_path_factory) -> Synth:
    """What local mode synthesizes."""
    return _synth(tmp_path_factory, "local", {"profile": "local"}, nag=False)


@pytest.fixture(scope="session")
def variant(tmp_path_factory) -> Synth:
    return _synth(tmp_path_factory, "variant", VARIANT_CONTEXT, nag=True)


@pytest.fixture(scope="session", params=["cloud", "local", "variant"])
def any_synth(request) -> Synth:
    return request.getfixturevalue(request.param)
