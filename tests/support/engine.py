"""A small hand-written tune -> train -> gate -> deploy definition on the project's task resources, and its input:
what the engine and the recording tests run against the stand-in."""

from __future__ import annotations

import stackfacts as facts
from ml import contract
from tests.support.local import BUCKET, RULE_IMAGE, channels, metric_definitions, training_request

ENDPOINT = "engine-endpoint"
SAGEMAKER = "arn:aws:states:::sagemaker"
AWS_SDK = "arn:aws:states:::aws-sdk:sagemaker"


def pipeline(data: str, fake_code: str) -> dict:
    """A small hand-written version of the project's pipeline, on the same task resources."""
    train = training_request("placeholder", data, debugger=True)
    train.pop("TrainingJobName")
    train.pop("HyperParameters")
    train.pop("DebugRuleConfigurations")
    train.pop("CheckpointConfig")
    rules_path = "$.DebugRuleEvaluationStatuses[*].RuleEvaluationStatus"
    return {
        "StartAt": "Tune",
        "States": {
            "Tune": {
                "Type": "Task", "Resource": f"{SAGEMAKER}:createHyperParameterTuningJob.sync",
                "Parameters": {
                    "HyperParameterTuningJobName.$": "States.Format('tune-{}', $.run)",
                    "HyperParameterTuningJobConfig": {
                        "Strategy": "Bayesian", "TrainingJobEarlyStoppingType": "Auto",
                        "HyperParameterTuningJobObjective": {"Type": "Maximize",
                                                             "MetricName": contract.OBJECTIVE_METRIC},
                        "ResourceLimits": {"MaxNumberOfTrainingJobs": 3, "MaxParallelTrainingJobs": 2},
                        "ParameterRanges": {
                            "ContinuousParameterRanges": [{"Name": contract.LR, "MinValue": "0.001",
                                                           "MaxValue": "0.01", "ScalingType": "Logarithmic"}],
                            "CategoricalParameterRanges": [{"Name": contract.BATCH_SIZE, "Values": ["16", "32"]}]}},
                    "TrainingJobDefinition": {
                        "StaticHyperParameters": {"sagemaker_program": "train.py",
                                                  "sagemaker_submit_directory": fake_code},
                        "AlgorithmSpecification": {"TrainingImage": "img", "TrainingInputMode": "File",
                                                   "MetricDefinitions": metric_definitions()},
                        "RoleArn": train["RoleArn"], "InputDataConfig": channels(data),
                        "OutputDataConfig": {"S3OutputPath": f"s3://{BUCKET}/tuning"},
                        "ResourceConfig": train["ResourceConfig"],
                        "StoppingCondition": {"MaxRuntimeInSeconds": 300}}},
                "ResultSelector": {"best.$": "$.BestTrainingJob.TrainingJobName",
                                   "hyperparameters.$": "$.BestTrainingJob.TunedHyperParameters"},
                "ResultPath": "$.tuning",
                "Next": "Describe best trial"},
            "Describe best trial": {
                "Type": "Task", "Resource": f"{AWS_SDK}:describeTrainingJob",
                "Parameters": {"TrainingJobName.$": "$.tuning.best"},
                "ResultSelector": {"objective.$": "$.FinalMetricDataList[?(@.MetricName == 'valid_accuracy')].Value"},
                "ResultPath": "$.best", "Next": "Train"},
            "Train": {
                "Type": "Task", "Resource": f"{SAGEMAKER}:createTrainingJob.sync",
                "Parameters": {**train,
                               "TrainingJobName.$": "States.Format('train-{}', $.run)",
                               "HyperParameters.$": "States.JsonMerge($.static, $.tuning.hyperparameters, false)",
                               "StoppingCondition": {"MaxRuntimeInSeconds.$": "$.max_runtime"},
                               "DebugRuleConfigurations.$": "$.rules"},
                "ResultSelector": {"name.$": "$.TrainingJobName", "model.$": "$.ModelArtifacts.S3ModelArtifacts",
                                   "test_accuracy.$":
                                       "$.FinalMetricDataList[?(@.MetricName == 'test_accuracy')].Value"},
                "ResultPath": "$.training",
                "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "Training failed"}],
                "Next": "Poll rules"},
            "Training failed": {"Type": "Fail", "Error": "TrainingFailed", "CausePath": "$.error.Cause"},
            "Poll rules": {
                "Type": "Task", "Resource": f"{AWS_SDK}:describeTrainingJob",
                "Parameters": {"TrainingJobName.$": "$.training.name"},
                "ResultSelector": {"statuses.$": rules_path,
                                   "pending.$": f"States.ArrayContains({rules_path}, 'InProgress')",
                                   "issues.$": f"States.ArrayContains({rules_path}, 'IssuesFound')"},
                "ResultPath": "$.rules_state", "Next": "Rules done?"},
            "Rules done?": {"Type": "Choice", "Choices": [
                {"Variable": "$.rules_state.pending", "BooleanEquals": True, "Next": "Wait for rules"}],
                "Default": "Gate"},
            "Wait for rules": {"Type": "Wait", "Seconds": 1, "Next": "Poll rules"},
            "Gate": {"Type": "Choice", "Choices": [
                {"Variable": "$.rules_state.issues", "BooleanEquals": True, "Next": "Gate rejected"}],
                "Default": "Create model"},
            "Gate rejected": {"Type": "Fail", "Error": "GateRejected", "Cause": "a Debugger rule found issues"},
            "Create model": {
                "Type": "Task", "Resource": f"{SAGEMAKER}:createModel",
                "Parameters": {"ModelName.$": "States.Format('model-{}', $.run)", "ExecutionRoleArn": train["RoleArn"],
                               "PrimaryContainer": {"Image": "inference", "ModelDataUrl.$": "$.training.model"}},
                "ResultPath": "$.model", "Next": "Create endpoint config"},
            "Create endpoint config": {
                "Type": "Task", "Resource": f"{SAGEMAKER}:createEndpointConfig",
                "Parameters": {"EndpointConfigName.$": "States.Format('config-{}', $.run)", "ProductionVariants": [
                    {"VariantName": facts.VARIANT_NAME, "ModelName.$": "States.Format('model-{}', $.run)",
                     "InstanceType": "ml.m5.large", "InitialInstanceCount": 1}]},
                "ResultPath": "$.config", "Next": "Find endpoint"},
            "Find endpoint": {
                "Type": "Task", "Resource": f"{AWS_SDK}:describeEndpoint",
                "Parameters": {"EndpointName": ENDPOINT}, "ResultSelector": {"status.$": "$.EndpointStatus"},
                "ResultPath": "$.existing",
                "Catch": [{"ErrorEquals": ["SageMaker.SageMakerException"], "ResultPath": "$.lookup",
                           "Next": "Create endpoint"}],
                "Next": "Update endpoint"},
            "Create endpoint": {
                "Type": "Task", "Resource": f"{SAGEMAKER}:createEndpoint",
                "Parameters": {"EndpointName": ENDPOINT, "EndpointConfigName.$": "States.Format('config-{}', $.run)"},
                "ResultPath": "$.deploy", "Next": "Wait for endpoint"},
            "Update endpoint": {
                "Type": "Task", "Resource": f"{SAGEMAKER}:updateEndpoint",
                "Parameters": {"EndpointName": ENDPOINT, "EndpointConfigName.$": "States.Format('config-{}', $.run)"},
                "ResultPath": "$.deploy", "Next": "Wait for endpoint"},
            "Wait for endpoint": {"Type": "Wait", "Seconds": 1, "Next": "Describe endpoint"},
            "Describe endpoint": {
                "Type": "Task", "Resource": f"{AWS_SDK}:describeEndpoint", "Parameters": {"EndpointName": ENDPOINT},
                "ResultSelector": {"status.$": "$.EndpointStatus", "config.$": "$.EndpointConfigName"},
                "ResultPath": "$.endpoint", "Next": "Deployed?"},
            "Deployed?": {"Type": "Choice", "Choices": [
                {"And": [{"Variable": "$.endpoint.status", "StringEquals": "InService"},
                         {"Variable": "$.endpoint.config", "StringEqualsPath": "$.expected_config"}],
                 "Next": "Done"},
                {"Variable": "$.endpoint.status", "StringEquals": "Failed", "Next": "Deployment failed"}],
                "Default": "Wait for endpoint"},
            "Deployment failed": {"Type": "Fail", "Error": "DeploymentFailed"},
            "Done": {"Type": "Succeed"},
        },
    }


def run_input(run: str, *, rules: dict[str, dict] | None = None, max_runtime: int = 600,
              static: dict | None = None) -> dict:
    rules = rules if rules is not None else {"VanishingGradient": {}, "LossNotDecreasing": {}}
    hyperparameters = training_request("x", "s3://b/d")["HyperParameters"]
    for tuned in (contract.LR, contract.BATCH_SIZE):
        hyperparameters.pop(tuned)
    return {"run": run, "expected_config": f"config-{run}", "max_runtime": max_runtime,
            "static": {**hyperparameters, **(static or {})},
            "rules": [{"RuleConfigurationName": n, "RuleEvaluatorImage": RULE_IMAGE,
                       "RuleParameters": {"rule_to_invoke": n, **p}} for n, p in rules.items()]}
