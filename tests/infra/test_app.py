"""app.py is the thin `cdk synth` entry point; synth_template is the in-process one."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import infra

APP = infra.ROOT / "app.py"


def test_app_is_thin():
    code = [line for line in APP.read_text().splitlines() if line.strip() and not line.startswith(("#", '"""'))]
    assert len(code) <= 4


def test_cdk_json_runs_app_py_offline():
    cdk = json.loads(infra.CDK_JSON.read_text())
    assert cdk["app"].endswith("app.py")
    assert "region" not in cdk["context"] and "profile" in cdk["context"]


@pytest.mark.slow
def test_app_synthesizes_like_the_cli(tmp_path, cloud):
    """What `cdk synth` runs: app.py with the CLI's context in CDK_CONTEXT_JSON and no AWS credentials."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(CDK_OUTDIR=str(tmp_path), CDK_CONTEXT_JSON=json.dumps(infra.cdk_json_context()),
               AWS_EC2_METADATA_DISABLED="true")
    result = subprocess.run([sys.executable, str(APP)], cwd=infra.ROOT, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    template = json.loads((tmp_path / "ImageClassifier.template.json").read_text())
    assert template["Resources"].keys() == cloud.template["Resources"].keys()


def test_every_output_the_cli_reads_is_emitted(cloud, variant):
    """`imgclf` reads the stack through these OutputKeys; `teardown` needs the prefix a `-c prefix=...` deploy used."""
    import stackfacts as facts

    # Emitted only by some configurations (api.iam_auth false; a pretrained weights key): tests/infra/
    # test_stackfacts.py finds each in one.
    conditional = {facts.OUTPUT_API_KEY_ID, facts.OUTPUT_PRETRAINED_URI, facts.OUTPUT_PRETRAINED_BACKBONE}
    keys = set(facts.OUTPUTS) - conditional
    assert facts.OUTPUT_RESOURCE_PREFIX in keys
    for synth in (cloud, variant):
        assert keys <= set(synth.template["Outputs"]), keys - set(synth.template["Outputs"])
        assert synth.template["Outputs"][facts.OUTPUT_RESOURCE_PREFIX]["Value"] == synth.config.prefix
        for key, spot in ((facts.OUTPUT_TUNING_SPOT, synth.config.tuning.spot),
                          (facts.OUTPUT_TRAINING_SPOT, synth.config.training.spot)):
            assert synth.template["Outputs"][key]["Value"] == ("true" if spot else "false")
    assert variant.config.prefix == "imgvar"


@pytest.mark.slow
def test_bare_python_app_py_synthesizes(tmp_path, cloud):
    """`python app.py` without the CDK CLI: cdk.json's context (feature flags included) is read by the app."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CDK_"))}
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    result = subprocess.run([sys.executable, str(APP)], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    template = json.loads((tmp_path / "cdk.out" / "ImageClassifier.template.json").read_text())
    assert template["Resources"].keys() == cloud.template["Resources"].keys()
