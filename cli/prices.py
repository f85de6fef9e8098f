"""SageMaker on-demand prices, USD per instance-hour, shipped with the project (no Pricing API call offline).

Source: https://aws.amazon.com/sagemaker/pricing/ (On-Demand Pricing tab: "Training" and "Real-Time Inference"),
region US East (N. Virginia), compiled on PRICES_AS_OF without access to the live page (no network on the machines
that built it): the figures are estimates to be checked against the page before anyone budgets with them, and every
figure `imgclf` prints says "estimate". Other regions charge differently (mostly 0-30% more):
`imgclf` labels every figure with the region of this table, and a figure for another region is an estimate.
Spot savings need no table: a spot job's BillableTimeInSeconds already counts only the seconds it was charged at
(DescribeTrainingJob, https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_DescribeTrainingJob.html).
"""

from __future__ import annotations

PRICES_SOURCE = "https://aws.amazon.com/sagemaker/pricing/"
PRICES_AS_OF = "2026-11-30"
PRICES_REGION = "us-east-1"

TRAINING_USD_PER_HOUR: dict[str, float] = {
    "ml.m5.large": 0.115, "ml.m5.xlarge": 0.23, "ml.m5.2xlarge": 0.461, "ml.m5.4xlarge": 0.922,
    "ml.c5.xlarge": 0.204, "ml.c5.2xlarge": 0.408, "ml.c5.4xlarge": 0.816,
    "ml.g4dn.xlarge": 0.736, "ml.g4dn.2xlarge": 0.94, "ml.g4dn.4xlarge": 1.505, "ml.g4dn.8xlarge": 2.72,
    "ml.g5.xlarge": 1.408, "ml.g5.2xlarge": 1.515, "ml.g5.4xlarge": 2.03,
    "ml.p3.2xlarge": 3.825,
}

HOSTING_USD_PER_HOUR: dict[str, float] = {
    "ml.t2.medium": 0.056, "ml.m5.large": 0.115, "ml.m5.xlarge": 0.23, "ml.m5.2xlarge": 0.461,
    "ml.c5.large": 0.102, "ml.c5.xlarge": 0.204, "ml.c5.2xlarge": 0.408,
    "ml.g4dn.xlarge": 0.736, "ml.g4dn.2xlarge": 0.94, "ml.g5.xlarge": 1.408,
}
