"""The state machine: shape, names, gate, deploy loop, and that local mode can run the very same definition."""

from __future__ import annotations

import itertools
import json
import re

import pytest

from infra import definition as definition_module
from infra import sagemaker_requests as req
from infra.pipeline import S
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
    chain = [S.PREPARE, S.APPLY_INPUT, S.NAME, S.CHECK_INPUT]
    for a, b in itertools.pairwise(chain):
        assert states[a]["Next"] == b
    assert states[S.CHECK_INPUT]["Default"] == S.TUNE
    assert states[S.TUNE]["Next"] == S.PREPARE_TRAINING
    assert states[S.PREPARE_TRAINING]["Next"] == S.TRAIN
    assert states[S.TRAIN]["Next"] == S.DESCRIBE_TRAINING
    assert states[S.VERDICTS]["Next"] == S.REPORTS
    assert states[S.REPORTS]["Next"] == S.GATE
    assert states[S.GATE]["Default"] == S.CREATE_MODEL
    assert states[S.CREATE_MODEL]["Next"] == S.CREATE_CONFIG
    assert states[S.CREATE_CONFIG]["Next"] == S.FIND_ENDPOINT


def test_names_derive_from_one_run_id_per_execution(cloud):
    states = cloud.definition["States"]
    defaults = states[S.PREPARE]["Parameters"]["defaults"]
    assert defaults["run_id.$"] == "States.ArrayGetItem(States.StringSplit(States.UUID(), '-'), 4)"
    assert states[S.APPLY_INPUT]["Parameters"] == {"args.$": "States.JsonMerge($.defaults, $.input, false)"}
    names = states[S.NAME]["Parameters"]["names"]
    prefix = cloud.config.prefix
    for key in ("tuning_job", "training_job", "model", "endpoint_config"):
        assert names[f"{key}.$"] == f"States.Format('{prefix}-{{}}', $.args.run_id)"
    assert names["endpoint"] == cloud.config.endpoint_name
    tags = states[S.TUNE]["Parameters"]["Tags"]
    assert {"Key": "sfn-execution", "Value.$": "$$.Execution.Name"} in tags


def test_input_is_checked_against_the_data_prefix(cloud):
    choice = cloud.definition["States"][S.CHECK_INPUT]["Choices"]
    bucket = "imageclassifier-storagebucket-1a2b3c4d5e6f"
    assert choice[0]["Next"] == S.INVALID_INPUT
    rules = choice[0]["Not"]["Or"]
    assert {"Variable": "$.args.dataset", "StringEquals": f"s3://{bucket}/data/"} in rules
    assert {"Variable": "$.args.dataset", "StringMatches": f"s3://{bucket}/data/*/"} in rules
    assert choice[1] == {"Variable": "$.args.warm_start_parent", "IsPresent": True, "Next": S.TUNE_WARM}
    warm = cloud.definition["States"][S.TUNE_WARM]["Parameters"]["WarmStartConfig"]
    assert warm["ParentHyperParameterTuningJobs"] == [{"HyperParameterTuningJobName.$": "$.args.warm_start_parent"}]


def test_tuning_result_is_trimmed(cloud):
    tune = cloud.definition["States"][S.TUNE]
    assert tune["ResultPath"] == "$.tuning"
    assert set(tune["ResultSelector"]) == {"job_name.$", "best_training_job.$", "hyperparameters.$", "objective.$"}
    assert tune["ResultSelector"]["hyperparameters.$"] == "$.BestTrainingJob.TunedHyperParameters"


def test_rule_polling_waits_for_every_verdict(cloud, local):
    for synth in (cloud, local):
        states = synth.definition["States"]
        describe = states[S.DESCRIBE_TRAINING]
        assert describe["Resource"] == "arn:aws:states:::aws-sdk:sagemaker:describeTrainingJob"
        assert describe["ResultSelector"]["debug.$"] == "$.DebugRuleEvaluationStatuses[*].RuleEvaluationStatus"
        progress = states[S.RULE_PROGRESS]["Parameters"]
        assert progress["debug_inprogress.$"] == "States.ArrayContains($.rules.debug, 'InProgress')"
        assert progress["profiler_inprogress.$"] == "States.ArrayContains($.rules.profiler, 'InProgress')"
        done = states[S.RULES_DONE]
        assert {c["Next"] for c in done["Choices"]} == {S.RULES_TIMED_OUT, S.WAIT_RULES}
        assert done["Default"] == S.VERDICTS
        assert states[S.WAIT_RULES]["Next"] == S.DESCRIBE_TRAINING
        assert states[S.WAIT_RULES]["Seconds"] == synth.config.debugger.poll_s
    assert local.definition["States"][S.WAIT_RULES]["Seconds"] == 1


def test_gate_names_the_failing_rule_or_metric(cloud):
    states = cloud.definition["States"]
    gate = states[S.GATE]["Choices"]
    targets = [c["Next"] for c in gate]
    for rule in cloud.config.debugger.gate_rules:
        fail = states[S.rule_failed(rule)]
        assert fail["Type"] == "Fail" and fail["Error"] == "GateFailed" and rule in fail["Cause"]
        assert S.rule_failed(rule) in targets
    assert targets[0] == S.METRICS_MISSING
    assert targets[-2:] == [S.HEALTH_FAILED, S.ACCURACY_LOW]
    assert gate[-2] == {"Variable": f"$.training.metrics.{contract.HEALTH_ISSUES}[0]", "NumericGreaterThan": 0,
                        "Next": S.HEALTH_FAILED}
    assert gate[-1] == {"Variable": f"$.training.metrics.{contract.TEST_ACCURACY}[0]",
                        "NumericLessThanPath": "$.args.min_test_accuracy", "Next": S.ACCURACY_LOW}
    assert "States.Format(" in states[S.ACCURACY_LOW]["CausePath"]
    metrics = states[S.TRAIN]["ResultSelector"]["metrics"]
    assert metrics == {f"{m}.$": f"$.FinalMetricDataList[?(@.MetricName == '{m}')].Value"
                       for m in (contract.TEST_ACCURACY, contract.HEALTH_ISSUES)}
    # Profiler rules inform, they do not block (by default).
    assert not any("ProfilerReport" in t or "LowGPUUtilization" in t for t in targets)


def test_gate_without_debugger_uses_the_scripts_health_checks(variant):
    states = variant.definition["States"]
    assert S.DESCRIBE_TRAINING not in states and S.RULES_DONE not in states
    assert states[S.TRAIN]["Next"] == S.REPORTS
    targets = [c["Next"] for c in states[S.GATE]["Choices"]]
    assert targets == [S.METRICS_MISSING, S.HEALTH_FAILED, S.ACCURACY_LOW]
    assert states[S.DEPLOYED]["Parameters"]["rule_verdicts"] == {}


def test_failures_never_touch_the_endpoint(cloud):
    states = cloud.definition["States"]
    deploying = {S.CREATE_ENDPOINT, S.UPDATE_ENDPOINT}
    for name in (S.TUNE, S.TUNE_WARM, S.TRAIN, S.DESCRIBE_TRAINING):
        (catch,) = states[name]["Catch"]
        assert catch["ErrorEquals"] == ["States.ALL"]
        assert states[catch["Next"]]["Type"] == "Fail"
    # From the gate, every failing branch is a Fail state; only the default goes on to deploy.
    for choice in states[S.GATE]["Choices"]:
        assert states[choice["Next"]]["Type"] == "Fail"
        assert choice["Next"] not in deploying


def test_create_or_update_the_stable_endpoint(cloud):
    states = cloud.definition["States"]
    find = states[S.FIND_ENDPOINT]
    assert find["Resource"] == "arn:aws:states:::aws-sdk:sagemaker:describeEndpoint"
    (catch,) = find["Catch"]
    assert catch["Next"] == S.CREATE_ENDPOINT
    assert set(catch["ErrorEquals"]) == {"SageMaker.AmazonSageMakerException", "States.TaskFailed"}
    assert find["Next"] == S.ENDPOINT_STATE
    choices = {c.get("StringEquals"): c["Next"] for c in states[S.ENDPOINT_STATE]["Choices"] if "StringEquals" in c}
    assert choices["InService"] == S.UPDATE_ENDPOINT
    assert states[S.ENDPOINT_STATE]["Default"] == S.WAIT_SETTLE
    for name in (S.CREATE_ENDPOINT, S.UPDATE_ENDPOINT):
        assert states[name]["Next"] == S.WAIT_DEPLOY
        assert states[name]["Parameters"]["EndpointName"] == cloud.config.endpoint_name
    assert states[S.WAIT_DEPLOY]["Next"] == S.DESCRIBE_ENDPOINT
    done = states[S.DEPLOY_DONE]
    first = done["Choices"][0]
    assert first["Next"] == S.DEPLOYED
    assert {"Variable": "$.endpoint.config", "StringEqualsPath": "$.names.endpoint_config"} in first["And"]
    assert done["Choices"][1]["Next"] == S.ROLLED_BACK
    assert done["Default"] == S.WAIT_DEPLOY


def test_output_shape(cloud):
    output = cloud.definition["States"][S.DEPLOYED]["Parameters"]
    assert set(output) == {
        "endpoint_name.$", "endpoint_config_name.$", "model_name.$", "training_job_name.$", "tuning_job_name.$",
        "best_training_job_name.$", "best_hyperparameters.$", "objective.$", "test_accuracy.$", "health_issues.$",
        "rule_verdicts.$", "reports.$"}
    reports = cloud.definition["States"][S.REPORTS]["Parameters"]
    assert set(reports) == {"model_artifacts.$", "output_data.$", "rule_output.$", "debugger_tensors.$",
                            "profiler_output.$", "profiler_report.$"}
    assert "output/output.tar.gz" in reports["output_data.$"]
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
    assert shape(cloud.definition) == shape(local.definition)
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
    assert subs["Bucket"] == "storagebucket5cb7c8ea" or subs["Bucket"].startswith("storagebucket")
    # A pinned region needs no mapping: images are literal.
    assert "Mappings" not in variant.template
    with pytest.raises(ValueError, match="expected one"):
        definition_module.state_machine_resource({"Resources": {}})
