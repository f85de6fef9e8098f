"""Typed configuration from CDK context: profiles, overrides, and the mistakes it refuses."""

from __future__ import annotations

import pytest

import infra
from infra.config import (
    DEBUG_RULES,
    MAX_PREFIX_LENGTH,
    TRIAL_STARTUP_S,
    ConfigError,
    load_config,
    validate_input,
)
from ml import contract


def test_cdk_json_is_valid_for_both_profiles():
    for profile in ("cloud", "local"):
        cfg = infra.load_config_for({"profile": profile})
        assert cfg.profile == profile
        assert (cfg.tuning.max_jobs, cfg.tuning.max_parallel_jobs) == (6, 2)


def test_defaults_follow_the_contract():
    cloud, local = load_config({}), load_config({"profile": "local"})
    assert cloud.base_hyperparameters == contract.CLOUD_HYPERPARAMETERS
    assert local.base_hyperparameters == contract.LOCAL_HYPERPARAMETERS
    assert cloud.tuning_space == contract.TuningSpace()
    assert local.tuning_space == contract.LOCAL_TUNING_SPACE
    assert set(contract.HEALTH_CHECKS) < set(DEBUG_RULES) and "Overtraining" in DEBUG_RULES
    assert cloud.region is None and local.region == "us-east-1"
    assert local.training.instance_type.startswith("ml.m5")  # CPU images locally
    assert local.debugger.poll_s == 1 and local.serving.poll_s == 1


def test_override_order_profile_then_profiles_then_keys_then_dotted():
    ctx = {
        "profile": "local",
        "profiles": {"local": {"gate": {"min_test_accuracy": 0.6}, "tuning": {"max_jobs": 4}}},
        "gate": {"min_test_accuracy": 0.7},
        "tuning.max_jobs": "3",  # -c values arrive as strings
        "debugger.enabled": "false",
        "@aws-cdk/core:anything": True,  # CDK's own keys are ignored
        "aws:cdk:enable-path-metadata": True,
    }
    cfg = load_config(ctx)
    assert cfg.gate.min_test_accuracy == 0.7
    assert cfg.tuning.max_jobs == 3 and cfg.tuning.max_parallel_jobs == 2
    assert cfg.debugger.enabled is False
    assert cfg.debugger.active_gate_rules == ()
    assert load_config({"tuning": '{"max_jobs": 5}'}).tuning.max_jobs == 5


def test_training_hyperparameters_and_ranges_can_be_narrowed_by_name():
    cfg = load_config({"training.hyperparameters": {"backbone": "resnet18"},
                       "tuning.ranges": {"lr": {"min": 0.002}, "batch-size": {"values": ["128", "256"]}}})
    assert cfg.base_hyperparameters["backbone"] == "resnet18"
    ranges = {r.name: r for r in cfg.tuning_space.ranges}
    assert ranges["lr"].min_value == 0.002 and ranges["lr"].max_value == 0.1
    assert ranges["batch-size"].values == ("128", "256")
    with pytest.raises(ConfigError, match="unknown hyperparameters"):
        load_config({"tuning.ranges": {"momentum": {"min": 0.1}}})
    with pytest.raises(ConfigError, match="must be below max"):
        load_config({"tuning.ranges": {"lr": {"min": 0.5}}})


@pytest.mark.parametrize(("context", "message"), [
    ({"prefix": "x" * (MAX_PREFIX_LENGTH + 1)}, "at most"),
    ({"prefix": "Img_Clf"}, "lowercase"),
    ({"serving": {"endpoint_name": "other-endpoint"}}, "start with 'imgclf-'"),
    ({"debugger": {"gate_rules": ["NoSuchRule"]}}, "not among the configured rules"),
    ({"api": {"iam_auth": False, "api_key_required": False}}, "anonymous"),
    ({"serving": {"traffic": "CANARY"}}, "instance_count >= 2"),
    ({"tuning": {"max_jobs": 2, "max_parallel_jobs": 3}}, "cannot exceed"),
    ({"training": {"spot": True, "max_runtime_s": 3600, "max_wait_s": 60}}, "at least"),
    ({"data_prefix": "/data"}, "ending with '/'"),
    ({"tuning": {"instance_typo": "ml.m5.large"}}, "context 'tuning.instance_typo': unknown key"),
    # review 4 R2: TrafficRoutingConfig's documented step sizes, and LINEAR's bakes within the timeout
    ({"serving": {"traffic": "CANARY", "instance_count": 2, "traffic_step_percent": 60}}, "at most 50%"),
    ({"serving": {"traffic": "LINEAR", "instance_count": 2, "traffic_step_percent": 5}}, "10-50%"),
    ({"serving": {"traffic": "LINEAR", "instance_count": 2, "traffic_step_percent": 10}}, "total waiting time"),
    ({"serving": {"traffic": "LINEAR", "instance_count": 2, "traffic_step_percent": 20}}, "total waiting time"),
    # review 4 R6: ProfilerConfig.ProfilingIntervalInMilliseconds' documented values
    ({"debugger": {"profiling_interval_ms": 300}}, "must be one of"),
])
def test_refuses(context, message):
    with pytest.raises(ConfigError, match=message) as info:
        load_config(context)
    assert "\n" not in str(info.value)  # one line (issue 12 item 12)


@pytest.mark.parametrize(("context", "key"), [
    ({"nosuch.key": "1"}, "'nosuch.key'"),            # issue 12 item 4: an unknown group is an error
    ({"gate.min_test_acuracy": "0.9"}, "'gate.min_test_acuracy'"),
    ({"gate.min_test_accuracy": "high"}, "'gate.min_test_accuracy'"),
    ({"tuning": {"max_jobs": 0}}, "'tuning.max_jobs'"),
    ({"profiles": {"staging": {}}}, "'profiles'"),
    ({"debuger": {"enabled": False}}, "'debuger'"),
])
def test_context_errors_are_one_line_naming_the_key(context, key):
    with pytest.raises(ConfigError, match=key) as info:
        load_config(context)
    assert "\n" not in str(info.value) and "pydantic" not in str(info.value)


def test_cdk_own_context_keys_are_not_ours():
    cfg = load_config({"@aws-cdk/core:target-partitions": ["aws"], "aws:cdk:enable-path-metadata": True,
                       "cli-telemetry": False, "availability-zones:account=1:region=us-east-1": ["a"]})
    assert cfg.prefix == "imgclf"


def test_unknown_profile():
    with pytest.raises(ValueError, match="profile"):
        load_config({"profile": "staging"})


def test_derived_names():
    cfg = load_config({"prefix": "dogs"})
    assert cfg.endpoint_name == "dogs-endpoint"
    assert cfg.state_machine_name == "dogs-train-deploy"
    assert cfg.alarm_names == ("dogs-endpoint-5xx", "dogs-endpoint-latency")


@pytest.mark.parametrize(("argv", "key"), [
    (["--input", '{"max_jobz": 2}'], "input 'max_jobz'"),
    (["--input", '{"min_test_accuracy": 1.5}'], "input 'min_test_accuracy'"),
    (["-c", "nosuch.key=1"], "context 'nosuch.key'"),
])
def test_a_local_run_checks_input_and_context_before_it_starts(tmp_path, capsys, argv, key):
    """Issue 12 item 4: the same checks as the state machine's "Check input", before a local run starts."""
    from local.demo import main

    out = tmp_path / "demo"
    assert main(["--out", str(out), "--data", str(tmp_path / "no-data"), *argv]) == 1
    text = " ".join(capsys.readouterr().out.split())
    assert key in text and "Traceback" not in text
    assert not out.exists()  # nothing synthesized, copied or trained


# --- review item 6: the execution timeout holds the longest run the config and input allow -----------------------
def test_the_default_run_fits_the_execution_timeout():
    from infra.config import TUNING_MAX_RUNTIME

    cfg = load_config({})
    need = cfg.tuning_time_s(cfg.tuning.max_jobs, cfg.tuning.max_parallel_jobs) + cfg.after_tuning_s
    assert need <= cfg.execution_timeout_hours * 3600
    assert TUNING_MAX_RUNTIME[0] <= cfg.tuning_budget_s <= TUNING_MAX_RUNTIME[1]
    # The budget counts every bounded wait after tuning: training, rule polling, settle and deploy loops.
    d, s = cfg.debugger, cfg.serving
    assert cfg.after_tuning_s >= cfg.training.max_runtime_s + d.poll_s * d.max_polls + 2 * s.max_polls * s.poll_s


@pytest.mark.parametrize(("context", "match"), [
    ({"tuning.max_jobs": 500, "tuning.max_parallel_jobs": 1}, "execution_timeout_hours"),
    ({"execution_timeout_hours": 1}, "execution_timeout_hours"),
    ({"tuning.spot": True, "tuning.max_wait_s": 2_419_200, "tuning.max_jobs": 2}, "tuning"),
])
def test_budgets_the_timeout_cannot_hold_are_refused(context, match):
    with pytest.raises(ConfigError, match=match):
        load_config(context)


def test_a_long_enough_timeout_holds_the_extremes():
    cfg = load_config({"tuning.max_jobs": 500, "tuning.max_parallel_jobs": 1, "execution_timeout_hours": 1100})
    assert cfg.tuning_time_s(500, 1) <= cfg.tuning_budget_s


@pytest.mark.parametrize("context", [{}, {"tuning.spot": True}])
def test_every_round_of_trials_gets_its_start_up_in_the_tuning_budget(context):
    """Review 2 item 9: start-up counts toward the tuning job's MaxRuntimeInSeconds, not a trial's."""
    cfg = load_config(context)
    limit = cfg.tuning.spot_max_wait_s if cfg.tuning.spot else cfg.tuning.max_runtime_s
    assert cfg.tuning_rounds >= 1
    assert cfg.tuning_rounds * (limit + TRIAL_STARTUP_S) <= cfg.tuning_budget_s


def test_input_tuning_budgets_are_checked_against_the_timeout():
    cfg = load_config({})
    rounds = cfg.tuning_rounds
    validate_input({"max_jobs": rounds * 2, "max_parallel_jobs": 2}, cfg)
    with pytest.raises(ConfigError, match=r"max_jobs.*execution"):
        validate_input({"max_jobs": rounds * 2 + 1, "max_parallel_jobs": 2}, cfg)
    with pytest.raises(ConfigError, match="max_jobs"):
        validate_input({"max_jobs": 500, "max_parallel_jobs": 1}, cfg)


def test_warm_start_parent_length_is_botocores():
    """The pattern alone lets hyphenated names exceed 32 characters; botocore's max length applies too."""
    cfg = load_config({})
    validate_input({"warm_start_parent": "imgclf-" + "a" * 25}, cfg)  # 32
    with pytest.raises(ConfigError, match="warm_start_parent"):
        validate_input({"warm_start_parent": "imgclf-" + "a" * 26}, cfg)


@pytest.mark.parametrize("profile", ["cloud", "local"])
def test_only_rules_that_say_the_model_is_broken_gate_by_default(profile):
    """Overtraining and LossNotDecreasing fire when the loss flattens (a model trained to convergence): gating on
    them stopped good deploys (make demo at random; a converged fine-tune on AWS alike). They are still evaluated."""
    cfg = load_config({"profile": profile})
    assert set(cfg.debugger.active_gate_rules) == {"VanishingGradient", "Overfit", "PoorWeightInitialization"}
    assert {"Overtraining", "LossNotDecreasing"} <= set(cfg.debugger.rules)


def test_the_readmes_time_budget_is_the_configs():
    """Review 2 item 3: the README's tuning budget figures are what the default config computes."""
    import re
    from pathlib import Path

    text = " ".join((Path(__file__).parents[2] / "README.md").read_text().split())
    m = re.search(r"\(([\d,]+) s with the defaults: at most (\d+) rounds .*? plus (\d+) s of start-up each", text)
    assert m, "README: the time budget sentence moved; keep its figures tested"
    cfg = load_config({})
    assert (int(m[1].replace(",", "")), int(m[2]), int(m[3])) == (cfg.tuning_budget_s, cfg.tuning_rounds,
                                                                   TRIAL_STARTUP_S)
