"""Names this package agrees on with the CDK stack and the state machine: the one place to reconcile them.

The stack's outputs are read from CloudFormation DescribeStacks by OutputKey; the execution input keys are what
`start` sends to the state machine. Everything about the training contract itself comes from ml/contract.py.
"""

from __future__ import annotations

import os

# --- the deployed stack ----------------------------------------------------------------------------------------
STACK_ENV = "IMGCLF_STACK"
DEFAULT_STACK_NAME = os.environ.get(STACK_ENV, "ImageClassifier")  # infra.config.StackConfig.stack_name

# CloudFormation OutputKeys (CfnOutput logical ids in infra/stack.py).
OUTPUT_BUCKET = "BucketName"
OUTPUT_DATASET = "DatasetUri"  # s3://<bucket>/<data prefix>/: the SageMaker role reads datasets only under it
OUTPUT_STATE_MACHINE = "StateMachineArn"
OUTPUT_API_URL = "PredictUrl"  # the stage URL of POST /predict
OUTPUT_ENDPOINT = "EndpointName"
OUTPUT_DASHBOARD = "DashboardUrl"  # the CloudWatch console address of the stack's dashboard
# The name prefix of what the state machine creates (models, endpoint configs, endpoints: <prefix>-...). Once the
# stack is gone, teardown uses --prefix or DEFAULT_RESOURCE_PREFIX (cdk.json's "prefix" context).
OUTPUT_RESOURCE_PREFIX = "ResourcePrefix"
DEFAULT_RESOURCE_PREFIX = "imgclf"
# What a run asks of the account's per-instance-type training quotas (`start` checks them before it starts).
OUTPUT_TUNING_INSTANCE_TYPE = "TuningInstanceType"
OUTPUT_TUNING_PARALLEL = "TuningMaxParallelJobs"  # the default of INPUT_MAX_PARALLEL_JOBS
OUTPUT_TRAINING_INSTANCE_TYPE = "TrainingInstanceType"
OUTPUT_TRAINING_INSTANCE_COUNT = "TrainingInstanceCount"
OUTPUT_TRAINING_SPOT = "TrainingSpot"  # "true": the final job runs on managed spot (its own quota)
# The staged ImageNet weights every job reads as its pretrained channel (absent: the jobs want none).
OUTPUT_PRETRAINED_URI = "PretrainedWeightsUri"  # s3://<bucket>/<StackConfig.pretrained_key>
OUTPUT_PRETRAINED_BACKBONE = "PretrainedBackbone"  # the torchvision backbone those weights must fit

# --- the state machine's execution input (what `start` sends; anything left out takes the stack's default) -----
INPUT_DATASET = "dataset"  # s3:// prefix ending in '/', under OUTPUT_DATASET, holding train/ valid/ test/
INPUT_MAX_JOBS = "max_jobs"  # tuning: total trials
INPUT_MAX_PARALLEL_JOBS = "max_parallel_jobs"  # tuning: trials at once
INPUT_MIN_TEST_ACCURACY = "min_test_accuracy"  # the deployment gate
INPUT_WARM_START = "warm_start_parent"  # a previous tuning job to warm-start from
DEFAULT_DATA_PREFIX = "data/"  # upload-data's key prefix when the stack has no DatasetUri output

# --- local runs ------------------------------------------------------------------------------------------------
DEFAULT_LOCAL_DIR = "demo-output"
LOCAL_REGION = "us-east-1"
LOCAL_API_URL = "http://127.0.0.1:8080"  # `make serve` (PORT=8080)

# --- SageMaker conventions the report reads --------------------------------------------------------------------
TRAINING_METRICS_NAMESPACE = "/aws/sagemaker/TrainingJobs"
HOST_SUFFIX = "/algo-1"  # CloudWatch's Host dimension of a single-instance training job: <job>/algo-1
OUTPUT_ARCHIVE = "output.tar.gz"  # SM_OUTPUT_DATA_DIR, beside model.tar.gz
MODEL_ARCHIVE = "model.tar.gz"
PROFILER_REPORT_FILE = "profiler-report.html"
PROFILER_REPORT_RULE = "ProfilerReport"
