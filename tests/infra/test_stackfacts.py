"""stackfacts is the stack seen from outside: every output key and execution-input key it names is what the
synthesized template really has, and nothing the template emits is missing from it."""

from __future__ import annotations

import json
import re

import stackfacts as facts
from infra.pipeline import S

# A construct's own outputs carry CDK's 8-hex-digit logical-id hash (apigateway.RestApi's "<id>Endpoint<hash>"):
# the constructs' business, read by nobody here. The stack's own CfnOutputs have plain ids.
_GENERATED = re.compile(r"[0-9A-F]{8}$")


def test_every_output_key_is_emitted_and_every_emitted_one_is_named(cloud, local, variant):
    emitted = {synth_name: {k for k in s.template["Outputs"] if not _GENERATED.search(k)} for synth_name, s in
               (("cloud", cloud), ("local", local), ("variant", variant))}
    for name, keys in emitted.items():
        assert keys <= set(facts.OUTPUTS), f"{name} emits outputs stackfacts does not name: {keys - set(facts.OUTPUTS)}"
    # Conditional ones (the API key with api.iam_auth false, the pretrained weights with a weights key) show in
    # some configuration; every key stackfacts names shows in at least one.
    assert set().union(*emitted.values()) == set(facts.OUTPUTS)
    assert len(set(facts.OUTPUTS)) == len(facts.OUTPUTS)


def test_the_resource_prefix_output_is_the_configured_prefix(variant):
    assert variant.template["Outputs"][facts.OUTPUT_RESOURCE_PREFIX]["Value"] == variant.config.prefix


def test_execution_input_keys_are_the_state_machines(any_synth):
    """The first state merges the execution input over the stack's defaults: those defaults are the input keys."""
    definition = any_synth.definition
    prepare = definition["States"][definition["StartAt"]]
    assert definition["StartAt"] == S.PREPARE
    assert tuple(prepare["Parameters"]["defaults"]) == facts.INPUT_KEYS


def test_artifact_layout_in_the_definition(cloud):
    """The report locations the state machine returns follow SageMaker's layout as stackfacts spells it."""
    text = json.dumps(cloud.definition)
    for part in (f"/{facts.JOB_OUTPUT_DIR}/{facts.MODEL_ARCHIVE}", f"/{facts.JOB_OUTPUT_DIR}/{facts.OUTPUT_ARCHIVE}",
                 f"/{facts.RULE_OUTPUT_DIR}/", f"/{facts.DEBUG_OUTPUT_DIR}/",
                 facts.profiler_report_key(facts.RULE_OUTPUT_DIR)):
        assert part in text, part


def test_layout_helpers():
    assert facts.job_output_key("training/", "job-1", facts.MODEL_ARCHIVE) == "training/job-1/output/model.tar.gz"
    assert facts.profiler_report_key("p/job/rule-output/") == \
        "p/job/rule-output/ProfilerReport/profiler-output/profiler-report.html"
