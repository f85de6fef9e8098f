"""The SageMaker request of every Task state, as plain JSON (Step Functions `Parameters`).

Static members are literal; members ending in `.$` are JsonPath or intrinsic functions over the execution state.
Deployment values (bucket, role, images, code location) are `${Name}` placeholders that the state machine's
DefinitionSubstitutions fill in, so the definition itself is one plain string (see infra.definition).

State layout the requests read (built by infra.pipeline):
  $.args   dataset, max_jobs, max_parallel_jobs, min_test_accuracy, warm_start_parent (null: cold start)
  $.names  run_id, tuning_job, training_job, training_job_no_debugger, model, endpoint_config, endpoint
  $.hyperparameters.static[_no_debugger]   static hyperparameters of the final training job (Debugger on / off)
  $.tuning.hyperparameters          the best trial's tuned hyperparameters (strings)
  $.run.training_job                the final training job that ran (with Debugger, or without when refused)
  $.training.model_data             s3://.../model.tar.gz of the final training job
  $.fleet.instance_count            the new fleet's InitialInstanceCount (instance endpoints; infra.pipeline sizes it)
  $.existing                        DescribeEndpoint of the live endpoint (an update reads its EndpointConfigName)
"""

from __future__ import annotations

from typing import Any

from sagemaker.core.debugger import CollectionConfig, DebuggerHookConfig, ProfilerRule, Rule, rule_configs

import stackfacts as facts
from infra.config import StackConfig
from ml import contract

# --- DefinitionSubstitutions keys ------------------------------------------------------------------
BUCKET = "Bucket"
ROLE_ARN = "SageMakerRoleArn"
SOURCEDIR_URI = "SourceDirUri"
REGION = "Region"
TRAINING_IMAGE = "TrainingImage"
INFERENCE_IMAGE = "InferenceImage"
RULES_IMAGE = "RuleEvaluatorImage"
STACK_UUID = "StackUuid"  # the stack id's last part: unique per stack (infra.stack.stack_uuid)
SUBSTITUTIONS: tuple[str, ...] = (BUCKET, ROLE_ARN, SOURCEDIR_URI, REGION, TRAINING_IMAGE, INFERENCE_IMAGE,
                                  RULES_IMAGE, STACK_UUID)

# --- S3 layout of the project bucket -----------------------------------------------------------------
TUNING_OUTPUT = "tuning/"
TRAINING_OUTPUT = "training/"
CHECKPOINTS = "checkpoints/"
DEBUGGER_OUTPUT = "debugger/"
PROFILER_OUTPUT = "profiler/"
DATA_CAPTURE = "datacapture/"
VARIANT_NAME = facts.VARIANT_NAME
FLEET_INSTANCE_COUNT = "$.fleet.instance_count"  # set by infra.pipeline before "Create endpoint config"


def sub(key: str) -> str:
    return "${" + key + "}"


def s3(prefix: str) -> str:
    return f"s3://{sub(BUCKET)}/{prefix}"


def head_pretrained(cfg: StackConfig) -> dict[str, str]:
    """HeadObject on the staged weights (https://docs.aws.amazon.com/AmazonS3/latest/API/API_HeadObject.html)."""
    assert cfg.pretrained_key is not None
    return {"Bucket": f"${{{BUCKET}}}", "Key": cfg.pretrained_key}


def task_resource(action: str, *, sync: bool = False, sdk: bool = False, service: str = "sagemaker") -> str:
    """Step Functions' own integration ARN (optimized `sagemaker:` or `aws-sdk:<service>:`), aws partition."""
    service = f"aws-sdk:{service}" if sdk else service
    return f"arn:aws:states:::{service}:{action}{'.sync' if sync else ''}"


RUN_ID_TAG = "run-id"
PROJECT_TAG = "project"
# What marks a resource as this stack's for the teardown: the stack's UUID, so that another stack, an older one
# with the same prefix, the CLI or a notebook tagging project=<prefix> never matches.
STACK_TAG = "stack-id"


def _tags(cfg: StackConfig) -> list[dict[str, str]]:
    # The run id (12 hex, also in the execution's output) ties every SageMaker resource back to the run that made
    # it. Not the execution name: names may hold characters a tag value may not ('!', '(', ... TagValue pattern).
    return [{"Key": PROJECT_TAG, "Value": cfg.prefix}, {"Key": STACK_TAG, "Value": sub(STACK_UUID)},
            {"Key": RUN_ID_TAG, "Value.$": "$.names.run_id"}]


def _metric_definitions() -> list[dict[str, str]]:
    return [{"Name": m.name, "Regex": m.regex} for m in contract.METRICS]


def _channels() -> list[dict[str, Any]]:
    return [{
        "ChannelName": channel,
        "DataSource": {"S3DataSource": {
            "S3DataType": "S3Prefix",
            "S3Uri.$": f"States.Format('{{}}{channel}/', $.args.dataset)",
            "S3DataDistributionType": "FullyReplicated",
        }},
        "InputMode": "File",
    } for channel in contract.CHANNELS]


def _pretrained_channels(cfg: StackConfig) -> list[dict[str, Any]]:
    """The staged ImageNet weights as one more File channel (SM_CHANNEL_PRETRAINED), when the jobs want them.
    An S3Prefix equal to the object's key selects that one object
    (https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_S3DataSource.html)."""
    key = cfg.pretrained_key
    if key is None:
        return []
    return [{
        "ChannelName": contract.PRETRAINED_CHANNEL,
        "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": s3(key),
                                        "S3DataDistributionType": "FullyReplicated"}},
        "InputMode": "File",
    }]


def _tuning_spot(cfg: StackConfig) -> dict[str, Any]:
    """Managed spot for the trials, with checkpoints to resume from. HyperParameterTrainingJobDefinition has
    EnableManagedSpotTraining, CheckpointConfig and StoppingCondition.MaxWaitTimeInSeconds (>= MaxRuntimeInSeconds)
    (https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_HyperParameterTrainingJobDefinition.html,
    .../API_StoppingCondition.html, .../API_CheckpointConfig.html). One CheckpointConfig serves every trial:
    train.py keeps each trial's checkpoint apart (--checkpoint-scope job)."""
    t = cfg.tuning
    if not t.spot:
        return {}
    return {
        "EnableManagedSpotTraining": True,
        "CheckpointConfig": {
            "S3Uri.$": f"States.Format('{s3(CHECKPOINTS)}{{}}/', $.names.tuning_job)",
            "LocalPath": contract.DEFAULT_CHECKPOINT_DIR,
        },
    }


def static_hyperparameters(cfg: StackConfig, *, debugger: bool) -> dict[str, str]:
    """Everything but the tuned three: the profile's defaults and how the toolkit finds the code."""
    values = {k: v for k, v in cfg.base_hyperparameters.items() if k not in cfg.tuned_names}
    values.update({
        "debugger": "on" if debugger else "off",
        "sagemaker_program": contract.TRAINING_PROGRAM,
        "sagemaker_submit_directory": sub(SOURCEDIR_URI),
        "sagemaker_region": sub(REGION),
        "sagemaker_container_log_level": "20",
    })
    return values


def parameter_ranges(cfg: StackConfig) -> dict[str, list[dict[str, Any]]]:
    ranges: dict[str, list[dict[str, Any]]] = {
        "CategoricalParameterRanges": [], "ContinuousParameterRanges": [], "IntegerParameterRanges": []}
    for r in cfg.tuning_space.ranges:
        if isinstance(r, contract.CategoricalRange):
            ranges["CategoricalParameterRanges"].append({"Name": r.name, "Values": list(r.values)})
        elif isinstance(r, contract.IntegerRange):
            ranges["IntegerParameterRanges"].append({"Name": r.name, "MinValue": str(r.min_value),
                                                     "MaxValue": str(r.max_value), "ScalingType": r.scaling})
        else:
            ranges["ContinuousParameterRanges"].append({"Name": r.name, "MinValue": repr(float(r.min_value)),
                                                        "MaxValue": repr(float(r.max_value)),
                                                        "ScalingType": r.scaling})
    return {k: v for k, v in ranges.items() if v}


def tuning_job(cfg: StackConfig, *, warm_start: bool) -> dict[str, Any]:
    t = cfg.tuning
    request: dict[str, Any] = {
        "HyperParameterTuningJobName.$": "$.names.tuning_job",
        "HyperParameterTuningJobConfig": {
            "Strategy": t.strategy,
            "HyperParameterTuningJobObjective": {"Type": contract.OBJECTIVE_TYPE,
                                                 "MetricName": contract.OBJECTIVE_METRIC},
            # MaxRuntimeInSeconds: the tuning job ends before the execution timeout could (StackConfig.tuning_budget_s).
            "ResourceLimits": {"MaxNumberOfTrainingJobs.$": "$.args.max_jobs",
                               "MaxParallelTrainingJobs.$": "$.args.max_parallel_jobs",
                               "MaxRuntimeInSeconds": cfg.tuning_budget_s},
            "ParameterRanges": parameter_ranges(cfg),
            "TrainingJobEarlyStoppingType": t.early_stopping,
        },
        "TrainingJobDefinition": {
            # Tuning trials cannot carry Debugger (the API has no such members): the final job does.
            "StaticHyperParameters": {**static_hyperparameters(cfg, debugger=False),
                                       contract.CHECKPOINT_SCOPE: "job"},
            "AlgorithmSpecification": {"TrainingImage": sub(TRAINING_IMAGE), "TrainingInputMode": "File",
                                       "MetricDefinitions": _metric_definitions()},
            "RoleArn": sub(ROLE_ARN),
            "InputDataConfig": [*_channels(), *_pretrained_channels(cfg)],
            "OutputDataConfig": {"S3OutputPath": s3(TUNING_OUTPUT)},
            "ResourceConfig": {"InstanceType": t.instance_type, "InstanceCount": 1,
                               "VolumeSizeInGB": t.volume_size_gb},
            "StoppingCondition": {"MaxRuntimeInSeconds": t.max_runtime_s,
                                  **({"MaxWaitTimeInSeconds": t.spot_max_wait_s} if t.spot else {})},
            **_tuning_spot(cfg),
        },
        "Tags": _tags(cfg),
    }
    if warm_start:
        request["WarmStartConfig"] = {
            "ParentHyperParameterTuningJobs": [{"HyperParameterTuningJobName.$": "$.args.warm_start_parent"}],
            "WarmStartType": t.warm_start_type,
        }
    return request


def _debug_rules(cfg: StackConfig) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """DebugRuleConfigurations and the hook's collections, as the SDK builds them for built-in rules."""
    rules: list[dict[str, Any]] = []
    collections: dict[str, Any] = {}
    for name in cfg.debugger.active_rules:
        snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")
        rule = Rule.sagemaker(getattr(rule_configs, snake)())
        config = rule.to_debugger_rule_config_dict()
        config["RuleEvaluatorImage"] = sub(RULES_IMAGE)
        rules.append(config)
        for c in rule.collection_configs or ():
            params = dict(collections.get(c.name, {}), **(c.parameters or {}))
            params.pop("save_interval", None)  # the SDK's 500 steps: set below, or derived in the job
            if cfg.debugger.save_interval is not None:
                params["save_interval"] = str(cfg.debugger.save_interval)
            collections[c.name] = params
    hook = DebuggerHookConfig(
        s3_output_path=s3(DEBUGGER_OUTPUT),
        # Without an explicit interval, the job derives one per mode from its steps per epoch (ml/debugger.py).
        hook_parameters=(None if cfg.debugger.save_interval is not None else
                         {contract.DEBUGGER_SAVES_PER_EPOCH: str(cfg.debugger.saves_per_epoch)}),
        collection_configs=[CollectionConfig(name, params or None) for name, params in sorted(collections.items())],
    )
    return rules, [hook._to_request_dict()]


def _profiler_rules(cfg: StackConfig) -> list[dict[str, Any]]:
    out = []
    for name in cfg.debugger.active_profiler_rules:
        config = ProfilerRule.sagemaker(getattr(rule_configs, name)()).to_profiler_rule_config_dict()
        config["RuleEvaluatorImage"] = sub(RULES_IMAGE)
        out.append(config)
    return out


# Request members that make a training job a Debugger/Profiler job (botocore CreateTrainingJobRequest).
DEBUGGER_MEMBERS = ("DebugHookConfig", "DebugRuleConfigurations", "ProfilerConfig", "ProfilerRuleConfigurations",
                    "TensorBoardOutputConfig")


def training_job(cfg: StackConfig, *, debugger: bool = True) -> dict[str, Any]:
    """The final training job; `debugger=False` is the same job without any Debugger member (the fallback when
    SageMaker refuses Debugger to this account), under its own name and with the script's hook off."""
    t, d = cfg.training, cfg.debugger
    with_debugger = debugger and d.enabled
    name = "$.names.training_job" if debugger else "$.names.training_job_no_debugger"
    static = "$.hyperparameters.static" if debugger else "$.hyperparameters.static_no_debugger"
    request: dict[str, Any] = {
        "TrainingJobName.$": name,
        # Tuned values arrive as strings from the tuner and override nothing static (disjoint names).
        "HyperParameters.$": f"States.JsonMerge({static}, $.tuning.hyperparameters, false)",
        "AlgorithmSpecification": {"TrainingImage": sub(TRAINING_IMAGE), "TrainingInputMode": "File",
                                   "MetricDefinitions": _metric_definitions(),
                                   "EnableSageMakerMetricsTimeSeries": True},
        "RoleArn": sub(ROLE_ARN),
        "InputDataConfig": [*_channels(), *_pretrained_channels(cfg)],
        "OutputDataConfig": {"S3OutputPath": s3(TRAINING_OUTPUT)},
        "ResourceConfig": {"InstanceType": t.instance_type, "InstanceCount": t.instance_count,
                           "VolumeSizeInGB": t.volume_size_gb},
        "StoppingCondition": {"MaxRuntimeInSeconds": t.max_runtime_s},
        # Always checkpoint: train.py resumes from /opt/ml/checkpoints after a spot interruption or a retry.
        "CheckpointConfig": {
            "S3Uri.$": f"States.Format('{s3(CHECKPOINTS)}{{}}/', {name})",
            "LocalPath": contract.DEFAULT_CHECKPOINT_DIR,
        },
        "Tags": _tags(cfg),
    }
    if t.spot:
        request["EnableManagedSpotTraining"] = True
        request["StoppingCondition"]["MaxWaitTimeInSeconds"] = t.spot_max_wait_s
    if with_debugger:
        rules, (hook,) = _debug_rules(cfg)
        if rules:
            request["DebugHookConfig"] = hook
            request["DebugRuleConfigurations"] = rules
        if d.profiler:
            request["ProfilerConfig"] = {"S3OutputPath": s3(PROFILER_OUTPUT),
                                         "ProfilingIntervalInMilliseconds": d.profiling_interval_ms}
            if rules := _profiler_rules(cfg):
                request["ProfilerRuleConfigurations"] = rules
    else:
        # SageMaker turns system monitoring on by default (ProfilerConfig.DisableProfiler, API_ProfilerConfig):
        # a job without Debugger says so explicitly.
        request["ProfilerConfig"] = {"DisableProfiler": True}
    return request


def describe_training_job(name_path: str = "$.names.training_job") -> dict[str, Any]:
    return {"TrainingJobName.$": name_path}


def describe_tuning_job() -> dict[str, Any]:
    return {"HyperParameterTuningJobName.$": "$.names.tuning_job"}


def create_model(cfg: StackConfig) -> dict[str, Any]:
    code_dir = f"{contract.DEFAULT_MODEL_DIR}/{contract.MODEL_CODE_DIR}"
    return {
        "ModelName.$": "$.names.model",
        "PrimaryContainer": {
            "Image": sub(INFERENCE_IMAGE),
            "ModelDataUrl.$": "$.training.model_data",
            # The PyTorch inference toolkit loads code/ from model.tar.gz, which train.py writes.
            "Environment": {"SAGEMAKER_PROGRAM": contract.INFERENCE_PROGRAM, "SAGEMAKER_SUBMIT_DIRECTORY": code_dir,
                            "SAGEMAKER_CONTAINER_LOG_LEVEL": "20", "SAGEMAKER_REGION": sub(REGION)},
        },
        "ExecutionRoleArn": sub(ROLE_ARN),
        # Serving downloads nothing (no ImageNet weights, no pip); serverless endpoints cannot isolate.
        "EnableNetworkIsolation": not cfg.serving.serverless,
        "Tags": _tags(cfg),
    }


def create_endpoint_config(cfg: StackConfig) -> dict[str, Any]:
    s = cfg.serving
    variant: dict[str, Any] = {"VariantName": VARIANT_NAME, "ModelName.$": "$.names.model"}
    if s.serverless:
        variant["ServerlessConfig"] = {"MemorySizeInMB": s.serverless_memory_mb,
                                       "MaxConcurrency": s.serverless_max_concurrency}
    else:
        # serving.instance_count for a new endpoint; for an update, no fewer than the live variant serves now
        # (infra.pipeline "Size fleet for update?"): an update never shrinks a scaled-out endpoint.
        variant.update({"InstanceType": s.instance_type, "InitialInstanceCount.$": FLEET_INSTANCE_COUNT,
                        "InitialVariantWeight": 1.0})
    request: dict[str, Any] = {
        "EndpointConfigName.$": "$.names.endpoint_config",  # per execution: configs are immutable
        "ProductionVariants": [variant],
        "Tags": _tags(cfg),
    }
    if s.capture:
        request["DataCaptureConfig"] = {
            "EnableCapture": True,
            "InitialSamplingPercentage": s.data_capture_percent,
            "DestinationS3Uri": s3(DATA_CAPTURE),
            "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
            "CaptureContentTypeHeader": {"JsonContentTypes": [contract.JSON_CONTENT_TYPE]},
        }
    return request


def describe_live_endpoint_config() -> dict[str, Any]:
    """DescribeEndpointConfig of the config the live endpoint serves (its variant's InstanceType decides whether
    the update must leave Application Auto Scaling first)."""
    return {"EndpointConfigName.$": "$.existing.EndpointConfigName"}


def stop_tuning_job() -> dict[str, Any]:
    return {"HyperParameterTuningJobName.$": "$.names.tuning_job"}


def stop_training_job() -> dict[str, Any]:
    """The run's training job: $.run.training_job names the Debugger job, or the fallback's once it runs."""
    return {"TrainingJobName.$": "$.run.training_job"}


def describe_endpoint(cfg: StackConfig) -> dict[str, Any]:
    return {"EndpointName": cfg.endpoint_name}


def create_endpoint(cfg: StackConfig) -> dict[str, Any]:
    return {"EndpointName": cfg.endpoint_name, "EndpointConfigName.$": "$.names.endpoint_config",
            "Tags": _tags(cfg)}


# Application Auto Scaling of the endpoint's variant (aws-sdk:applicationautoscaling, botocore's
# application-autoscaling RegisterScalableTarget / PutScalingPolicy / DeregisterScalableTarget input shapes;
# https://docs.aws.amazon.com/sagemaker/latest/dg/endpoint-auto-scaling-add-code-register.html).
SCALING_NAMESPACE = "sagemaker"
SCALABLE_DIMENSION = "sagemaker:variant:DesiredInstanceCount"
SCALING_METRIC = "SageMakerVariantInvocationsPerInstance"


def scaling_resource_id(cfg: StackConfig) -> str:
    return f"endpoint/{cfg.endpoint_name}/variant/{VARIANT_NAME}"


def scaling_policy_name(cfg: StackConfig) -> str:
    return f"{cfg.endpoint_name}-invocations"


def register_scalable_target(cfg: StackConfig) -> dict[str, Any]:
    """Idempotent: registering again updates min/max, so every deployment (create or blue/green update, which
    keeps the variant name) re-applies cdk.json's bounds."""
    a = cfg.serving.autoscaling
    return {"ServiceNamespace": SCALING_NAMESPACE, "ResourceId": scaling_resource_id(cfg),
            "ScalableDimension": SCALABLE_DIMENSION, "MinCapacity": a.min_instances, "MaxCapacity": a.max_instances}


def deregister_scalable_target(cfg: StackConfig) -> dict[str, Any]:
    return {"ServiceNamespace": SCALING_NAMESPACE, "ResourceId": scaling_resource_id(cfg),
            "ScalableDimension": SCALABLE_DIMENSION}


def put_scaling_policy(cfg: StackConfig) -> dict[str, Any]:
    a = cfg.serving.autoscaling
    return {"PolicyName": scaling_policy_name(cfg), "ServiceNamespace": SCALING_NAMESPACE,
            "ResourceId": scaling_resource_id(cfg), "ScalableDimension": SCALABLE_DIMENSION,
            "PolicyType": "TargetTrackingScaling",
            "TargetTrackingScalingPolicyConfiguration": {
                "TargetValue": a.target_invocations_per_instance,
                "PredefinedMetricSpecification": {"PredefinedMetricType": SCALING_METRIC},
                "ScaleOutCooldown": a.scale_out_cooldown_s, "ScaleInCooldown": a.scale_in_cooldown_s}}


def update_endpoint(cfg: StackConfig) -> dict[str, Any]:
    s = cfg.serving
    routing: dict[str, Any] = {"Type": s.traffic, "WaitIntervalInSeconds": s.wait_interval_s}
    step = {"Type": "CAPACITY_PERCENT", "Value": s.traffic_step_percent}
    if s.traffic == "CANARY":
        routing["CanarySize"] = step
    elif s.traffic == "LINEAR":
        routing["LinearStepSize"] = step
    return {
        "EndpointName": cfg.endpoint_name,
        "EndpointConfigName.$": "$.names.endpoint_config",
        # The new config's variant properties apply (API_UpdateEndpoint.html, RetainAllVariantProperties): its
        # InitialInstanceCount is already max(serving.instance_count, the live CurrentInstanceCount), so the green
        # fleet starts no smaller than the blue one serves, a raised serving.instance_count takes effect, and its
        # weight and DataCaptureConfig apply. Retaining instead would ignore a raised instance_count (the retained
        # DesiredInstanceCount wins), and DataCaptureConfig cannot be excluded from retention (API_VariantProperty:
        # "Not currently supported"), so a changed capture setting might not apply.
        "RetainAllVariantProperties": False,
        # Blue/green: the old fleet keeps serving until the new one passes the baking period without an alarm.
        "DeploymentConfig": {
            "BlueGreenUpdatePolicy": {"TrafficRoutingConfiguration": routing,
                                      "TerminationWaitInSeconds": s.termination_wait_s,
                                      "MaximumExecutionTimeoutInSeconds": s.max_execution_s},
            "AutoRollbackConfiguration": {"Alarms": [{"AlarmName": name} for name in cfg.alarm_names]},
        },
    }
