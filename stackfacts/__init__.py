"""The stack seen from outside, in one place: what infra/ emits and what cli/ and local/ read back.

Standard library only, so the CDK app, the CLI, the local run and the tests all import it without pulling each
other in. Names here are the agreement itself; infra/stack.py emits the outputs under these keys, the state
machine takes these input keys, and tests/infra/test_stackfacts.py holds both against the synthesized
template. The training contract between the script and the containers stays in ml/contract.py.
"""

from __future__ import annotations

from typing import Final

# --- the stack's defaults (infra.config.StackConfig fields; cdk.json's context can change them) -----------------
STACK_NAME: Final = "ImageClassifier"
RESOURCE_PREFIX: Final = "imgclf"  # StackConfig.prefix: <prefix>-<run id> names what the state machine creates
DATA_PREFIX: Final = "data/"  # StackConfig.data_prefix: the SageMaker role reads datasets under it

# --- CloudFormation outputs (OutputKey of DescribeStacks; CfnOutput ids in infra/stack.py) ----------------------
OUTPUT_BUCKET: Final = "BucketName"
OUTPUT_DATASET: Final = "DatasetUri"  # s3://<bucket>/<data prefix>/: the SageMaker role reads datasets only under it
OUTPUT_STATE_MACHINE: Final = "StateMachineArn"
OUTPUT_ENDPOINT: Final = "EndpointName"
OUTPUT_TUNING_INSTANCE_TYPE: Final = "TuningInstanceType"
OUTPUT_TUNING_PARALLEL: Final = "TuningMaxParallelJobs"  # the default of INPUT_MAX_PARALLEL_JOBS
OUTPUT_TRAINING_INSTANCE_TYPE: Final = "TrainingInstanceType"
OUTPUT_TRAINING_INSTANCE_COUNT: Final = "TrainingInstanceCount"
OUTPUT_TRAINING_SPOT: Final = "TrainingSpot"  # "true": the final job runs on managed spot (its own quota)
OUTPUT_TUNING_SPOT: Final = "TuningSpot"  # "true": every tuning trial runs on managed spot (the spot quota)
OUTPUT_PRETRAINED_URI: Final = "PretrainedWeightsUri"  # s3://<bucket>/<StackConfig.pretrained_key> (when set)
OUTPUT_PRETRAINED_BACKBONE: Final = "PretrainedBackbone"  # the torchvision backbone those weights must fit
OUTPUT_RESOURCE_PREFIX: Final = "ResourcePrefix"  # what teardown looks for once runs are gone
OUTPUT_API_URL: Final = "PredictUrl"  # the stage URL of POST /predict
OUTPUT_PREDICT_METHOD_ARN: Final = "PredictMethodArn"  # grant execute-api:Invoke on it
OUTPUT_DASHBOARD: Final = "DashboardUrl"  # the CloudWatch console address of the stack's dashboard
OUTPUT_API_KEY_ID: Final = "ApiKeyId"  # only with api.iam_auth false
OUTPUTS: Final = (OUTPUT_BUCKET, OUTPUT_DATASET, OUTPUT_STATE_MACHINE, OUTPUT_ENDPOINT, OUTPUT_TUNING_INSTANCE_TYPE,
                  OUTPUT_TUNING_PARALLEL, OUTPUT_TRAINING_INSTANCE_TYPE, OUTPUT_TRAINING_INSTANCE_COUNT,
                  OUTPUT_TRAINING_SPOT, OUTPUT_TUNING_SPOT, OUTPUT_PRETRAINED_URI, OUTPUT_PRETRAINED_BACKBONE,
                  OUTPUT_RESOURCE_PREFIX, OUTPUT_API_URL, OUTPUT_PREDICT_METHOD_ARN, OUTPUT_DASHBOARD,
                  OUTPUT_API_KEY_ID)

# --- the state machine's execution input (what `imgclf start` sends; a key left out takes the stack's default) ---
INPUT_DATASET: Final = "dataset"  # s3:// prefix ending in '/', under OUTPUT_DATASET, holding train/ valid/ test/
INPUT_MAX_JOBS: Final = "max_jobs"  # tuning: total trials
INPUT_MAX_PARALLEL_JOBS: Final = "max_parallel_jobs"  # tuning: trials at once
INPUT_MIN_TEST_ACCURACY: Final = "min_test_accuracy"  # the deployment gate
INPUT_WARM_START: Final = "warm_start_parent"  # a previous tuning job to warm-start from
INPUT_KEYS: Final = (INPUT_DATASET, INPUT_MAX_JOBS, INPUT_MAX_PARALLEL_JOBS, INPUT_MIN_TEST_ACCURACY,
                     INPUT_WARM_START)

# --- SageMaker's artifact layout ----------------------------------------------------------------------------------
# A training job writes <OutputDataConfig.S3OutputPath>/<job>/output/model.tar.gz (SM_MODEL_DIR) and
# output.tar.gz (SM_OUTPUT_DATA_DIR) beside it:
# https://docs.aws.amazon.com/sagemaker/latest/dg/model-train-storage.html
JOB_OUTPUT_DIR: Final = "output"
MODEL_ARCHIVE: Final = "model.tar.gz"
OUTPUT_ARCHIVE: Final = "output.tar.gz"
# Debugger: tensors under <DebugHookConfig.S3OutputPath>/<job>/debug-output/, rule results under
# <S3OutputPath>/<job>/rule-output/<rule>/, system metrics under <ProfilerConfig.S3OutputPath>/<job>/profiler-output/;
# the ProfilerReport rule writes rule-output/ProfilerReport/profiler-output/profiler-report.html:
# https://docs.aws.amazon.com/sagemaker/latest/dg/debugger-profiling-report.html
DEBUG_OUTPUT_DIR: Final = "debug-output"
RULE_OUTPUT_DIR: Final = "rule-output"
PROFILER_OUTPUT_DIR: Final = "profiler-output"
PROFILER_REPORT_RULE: Final = "ProfilerReport"
PROFILER_REPORT_FILE: Final = "profiler-report.html"
# The one host of a single-instance job (SM_CURRENT_HOST; also the instance metrics' Host dimension <job>/algo-1:
# https://docs.aws.amazon.com/sagemaker/latest/dg/monitoring-cloudwatch.html#cloudwatch-metrics-jobs).
TRAINING_HOST: Final = "algo-1"
TRAINING_METRICS_NAMESPACE: Final = "/aws/sagemaker/TrainingJobs"
ENDPOINT_METRICS_NAMESPACE: Final = "AWS/SageMaker"
# The CloudWatch metrics this stack reads (dashboard, alarms, the CLI's curves): namespace -> the dimension set they
# are published under. A SEARCH or GetMetricData with any other set finds nothing.
METRIC_DIMENSIONS: Final[dict[str, tuple[str, ...]]] = {
    # Endpoint invocation metrics:
    # https://docs.aws.amazon.com/sagemaker/latest/dg/monitoring-cloudwatch.html#cloudwatch-metrics-endpoint-invocation
    ENDPOINT_METRICS_NAMESPACE: ("EndpointName", "VariantName"),
    # What a job's MetricDefinitions match, per TrainingJobName (Host is the instance metrics' dimension):
    # https://docs.aws.amazon.com/sagemaker/latest/dg/training-metrics.html ("Monitoring Training Job Metrics
    # (CloudWatch console)"); the SageMaker SDK's TrainingJobAnalytics queries {"Name": "TrainingJobName"} too.
    TRAINING_METRICS_NAMESPACE: ("TrainingJobName",),
    # https://docs.aws.amazon.com/apigateway/latest/developerguide/api-gateway-metrics-and-dimensions.html
    "AWS/ApiGateway": ("ApiName",),
    # https://docs.aws.amazon.com/lambda/latest/dg/monitoring-metrics-types.html (per function)
    "AWS/Lambda": ("FunctionName",),
}
TRAINING_METRIC_DIMENSION: Final = METRIC_DIMENSIONS[TRAINING_METRICS_NAMESPACE][0]
TRAINING_LOG_GROUP: Final = "/aws/sagemaker/TrainingJobs"  # the log group SageMaker writes job logs to (same name)
# The production variant of a single-model endpoint (the SageMaker Python SDK's default name):
# https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_ProductionVariant.html
VARIANT_NAME: Final = "AllTraffic"


def job_output_key(output_prefix: str, job: str, *parts: str) -> str:
    """<S3OutputPath key>/<job>/output[/parts]: where SageMaker puts a job's model.tar.gz and output.tar.gz."""
    return "/".join(p.strip("/") for p in (output_prefix, job, JOB_OUTPUT_DIR, *parts) if p.strip("/"))


def profiler_report_key(rule_output_prefix: str) -> str:
    """<rule-output prefix>/ProfilerReport/profiler-output/profiler-report.html."""
    return "/".join(p.strip("/") for p in (rule_output_prefix, PROFILER_REPORT_RULE, PROFILER_OUTPUT_DIR,
                                            PROFILER_REPORT_FILE) if p.strip("/"))


# --- local runs ---------------------------------------------------------------------------------------------------
# moto's default account (moto.core.DEFAULT_ACCOUNT_ID): the local Step Functions runs there, so every local ARN
# (the stand-in's, the endpoint server's, the REST API's) names the same account.
LOCAL_ACCOUNT: Final = "123456789012"
LOCAL_REGION: Final = "us-east-1"  # infra.config's local profile pins it (literal image URIs in the template)
