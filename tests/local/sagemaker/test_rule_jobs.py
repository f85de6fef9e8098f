"""A training job's rule jobs run on the narrow context and callables alone: no service, no TrainingJob.

(The rules over real tensors, and the statuses as DescribeTrainingJob answers them: test_service.py, slow.)"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import stackfacts as facts
from local.sagemaker.context import Context
from local.sagemaker.profiler import NOT_EVALUATED_STATUS
from local.sagemaker.rule_jobs import RuleJobs
from local.sagemaker.s3 import LocalS3

OUTPUT = "s3://bucket/output"


def _context(tmp_path: Path) -> Context:
    return Context(work_dir=tmp_path, s3=LocalS3(tmp_path / "s3"), lock=threading.RLock(), emit=lambda event: None,
                   region=facts.LOCAL_REGION, account=facts.LOCAL_ACCOUNT, python=sys.executable, repo_root=tmp_path,
                   source_dir=tmp_path, stop_grace_seconds=1.0, endpoint_startup_timeout=1.0)


def _rule_jobs(tmp_path: Path, request: dict, describe, statuses: list) -> RuleJobs:
    return RuleJobs(_context(tmp_path), job_name="job", request={"OutputDataConfig": {"S3OutputPath": OUTPUT},
                                                                 **request},
                    role=f"arn:aws:iam::{facts.LOCAL_ACCOUNT}:role/r", folder=tmp_path / "rules",
                    tensors=f"{OUTPUT}/job/{facts.DEBUG_OUTPUT_DIR}", describe=describe,
                    set_status=lambda *status: statuses.append(status), log=lambda text: None)


def test_a_stopped_job_stops_its_debugger_rules(tmp_path):
    statuses: list = []
    rules = [{"RuleConfigurationName": "VanishingGradient"}, {"RuleConfigurationName": "Overfit"}]
    jobs = _rule_jobs(tmp_path, {"DebugRuleConfigurations": rules}, lambda: {"SecondaryStatus": "Stopped"}, statuses)
    jobs.run([], [])
    assert statuses == [("debug", "VanishingGradient", "Stopped", "The training job was stopped"),
                        ("debug", "Overfit", "Stopped", "The training job was stopped")]


def test_profiler_rules_that_do_not_run_locally_say_why(tmp_path):
    statuses: list = []
    rules = [{"RuleConfigurationName": "gpu", "RuleParameters": {"rule_to_invoke": "LowGPUUtilization"}},
             {"RuleConfigurationName": "Dataloader"}]
    _rule_jobs(tmp_path, {"ProfilerRuleConfigurations": rules}, dict, statuses).run([], [])
    (gpu, other) = statuses
    assert gpu[:3] == ("profiler", "gpu", NOT_EVALUATED_STATUS) and "LowGPUUtilization was not evaluated" in gpu[3]
    assert other[:3] == ("profiler", "Dataloader", "Error") and "not implemented locally" in other[3]


def test_a_failing_evaluation_ends_every_rule_still_in_progress_as_an_error(tmp_path):
    statuses: list = []
    described = iter([RuntimeError("boom")])

    def describe() -> dict:  # fails once, then answers as the training job would
        failure = next(described, None)
        if failure is not None:
            raise failure
        return {"DebugRuleEvaluationStatuses": [{"RuleConfigurationName": "Overfit",
                                                 "RuleEvaluationStatus": "InProgress"}],
                "ProfilerRuleEvaluationStatuses": [{"RuleConfigurationName": "ProfilerReport",
                                                    "RuleEvaluationStatus": "NoIssuesFound"}]}

    _rule_jobs(tmp_path, {"DebugRuleConfigurations": [{"RuleConfigurationName": "Overfit"}]}, describe,
               statuses).run([], [])
    assert statuses == [("debug", "Overfit", "Error", "InternalServerError: boom")]
