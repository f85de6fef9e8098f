"""The synthesized definition, executed by the local interpreter (moto's) against a scripted SageMaker: each
branch AWS can take (refusals, throttling, absent optional members, a new account without Debugger) ends where
it should, without training anything. The scripted answers follow botocore's shapes and SageMaker's messages."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from typing import Any

import pytest

from infra.config import ConfigError, validate_input
from infra.pipeline import LOOKUP_RETRIES, S
from local.sagemaker import SageMakerError
from local.sagemaker.service import DEBUGGER_REFUSED
from ml import contract
from tests.support.scratch import module_scratch
from tests.support.scripted import (
    ACCOUNT_ARN,
    Endpoint,
    ScriptedSageMaker,
    endpoint_missing,
    full_run_sagemaker,
    run_scripted,
    scripted,
    scripted_trainer,
    training_description,
    validating,
)

logging.getLogger("moto").setLevel(logging.CRITICAL)
def _state(definition: dict, *, debugger: str = "on") -> dict:
    """The execution state as it stands after tuning (what "Prepare training" reads)."""
    run_id = "0123456789ab"
    base = f"imgclf-{run_id}"
    return {
        "args": {"dataset": "s3://bucket/data/", "max_jobs": 2, "max_parallel_jobs": 1, "min_test_accuracy": 0.5,
                 "warm_start_parent": ""},
        "names": {"run_id": run_id, "tuning_job": base, "training_job": base, "training_job_no_debugger": f"{base}-nd",
                  "model": base, "endpoint_config": base, "endpoint": "imgclf-endpoint"},
        "run": {"training_job": base, "debugger": {"status": debugger, "reason": ""}, "profiler": "on"},
        "poll": {k: {"count": 0} for k in ("rules", "settle", "deploy", "existing", "find")},
        "verdicts": {},
        "tuning": {"job_name": base, "status": "Completed", "best_training_job": f"{base}-001-abc",
                   "objective": {"MetricName": "x", "Value": 0.9},
                   "hyperparameters": {contract.LR: "0.001", contract.BATCH_SIZE: "64", contract.EPOCHS: "2"}},
        "hyperparameters": definition["States"][S.PREPARE_TRAINING]["Parameters"],
    }


def _state_before_tuning(definition: dict) -> dict:
    """The execution state as "Tune hyperparameters" finds it (no tuning results yet)."""
    state = _state(definition)
    del state["tuning"], state["hyperparameters"]
    return state


def _run(definition: dict, start: str, state: dict, sm) -> Any:
    d = copy.deepcopy(definition)
    d["StartAt"] = start
    return run_scripted(d, state, sm, timeout=120)


# --- issue 11 item 1: Debugger closed to new customers ---------------------------------------------------------
def test_a_new_account_without_debugger_still_deploys(local):
    definition = local.definition
    sm = scripted(Endpoint(), **scripted_trainer(debugger_available=False))
    result = _run(definition, S.PREPARE_TRAINING, _state(definition), sm)
    assert result.succeeded, (result.failed_state, result.cause)
    from infra.pipeline import RETRY_ATTEMPTS

    *refused, created = sm.ops("CreateTrainingJob")  # the refusal is retried like any refusal, then falls back
    assert len(refused) == RETRY_ATTEMPTS + 1 and all("DebugHookConfig" in r for r in refused)
    assert "DebugHookConfig" not in created
    assert created["TrainingJobName"].endswith("-nd") and created["HyperParameters"]["debugger"] == "off"
    assert created["ProfilerConfig"] == {"DisableProfiler": True}
    out = result.output
    assert out["debugger"]["status"] == "unavailable" and "Debugger" in out["debugger"]["reason"]
    assert out["training_job_name"] == created["TrainingJobName"] and out["rule_verdicts"] == {}
    assert "rule_output" not in out["reports"] and out["test_accuracy"] == 0.93
    assert S.DEBUGGER_UNAVAILABLE in [r.name for r in result.states()]


def test_an_account_with_debugger_gets_rules_and_verdicts(local):
    definition = local.definition
    sm = scripted(Endpoint(), **scripted_trainer(debugger_available=True))
    result = _run(definition, S.PREPARE_TRAINING, _state(definition), sm)
    assert result.succeeded, (result.failed_state, result.cause)
    assert len(sm.ops("CreateTrainingJob")) == 1
    out = result.output
    assert out["debugger"] == {"status": "on", "reason": ""}
    assert set(out["rule_verdicts"]) >= {"VanishingGradient", "ProfilerReport"}
    assert "profiler_report" in out["reports"]


def _refusing(*errors: SageMakerError, debugger_available: bool = True):
    """A CreateTrainingJob that refuses with `errors` first (one per call), then behaves as trainer."""
    trainer = scripted_trainer(debugger_available)
    pending = list(errors)

    def create(p: dict) -> dict:
        if pending:
            raise pending.pop(0)
        return trainer["CreateTrainingJob"](p)
    return {**trainer, "CreateTrainingJob": create}


def test_throttling_is_retried_and_keeps_debugger(local):
    """Review item 2: a throttled CreateTrainingJob is tried again; Debugger is not dropped for it."""
    definition = local.definition
    sm = scripted(Endpoint(), **_refusing(_throttled()))
    result = _run(definition, S.PREPARE_TRAINING, _state(definition), sm)
    assert result.succeeded, (result.failed_state, result.cause)
    created = sm.ops("CreateTrainingJob")
    assert len(created) == 2 and all("DebugHookConfig" in c for c in created)
    assert result.output["debugger"] == {"status": "on", "reason": ""}
    assert S.DEBUGGER_UNAVAILABLE not in [r.name for r in result.states()]


@pytest.mark.parametrize("error", [
    SageMakerError("ThrottlingException", "Rate exceeded"),
    SageMakerError("ResourceLimitExceeded", "The account-level service limit 'ml.g4dn.xlarge for training job "
                                            "usage' is 0 Instances, with current utilization of 0 Instances"),
])
def test_a_refusal_that_does_not_name_debugger_never_falls_back(local, error):
    """Throttling that outlives the retries, or a quota: "Training failed", never a silent run without Debugger."""
    from infra.pipeline import RETRY_ATTEMPTS

    definition = local.definition
    sm = scripted(Endpoint(), **_refusing(*[error] * (RETRY_ATTEMPTS + 1)))
    result = _run(definition, S.PREPARE_TRAINING, _state(definition), sm)
    assert result.failed_state == S.TRAINING_FAILED and result.error == "TrainingFailed", result.failed_state
    assert error.message in result.cause
    created = sm.ops("CreateTrainingJob")
    assert len(created) == RETRY_ATTEMPTS + 1 and all("DebugHookConfig" in c for c in created)
    assert S.DEBUGGER_UNAVAILABLE not in [r.name for r in result.states()]


def test_the_stand_ins_debugger_refusal_is_one_the_choice_recognises(local):
    """LOCAL_SAGEMAKER_DEBUGGER=unavailable (make demo) must take the fallback: its message names Debugger."""
    from fnmatch import fnmatchcase

    choice = local.definition["States"][S.DEBUGGER_REFUSED]["Choices"][0]["And"][1]["Or"]
    message = DEBUGGER_REFUSED.format(members="DebugHookConfig")
    assert any(fnmatchcase(message, c["StringMatches"]) for c in choice)
    assert not any(fnmatchcase("Rate exceeded (Service: AmazonSageMaker; Error Code: ThrottlingException)",
                               c["StringMatches"]) for c in choice)


def test_a_training_job_that_fails_is_not_retried_without_debugger(local):
    definition = local.definition
    trainer = scripted_trainer(debugger_available=True)
    sm = scripted(Endpoint(), CreateTrainingJob=trainer["CreateTrainingJob"],
                  DescribeTrainingJob=lambda p: {**training_description(p["TrainingJobName"]),
                                                 "TrainingJobStatus": "Failed",
                                                 "FailureReason": "AlgorithmError: out of memory"})
    result = _run(definition, S.PREPARE_TRAINING, _state(definition), sm)
    assert result.failed_state == S.TRAINING_FAILED and "out of memory" in result.cause
    assert len(sm.ops("CreateTrainingJob")) == 1


# --- review item 3: optional rule-status members end cleanly, never in States.Runtime ----------------------------
@pytest.mark.parametrize("lists", ["absent", "empty"])
def test_a_debugger_job_without_rule_statuses_deploys_with_debugger_unavailable(local, lists):
    """Review 2 item 10: SageMaker accepted the Debugger job but lists no rule statuses: recorded as Debugger
    unavailable (with the reason), and the script's health checks and accuracy gate decide the deploy."""
    definition = local.definition
    trainer = scripted_trainer(debugger_available=True)

    def describe(p: dict) -> dict:
        out = trainer["DescribeTrainingJob"](p)
        if lists == "absent":
            del out["DebugRuleEvaluationStatuses"], out["ProfilerRuleEvaluationStatuses"]
        else:
            out["DebugRuleEvaluationStatuses"] = out["ProfilerRuleEvaluationStatuses"] = []
        return out
    sm = scripted(Endpoint(), CreateTrainingJob=trainer["CreateTrainingJob"], DescribeTrainingJob=describe)
    result = _run(definition, S.PREPARE_TRAINING, _state(definition), sm)
    assert result.succeeded, (result.failed_state, result.error, result.cause)
    debugger = result.output["debugger"]
    assert debugger["status"] == "unavailable" and "no rule statuses" in debugger["reason"]
    assert result.output["rule_verdicts"] == {} and sm.ops("CreateEndpoint")


def test_a_rule_listed_without_a_status_is_waited_for(local):
    definition = local.definition
    trainer = scripted_trainer(debugger_available=True)
    calls = []

    def describe(p: dict) -> dict:
        out = trainer["DescribeTrainingJob"](p)
        calls.append(p)
        if len(calls) <= 2:  # .sync's and the first rule check's answers list a rule without its status
            del out["DebugRuleEvaluationStatuses"][0]["RuleEvaluationStatus"]
        return out
    sm = scripted(Endpoint(), CreateTrainingJob=trainer["CreateTrainingJob"], DescribeTrainingJob=describe)
    result = _run(definition, S.PREPARE_TRAINING, _state(definition), sm)
    assert result.succeeded, (result.failed_state, result.cause)
    assert [r.name for r in result.states()].count(S.WAIT_RULES) >= 1
    assert set(result.output["rule_verdicts"].values()) == {"NoIssuesFound"}


# --- item 4: results from describe calls; absent optional members end cleanly -----------------------------------
@pytest.mark.parametrize("metrics", [None, [], [{"MetricName": contract.TEST_ACCURACY, "Value": 0.9}],
                                     # review 2 item 8: botocore's MetricData has no required members
                                     [{"MetricName": contract.TEST_ACCURACY},
                                      {"MetricName": contract.HEALTH_ISSUES, "Value": 0.0}]])
def test_missing_metrics_fail_the_gate_not_the_interpreter(local, metrics):
    definition = local.definition
    sm = scripted(Endpoint(), **scripted_trainer(debugger_available=False, metrics=metrics))
    result = _run(definition, S.PREPARE_TRAINING, _state(definition), sm)
    assert result.failed_state == S.METRICS_MISSING and result.error == "GateFailed", (result.error, result.cause)
    assert not sm.ops("CreateModel")


@pytest.mark.parametrize("best", [None, {"TrainingJobName": "imgclf-x-001", "TunedHyperParameters": {}}])
def test_tuning_without_a_best_trial_fails_cleanly(local, best):
    definition = local.definition
    described = {"HyperParameterTuningJobName": "imgclf-0123456789ab", "HyperParameterTuningJobStatus": "Completed"}
    if best:
        described["BestTrainingJob"] = best  # without its FinalHyperParameterTuningJobObjectiveMetric
    sm = ScriptedSageMaker(DescribeHyperParameterTuningJob=lambda p: described)
    state = _state_before_tuning(definition)
    result = _run(definition, S.READ_TUNING, state, sm)
    assert result.failed_state == S.NO_BEST and result.error == "TuningFailed", (result.error, result.cause)


def _described_tuning(status: str, best: str | None = "imgclf-best", lr: str = "0.002") -> dict[str, Any]:
    """DescribeHyperParameterTuningJob's answer for the run's tuning job, with a best trial unless best is None."""
    out: dict[str, Any] = {"HyperParameterTuningJobName": "imgclf-0123456789ab",
                           "HyperParameterTuningJobStatus": status}
    if best is not None:
        out["BestTrainingJob"] = {"TrainingJobName": best, "TunedHyperParameters": {contract.LR: lr},
                                  "FinalHyperParameterTuningJobObjectiveMetric": {
                                      "Type": "Maximize", "MetricName": contract.OBJECTIVE_METRIC, "Value": 0.91}}
    return out


# --- review 2 item 9: a tuning job that ends Stopped (its MaxRuntimeInSeconds) still trains its best trial ---------
@pytest.mark.parametrize("best", [True, False])
def test_a_stopped_tuning_job_trains_its_best_trial(local, best):
    definition = local.definition
    described = _described_tuning("Stopped", best="imgclf-best" if best else None)
    sm = ScriptedSageMaker(CreateHyperParameterTuningJob=lambda p: {"HyperParameterTuningJobArn": "arn:x"},
                           DescribeHyperParameterTuningJob=lambda p: described,
                           CreateTrainingJob=lambda p: (_ for _ in ()).throw(
                               SageMakerError("ResourceLimitExceeded", "quota")))
    state = _state_before_tuning(definition)
    result = _run(definition, S.TUNE, state, sm)
    if best:
        (create, *_) = sm.ops("CreateTrainingJob")
        assert create["HyperParameters"][contract.LR] == "0.002"
        assert result.failed_state == S.TRAINING_FAILED
    else:  # no best trial: the tuning task's own error (the .sync job's Stopped description), nothing trained
        assert result.failed_state == S.TUNING_FAILED and "Stopped" in result.cause, result.cause
        assert not sm.ops("CreateTrainingJob")


def test_a_refused_tuning_job_fails_with_its_refusal(local):
    definition = local.definition

    def refuse(p: dict) -> dict:
        raise SageMakerError("ResourceLimitExceeded", "tuning quota")

    def unknown(p: dict) -> dict:
        raise SageMakerError("ResourceNotFound", "no such tuning job")
    sm = ScriptedSageMaker(CreateHyperParameterTuningJob=refuse, DescribeHyperParameterTuningJob=unknown)
    state = _state_before_tuning(definition)
    result = _run(definition, S.TUNE, state, sm)
    assert result.failed_state == S.TUNING_FAILED and "tuning quota" in result.cause, result.cause


def test_best_trial_comes_from_describe_hyper_parameter_tuning_job(local):
    definition = local.definition
    described = _described_tuning("Completed")
    sm = ScriptedSageMaker(DescribeHyperParameterTuningJob=lambda p: described,
                           CreateTrainingJob=lambda p: (_ for _ in ()).throw(
                               SageMakerError("ResourceLimitExceeded", "quota")))
    state = _state_before_tuning(definition)
    result = _run(definition, S.READ_TUNING, state, sm)
    (create, *_) = sm.ops("CreateTrainingJob")
    assert create["HyperParameters"][contract.LR] == "0.002"
    assert result.failed_state == S.TRAINING_FAILED  # the quota refusal ends it: it does not name Debugger
    assert S.DEBUGGER_UNAVAILABLE not in [r.name for r in result.states()]


# --- item 7: only "not found" creates the endpoint; throttling retries; anything else fails ---------------------
def _deploy_state(definition: dict) -> dict:
    state = _state(definition)
    state["training"] = {"job_name": "imgclf-0123456789ab", "model_data": "s3://bucket/model.tar.gz",
                         "metrics": {contract.TEST_ACCURACY: [0.93], contract.HEALTH_ISSUES: [0.0]}}
    state["reports"] = {}
    return state


def _throttled() -> SageMakerError:
    return SageMakerError("ThrottlingException", "Rate exceeded")


def test_find_endpoint_retries_throttling_then_creates_on_not_found(local):
    definition = local.definition
    endpoint = Endpoint(failures=[_throttled(), _throttled()])
    sm = scripted(endpoint)
    result = _run(definition, S.CREATE_MODEL, _deploy_state(definition), sm)
    assert result.succeeded, (result.failed_state, result.cause)
    assert len(sm.ops("CreateEndpoint")) == 1 and not sm.ops("UpdateEndpoint")


def test_a_throttled_deploy_call_is_retried_not_fatal(local):
    """Rule of review item 2 beyond training: CreateModel throttled once still deploys (after the GPU hours)."""
    definition = local.definition
    answers: list[Any] = [_throttled()]

    def create_model(p: dict) -> dict:
        if answers:
            raise answers.pop(0)
        return {"ModelArn": f"{ACCOUNT_ARN}:model/{p['ModelName']}"}
    sm = scripted(Endpoint(), CreateModel=create_model)
    result = _run(definition, S.CREATE_MODEL, _deploy_state(definition), sm)
    assert result.succeeded, (result.failed_state, result.cause)
    assert len(sm.ops("CreateModel")) == 2 and len(sm.ops("CreateEndpoint")) == 1


def test_find_endpoint_updates_an_existing_endpoint(local):
    definition = local.definition
    sm = scripted(Endpoint(exists=True))
    result = _run(definition, S.CREATE_MODEL, _deploy_state(definition), sm)
    assert result.succeeded, (result.failed_state, result.cause)
    assert len(sm.ops("UpdateEndpoint")) == 1 and not sm.ops("CreateEndpoint")


@pytest.mark.parametrize("error", [
    SageMakerError("AccessDeniedException", "User: arn:aws:sts::1:assumed-role/x is not authorized to perform: "
                                            "sagemaker:DescribeEndpoint"),
    SageMakerError("InternalFailure", "We encountered an internal error.", status=500),
])
def test_find_endpoint_never_creates_on_other_errors(local, error):
    """Asked again a bounded number of times (review 4 R8: every error but not-found), then failed with its cause;
    never created or updated."""
    definition = local.definition
    sm = scripted(Endpoint(exists=True, failures=[error] * (LOOKUP_RETRIES + 1)))
    result = _run(definition, S.CREATE_MODEL, _deploy_state(definition), sm)
    assert result.failed_state == S.lookup_failed(S.FIND_ENDPOINT) and result.error == "EndpointLookupFailed"
    assert error.message in result.cause
    assert len(sm.ops("DescribeEndpoint")) == LOOKUP_RETRIES + 1
    assert not sm.ops("CreateEndpoint") and not sm.ops("UpdateEndpoint")


def test_find_endpoint_retries_a_throttle_whose_cause_has_no_error_code(local, monkeypatch):
    """Review 4 R8: the AWS SDK for Java 2.x writes "<message> (Service: SageMaker, Status Code: 400, Request ID:
    ...)", without the error code; whether Step Functions' Cause has it is undocumented. A throttled lookup whose
    Cause is only "Rate exceeded (...)" is still asked again, not failed after the GPU hours."""
    import local.engine as engine

    def sdk_v2_cause(exc, service, separator):
        meta = exc.response["ResponseMetadata"]
        return (f"{exc.message} (Service: {service}, Status Code: {meta['HTTPStatusCode']}, "
                f"Request ID: {meta['RequestId']})")
    monkeypatch.setattr(engine, "_aws_cause", sdk_v2_cause)
    definition = local.definition
    sm = scripted(Endpoint(exists=True, failures=[_throttled(), _throttled()]))
    result = _run(definition, S.CREATE_MODEL, _deploy_state(definition), sm)
    assert result.succeeded, (result.failed_state, result.cause)
    assert len(sm.ops("DescribeEndpoint")) >= 3 and len(sm.ops("UpdateEndpoint")) == 1


def test_find_endpoint_gives_up_after_bounded_throttling(local):
    definition = local.definition
    sm = scripted(Endpoint(failures=[_throttled() for _ in range(LOOKUP_RETRIES + 1)]))
    result = _run(definition, S.CREATE_MODEL, _deploy_state(definition), sm)
    assert result.failed_state == S.lookup_failed(S.FIND_ENDPOINT)
    assert len(sm.ops("DescribeEndpoint")) == LOOKUP_RETRIES + 1 and not sm.ops("CreateEndpoint")


# --- item 9: an instance endpoint cannot become serverless: refused before anything is trained -----------------
def test_switching_an_instance_endpoint_to_serverless_is_refused_before_training(variant, local):
    sm = scripted(Endpoint(exists=True, serverless=False))
    state = _state(variant.definition)
    result = _run(variant.definition, S.CHECK_ENDPOINT, state, sm)
    assert result.failed_state == S.SERVING_MODE_CHANGE and result.error == "ServingModeChangeRefused"
    assert [op for op, _ in sm.calls] == ["DescribeEndpoint"]
    # A serverless endpoint stays serverless (tuning starts), and instance -> instance is the normal update.
    for synth, serverless in ((variant, True), (local, False)):
        sm = scripted(Endpoint(exists=True, serverless=serverless))
        result = _run(synth.definition, S.CHECK_ENDPOINT, _state(synth.definition), sm)
        assert sm.ops("CreateHyperParameterTuningJob"), result.failed_state


# --- review item 5: an autoscaled variant leaves Application Auto Scaling during the update ------------------------
def _with_scaling(run: Callable[[Any], Any], *, registered: bool):
    """Runs `run(aas)` in one moto (where the aws-sdk:applicationautoscaling tasks go), the variant registered as an
    earlier deployment left it, or not."""
    import boto3

    from infra import sagemaker_requests as req
    from local.engine import _Mock

    _Mock.acquire()
    try:
        aas = boto3.client("application-autoscaling", region_name="us-east-1", aws_access_key_id="local",
                           aws_secret_access_key="local")
        if registered:
            import infra
            aas.register_scalable_target(**req.register_scalable_target(infra.load_config_for({"profile": "local"})))
        return run(aas)
    finally:
        _Mock.release()


OTHER_TYPE = "ml.c5.xlarge"  # a live instance type other than the local profile's serving.instance_type


def _denied_config(p: dict) -> dict:
    raise SageMakerError("AccessDeniedException", "not authorized to perform: sagemaker:DescribeEndpointConfig")


@pytest.mark.parametrize(("live", "registered"), [(OTHER_TYPE, True), (OTHER_TYPE, False),
                                                   ("unreadable", True)])
def test_a_type_changing_update_runs_deregistered_then_registers_it_again(local, live, registered):
    """SageMaker refuses an UpdateEndpoint that changes the instance type of a scalable target
    (endpoint-scaling-update.html): the target is gone when UpdateEndpoint runs, and back (with its policy) after.
    A live config that cannot be read takes the same (safe) path."""
    definition = local.definition
    endpoint = Endpoint(exists=True, instance_type=live)
    seen: list[int] = []

    def run(aas):
        def update(p: dict) -> dict:
            seen.append(len(aas.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]))
            return endpoint.deploy(p)
        more: dict[str, Callable[[dict], dict]] = {"DescribeEndpointConfig": _denied_config} \
            if live == "unreadable" else {}
        sm = scripted(endpoint, UpdateEndpoint=update, **more)
        result = _run(definition, S.CREATE_MODEL, _deploy_state(definition), sm)
        return result, aas.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"], sm
    result, targets, sm = _with_scaling(run, registered=registered)
    assert result.succeeded, (result.failed_state, result.cause)
    assert seen == [0] and len(targets) == 1
    assert S.DEREGISTER_SCALING in [r.name for r in result.states()]
    assert [p["EndpointConfigName"] for p in sm.ops("DescribeEndpointConfig")][:1] == ["previous-config"]


def test_a_same_type_update_keeps_its_autoscaling_target(local):
    """Review 3 N1 / issue 16: AWS needs the variant deregistered only when the instance type changes; a model
    update on the same type keeps the target and its policy through the update (and registers them again after:
    idempotent, re-applying cdk.json's bounds)."""
    definition = local.definition
    endpoint = Endpoint(exists=True, instance_type=local.config.serving.instance_type)
    seen: list[int] = []

    def run(aas):
        def update(p: dict) -> dict:
            seen.append(len(aas.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]))
            return endpoint.deploy(p)
        sm = scripted(endpoint, UpdateEndpoint=update)
        result = _run(definition, S.CREATE_MODEL, _deploy_state(definition), sm)
        return result, aas.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
    result, targets = _with_scaling(run, registered=True)
    assert result.succeeded, (result.failed_state, result.cause)
    names = [r.name for r in result.states()]
    assert seen == [1] and len(targets) == 1, (names, seen)
    assert S.DEREGISTER_SCALING not in names and S.DESCRIBE_LIVE_CONFIG in names and S.REGISTER_SCALING in names


@pytest.mark.parametrize("live", [3, 1, None])
def test_an_update_never_starts_a_smaller_fleet_than_serves_now(local, live):
    """Review 3 N1: a variant autoscaling took to 3 instances is updated to a fleet of no fewer than 3 (the new
    config's InitialInstanceCount, which serves after the switch: RetainAllVariantProperties false), and never to
    fewer than serving.instance_count; an answer without CurrentInstanceCount (optional) uses the configured count."""
    definition = local.definition
    configured = local.config.serving.instance_count
    endpoint = Endpoint(exists=True, instances=live or 0)
    if live is None:
        describe = endpoint.describe

        def without_count(p: dict) -> dict:
            out = describe(p)
            out["ProductionVariants"][0].pop("CurrentInstanceCount", None)
            return out
        endpoint.describe = without_count  # type: ignore[method-assign]
    sm = validating(scripted(endpoint))
    result = _run(definition, S.CREATE_MODEL, _deploy_state(definition), sm)
    assert result.succeeded, (result.failed_state, result.cause)
    (config,) = sm.ops("CreateEndpointConfig")
    assert config["ProductionVariants"][0]["InitialInstanceCount"] == max(live or 0, configured)
    (update,) = sm.ops("UpdateEndpoint")
    assert update["RetainAllVariantProperties"] is False  # the sized config's count, weight and capture apply
    # A new endpoint gets the configured count.
    sm = validating(scripted(Endpoint()))
    assert _run(definition, S.CREATE_MODEL, _deploy_state(definition), sm).succeeded
    assert sm.ops("CreateEndpointConfig")[0]["ProductionVariants"][0]["InitialInstanceCount"] == configured


def test_a_rolled_back_update_gets_its_autoscaling_back(local):
    definition = local.definition
    endpoint = Endpoint(exists=True)

    def run(aas):
        sm = scripted(endpoint, UpdateEndpoint=lambda p: {"EndpointArn": f"{ACCOUNT_ARN}:endpoint/x"})  # rolls back
        result = _run(definition, S.CREATE_MODEL, _deploy_state(definition), sm)
        return result, aas.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
    result, targets = _with_scaling(run, registered=True)
    assert result.failed_state == S.ROLLED_BACK and result.error == "DeploymentRolledBack"
    assert len(targets) == 1 and S.RESTORE_SCALING in [r.name for r in result.states()]


# --- review 2 item 1: a failed update gives the live fleet its autoscaling back, then fails with its own error ------
def _refused(p: dict) -> dict:
    # botocore: UpdateEndpoint's only modelled error; a blue/green update runs two fleets (BlueGreenUpdatePolicy)
    raise SageMakerError("ResourceLimitExceeded", "The account-level service limit 'ml.m5.large for endpoint usage' "
                                                  "is 1 Instances")


@pytest.mark.parametrize("how", ["update refused", "describe fails"])
def test_a_failed_update_gets_its_autoscaling_back(local, how):
    definition = local.definition
    endpoint = Endpoint(exists=True, instance_type=OTHER_TYPE)  # the update deregistered the target

    def run(aas):
        if how == "update refused":
            sm = scripted(endpoint, UpdateEndpoint=_refused)
        else:  # the endpoint is found, updated, then every DescribeEndpoint is refused
            def update(p: dict) -> dict:
                endpoint.failures = [SageMakerError("AccessDeniedException", "denied")] * 10
                return endpoint.deploy(p)
            sm = scripted(endpoint, UpdateEndpoint=update)
        result = _run(definition, S.CREATE_MODEL, _deploy_state(definition), sm)
        return result, aas.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
    result, targets = _with_scaling(run, registered=True)
    assert result.failed_state == S.DEPLOY_FAILED and result.error == "DeploymentFailed", (result.error, result.cause)
    expected = "ResourceLimitExceeded" if how == "update refused" else "AccessDenied"
    assert expected in result.cause  # the original error, not the restore's
    assert len(targets) == 1 and S.RESTORE_SCALING_FAILED in [r.name for r in result.states()]


def test_a_deployment_timeout_gets_its_autoscaling_back(local):
    definition = local.definition
    endpoint = Endpoint(exists=True, instance_type=OTHER_TYPE)  # the update deregistered the target

    def run(aas):
        def update(p: dict) -> dict:
            endpoint.config, endpoint.status = p["EndpointConfigName"], "Updating"  # never finishes
            return {"EndpointArn": f"{ACCOUNT_ARN}:endpoint/x"}
        sm = scripted(endpoint, UpdateEndpoint=update)
        state = _deploy_state(definition)
        state["poll"]["deploy"]["count"] = 10**6  # the last check: the next "Updating" is the timeout
        result = _run(definition, S.CREATE_MODEL, state, sm)
        return result, aas.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
    result, targets = _with_scaling(run, registered=True)
    assert result.failed_state == S.DEPLOY_TIMED_OUT and result.error == "DeploymentTimedOut"
    assert len(targets) == 1 and S.RESTORE_SCALING_TIMEOUT in [r.name for r in result.states()]


def test_a_failed_create_restores_nothing(local):
    definition = local.definition

    def run(aas):
        sm = scripted(Endpoint(), CreateEndpoint=_refused)
        return _run(definition, S.CREATE_MODEL, _deploy_state(definition), sm), None
    result, _ = _with_scaling(run, registered=False)
    assert result.failed_state == S.DEPLOY_FAILED
    assert not {S.RESTORE_SCALING_FAILED, S.RESTORE_SCALING} & {r.name for r in result.states()}


# --- review item 4: an endpoint no update can start from is refused before any job, in both serving modes ---------
@pytest.mark.parametrize("status", ["Failed", "OutOfService", "UpdateRollbackFailed"])
def test_an_unusable_endpoint_is_refused_before_tuning(local, variant, status):
    for synth, serverless in ((local, False), (variant, True)):
        sm = scripted(Endpoint(exists=True, serverless=serverless, status=status))
        result = _run(synth.definition, S.CHECK_ENDPOINT, _state(synth.definition), sm)
        assert result.failed_state == S.ENDPOINT_UNUSABLE and result.error == "EndpointUnusable", result.failed_state
        assert status in result.cause and "delete-endpoint" in result.cause
        assert [op for op, _ in sm.calls] == ["DescribeEndpoint"]


# --- rules everywhere: "Check input" validates every key, as infra.config.validate_input does --------------------
INVALID_INPUTS = [
    ({"max_jobz": 3}, "keys"),
    ({"dataset": "s3://other-bucket/data/"}, "dataset"),
    ({"dataset": "s3://bucket/data/no-slash"}, "dataset"),
    ({"dataset": 5}, "dataset"),
    ({"max_jobs": 0}, "max_jobs"),
    ({"max_jobs": 2.5}, "max_jobs"),
    ({"max_jobs": "6"}, "max_jobs"),
    ({"max_jobs": 501}, "max_jobs"),
    ({"max_parallel_jobs": 0}, "max_parallel_jobs"),
    ({"max_jobs": 2, "max_parallel_jobs": 3}, "max_parallel_jobs"),
    ({"min_test_accuracy": 1.5}, "min_test_accuracy"),
    ({"min_test_accuracy": "high"}, "min_test_accuracy"),
    ({"warm_start_parent": "someone-elses-job"}, "warm_start_parent"),
    ({"warm_start_parent": 7}, "warm_start_parent"),
]


@pytest.fixture(scope="module")
def checked(local):
    """Runs the definition from its start for each input; SageMaker refuses tuning, so a valid input ends at
    "Tuning failed" after "Check input" (and the endpoint check) let it through."""
    definition = local.definition
    bucket_data = definition["States"][S.PREPARE]["Parameters"]["defaults"]["dataset"]

    def run(value: dict):
        value = {k: (v.replace("s3://bucket/data/", bucket_data) if isinstance(v, str) else v)
                 for k, v in value.items()}
        sm = ScriptedSageMaker(DescribeEndpoint=endpoint_missing, **_failing_tuning())
        return run_scripted(definition, value, sm, timeout=120), value, bucket_data
    return run


def _failing_tuning() -> dict[str, Callable[[dict], dict]]:
    """A tuning job SageMaker accepts and that then fails: "Tuning failed" at once (a refused create would be
    retried first, with backoff)."""
    return {"CreateHyperParameterTuningJob": lambda p: {"HyperParameterTuningJobArn": (
                f"{ACCOUNT_ARN}:hyper-parameter-tuning-job/{p['HyperParameterTuningJobName']}")},
            "DescribeHyperParameterTuningJob": lambda p: {
                "HyperParameterTuningJobName": p["HyperParameterTuningJobName"],
                "HyperParameterTuningJobStatus": "Failed", "FailureReason": "scripted: no tuning"}}


@pytest.mark.parametrize(("value", "key"), INVALID_INPUTS)
def test_check_input_refuses_each_bad_key_by_name(checked, local, value, key):
    result, value, bucket_data = checked(value)
    if key == "max_parallel_jobs" and "max_jobs" in value:
        assert result.failed_state == f"{S.invalid(key)} above max_jobs"
    else:
        assert result.failed_state == S.invalid(key), (result.failed_state, result.cause)
    assert result.error == "InvalidInput" and (key in result.cause or key == "keys")
    with pytest.raises(ConfigError, match=key if key != "keys" else "max_jobz"):
        validate_input(value, local.config, dataset_prefix=bucket_data)


PARENT = "imgclf-0123456789ab"  # a tuning job of an earlier execution


@pytest.mark.parametrize("parent", ["imgclf-" + "a" * 26, "imgclf-a_b", "imgclf-a.b", "imgclf-", "imgclf-missing"])
def test_check_input_refuses_a_parent_sagemaker_cannot_describe(local, parent):
    """Review item 11: longer than 32, characters outside botocore's pattern, or no such job: refused before
    anything runs (the describe is validated against botocore's model, as SageMaker validates it)."""
    definition = local.definition

    def describe(p: dict) -> dict:
        if p["HyperParameterTuningJobName"] != PARENT:
            raise SageMakerError("ResourceNotFound", f"Amazon SageMaker can't find a tuning job with name "
                                                     f"{p['HyperParameterTuningJobName']}")
        return {"HyperParameterTuningJobName": PARENT, "HyperParameterTuningJobStatus": "Completed"}
    sm = validating(ScriptedSageMaker(DescribeEndpoint=endpoint_missing, DescribeHyperParameterTuningJob=describe))
    result = run_scripted(definition, {"warm_start_parent": parent}, sm, timeout=120)
    assert result.failed_state == S.invalid("warm_start_parent") + " (not described)", result.failed_state
    assert result.error == "InvalidInput" and parent in result.cause
    assert [op for op, _ in sm.calls] == ["DescribeHyperParameterTuningJob"][: len(sm.calls)]
    assert not sm.ops("CreateHyperParameterTuningJob")
    with pytest.raises(ConfigError, match="warm_start_parent"):
        if parent == "imgclf-missing":  # well formed: only SageMaker knows it does not exist
            raise ConfigError("warm_start_parent")
        validate_input({"warm_start_parent": parent}, local.config)


@pytest.mark.parametrize("value", [["max_jobs"], "x", 5, True])  # (local.engine runs a falsy input as {})
def test_a_non_object_input_is_refused_by_name(local, value):
    """Review item 11: States.JsonMerge needs an object; anything else fails clearly, before any call."""
    sm = ScriptedSageMaker()
    result = run_scripted(local.definition, value, sm, timeout=120)
    assert result.failed_state == S.invalid("input") and result.error == "InvalidInput", result.failed_state
    assert "JSON object" in result.cause and not sm.calls
    with pytest.raises(ConfigError, match="JSON object"):
        validate_input(value, local.config)


def test_check_input_refuses_tuning_the_execution_timeout_cannot_hold(checked, local):
    """Review item 6: ceil(max_jobs / max_parallel_jobs) rounds of trials must fit the tuning budget; the extremes
    (500 trials one at a time) are refused before anything runs, as infra.config.validate_input refuses them."""
    rounds = local.config.tuning_rounds
    for value, fits in (({"max_jobs": 500, "max_parallel_jobs": 1}, False),
                        ({"max_jobs": 2 * rounds + 1, "max_parallel_jobs": 2}, False),
                        ({"max_jobs": 2 * rounds, "max_parallel_jobs": 2}, True)):
        result, value, bucket_data = checked(value)
        if fits:
            assert result.failed_state == S.TUNING_FAILED, (value, result.failed_state, result.cause)
            validate_input(value, local.config, dataset_prefix=bucket_data)
        else:
            assert result.failed_state == S.TUNING_TOO_LONG and result.error == "InvalidInput", value
            assert "max_jobs" in result.cause and str(local.config.tuning_budget_s) in result.cause
            with pytest.raises(ConfigError, match="max_jobs"):
                validate_input(value, local.config, dataset_prefix=bucket_data)


@pytest.mark.parametrize("value", [{}, {"max_jobs": 3, "max_parallel_jobs": 3}, {"min_test_accuracy": 0},
                                   {"dataset": "s3://bucket/data/dogs/"}, {"warm_start_parent": None},
                                   {"warm_start_parent": "imgclf-0123456789ab"}])
def test_check_input_lets_valid_inputs_through(checked, local, value):
    result, value, bucket_data = checked(value)
    assert result.failed_state == S.TUNING_FAILED, (result.failed_state, result.cause)
    assert validate_input(value, local.config, dataset_prefix=bucket_data) == value


# --- rules everywhere: every value reaching a SageMaker request satisfies botocore's constraints ----------------
@pytest.fixture(scope="module")
def extreme(tmp_path_factory, request):
    """The longest prefix the config allows, in local mode (literal images, the stand-in's shapes)."""
    import infra
    from infra.config import MAX_PREFIX_LENGTH
    from infra.definition import definition

    prefix = ("abcdefghij-" * 3)[:MAX_PREFIX_LENGTH].rstrip("-")
    context = {"profile": "local", "prefix": prefix}
    template = infra.synth(context, outdir=module_scratch(request, tmp_path_factory, "extreme"))
    return definition(template, {"Bucket": "b" * 63, "SageMakerRoleArn": f"arn:aws:iam::123456789012:role/{'r' * 64}"},
                      region="us-east-1", account="123456789012"), infra.load_config_for(context)


def test_extreme_but_legal_inputs_give_requests_sagemaker_accepts(extreme):
    definition, cfg = extreme
    bucket_data = definition["States"][S.PREPARE]["Parameters"]["defaults"]["dataset"]
    value = {"dataset": bucket_data + "d" * 200 + "/", "max_jobs": 500, "max_parallel_jobs": 100,
             "min_test_accuracy": 0, "warm_start_parent": f"{cfg.prefix}-0123456789ab"}
    validate_input(value, cfg, dataset_prefix=bucket_data)
    sm = full_run_sagemaker()
    # An execution name may hold characters a tag value may not ("!", "'", "(", ")"): 80 of them.
    name = ("run!'()-" * 10)[:80]
    result = run_scripted(definition, value, sm, name=name, timeout=300)
    assert result.succeeded, (result.failed_state, result.cause)
    ops = [op for op, _ in sm.calls]
    for op in ("CreateHyperParameterTuningJob", "CreateTrainingJob", "CreateModel", "CreateEndpointConfig",
               "CreateEndpoint"):
        assert op in ops
    (tuning,) = sm.ops("CreateHyperParameterTuningJob")
    assert len(tuning["HyperParameterTuningJobName"]) == 32  # SageMaker's cap, reached exactly
    assert name not in str(sm.calls)  # the execution name reaches no request


def test_the_validating_sagemaker_refuses_what_sagemaker_would(local):
    """The check above can fail: an execution-name tag (the old design) is refused by the model's pattern."""
    from local.sagemaker.api import validate_request

    with pytest.raises(SageMakerError, match=r"tags\.1\.value"):
        validate_request("AddTags", {"ResourceArn": f"{ACCOUNT_ARN}:model/x",
                                     "Tags": [{"Key": "sfn-execution", "Value": "run!'()"}]})


# --- the staged pretrained weights: a run without them fails in seconds, before tuning ----------------------------
def _from_the_start(cloud, stage: bool):
    """The cloud definition from its first state, with moto's S3 (where the aws-sdk:s3 task goes) holding the
    weights object or not; SageMaker refuses tuning, so a run that passes the check ends at "Tuning failed"."""
    import boto3

    from local.engine import _Mock

    definition = cloud.definition
    check = definition["States"][S.CHECK_WEIGHTS]
    bucket, key = check["Parameters"]["Bucket"], check["Parameters"]["Key"]
    sm = ScriptedSageMaker(DescribeEndpoint=endpoint_missing, CreateHyperParameterTuningJob=lambda p: (
        _ for _ in ()).throw(SageMakerError("ResourceLimitExceeded", "scripted: no tuning")))
    _Mock.acquire()  # one moto for the staging and the run
    try:
        s3 = boto3.client("s3", region_name="us-east-1", aws_access_key_id="local", aws_secret_access_key="local")
        s3.create_bucket(Bucket=bucket)
        if stage:
            s3.put_object(Bucket=bucket, Key=key, Body=b"weights")
        return run_scripted(definition, {}, sm, timeout=120), sm, key
    finally:
        _Mock.release()


def test_missing_weights_fail_before_tuning(cloud):
    result, sm, key = _from_the_start(cloud, stage=False)
    assert result.failed_state == S.WEIGHTS_MISSING and result.error == "PretrainedWeightsMissing"
    assert key in result.cause and "imgclf stage-weights" in result.cause
    assert not sm.ops("CreateHyperParameterTuningJob")


def test_staged_weights_let_tuning_start(cloud):
    result, sm, _ = _from_the_start(cloud, stage=True)
    assert result.failed_state == S.TUNING_FAILED, (result.failed_state, result.cause)
    assert S.CHECK_WEIGHTS in [r.name for r in result.states()]
    assert sm.ops("CreateHyperParameterTuningJob")


def test_no_weights_check_when_training_from_scratch(local):
    assert S.CHECK_WEIGHTS not in local.definition["States"]


# --- review 3 N2: a tuning job still running when its .sync task failed is stopped, never left running ------------
@pytest.mark.parametrize(("status", "stop_answer"), [("InProgress", None), ("Stopping", "ValidationException")])
def test_a_tuning_job_still_running_is_stopped_before_tuning_failed(local, status, stop_answer):
    definition = local.definition
    described = _described_tuning(status, best="imgclf-interim", lr="0.1")

    def create(p: dict) -> dict:  # e.g. a create re-sent after a lost answer
        raise SageMakerError("ResourceInUse", "Tuning job imgclf-0123456789ab already exists")

    def stop(p: dict) -> dict:
        if stop_answer:
            raise SageMakerError(stop_answer, "The tuning job is already stopping")
        return {}
    sm = ScriptedSageMaker(CreateHyperParameterTuningJob=create, DescribeHyperParameterTuningJob=lambda p: described,
                           StopHyperParameterTuningJob=stop)
    state = _state_before_tuning(definition)
    result = _run(definition, S.TUNE, state, sm)
    assert result.failed_state == S.TUNING_FAILED and "already exists" in result.cause, result.cause
    assert [p["HyperParameterTuningJobName"] for p in sm.ops("StopHyperParameterTuningJob")][:1] == \
        ["imgclf-0123456789ab"]
    assert not sm.ops("CreateTrainingJob")  # never the interim best trial of a job that still runs


def test_a_tuning_job_that_cannot_be_read_after_its_task_failed_is_stopped(local):
    """Review 5 F3: the describe after a failed tuning task keeps failing: the job may run on, so it is stopped,
    and the run fails with the tuning task's own error."""
    definition = local.definition

    def create(p: dict) -> dict:
        raise SageMakerError("ResourceInUse", "Tuning job imgclf-0123456789ab already exists")

    def describe(p: dict) -> dict:
        raise SageMakerError("ThrottlingException", "Rate exceeded")
    sm = ScriptedSageMaker(CreateHyperParameterTuningJob=create, DescribeHyperParameterTuningJob=describe,
                           StopHyperParameterTuningJob=lambda p: {})
    state = _state_before_tuning(definition)
    result = _run(definition, S.TUNE, state, sm)
    assert result.failed_state == S.TUNING_FAILED and "already exists" in result.cause, result.cause
    assert len(sm.ops("DescribeHyperParameterTuningJob")) > 1  # retried first
    assert [p["HyperParameterTuningJobName"] for p in sm.ops("StopHyperParameterTuningJob")] == ["imgclf-0123456789ab"]


def test_the_tuning_status_reaches_the_output(local):
    definition = local.definition
    described = _described_tuning("Stopped")
    sm = scripted(Endpoint(), DescribeHyperParameterTuningJob=lambda p: described,
                  **scripted_trainer(debugger_available=True))
    state = _state_before_tuning(definition)
    result = _run(definition, S.READ_TUNING, state, sm)
    assert result.succeeded, (result.failed_state, result.cause)
    assert result.output["tuning_status"] == "Stopped"


# --- review 3 N3: the profiler list alone missing keeps the Debugger gate --------------------------------------
@pytest.mark.parametrize("lists", ["absent", "empty"])
@pytest.mark.parametrize("verdict", ["NoIssuesFound", "IssuesFound"])
def test_a_job_without_profiler_statuses_still_gates_on_debugger_verdicts(local, lists, verdict):
    definition = local.definition
    trainer = scripted_trainer(debugger_available=True)

    def describe(p: dict) -> dict:
        out = trainer["DescribeTrainingJob"](p)
        if lists == "absent":
            del out["ProfilerRuleEvaluationStatuses"]
        else:
            out["ProfilerRuleEvaluationStatuses"] = []
        out["DebugRuleEvaluationStatuses"][0]["RuleEvaluationStatus"] = verdict  # VanishingGradient gates
        return out
    sm = scripted(Endpoint(), CreateTrainingJob=trainer["CreateTrainingJob"], DescribeTrainingJob=describe)
    result = _run(definition, S.PREPARE_TRAINING, _state(definition), sm)
    if verdict == "IssuesFound":
        assert result.failed_state == S.rule_failed("VanishingGradient"), (result.failed_state, result.cause)
        assert not sm.ops("CreateModel")
        return
    assert result.succeeded, (result.failed_state, result.cause)
    out = result.output
    assert out["debugger"] == {"status": "on", "reason": ""} and out["profiler"] == "unavailable"
    assert set(out["rule_verdicts"]) == set(local.config.debugger.active_rules)
    assert "profiler_report" not in out["reports"] and "debugger_tensors" in out["reports"]


def test_a_job_without_debugger_statuses_reports_no_debugger_locations(local):
    definition = local.definition
    trainer = scripted_trainer(debugger_available=True)

    def describe(p: dict) -> dict:
        out = trainer["DescribeTrainingJob"](p)
        del out["DebugRuleEvaluationStatuses"]  # the profiler's are listed: the Debugger list alone decides
        return out
    sm = scripted(Endpoint(), CreateTrainingJob=trainer["CreateTrainingJob"], DescribeTrainingJob=describe)
    result = _run(definition, S.PREPARE_TRAINING, _state(definition), sm)
    assert result.succeeded, (result.failed_state, result.cause)
    assert result.output["debugger"]["status"] == "unavailable"
    assert S.REPORTS_NO_DEBUGGER in [r.name for r in result.states()]
    assert not {"rule_output", "debugger_tensors", "profiler_report"} & set(result.output["reports"])


# --- review 4 R9: a training task that fails while its job runs stops the job --------------------------------------
@pytest.mark.parametrize("debugger", [True, False])
@pytest.mark.parametrize("stop_answer", [None, "ValidationException"])
def test_a_training_job_left_running_by_its_failed_task_is_stopped(local, debugger, stop_answer):
    """The create is re-sent after a lost answer and gets ResourceInUse: the job the first call started runs on, so
    the run stops it (a job that already ended answers ValidationException), then fails with the task's error."""
    definition = local.definition
    trainer = scripted_trainer(debugger_available=debugger)

    def create(p: dict) -> dict:
        if "DebugHookConfig" in p and not debugger:
            return trainer["CreateTrainingJob"](p)  # the refusal of an account without Debugger
        raise SageMakerError("ResourceInUse", f"Training job {p['TrainingJobName']} already exists")

    def stop(p: dict) -> dict:
        if stop_answer:
            raise SageMakerError(stop_answer, "The request was rejected because the training job is in status Failed.")
        return {}
    sm = scripted(Endpoint(), CreateTrainingJob=create, DescribeTrainingJob=trainer["DescribeTrainingJob"],
                  StopTrainingJob=stop)
    result = _run(definition, S.PREPARE_TRAINING, _state(definition), sm)
    assert result.failed_state == S.TRAINING_FAILED and "already exists" in result.cause, result.cause
    job = sm.ops("CreateTrainingJob")[-1]["TrainingJobName"]
    assert job.endswith("-nd") != debugger
    assert {p["TrainingJobName"] for p in sm.ops("StopTrainingJob")} == {job}
    assert S.STOP_TRAINING in [r.name for r in result.states()]


def test_a_training_job_that_failed_on_its_own_is_reported_with_its_reason(local):
    """A job that ran and failed: the stop finds it ended (ValidationException), the cause stays the job's."""
    definition = local.definition
    trainer = scripted_trainer(debugger_available=True)

    def stop(p: dict) -> dict:
        raise SageMakerError("ValidationException", "The request was rejected because the training job is in status "
                                                    "Failed.")
    sm = scripted(Endpoint(), CreateTrainingJob=trainer["CreateTrainingJob"], StopTrainingJob=stop,
                  DescribeTrainingJob=lambda p: {**training_description(p["TrainingJobName"]),
                                                 "TrainingJobStatus": "Failed",
                                                 "FailureReason": "AlgorithmError: out of memory"})
    result = _run(definition, S.PREPARE_TRAINING, _state(definition), sm)
    assert result.failed_state == S.TRAINING_FAILED and "out of memory" in result.cause
    assert "status Failed" not in result.cause
