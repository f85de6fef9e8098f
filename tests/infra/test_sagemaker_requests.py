"""Every SageMaker request the state machine sends, checked against botocore's SageMaker model."""

from __future__ import annotations

import json

from infra import config as config_module
from infra import sagemaker_requests as req
from ml import contract
from tests.support.sagemaker_model import absent_member_errors, output_path_errors, validate_request

RULES_IMAGE_US_EAST_1 = "503895931360.dkr.ecr.us-east-1.amazonaws.com/sagemaker-debugger-rules:latest"
STANDARD_RESOURCES = {
    "arn:aws:states:::sagemaker:createHyperParameterTuningJob.sync",
    "arn:aws:states:::sagemaker:createTrainingJob.sync",
    "arn:aws:states:::aws-sdk:sagemaker:describeTrainingJob",
    "arn:aws:states:::aws-sdk:sagemaker:describeHyperParameterTuningJob",
    "arn:aws:states:::aws-sdk:sagemaker:stopHyperParameterTuningJob",  # a tuning job still running (review 3 N2)
    "arn:aws:states:::aws-sdk:sagemaker:stopTrainingJob",  # a training job its failed task left running (review 4 R9)
    "arn:aws:states:::aws-sdk:sagemaker:describeEndpoint",
    "arn:aws:states:::sagemaker:createModel",
    "arn:aws:states:::sagemaker:createEndpointConfig",
    "arn:aws:states:::sagemaker:createEndpoint",
    "arn:aws:states:::sagemaker:updateEndpoint",
}
SCALING_RESOURCES = {  # instance endpoints only
    "arn:aws:states:::aws-sdk:applicationautoscaling:registerScalableTarget",
    "arn:aws:states:::aws-sdk:applicationautoscaling:putScalingPolicy",
    "arn:aws:states:::aws-sdk:applicationautoscaling:deregisterScalableTarget",  # before a type-changing update
    "arn:aws:states:::aws-sdk:sagemaker:describeEndpointConfig",  # the live instance type (review 3 N1)
}


def test_every_request_matches_the_botocore_model(any_synth):
    errors = []
    for name, state in any_synth.task_states().items():
        errors += [f"{name}: {e}" for e in validate_request(state["Resource"], state["Parameters"])]
    assert not errors, "\n".join(errors)


def _paths(selector: dict):
    for key, value in selector.items():
        if isinstance(value, dict):
            yield from _paths(value)
        elif key.endswith(".$"):
            yield value


def test_result_selectors_read_fields_the_api_returns(any_synth):
    errors = [f"{name}: {e}" for name, state in any_synth.task_states().items()
              for path in _paths(state.get("ResultSelector", {}))
              for e in output_path_errors(state["Resource"], path)]
    assert not errors, "\n".join(errors)


def test_no_result_selector_can_meet_an_absent_member(any_synth):
    """Issue 11 item 4: a ResultSelector path through an optional member (or into a .sync output, whose shape
    Step Functions builds) raises States.Runtime, which no Catch takes. Only required members, or [*]."""
    errors = [f"{name}: {e}" for name, state in any_synth.task_states().items()
              for path in _paths(state.get("ResultSelector", {}))
              for e in absent_member_errors(state["Resource"], path)]
    assert not errors, "\n".join(errors)
    assert absent_member_errors("arn:aws:states:::aws-sdk:sagemaker:describeHyperParameterTuningJob",
                                "$.BestTrainingJob.TunedHyperParameters")
    assert absent_member_errors("arn:aws:states:::sagemaker:createHyperParameterTuningJob.sync",
                                "$.HyperParameterTuningJobName")
    assert not absent_member_errors("arn:aws:states:::aws-sdk:sagemaker:describeTrainingJob",
                                    "$.ModelArtifacts.S3ModelArtifacts")
    # Review item 3: an optional list before [*] is no safer (the old "Describe training job" selector).
    assert absent_member_errors("arn:aws:states:::aws-sdk:sagemaker:describeTrainingJob",
                                "$.DebugRuleEvaluationStatuses[*].RuleEvaluationStatus")
    assert not absent_member_errors("arn:aws:states:::aws-sdk:sagemaker:listTrainingJobs",
                                    "$.TrainingJobSummaries[*].TrainingEndTime")  # after [*]: skipped if absent


# The staged-weights check, where the jobs read pretrained weights (checked against botocore's S3 model above).
WEIGHTS_CHECK = "arn:aws:states:::aws-sdk:s3:headObject"


def test_only_standard_sagemaker_integrations(any_synth):
    resources = {s["Resource"] for s in any_synth.task_states().values()}
    expected = STANDARD_RESOURCES | ({WEIGHTS_CHECK} if any_synth.config.pretrained_key else set())
    assert resources == expected | (SCALING_RESOURCES if any_synth.config.serving.scales else set())


def test_the_validator_catches_mistakes():
    bad = {"TrainingJobName": "x", "RoleArn": "arn:aws:iam::123456789012:role/r", "Bogus": 1,
           "ResourceConfig": {"InstanceType": "ml.nope", "InstanceCount": "1", "VolumeSizeInGB": 30},
           "StoppingCondition": {"MaxRuntimeInSeconds": 60}, "OutputDataConfig.$": 3,
           "AlgorithmSpecification": {"TrainingInputMode": "File"}}
    errors = "\n".join(validate_request("arn:aws:states:::sagemaker:createTrainingJob.sync", bad))
    for needle in ("Bogus: unknown member", "'ml.nope' is not one of", "InstanceCount: expected an integer",
                   "OutputDataConfig.$: a dynamic member"):
        assert needle in errors
    assert output_path_errors("arn:aws:states:::sagemaker:createTrainingJob.sync", "$.ModelArtifact.S3ModelArtifacts")


def test_metric_definitions_are_the_contracts(cloud):
    tasks = cloud.task_states()
    expected = [{"Name": m.name, "Regex": m.regex} for m in contract.METRICS]
    tune = tasks["Tune hyperparameters"]["Parameters"]
    assert tune["TrainingJobDefinition"]["AlgorithmSpecification"]["MetricDefinitions"] == expected
    train = tasks["Train with best hyperparameters"]["Parameters"]
    assert train["AlgorithmSpecification"]["MetricDefinitions"] == expected
    objective = tune["HyperParameterTuningJobConfig"]["HyperParameterTuningJobObjective"]
    assert objective == {"Type": contract.OBJECTIVE_TYPE, "MetricName": contract.OBJECTIVE_METRIC}
    assert contract.OBJECTIVE_METRIC in {m["Name"] for m in expected}


def _ranges(synth) -> dict:
    cfg = synth.task_states()["Tune hyperparameters"]["Parameters"]["HyperParameterTuningJobConfig"]
    return cfg["ParameterRanges"]


def test_tuning_ranges_are_the_contracts(cloud, local):
    for synth, space in ((cloud, contract.TuningSpace()), (local, contract.LOCAL_TUNING_SPACE)):
        ranges = _ranges(synth)
        for r in space.ranges:
            if isinstance(r, contract.CategoricalRange):
                assert {"Name": r.name, "Values": list(r.values)} in ranges["CategoricalParameterRanges"]
            else:
                kind = "IntegerParameterRanges" if isinstance(r, contract.IntegerRange) else "ContinuousParameterRanges"
                (found,) = [x for x in ranges[kind] if x["Name"] == r.name]
                assert float(found["MinValue"]) == r.min_value and float(found["MaxValue"]) == r.max_value
                assert found["ScalingType"] == r.scaling
    # The seed's space: batch-size {128, 256, 512}, lr 0.001-0.1, epochs integer.
    cloud_ranges = _ranges(cloud)
    assert cloud_ranges["CategoricalParameterRanges"][0]["Values"] == ["128", "256", "512"]
    assert cloud_ranges["ContinuousParameterRanges"][0]["MinValue"] == "0.001"


def test_tuning_limits_come_from_context_and_input(cloud, local):
    for synth in (cloud, local):
        tune = synth.task_states()["Tune hyperparameters"]["Parameters"]["HyperParameterTuningJobConfig"]
        assert tune["ResourceLimits"] == {"MaxNumberOfTrainingJobs.$": "$.args.max_jobs",
                                          "MaxParallelTrainingJobs.$": "$.args.max_parallel_jobs",
                                          "MaxRuntimeInSeconds": synth.config.tuning_budget_s}
        assert tune["TrainingJobEarlyStoppingType"] == "Auto"
        defaults = synth.definition["States"]["Prepare run"]["Parameters"]["defaults"]
        assert (defaults["max_jobs"], defaults["max_parallel_jobs"]) == (6, 2)


def test_static_hyperparameters_follow_the_profile(cloud, local):
    for synth, base in ((cloud, contract.CLOUD_HYPERPARAMETERS), (local, contract.LOCAL_HYPERPARAMETERS)):
        tasks = synth.task_states()
        static = tasks["Tune hyperparameters"]["Parameters"]["TrainingJobDefinition"]["StaticHyperParameters"]
        tuned = {r.name for r in synth.config.tuning_space.ranges}
        assert not tuned & set(static), "a tuned hyperparameter may not also be static"
        for name, value in base.items():
            if name not in tuned:
                assert static[name] == value
        assert static["sagemaker_program"] == contract.TRAINING_PROGRAM
        assert static["sagemaker_submit_directory"].startswith("s3://cdk-")
        assert static["sagemaker_submit_directory"].endswith(".gz")
        training = synth.definition["States"]["Prepare training"]["Parameters"]["static"]
        assert training["debugger"] == "on" and static["debugger"] == "off"
        merge = tasks["Train with best hyperparameters"]["Parameters"]["HyperParameters.$"]
        assert merge == "States.JsonMerge($.hyperparameters.static, $.tuning.hyperparameters, false)"


def test_channels_are_the_contracts(cloud):
    for name in ("Tune hyperparameters", "Train with best hyperparameters"):
        params = cloud.task_states()[name]["Parameters"]
        channels = params.get("InputDataConfig") or params["TrainingJobDefinition"]["InputDataConfig"]
        # The data channels, then the staged ImageNet weights (the cloud profile trains from them).
        assert [c["ChannelName"] for c in channels] == [*contract.CHANNELS, contract.PRETRAINED_CHANNEL]
        for c in channels[: len(contract.CHANNELS)]:
            uri = c["DataSource"]["S3DataSource"]["S3Uri.$"]
            assert uri == f"States.Format('{{}}{c['ChannelName']}/', $.args.dataset)"


def test_training_job_carries_debugger_profiler_and_checkpoints(cloud):
    p = cloud.task_states()["Train with best hyperparameters"]["Parameters"]
    rules = {r["RuleConfigurationName"]: r for r in p["DebugRuleConfigurations"]}
    assert set(rules) == {"VanishingGradient", "Overfit", "Overtraining", "LossNotDecreasing",
                          "PoorWeightInitialization"}
    for name, rule in rules.items():
        assert rule["RuleParameters"]["rule_to_invoke"] == name
        assert rule["RuleEvaluatorImage"] == RULES_IMAGE_US_EAST_1
    collections = {c["CollectionName"]: c.get("CollectionParameters", {})
                   for c in p["DebugHookConfig"]["CollectionConfigurations"]}
    assert {"gradients", "losses", "relu_input"} <= set(collections)
    assert collections["relu_input"]["include_regex"] == ".*relu_input"
    assert p["DebugHookConfig"]["S3OutputPath"].endswith(f"/{req.DEBUGGER_OUTPUT}")
    assert {r["RuleConfigurationName"] for r in p["ProfilerRuleConfigurations"]} == {"ProfilerReport",
                                                                                       "LowGPUUtilization"}
    assert p["ProfilerConfig"]["S3OutputPath"].endswith(f"/{req.PROFILER_OUTPUT}")
    assert p["CheckpointConfig"]["LocalPath"] == contract.DEFAULT_CHECKPOINT_DIR
    assert "EnableManagedSpotTraining" not in p


def test_debugger_off_and_spot(variant):
    p = variant.task_states()["Train with best hyperparameters"]["Parameters"]
    for member in ("DebugHookConfig", "DebugRuleConfigurations", "ProfilerRuleConfigurations"):
        assert member not in p
    assert p["ProfilerConfig"] == {"DisableProfiler": True}  # SageMaker's default system monitoring, off
    assert variant.definition["States"]["Prepare training"]["Parameters"]["static"]["debugger"] == "off"
    assert p["EnableManagedSpotTraining"] is True
    stop = p["StoppingCondition"]
    assert stop["MaxWaitTimeInSeconds"] >= stop["MaxRuntimeInSeconds"]
    assert "RuleEvaluatorImage" not in json.dumps(variant.definition)


def test_model_serves_the_code_training_wrote(cloud, variant):
    model = cloud.task_states()["Create model"]["Parameters"]
    env = model["PrimaryContainer"]["Environment"]
    assert env["SAGEMAKER_PROGRAM"] == contract.INFERENCE_PROGRAM
    assert env["SAGEMAKER_SUBMIT_DIRECTORY"] == f"{contract.DEFAULT_MODEL_DIR}/{contract.MODEL_CODE_DIR}"
    assert model["PrimaryContainer"]["ModelDataUrl.$"] == "$.training.model_data"
    assert model["EnableNetworkIsolation"] is True
    assert variant.task_states()["Create model"]["Parameters"]["EnableNetworkIsolation"] is False  # serverless


def test_endpoint_config_is_unique_per_execution_and_captures_data(cloud, variant):
    config = cloud.task_states()["Create endpoint config"]["Parameters"]
    assert config["EndpointConfigName.$"] == "$.names.endpoint_config"
    capture = config["DataCaptureConfig"]
    assert capture["EnableCapture"] is True and capture["DestinationS3Uri"].endswith(f"/{req.DATA_CAPTURE}")
    (variant_,) = config["ProductionVariants"]
    assert variant_["InstanceType"] == cloud.config.serving.instance_type
    serverless = variant.task_states()["Create endpoint config"]["Parameters"]
    assert "DataCaptureConfig" not in serverless  # serverless endpoints cannot capture
    assert serverless["ProductionVariants"][0]["ServerlessConfig"]["MemorySizeInMB"] == 3072


def test_update_is_blue_green_with_alarm_rollback(cloud, variant):
    update = cloud.task_states()["Update endpoint"]["Parameters"]
    assert update["EndpointName"] == cloud.config.endpoint_name
    policy = update["DeploymentConfig"]["BlueGreenUpdatePolicy"]
    assert policy["TrafficRoutingConfiguration"]["Type"] == "ALL_AT_ONCE"
    alarms = update["DeploymentConfig"]["AutoRollbackConfiguration"]["Alarms"]
    assert [a["AlarmName"] for a in alarms] == list(cloud.config.alarm_names)
    canary = variant.task_states()["Update endpoint"]["Parameters"]["DeploymentConfig"]["BlueGreenUpdatePolicy"]
    assert canary["TrafficRoutingConfiguration"]["CanarySize"] == {"Type": "CAPACITY_PERCENT", "Value": 25}


def test_tuning_job_names_fit_32_characters():
    longest = "a" * config_module.MAX_PREFIX_LENGTH
    assert len(f"{longest}-{'f' * config_module.RUN_ID_LENGTH}") == 32


def test_the_fallback_job_is_the_debugger_job_without_debugger(cloud):
    """Issue 11 item 1: the job that runs when SageMaker refuses Debugger differs only in Debugger's members,
    its name and the script's hook switch."""
    tasks = cloud.task_states()
    with_debugger = tasks["Train with best hyperparameters"]["Parameters"]
    without = tasks["Train without Debugger"]["Parameters"]
    assert set(req.DEBUGGER_MEMBERS) & set(with_debugger) == {
        "DebugHookConfig", "DebugRuleConfigurations", "ProfilerConfig", "ProfilerRuleConfigurations"}
    assert without["ProfilerConfig"] == {"DisableProfiler": True}
    assert not {"DebugHookConfig", "DebugRuleConfigurations", "ProfilerRuleConfigurations"} & set(without)
    assert without["TrainingJobName.$"] == "$.names.training_job_no_debugger"
    assert "static_no_debugger" in without["HyperParameters.$"]
    assert without["CheckpointConfig"]["S3Uri.$"].endswith("$.names.training_job_no_debugger)")
    same = {k for k in with_debugger if k not in req.DEBUGGER_MEMBERS} - {
        "TrainingJobName.$", "HyperParameters.$", "CheckpointConfig"}
    assert {k: with_debugger[k] for k in same} == {k: without[k] for k in same}
    static = cloud.definition["States"]["Prepare training"]["Parameters"]
    assert static["static"]["debugger"] == "on" and static["static_no_debugger"]["debugger"] == "off"
    assert {k: v for k, v in static["static"].items() if k != "debugger"} == {
        k: v for k, v in static["static_no_debugger"].items() if k != "debugger"}


# --- review 4 R2/R6: what the config accepts, SageMaker accepts (constraints its documentation states in prose) ----
def _config_or_none(context: dict):
    from infra.config import ConfigError, load_config
    try:
        return load_config(context)
    except ConfigError:
        return None



def test_the_config_accepts_exactly_the_traffic_shifts_sagemaker_accepts():
    """Every step size, wait and timeout the config lets through yields an UpdateEndpoint that satisfies
    TrafficRoutingConfig's and BlueGreenUpdatePolicy's documented limits; everything else is refused at synth."""
    import awsshapes

    update = req.task_resource("updateEndpoint")
    accepted = refused = 0
    for traffic in ("ALL_AT_ONCE", "CANARY", "LINEAR"):
        for step in (1, 5, 9, 10, 20, 25, 34, 50, 51, 60, 100):
            for wait, limit in ((300, 1800), (60, 1800), (300, 2100), (0, 600)):  # within the teardown's budget
                context = {"serving": {"traffic": traffic, "traffic_step_percent": step, "instance_count": 2,
                                       "wait_interval_s": wait, "max_execution_s": limit}}
                cfg = _config_or_none(context)
                params = req.update_endpoint(cfg or load_unchecked(context))
                errors = validate_request(update, params)
                assert bool(errors) == (cfg is None), (context, errors)
                accepted += cfg is not None
                refused += cfg is None
    assert accepted and refused
    canary = {"Type": "CANARY", "WaitIntervalInSeconds": 1, "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 60}}
    assert awsshapes.documented_errors("TrafficRoutingConfig", canary)


def load_unchecked(context: dict):
    """The config a context would give without the documented-limit checks (to build the request SageMaker
    would have been sent)."""
    from infra.config import ServingConfig, StackConfig, load_config
    serving = ServingConfig.model_construct(**{**load_config({}).serving.model_dump(), **context["serving"]})
    return StackConfig.model_construct(**{**dict(load_config({})), "serving": serving})


def test_the_config_accepts_exactly_the_profiling_intervals_sagemaker_accepts():
    import awsshapes

    train = req.task_resource("createTrainingJob", sync=True)
    for interval in (50, 100, 200, 300, 500, 1000, 2000, 5000, 60000, 120000):
        cfg = _config_or_none({"debugger": {"profiling_interval_ms": interval}})
        assert (cfg is not None) == (interval in awsshapes.PROFILING_INTERVALS_MS)
        if cfg is not None:
            errors = validate_request(train, req.training_job(cfg))  # the bucket is a CloudFormation token here
            assert not [e for e in errors if "ProfilingInterval" in e], interval
    errors = validate_request(train, {"ProfilerConfig": {"ProfilingIntervalInMilliseconds": 300}})
    assert any("ProfilingIntervalInMilliseconds 300" in e for e in errors)
