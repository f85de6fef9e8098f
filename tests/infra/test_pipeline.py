"""The state machine: shape, names, gate, deploy loop, and that local mode can run the very same definition."""

from __future__ import annotations

import itertools
import json
import re

import pytest

from infra import definition as definition_module
from infra import sagemaker_requests as req
from infra.pipeline import LOOKUP_RETRIES, S
from ml import contract

ALLOWED_TYPES = {"Task", "Choice", "Wait", "Pass", "Fail", "Succeed", "Parallel"}


def _targets(state: dict) -> set[str]:
    out = {state[k] for k in ("Next", "Default") if k in state}
    out |= {c["Next"] for c in state.get("Choices", [])}
    out |= {c["Next"] for c in state.get("Catch", [])}
    return out


def test_definition_is_one_plain_string_with_named_substitutions(any_synth):
    props = any_synth.state_machine["Properties"]
    assert isinstance(props["DefinitionString"], str)
    placeholders = set(re.findall(r"\$\{([A-Za-z]+)\}", props["DefinitionString"]))
    assert placeholders == set(props["DefinitionSubstitutions"])
    assert placeholders <= set(req.SUBSTITUTIONS)


def test_jsonpath_only_and_plain_state_types(any_synth):
    d = any_synth.definition
    assert d.get("QueryLanguage", "JSONPath") == "JSONPath"
    for name, state in d["States"].items():
        assert state["Type"] in ALLOWED_TYPES, name
        assert state.get("QueryLanguage", "JSONPath") == "JSONPath", name
        assert "ItemReader" not in state and "Arguments" not in state and "Output" not in state


def test_graph_is_closed_and_every_state_reachable(any_synth):
    states = any_synth.definition["States"]
    seen, todo = set(), [any_synth.definition["StartAt"]]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        assert name in states, f"dangling transition to {name}"
        todo.extend(_targets(states[name]))
    assert seen == set(states)


def test_the_story_reads_top_down(cloud):
    states = cloud.definition["States"]
    assert cloud.definition["StartAt"] == S.PREPARE
    chain = [S.PREPARE, S.INPUT_IS_OBJECT, S.APPLY_INPUT, S.NAME, S.CHECK_INPUT]
    for a, b in itertools.pairwise(chain):
        assert states[a].get("Next", states[a].get("Default")) == b
    assert states[S.CHECK_INPUT]["Default"] == S.COUNT_ROUNDS  # then the tuning rounds against the timeout
    assert states[S.COUNT_ROUNDS]["Next"] == S.ROUNDS_FIT
    fits = states[S.ROUNDS_FIT]
    assert fits["Choices"][0] == {"Variable": "$.check.rounds.count", "NumericGreaterThan": cloud.config.tuning_rounds,
                                  "Next": S.TUNING_TOO_LONG}
    assert fits["Default"] == S.PARENT_GIVEN  # a warm-start parent must be a tuning job SageMaker can describe
    assert states[S.PARENT_GIVEN]["Default"] == S.CHECK_PARENT
    assert states[S.PARENT_GIVEN]["Choices"][0]["Next"] == states[S.CHECK_PARENT]["Next"] == S.CHECK_WEIGHTS
    assert states[S.CHECK_WEIGHTS]["Next"] == S.CHECK_ENDPOINT
    assert states[S.CHECK_WEIGHTS]["Catch"][0]["Next"] == S.WEIGHTS_MISSING
    assert states[S.CHECK_ENDPOINT]["Next"] == S.EXISTING_USABLE
    assert states[S.EXISTING_USABLE]["Default"] == "Warm start?"
    assert states["Warm start?"]["Default"] == S.TUNE_WARM and states["Warm start?"]["Choices"][0]["Next"] == S.TUNE
    assert states[S.TUNE]["Next"] == S.READ_TUNING
    assert states[S.READ_TUNING]["Next"] == S.BEST_FOUND
    assert states[S.BEST_FOUND]["Default"] == S.SELECT_BEST
    assert states[S.SELECT_BEST]["Next"] == S.PREPARE_TRAINING
    assert states[S.PREPARE_TRAINING]["Next"] == S.TRAIN
    assert states[S.TRAIN]["Next"] == S.DESCRIBE_TRAINING
    assert states[S.RULES_DONE]["Default"] == S.RULE_NAMES
    assert states[S.VERDICTS]["Next"] == S.REPORTS
    assert states[S.REPORTS]["Next"] == S.READ_TRAINING
    assert states[S.READ_TRAINING]["Next"] == S.METRICS_LISTED
    assert states[S.FINAL_METRICS]["Next"] == S.METRIC_VALUES
    assert states[S.METRIC_VALUES]["Next"] == S.METRIC_VALUES_PRESENT
    assert states[S.METRIC_VALUES_PRESENT]["Default"] == S.GATE_RULES
    assert states[S.GATE_RULES]["Default"] == S.GATE
    assert states[S.GATE]["Default"] == S.CREATE_MODEL
    # The endpoint is found first, so that an update's config is sized from the live fleet (review 3 N1).
    assert states[S.CREATE_MODEL]["Next"] == S.FIND_ENDPOINT
    assert states[S.CREATE_CONFIG]["Next"] == S.CREATE_OR_UPDATE


def test_names_derive_from_one_run_id_per_execution(cloud):
    states = cloud.definition["States"]
    defaults = states[S.PREPARE]["Parameters"]["defaults"]
    assert states[S.PREPARE]["Parameters"]["run_id.$"] == (
        "States.ArrayGetItem(States.StringSplit(States.UUID(), '-'), 4)")
    assert states[S.APPLY_INPUT]["Parameters"] == {"args.$": "States.JsonMerge($.defaults, $.input, false)",
                                                   "run_id.$": "$.run_id"}
    names = states[S.NAME]["Parameters"]["names"]
    prefix = cloud.config.prefix
    for key in ("tuning_job", "training_job", "model", "endpoint_config"):
        assert names[f"{key}.$"] == f"States.Format('{prefix}-{{}}', $.run_id)"
    assert names["endpoint"] == cloud.config.endpoint_name
    # The run id is not an input key (the input cannot rename resources outside the checked ones).
    assert "run_id.$" not in defaults and states[S.PREPARE]["Parameters"]["run_id.$"].startswith("States.")
    for state in cloud.task_states().values():
        if "Tags" in state["Parameters"]:
            assert {"Key": req.RUN_ID_TAG, "Value.$": "$.names.run_id"} in state["Parameters"]["Tags"]
            assert "$$.Execution.Name" not in json.dumps(state["Parameters"])


def test_input_is_checked_against_the_data_prefix(cloud):
    choices = cloud.definition["States"][S.CHECK_INPUT]["Choices"]
    bucket = "imageclassifier-storagebucket-1a2b3c4d5e6f"
    dataset = [c for c in choices if c["Next"] == S.invalid("dataset")]
    assert {"Not": {"Variable": "$.args.dataset", "IsString": True}, "Next": S.invalid("dataset")} in dataset
    rules = dataset[1]["Not"]["Or"]
    assert {"Variable": "$.args.dataset", "StringEquals": f"s3://{bucket}/data/"} in rules
    assert {"Variable": "$.args.dataset", "StringMatches": f"s3://{bucket}/data/*/"} in rules
    # Every input key has its own Fail state, and an unknown key is caught by counting the merged values.
    from infra.pipeline import INPUT_KEYS
    targets = {c["Next"] for c in choices}
    assert {S.invalid(k) for k in (*INPUT_KEYS, "keys")} <= targets
    assert choices[0] == {"Variable": f"$.check.values[{len(INPUT_KEYS)}]", "IsPresent": True,
                          "Next": S.invalid("keys")}
    defaults = cloud.definition["States"][S.PREPARE]["Parameters"]["defaults"]
    assert tuple(defaults) == INPUT_KEYS
    warm = cloud.definition["States"][S.TUNE_WARM]["Parameters"]["WarmStartConfig"]
    assert warm["ParentHyperParameterTuningJobs"] == [{"HyperParameterTuningJobName.$": "$.args.warm_start_parent"}]


def test_tuning_results_come_from_describe_not_sync(cloud):
    states = cloud.definition["States"]
    tune = states[S.TUNE]
    assert tune["ResultSelector"] == {"ended": True}  # .sync only waits: its output shape is Step Functions' own
    read = states[S.READ_TUNING]
    assert read["Resource"] == "arn:aws:states:::aws-sdk:sagemaker:describeHyperParameterTuningJob"
    assert read["ResultPath"] == "$.tuning"
    best = states[S.BEST_FOUND]["Choices"][0]["Or"]
    assert {"Variable": "$.tuning.BestTrainingJob.TrainingJobName", "IsPresent": False} in best
    assert states[S.SELECT_BEST]["Parameters"]["hyperparameters.$"] == "$.tuning.BestTrainingJob.TunedHyperParameters"
    assert states[S.SELECT_BEST]["ResultPath"] == "$.tuning"  # the description is trimmed at once


def test_rule_polling_waits_for_every_verdict(cloud, local):
    for synth in (cloud, local):
        states = synth.definition["States"]
        describe = states[S.DESCRIBE_TRAINING]
        assert describe["Resource"] == "arn:aws:states:::aws-sdk:sagemaker:describeTrainingJob"
        # The whole description (no ResultSelector through optional lists), then IsPresent on each list.
        assert "ResultSelector" not in describe and describe["ResultPath"] == "$.rules.job"
        assert describe["Next"] == S.RULES_REPORTED
        reported = states[S.RULES_REPORTED]
        # "Debugger ran no rules" is decided on the Debugger list alone (review 3 N3); the profiler list alone
        # absent or empty polls the Debugger rules only and records the profiler unavailable.
        debugger_list, profiler_list = (f"$.rules.job.{m}RuleEvaluationStatuses" for m in ("Debug", "Profiler"))
        assert {c["Variable"] for c in reported["Choices"][0]["Or"]} == {debugger_list, f"{debugger_list}[0]"}
        assert {c["Variable"] for c in reported["Choices"][1]["Or"]} == {profiler_list, f"{profiler_list}[0]"}
        assert reported["Choices"][0]["Next"] == S.NO_RULE_STATUSES and reported["Default"] == S.RULE_PROGRESS
        assert reported["Choices"][1]["Next"] == S.RULE_PROGRESS + S.NO_PROFILER_SUFFIX
        assert not any("Profiler" in p for p in states[S.RULE_PROGRESS + S.NO_PROFILER_SUFFIX]["Parameters"].values())
        assert states[S.VERDICTS + S.NO_PROFILER_SUFFIX]["Next"] == S.NO_PROFILER_STATUSES
        assert states[S.NO_PROFILER_STATUSES]["ResultPath"] == "$.run.profiler"
        assert states[S.NO_PROFILER_STATUSES]["Next"] == S.REPORTS_NO_PROFILER
        # No rule statuses (absent or empty) is Debugger unavailable, not a failed gate (review 2 item 10), and
        # promises only the locations a job without Debugger writes.
        unreported = states[S.NO_RULE_STATUSES]
        assert unreported["Type"] == "Pass" and unreported["ResultPath"] == "$.run"
        assert unreported["Parameters"]["debugger"]["status"] == "unavailable"
        assert unreported["Parameters"]["profiler"] == "unavailable"
        assert unreported["Next"] == S.REPORTS_NO_DEBUGGER
        progress = states[S.RULE_PROGRESS]["Parameters"]
        debug = "$.rules.job.DebugRuleEvaluationStatuses"
        assert progress["debug_inprogress.$"] == f"States.ArrayContains({debug}[*].RuleEvaluationStatus, 'InProgress')"
        assert progress["debug_stated.$"] == f"States.ArrayLength({debug}[*].RuleEvaluationStatus)"
        assert "profiler_inprogress.$" in progress
        done = states[S.RULES_DONE]
        assert {c["Next"] for c in done["Choices"]} == {S.RULES_TIMED_OUT, S.WAIT_RULES}
        assert done["Default"] == S.RULE_NAMES
        assert states[S.RULES_LISTED]["Default"] == S.VERDICTS
        assert states[S.WAIT_RULES]["Next"] == S.DESCRIBE_TRAINING
        assert states[S.WAIT_RULES]["Seconds"] == synth.config.debugger.poll_s
    assert local.definition["States"][S.WAIT_RULES]["Seconds"] == 1


def test_gate_names_the_failing_rule_or_metric(cloud):
    states = cloud.definition["States"]
    rules = states[S.GATE_RULES]["Choices"]
    # Without Debugger (refused by SageMaker), the gate skips the verdicts and uses the script's checks.
    assert rules[0] == {"Not": {"Variable": "$.run.debugger.status", "StringEquals": "on"}, "Next": S.GATE}
    targets = [c["Next"] for c in rules]
    for rule in cloud.config.debugger.gate_rules:
        fail = states[S.rule_failed(rule)]
        assert fail["Type"] == "Fail" and fail["Error"] == "GateFailed" and rule in fail["Cause"]
        assert S.rule_failed(rule) in targets
    assert targets[-1] == S.RULE_INCOMPLETE
    gate = states[S.GATE]["Choices"]
    assert [c["Next"] for c in gate] == [S.HEALTH_FAILED, S.ACCURACY_LOW]
    assert gate[0] == {"Variable": f"$.training.metrics.{contract.HEALTH_ISSUES}[0]", "NumericGreaterThan": 0,
                       "Next": S.HEALTH_FAILED}
    assert gate[1] == {"Variable": f"$.training.metrics.{contract.TEST_ACCURACY}[0]",
                       "NumericLessThanPath": "$.args.min_test_accuracy", "Next": S.ACCURACY_LOW}
    assert "States.Format(" in states[S.ACCURACY_LOW]["CausePath"]
    gated = (contract.TEST_ACCURACY, contract.HEALTH_ISSUES)
    metrics = states[S.FINAL_METRICS]["Parameters"]["metric_data"]
    assert metrics == {f"{m}.$": f"$.training.FinalMetricDataList[?(@.MetricName == '{m}')]" for m in gated}
    # MetricData.Value is optional (botocore): [*].Value may be [], so the gate's [0] is checked first.
    assert states[S.METRIC_VALUES]["Parameters"] == {f"{m}.$": f"$.training.metric_data.{m}[*].Value"
                                                     for m in gated}
    (valued,) = states[S.METRIC_VALUES_PRESENT]["Choices"]
    assert valued["Next"] == S.METRICS_MISSING and valued["Or"] == [
        {"Variable": f"$.training.metrics.{m}[0]", "IsPresent": False} for m in gated]
    # The filters above run only once the metric names are known to be listed.
    named = states[S.METRICS_NAMED]["Choices"][0]
    assert named["Next"] == S.METRICS_MISSING and len(named["Or"]) == 2
    assert states[S.METRICS_LISTED]["Choices"][0] == {
        "Variable": "$.training.FinalMetricDataList", "IsPresent": False, "Next": S.METRICS_MISSING}
    # Profiler rules inform, they do not block (by default).
    assert not any("ProfilerReport" in t or "LowGPUUtilization" in t for t in targets)


def test_gate_without_debugger_uses_the_scripts_health_checks(variant):
    states = variant.definition["States"]
    assert S.DESCRIBE_TRAINING not in states and S.RULES_DONE not in states and S.GATE_RULES not in states
    assert S.TRAIN_NO_DEBUGGER not in states  # Debugger off by configuration: nothing to fall back from
    assert states[S.TRAIN]["Next"] == S.REPORTS
    assert states[S.METRIC_VALUES_PRESENT]["Default"] == S.GATE
    targets = [c["Next"] for c in states[S.GATE]["Choices"]]
    assert targets == [S.HEALTH_FAILED, S.ACCURACY_LOW]
    assert states[S.NAME]["Parameters"]["run"]["debugger"] == {"status": "off", "reason": ""}
    assert states[S.NAME]["Parameters"]["verdicts"] == {}


def test_debugger_refusal_runs_the_same_job_without_it(cloud):
    """Issue 11 item 1: only an error of the create call (the optimized integration's name for a refused
    request) can fall back, and only when its Cause names Debugger (review item 2); a job that ran and failed, and
    any other refusal, is a training failure."""
    from infra.pipeline import DEBUGGER_REFUSAL_CAUSES

    states = cloud.definition["States"]
    catches = states[S.TRAIN]["Catch"]
    assert catches[0] == {"ErrorEquals": ["SageMaker.AmazonSageMakerException"], "ResultPath": "$.error",
                          "Next": S.DEBUGGER_REFUSED}
    assert catches[1]["ErrorEquals"] == ["States.ALL"] and catches[1]["Next"] == S.STOP_TRAINING
    refused = states[S.DEBUGGER_REFUSED]
    assert refused["Default"] == S.STOP_TRAINING
    (rule,) = refused["Choices"]
    assert rule["Next"] == S.DEBUGGER_UNAVAILABLE
    assert rule["And"][0] == {"Variable": "$.error.Cause", "IsPresent": True}
    assert {c["StringMatches"] for c in rule["And"][1]["Or"]} == set(DEBUGGER_REFUSAL_CAUSES)
    fallback = states[S.DEBUGGER_UNAVAILABLE]
    assert fallback["ResultPath"] == "$.run" and fallback["Next"] == S.TRAIN_NO_DEBUGGER
    assert fallback["Parameters"]["debugger"] == {"status": "unavailable", "reason.$": "$.error.Cause"}
    assert states[S.TRAIN_NO_DEBUGGER]["Next"] == S.REPORTS_NO_DEBUGGER
    assert states[S.REPORTS_NO_DEBUGGER]["Next"] == S.READ_TRAINING
    assert not {"rule_output.$", "debugger_tensors.$", "profiler_report.$"} & set(
        states[S.REPORTS_NO_DEBUGGER]["Parameters"])


def test_refused_create_calls_are_retried_before_any_catch(any_synth):
    """Review item 2, as a rule: throttling has no name of its own in the optimized integrations, so every call
    through one (the .sync jobs and the deploy's creates and update) retries SageMaker.AmazonSageMakerException
    (with backoff) before a Catch decides."""
    states = any_synth.definition["States"]
    creates = [n for n, s in states.items() if s["Type"] == "Task"
               and s["Resource"].startswith("arn:aws:states:::sagemaker:")]  # every optimized integration
    assert set(creates) >= {S.TUNE, S.TRAIN, S.CREATE_MODEL, S.CREATE_CONFIG, S.CREATE_ENDPOINT, S.UPDATE_ENDPOINT}
    for name in creates:
        (retry,) = states[name]["Retry"]
        assert retry["ErrorEquals"] == ["SageMaker.AmazonSageMakerException"], name
        assert retry["MaxAttempts"] >= 2 and retry["BackoffRate"] >= 2
        assert retry["IntervalSeconds"] == any_synth.config.retry_interval_s


def test_failures_never_touch_the_endpoint(cloud):
    states = cloud.definition["States"]
    deploying = {S.CREATE_ENDPOINT, S.UPDATE_ENDPOINT}
    for name in (S.READ_TUNING, S.DESCRIBE_TRAINING, S.READ_TRAINING):
        (catch,) = states[name]["Catch"]
        assert catch["ErrorEquals"] == ["States.ALL"]
        assert states[catch["Next"]]["Type"] == "Fail"
    # A tuning job that ended Stopped/Failed is read first: its best trial (if any) goes on to training, else the
    # run fails with the tuning task's own error (review 2 item 9).
    for name in (S.TUNE, S.TUNE_WARM):
        (catch,) = states[name]["Catch"]
        assert catch == {"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": S.READ_ENDED_TUNING}
    # A describe that keeps failing stops the job as well: it may still run (review 5 F3).
    assert states[S.READ_ENDED_TUNING]["Catch"] == [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.read_error",
                                                     "Next": S.STOP_TUNING}]
    ended = states[S.ENDED_WITH_BEST]
    # Still running (review 3 N2): stopped first, then "Tuning failed" whatever the stop answers.
    assert {c["StringEquals"] for c in ended["Choices"][0]["Or"]} == {"InProgress", "Stopping"}
    assert ended["Choices"][0]["Next"] == S.STOP_TUNING
    stop = states[S.STOP_TUNING]
    assert stop["Resource"] == "arn:aws:states:::aws-sdk:sagemaker:stopHyperParameterTuningJob"
    assert stop["Next"] == S.TUNING_FAILED and stop["Catch"][0]["Next"] == S.TUNING_FAILED
    assert stop["Catch"][0]["ResultPath"] == "$.stop_error"  # the Fail reports the tuning task's own $.error
    assert ended["Choices"][1]["Next"] == S.SELECT_BEST and states[ended["Default"]]["Type"] == "Fail"
    assert {c["StringEquals"] for c in ended["Choices"][1]["And"][0]["Or"]} == {"Completed", "Stopped", "Failed"}
    # From the gate, every failing branch is a Fail state; only the default goes on to deploy.
    for gate in (S.GATE_RULES, S.GATE):
        for choice in states[gate]["Choices"]:
            assert states[choice["Next"]]["Type"] == "Fail" or choice["Next"] == S.GATE
            assert choice["Next"] not in deploying


def test_create_or_update_the_stable_endpoint(cloud):
    states = cloud.definition["States"]
    find = states[S.FIND_ENDPOINT]
    assert find["Resource"] == "arn:aws:states:::aws-sdk:sagemaker:describeEndpoint"
    (catch,) = find["Catch"]
    assert catch["Next"] == S.lookup_error(S.FIND_ENDPOINT) and catch["ResultPath"] == "$.lookup_error"
    # Only SageMaker's "Could not find endpoint" (a ValidationException) creates; every other error is asked
    # again (bounded: review 4 R8, a throttle's Cause may not name ThrottlingException), then fails without
    # touching the endpoint.
    classify = states[S.lookup_error(S.FIND_ENDPOINT)]
    not_found = [c for c in classify["Choices"] if c.get("StringMatches") == "*Could not find endpoint*"]
    assert not_found and not_found[0]["Next"] == S.SIZE_NEW
    assert states[S.SIZE_NEW]["Parameters"] == {"instance_count": cloud.config.serving.instance_count, "update": False}
    assert states[S.SIZE_NEW]["Next"] == S.CREATE_CONFIG
    assert classify["Choices"].index(not_found[0]) < len(classify["Choices"]) - 1
    (retry,) = [c for c in classify["Choices"] if "NumericLessThan" in c]
    assert retry == {"Variable": retry["Variable"], "NumericLessThan": LOOKUP_RETRIES, "Next": retry["Next"]}
    assert classify["Default"] == S.lookup_failed(S.FIND_ENDPOINT)
    assert states[classify["Default"]]["Type"] == "Fail"
    assert find["Next"] == S.ENDPOINT_STATE
    choices = {c.get("StringEquals"): c["Next"] for c in states[S.ENDPOINT_STATE]["Choices"] if "StringEquals" in c}
    # An update's new fleet is sized from the live one: no fewer than CurrentInstanceCount (review 3 N1).
    assert choices["InService"] == S.SIZE_UPDATE
    live = "$.existing.ProductionVariants[0].CurrentInstanceCount"
    (present,) = states[S.SIZE_UPDATE]["Choices"]
    assert present == {"Variable": live, "IsPresent": True, "Next": S.LIVE_COUNT}
    assert states[S.LIVE_COUNT]["Next"] == S.LIVE_LARGER
    (bigger,) = states[S.LIVE_LARGER]["Choices"]
    assert bigger == {"Variable": "$.live_fleet.instance_count",
                      "NumericGreaterThan": cloud.config.serving.instance_count, "Next": S.SIZE_LIVE}
    assert states[S.SIZE_LIVE]["Parameters"] == {"instance_count.$": "$.live_fleet.instance_count", "update": True}
    for choice in (S.SIZE_UPDATE, S.LIVE_LARGER):
        assert states[states[choice]["Default"]]["Parameters"] == {
            "instance_count": cloud.config.serving.instance_count, "update": True}
    assert states[S.CREATE_CONFIG]["Parameters"]["ProductionVariants"][0]["InitialInstanceCount.$"] == \
        "$.fleet.instance_count"
    # Then the variant leaves Application Auto Scaling only when its instance type changes (or is unknown);
    # "not registered" goes on.
    choose = states[S.CREATE_OR_UPDATE]
    assert [c["Next"] for c in choose["Choices"]] == [S.DESCRIBE_LIVE_CONFIG, S.DEREGISTER_SCALING]
    assert choose["Default"] == S.CREATE_ENDPOINT
    describe = states[S.DESCRIBE_LIVE_CONFIG]
    assert describe["Parameters"] == {"EndpointConfigName.$": "$.existing.EndpointConfigName"}
    assert describe["Catch"][0]["Next"] == S.DEREGISTER_SCALING and describe["Next"] == S.LIVE_VARIANT_KNOWN
    assert states[S.LIVE_VARIANT_KNOWN]["Choices"][0]["Next"] == S.LIVE_VARIANT
    assert states[S.LIVE_VARIANT_KNOWN]["Default"] == S.DEREGISTER_SCALING
    same = states[S.TYPE_CHANGES]
    assert same["Choices"][0]["Next"] == S.UPDATE_ENDPOINT and same["Default"] == S.DEREGISTER_SCALING
    assert {"Variable": "$.live_variant.instance_type",
            "StringEquals": cloud.config.serving.instance_type} in same["Choices"][0]["And"]
    assert states[S.DEREGISTER_SCALING]["Next"] == S.UPDATE_ENDPOINT
    (catch,) = states[S.DEREGISTER_SCALING]["Catch"]
    assert catch["Next"] == S.NOT_REGISTERED and states[S.NOT_REGISTERED]["Choices"][0]["Next"] == S.UPDATE_ENDPOINT
    assert states[S.NOT_REGISTERED]["Default"] == S.DEPLOY_FAILED
    assert states[S.ENDPOINT_STATE]["Default"] == S.COUNT_SETTLE
    for name in (S.CREATE_ENDPOINT, S.UPDATE_ENDPOINT):
        assert states[name]["Next"] == S.WAIT_DEPLOY
        assert states[name]["Parameters"]["EndpointName"] == cloud.config.endpoint_name
    assert states[S.WAIT_DEPLOY]["Next"] == S.DESCRIBE_ENDPOINT
    done = states[S.DEPLOY_DONE]
    first = done["Choices"][0]
    assert first["Next"] == (S.REGISTER_SCALING if cloud.config.serving.scales else S.DEPLOYED)
    assert {"Variable": "$.endpoint.EndpointConfigName", "StringEqualsPath": "$.names.endpoint_config"} in first["And"]
    assert done["Choices"][1]["Next"] == S.RESTORE_SCALING  # a rollback registers the variant again, then fails
    assert states[S.RESTORE_SCALING]["Next"] == S.RESTORE_POLICY and states[S.RESTORE_POLICY]["Next"] == S.ROLLED_BACK
    assert done["Default"] == S.WAIT_DEPLOY


def _cycles(states: dict) -> list[list[str]]:
    """Every elementary cycle of the state graph (small graph: a DFS per start is enough)."""
    out: list[list[str]] = []
    names = sorted(states)
    for start in names:
        stack = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for nxt in _targets(states[node]):
                if nxt == start:
                    out.append(path)
                elif nxt not in path and names.index(nxt) > names.index(start):
                    stack.append((nxt, [*path, nxt]))
    return out


def _variables(condition: dict) -> set[str]:
    found = {condition["Variable"]} if "Variable" in condition else set()
    for key in ("And", "Or"):
        for c in condition.get(key, []):
            found |= _variables(c)
    if "Not" in condition:
        found |= _variables(condition["Not"])
    return found


def test_every_loop_is_bounded_by_a_counter(any_synth):
    """Rules everywhere: each cycle passes a Pass that adds 1 to $.poll.<k>.count and a Choice that reads that
    counter (to leave the loop at a bound); nothing in the cycle resets it."""
    states = any_synth.definition["States"]
    cycles = _cycles(states)
    assert len(cycles) >= 4  # rule polling, two endpoint lookups, settling, deployment
    for cycle in cycles:
        counters = {states[n]["ResultPath"] for n in cycle if states[n]["Type"] == "Pass"
                    and states[n].get("Parameters", {}).get("count.$", "").startswith("States.MathAdd($.poll.")}
        assert len(counters) == 1, (cycle, counters)
        (counter,) = counters
        read = set().union(*[_variables(c) for n in cycle if states[n]["Type"] == "Choice"
                             for c in states[n]["Choices"]])
        assert f"{counter}.count" in read, (cycle, counter)
        writers = [n for n in cycle if states[n].get("ResultPath", "").startswith(counter)]
        assert len(writers) == 1, (cycle, writers)


def test_every_terminal_endpoint_status_ends_the_deploy_loop(cloud):
    """EndpointStatus values from botocore: InService ends it (deployed or rolled back), the broken ones fail it,
    the busy ones wait (bounded); nothing else exists."""
    import botocore.session

    from infra.pipeline import ENDPOINT_BROKEN, ENDPOINT_BUSY
    from infra.pipeline import IN_PROGRESS as RULES_IN_PROGRESS

    model = botocore.session.get_session().get_service_model("sagemaker")
    assert set(model.shape_for("EndpointStatus").enum) == {"InService", *ENDPOINT_BROKEN, *ENDPOINT_BUSY}
    states = cloud.definition["States"]
    for choice_name, variable in ((S.DEPLOY_DONE, "$.endpoint.EndpointStatus"),
                                  (S.ENDPOINT_STATE, "$.existing.EndpointStatus"),
                                  (S.EXISTING_USABLE, "$.existing.EndpointStatus")):  # before any job (review 4)
        choices = states[choice_name]["Choices"]
        broken = [c for c in choices if {"Variable": variable, "StringEquals": ENDPOINT_BROKEN[0]} in c.get("Or", [])]
        assert broken and states[broken[0]["Next"]]["Type"] == "Fail"
        assert {x["StringEquals"] for x in broken[0]["Or"]} == set(ENDPOINT_BROKEN)
    rule_status = set(model.shape_for("RuleEvaluationStatus").enum)
    assert set(RULES_IN_PROGRESS) < rule_status  # every other value is a verdict and ends the polling


def test_output_shape(cloud):
    output = cloud.definition["States"][S.DEPLOYED]["Parameters"]
    assert set(output) == {
        "run_id.$", "endpoint_name.$", "endpoint_config_name.$", "model_name.$", "training_job_name.$",
        "tuning_job_name.$", "best_training_job_name.$", "best_hyperparameters.$", "objective.$", "test_accuracy.$",
        "health_issues.$", "debugger.$", "rule_verdicts.$", "reports.$", "tuning_status.$", "profiler.$"}
    assert output["tuning_status.$"] == "$.tuning.status" and output["profiler.$"] == "$.run.profiler"
    assert output["training_job_name.$"] == "$.run.training_job" and output["debugger.$"] == "$.run.debugger"
    reports = cloud.definition["States"][S.REPORTS]["Parameters"]
    assert set(reports) == {"model_artifacts.$", "output_data.$", "rule_output.$", "debugger_tensors.$",
                            "profiler_output.$", "profiler_report.$"}
    assert "output/output.tar.gz" in reports["output_data.$"] and "$.run.training_job" in reports["output_data.$"]
    assert cloud.definition["States"][S.DEPLOYED].get("End") is True


def test_state_machine_resource(cloud):
    props = cloud.state_machine["Properties"]
    assert props["StateMachineName"] == cloud.config.state_machine_name
    assert props["TracingConfiguration"] == {"Enabled": True}
    assert props["LoggingConfiguration"]["Level"] == "ALL"
    assert props["LoggingConfiguration"]["IncludeExecutionData"] is True
    assert json.loads(props["DefinitionString"])["TimeoutSeconds"] == 24 * 3600


def test_local_profile_runs_the_same_definition(cloud, local):
    def shape(d):
        return {name: (s["Type"], s.get("Resource")) for name, s in d["States"].items()}
    # Except the staged-weights check: the local profile trains from scratch (no pretrained channel to check).
    weights_check = {S.CHECK_WEIGHTS, S.WEIGHTS_MISSING}
    assert local.config.pretrained_key is None and weights_check <= set(cloud.definition["States"])
    # ... and the gate states of rules that gate only in the cloud (none since 2ee0aea: both profiles gate the same
    # rules, infra/config.py GATE_RULES).
    cloud_only_gates = {S.rule_failed(rule) for rule in set(cloud.config.debugger.active_gate_rules)
                        - set(local.config.debugger.active_gate_rules)}
    assert cloud_only_gates == set()
    assert {k: v for k, v in shape(cloud.definition).items()
            if k not in weights_check | cloud_only_gates} == shape(local.definition)
    waits = {n: s["Seconds"] for n, s in local.definition["States"].items() if s["Type"] == "Wait"}
    assert set(waits.values()) == {1}


def test_moto_parses_the_definition(any_synth):
    """Local mode executes it with moto's ASL interpreter: it must at least parse there (no execution here)."""
    from moto.stepfunctions.parser.asl.parse.asl_parser import AmazonStateLanguageParser

    program, _ = AmazonStateLanguageParser.parse(json.dumps(any_synth.definition))
    assert program is not None


def test_definition_resolver(cloud, variant):
    values = {"Bucket": "local-bucket", "SageMakerRoleArn": "arn:aws:iam::000000000000:role/local"}
    text = definition_module.definition_string(cloud.template, values, region="eu-west-1", account="111122223333")
    assert "${" not in text
    d = json.loads(text)
    tune = d["States"][S.TUNE]["Parameters"]["TrainingJobDefinition"]
    assert tune["RoleArn"] == values["SageMakerRoleArn"]
    assert tune["OutputDataConfig"]["S3OutputPath"] == "s3://local-bucket/tuning/"
    assert tune["AlgorithmSpecification"]["TrainingImage"].startswith("763104351884.dkr.ecr.eu-west-1.")
    assert tune["StaticHyperParameters"]["sagemaker_submit_directory"].startswith(
        "s3://cdk-hnb659fds-assets-111122223333-eu-west-1/")
    subs = definition_module.substitution_values(cloud.template, region="eu-west-1")
    assert subs["Bucket"] == "local-storagebucket5cb7c8ea"  # <stack>-<logical id>, lower case: a legal bucket name
    # A pinned region needs no mapping: images are literal.
    assert "Mappings" not in variant.template
    with pytest.raises(ValueError, match="expected one"):
        definition_module.state_machine_resource({"Resources": {}})


def test_every_deployment_registers_the_variant_for_autoscaling(cloud, variant):
    """Create and blue/green update both reach 'Deployed' through the scaling states (the variant name stays, so a
    second deployment re-registers the same target: idempotent); cdk.json's bounds, target and cool-downs go into
    the requests; a refusal fails the execution; serverless has no scaling states."""
    from infra import sagemaker_requests as req
    from infra.pipeline import S

    states = cloud.definition["States"]
    a = cloud.config.serving.autoscaling
    done = states[S.DEPLOY_DONE]
    assert done["Choices"][0]["Next"] == S.REGISTER_SCALING
    register, policy = states[S.REGISTER_SCALING], states[S.SCALING_POLICY]
    assert register["Next"] == S.SCALING_POLICY and policy["Next"] == S.DEPLOYED
    resource_id = f"endpoint/{cloud.config.endpoint_name}/variant/{req.VARIANT_NAME}"
    assert register["Parameters"] == {
        "ServiceNamespace": "sagemaker", "ResourceId": resource_id,
        "ScalableDimension": "sagemaker:variant:DesiredInstanceCount",
        "MinCapacity": a.min_instances, "MaxCapacity": a.max_instances}
    tracking = policy["Parameters"]["TargetTrackingScalingPolicyConfiguration"]
    assert policy["Parameters"]["ResourceId"] == resource_id and policy["Parameters"]["PolicyType"] == \
        "TargetTrackingScaling"
    assert tracking == {"TargetValue": a.target_invocations_per_instance,
                        "PredefinedMetricSpecification": {
                            "PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"},
                        "ScaleOutCooldown": a.scale_out_cooldown_s, "ScaleInCooldown": a.scale_in_cooldown_s}
    for state in (register, policy):
        assert [c["Next"] for c in state["Catch"]] == [S.SCALING_FAILED]
    # Create and update both wait in the same deploy loop that ends in the scaling states.
    assert states[S.CREATE_ENDPOINT]["Next"] == states[S.UPDATE_ENDPOINT]["Next"] == S.WAIT_DEPLOY
    assert "RetainAllVariantProperties" in states[S.UPDATE_ENDPOINT]["Parameters"]
    assert cloud.config.serving.instance_count >= a.min_instances
    assert not variant.config.serving.scales
    assert S.REGISTER_SCALING not in variant.definition["States"]
    assert variant.definition["States"][S.DEPLOY_DONE]["Choices"][0]["Next"] == S.DEPLOYED


def test_autoscaling_bounds_are_checked_up_front():
    import pytest

    from infra import load_config_for
    from infra.config import ConfigError

    with pytest.raises(ConfigError, match="max_instances"):
        load_config_for({"serving.autoscaling.min_instances": 3, "serving.autoscaling.max_instances": 2})
    with pytest.raises(ConfigError, match="instance_count"):
        load_config_for({"serving.instance_count": 5})
    assert not load_config_for({"serving.autoscaling.enabled": False, "serving.instance_count": 5}).serving.scales


# --- review 3: the rules behind N1-N3, over the whole definition ------------------------------------------------
def _reachable(states: dict, start: str, *, without: set[str]) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        name = todo.pop()
        if name in seen or name in without:
            continue
        seen.add(name)
        todo.extend(_targets(states[name]))
    return seen


def test_no_update_is_reachable_without_sizing_from_the_live_fleet(any_synth):
    """N1's rule: every way into an UpdateEndpoint passes a state that reads the live CurrentInstanceCount (instance
    endpoints), and every way into a DeregisterScalableTarget passes a DescribeEndpointConfig of the live config or a
    Choice that found its name unknown: a same-type update never leaves Application Auto Scaling."""
    d = any_synth.definition
    states = d["States"]
    updates = {n for n, s in states.items() if s.get("Resource", "").endswith(":updateEndpoint")}
    assert updates
    if any_synth.config.serving.serverless:
        return
    sizing = {n for n, s in states.items() if "CurrentInstanceCount" in json.dumps(s.get("Choices", []))}
    # What says "update": a Pass that sets $.fleet.update true, reachable only through the sizing Choice ...
    updating = {n for n, s in states.items() if s["Type"] == "Pass" and s.get("ResultPath") == "$.fleet"
                and s["Parameters"].get("update") is True}
    assert sizing and updating and not updating & _reachable(states, d["StartAt"], without=sizing)
    # ... and read by the Choices every way into an UpdateEndpoint passes, whose rules towards it require it.
    deciding = {n for n, s in states.items() if "$.fleet.update" in json.dumps(s.get("Choices", []))}
    assert deciding and not updates & _reachable(states, d["StartAt"], without=deciding)
    for name in deciding:
        for rule in states[name]["Choices"]:
            if updates & _reachable(states, rule["Next"], without=set()):
                tests = [{k: v for k, v in c.items() if k != "Next"} for c in (rule, *rule.get("And", []))]
                assert {"Variable": "$.fleet.update", "BooleanEquals": True} in tests, name
        assert not updates & _reachable(states, states[name]["Default"], without=set())
    deregister = {n for n, s in states.items() if s.get("Resource", "").endswith(":deregisterScalableTarget")}
    if not any_synth.config.serving.scales:
        assert not deregister
        return
    # Deregistering follows the live config's description, or the Choice that found its name unknown.
    describe = {n for n, s in states.items() if s.get("Resource", "").endswith(":describeEndpointConfig")}
    assert describe and not deregister & _reachable(states, d["StartAt"], without=describe | {S.CREATE_OR_UPDATE})
    (unknown,) = [c for c in states[S.CREATE_OR_UPDATE]["Choices"] if c["Next"] in deregister]
    assert states[S.CREATE_OR_UPDATE]["Choices"].index(unknown) > 0  # after the rule that describes a known one


def _matches(condition: dict, values: dict) -> bool:
    """The Choice rule's verdict for an input whose status variables hold `values` (other variables: absent)."""
    if "And" in condition:
        return all(_matches(c, values) for c in condition["And"])
    if "Or" in condition:
        return any(_matches(c, values) for c in condition["Or"])
    if "Not" in condition:
        return not _matches(condition["Not"], values)
    var = condition["Variable"]
    if "IsPresent" in condition:
        return (var in values) == condition["IsPresent"]
    if "StringEquals" in condition:
        return values.get(var) == condition["StringEquals"]
    return False


def test_every_running_job_status_a_choice_reads_stops_the_job_first(any_synth):
    """N2's rule: a Choice on a job's *JobStatus (botocore's enum) sends each running value (InProgress, Stopping)
    to a Stop* task, and no ended value there."""
    import botocore.session

    model = botocore.session.get_session().get_service_model("sagemaker")
    states = any_synth.definition["States"]
    checked = 0
    for name, state in states.items():
        if state["Type"] != "Choice":
            continue
        variables = {v for c in state["Choices"] for v in _variables(c) if v.endswith("JobStatus")}
        for var in variables:
            enum = model.shape_for(var.rsplit(".", 1)[1]).enum
            for value in enum:
                rule = next((c for c in state["Choices"] if _matches(c, {var: value})), None)
                target = states[rule["Next"] if rule else state["Default"]]
                stops = ":stop" in target.get("Resource", "")
                assert stops == (value in ("InProgress", "Stopping")), (name, value, rule)
                checked += 1
    assert checked >= 7  # "Ended tuning job has a best trial?" reads HyperParameterTuningJobStatus


def test_only_the_debugger_list_decides_that_debugger_ran_no_rules(any_synth):
    """N3's rule: every Choice rule that records Debugger as unavailable after a job ran reads the Debugger rule list
    only (when Debugger rules are configured), never the profiler's."""
    states = any_synth.definition["States"]
    if not any_synth.config.debugger.active_rules:
        assert S.NO_RULE_STATUSES not in states
        return
    rules = [c for s in states.values() if s["Type"] == "Choice" for c in s["Choices"]
             if c["Next"] == S.NO_RULE_STATUSES]
    assert rules
    for rule in rules:
        assert {v.split("[")[0] for v in _variables(rule)} == {"$.rules.job.DebugRuleEvaluationStatuses"}


def test_every_failed_training_task_stops_its_job_before_training_failed(cloud, variant):
    """Review 4 R9: a training task can fail while its job runs on (a create re-sent after a lost answer gets
    ResourceInUse): every path from a training task to "Training failed" passes "Stop training job", which names
    the run's job and fails with the task's own error whatever the stop answers."""
    for stack in (cloud, variant):
        states = stack.definition["States"]
        trainers = [n for n, st in states.items()
                    if st.get("Resource", "").startswith("arn:aws:states:::sagemaker:createTrainingJob")]
        assert trainers
        for name in trainers:
            assert S.TRAINING_FAILED not in [c["Next"] for c in states[name].get("Catch", [])], name
            assert any(c["Next"] == S.STOP_TRAINING for c in states[name]["Catch"]), name
        for choice in (st for st in states.values() if st["Type"] == "Choice"):
            targets = [c["Next"] for c in choice.get("Choices", [])] + [choice.get("Default")]
            if S.DEBUGGER_UNAVAILABLE in targets:  # the refusal's other outcomes
                assert S.TRAINING_FAILED not in targets
        stop = states[S.STOP_TRAINING]
        assert stop["Resource"] == "arn:aws:states:::aws-sdk:sagemaker:stopTrainingJob"
        assert stop["Parameters"] == {"TrainingJobName.$": "$.run.training_job"}
        assert stop["ResultPath"] == "$.training_stop" and stop["Next"] == S.TRAINING_FAILED
        (catch,) = stop["Catch"]
        assert catch == {"ErrorEquals": ["States.ALL"], "ResultPath": "$.stop_error", "Next": S.TRAINING_FAILED}
