"""Rule everywhere (issue 11, review items 3 and 10): no state reads a path that may be absent.

Over the whole synthesized definition, every JSONPath into a stored botocore response or a Catch's error output
passes only required members, or members a Choice checked with IsPresent on every way in (see
tests/support/definition_paths.py); ResultSelectors (which nothing can guard) read only required members.
"""

from __future__ import annotations

import copy

from infra.pipeline import S
from tests.support.definition_paths import absent_path_errors, facts_per_state, parameter_paths, tokens


def test_no_state_reads_a_path_that_may_be_absent(any_synth):
    errors = absent_path_errors(any_synth.definition)
    assert not errors, "\n".join(errors)


def test_the_walk_sees_every_state_and_what_each_describe_stores(cloud):
    definition = cloud.definition
    facts = facts_per_state(definition)
    assert set(facts) == set(definition["States"])  # every state reached, so every read is checked
    stored = {where for f in facts.values() for where, _ in f.stored}
    assert {("tuning",), ("rules", "job"), ("training",), ("existing",), ("endpoint",), ("error",)} <= stored


def _with(definition: dict, name: str, **changes) -> dict:
    d = copy.deepcopy(definition)
    d["States"][name].update(changes)
    return d


def test_the_check_fails_on_each_kind_of_unguarded_read(cloud):
    """The check can fail: an error output's Cause read without IsPresent (review item 10), an optional member of
    a describe result read without its IsPresent Choice (items 3/4), an optional list before [*]."""
    d = cloud.definition
    states = d["States"]
    cause = _with(d, S.TRAINING_FAILED, CausePath="$.error.Cause")
    assert any("$.error.Cause: optional" in e for e in absent_path_errors(cause))
    # "Best trial found?" guards BestTrainingJob: without its rule, "Select best trial" reads it unguarded.
    unguarded = _with(d, S.BEST_FOUND, Choices=[{"Variable": "$.tuning.HyperParameterTuningJobName",
                                                 "StringEquals": "never", "Next": S.NO_BEST}])
    assert any("BestTrainingJob" in e for e in absent_path_errors(unguarded))
    # "Rule statuses reported?" guards the optional lists that "Check rule progress" reads through [*].
    listless = _with(d, S.RULES_REPORTED, Choices=[{"Variable": "$.names.run_id", "StringEquals": "never",
                                                    "Next": S.NO_RULE_STATUSES}])
    assert any("DebugRuleEvaluationStatuses: optional" in e for e in absent_path_errors(listless))
    # "Metrics reported?" guards FinalMetricDataList for the filter in "Final metrics".
    assert states[S.METRICS_LISTED]["Choices"][0]["Next"] == S.METRICS_MISSING
    nolist = _with(d, S.METRICS_LISTED, Choices=[{"Variable": "$.names.run_id", "StringEquals": "never",
                                                  "Next": S.METRICS_MISSING}])
    assert any("FinalMetricDataList: optional" in e for e in absent_path_errors(nolist))
    # Review 2 item 8: what a Pass stores from a filter or [*] may be [], so the Gate's [0] needs "Gate metric
    # values present?" (MetricData.Value is optional).
    valueless = _with(d, S.METRIC_VALUES_PRESENT, Choices=[{"Variable": "$.names.run_id", "StringEquals": "never",
                                                            "Next": S.METRICS_MISSING}])
    assert any(e.startswith(f"{S.GATE} Choice: $.training.metrics.") and "may be empty" in e
               for e in absent_path_errors(valueless))


def test_paths_are_found_inside_intrinsic_functions():
    found = list(parameter_paths({"a.$": "States.Format('it\\'s {} $x', $.names.x, States.JsonToString($.error))",
                                  "b.$": "$$.Execution.Name", "c": {"d.$": "$.rules.job.X[*].Y"}}))
    assert found == ["$.names.x", "$.error", "$.rules.job.X[*].Y"]
    assert tokens("$.a.b[0][*].c") == ("a", "b", "[0]", "[*]", "c")
