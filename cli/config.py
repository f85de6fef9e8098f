"""Names this package agrees on with the CDK stack and the state machine: the one place to reconcile them.

The stack's outputs are read from CloudFormation DescribeStacks by OutputKey; the execution input keys are what
`start` sends to the state machine. Everything about the training contract itself comes from ml/contract.py.
"""

from __future__ import annotations

import os

# --- the deployed stack ----------------------------------------------------------------------------------------
STACK_ENV = "IMGCLF_STACK"
DEFAULT_STACK_NAME = os.environ.get(STACK_ENV, "ImageClassifierStack")

# CloudFormation OutputKeys (CfnOutput logical ids) of the stack.
OUTPUT_BUCKET = "BucketName"
OUTPUT_STATE_MACHINE = "StateMachineArn"
OUTPUT_API_URL = "ApiUrl"
OUTPUT_ENDPOINT = "EndpointName"
# Optional: the name prefix of what the state machine creates (models, endpoint configs, endpoints). When the
# stack has no such output, the stack name is the prefix.
OUTPUT_RESOURCE_PREFIX = "ResourcePrefix"

# --- the state machine's execution input (what `start` sends) -------------------------------------------------
INPUT_DATASET = "dataset"  # S3 URI of the prefix holding train/ valid/ test/
INPUT_MAX_JOBS = "maxJobs"  # tuning: total trials
INPUT_MAX_PARALLEL_JOBS = "maxParallelJobs"  # tuning: trials at once
DEFAULT_DATA_PREFIX = "data"  # upload-data's default key prefix in the stack's bucket

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
