"""A training job's rule jobs: its Debugger rules over the tensors it saved, its Profiler rules over its system samples.

SageMaker runs each rule of DebugRuleConfigurations and ProfilerRuleConfigurations as a processing job beside the
training job (the status's RuleEvaluationJobArn), with the training job's role, and reports the verdicts after the
job has ended. Here, once the job has ended:
    Debugger rules   one child process, `python -m local.sagemaker.rules <spec>` in smdebug's environment (the
                     rules themselves: local.sagemaker.rules), reading <debug-output> and writing each rule's
                     <S3OutputPath>/<job>/rule-output/<rule>/; verdicts are reported as the child writes them
    Profiler rules   ProfilerReport writes <S3OutputPath>/<job>/rule-output/ProfilerReport/profiler-output/
                     profiler-report.html (local.sagemaker.profiler); the others are not evaluated locally
Working files go to the job's rules/ folder (spec.json, verdicts.json, rule-job.log). The statuses themselves, the
DebugRuleEvaluationStatuses and ProfilerRuleEvaluationStatuses of DescribeTrainingJob, stay with the training job
(local.sagemaker.training): each verdict is handed to its `set_status`.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import stackfacts as facts
from local.sagemaker import processes
from local.sagemaker.context import Context
from local.sagemaker.errors import JobFailure
from local.sagemaker.profiler import NOT_EVALUATED_STATUS, Sample, not_evaluated_locally, write_report
from local.sagemaker.s3 import S3Denied

# smdebug pins protobuf<=3.20.3 and numpy<2.3, so it has an environment of its own (`make setup` makes it from
# ml/debugger-requirements.txt over the main environment's torch), as SageMaker keeps it in the training and rule
# containers:
# Debugger-on training jobs and the rule jobs run with this interpreter.
SMDEBUG_VENV = ".venv-smdebug"
SMDEBUG_PYTHON_ENV = "IMGCLF_SMDEBUG_PYTHON"  # another interpreter with smdebug (overrides the repository's venv)
# What each S3 transfer is, in the StatusDetails of a denied one (local.sagemaker.s3.S3Denied).
RULE_OUTPUT = "Failed to access the rule's S3 input or output"
# (kind: "debug" or "profiler", RuleConfigurationName, RuleEvaluationStatus, StatusDetails or None)
SetStatus = Callable[[str, str, str, str | None], None]


def smdebug_python(repo_root: Path) -> str:
    """The interpreter of smdebug's environment; JobFailure (one line, before any training) when it is missing."""
    python = Path(os.environ.get(SMDEBUG_PYTHON_ENV) or repo_root / SMDEBUG_VENV / "bin" / "python")
    if not os.access(python, os.X_OK):
        raise JobFailure(f"ClientError: Debugger needs smdebug's environment and {python} is not there: run "
                         f"`make setup` (or set {SMDEBUG_PYTHON_ENV})")
    return str(python)


class RuleJobs:
    """The rule jobs of one training job. `run` once the job has ended; every configured rule then has a final
    status (a failure of the evaluation itself is an Error status, never a crash)."""

    def __init__(self, context: Context, *, job_name: str, request: dict, role: str, folder: Path,
                 tensors: str | None, describe: Callable[[], dict], set_status: SetStatus,
                 log: Callable[[str], None]) -> None:
        self.context = context
        self.job_name, self.request, self.role, self.folder = job_name, request, role, folder
        self.tensors = tensors  # the job's debug-output URI (None without a DebugHookConfig or Debugger rules)
        self.describe, self.set_status, self.log = describe, set_status, log
        self.report_path: Path | None = None
        self._proc: subprocess.Popen | None = None

    def kill(self) -> None:
        """Shutdown of the stand-in: end the rule process now."""
        if self._proc is not None:
            processes.terminate(self._proc, grace=1.0)

    def run(self, samples: list[Sample], epochs: list[dict]) -> None:
        """Evaluate every rule of the request: Debugger rules first (the profiler report lists their verdicts)."""
        try:
            if self.request.get("DebugRuleConfigurations"):
                self._debug_rules()
            if self.request.get("ProfilerRuleConfigurations"):
                self._profiler_rules(samples, epochs)
        except Exception as exc:  # a rule failure is a rule status, never a crash
            self.log(f"[stand-in] rule evaluation failed: {traceback.format_exc()}")
            for kind, key in (("debug", "DebugRuleEvaluationStatuses"), ("profiler", "ProfilerRuleEvaluationStatuses")):
                for entry in self.describe().get(key, []):
                    if entry["RuleEvaluationStatus"] == "InProgress":
                        self.set_status(kind, entry["RuleConfigurationName"], "Error", f"InternalServerError: {exc}")

    def _debug_rules(self) -> None:
        configs = self.request["DebugRuleConfigurations"]
        rules_dir = self.folder
        rules_dir.mkdir(exist_ok=True)
        # Rule output goes under the job's output path, as with SageMaker: <output>/<job>/rule-output/<rule>/
        base = self.request["OutputDataConfig"]["S3OutputPath"]
        s3 = self.context.s3
        if self.context.closed or self.describe()["SecondaryStatus"] == "Stopped":
            # StopTrainingJob stops the rule jobs with it.
            for config in configs:
                self.set_status("debug", config["RuleConfigurationName"], "Stopped", "The training job was stopped")
            return
        runnable = list(configs)
        try:
            python = smdebug_python(self.context.repo_root)  # SageMaker's rule container has smdebug; so does this venv
        except JobFailure as missing:
            for config in runnable:
                self.set_status("debug", config["RuleConfigurationName"], "Error", str(missing))
            return
        results_file = rules_dir / "verdicts.json"
        results_file.unlink(missing_ok=True)
        tensors = self.tensors
        assert tensors is not None  # rules run only for a job with a DebugHookConfig
        try:  # the rule job runs with the training job's role: it reads the tensors and writes its output
            trial = s3.read_prefix(tensors, self.role, RULE_OUTPUT)
            outputs = {c["RuleConfigurationName"]: str(s3.write_prefix(s3.join(
                c.get("S3OutputPath", base), self.job_name, facts.RULE_OUTPUT_DIR, c["RuleConfigurationName"]),
                self.role, RULE_OUTPUT)) for c in runnable}
        except S3Denied as denied:
            for config in runnable:
                self.set_status("debug", config["RuleConfigurationName"], "Error", str(denied))
            return
        spec = {"trial": str(trial), "result_file": str(results_file), "rules": runnable, "rule_output": outputs}
        spec_file = rules_dir / "spec.json"
        spec_file.write_text(json.dumps(spec, indent=2))
        repo_root = self.context.repo_root
        env = processes.child_env({
            "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python",
            "PYTHONPATH": os.pathsep.join(p for p in (str(repo_root), os.environ.get("PYTHONPATH")) if p)})
        env.pop("TRAINING_JOB_NAME", None)  # smdebug would otherwise think it runs inside a training job
        reported: set[str] = set()
        with (rules_dir / "rule-job.log").open("w") as log:
            self._proc = processes.spawn([python, "-m", "local.sagemaker.rules", str(spec_file)],
                                         owner=self.context, cwd=str(repo_root), env=env, stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            while True:
                done = self._proc.poll() is not None
                reported |= self._report_verdicts(results_file, reported)
                if done:
                    break
                time.sleep(0.2)
            processes.forget(self._proc)
        for config in runnable:
            if config["RuleConfigurationName"] not in reported:
                self.set_status("debug", config["RuleConfigurationName"], "Error",
                                f"InternalServerError: the rule job exited with status {self._proc.returncode}; "
                                f"see {rules_dir / 'rule-job.log'}")

    def _report_verdicts(self, results_file: Path, reported: set[str]) -> set[str]:
        if not results_file.is_file():
            return set()
        try:
            results = json.loads(results_file.read_text())
        except ValueError:
            return set()
        new = set()
        for name, result in results.items():
            if name not in reported:
                status = result["status"]
                self.set_status("debug", name, status, result.get("details") if status != "NoIssuesFound" else None)
                new.add(name)
        return new

    def _profiler_rules(self, samples: list[Sample], epochs: list[dict]) -> None:
        configs = self.request.get("ProfilerRuleConfigurations", [])
        verdicts: dict[str, tuple[str, str]] = {}
        report_rule: dict | None = None
        for config in configs:
            name = config["RuleConfigurationName"]
            rule = config.get("RuleParameters", {}).get("rule_to_invoke", name)
            if rule == facts.PROFILER_REPORT_RULE:
                report_rule = config
            elif reason := not_evaluated_locally(rule):
                verdicts[name] = (NOT_EVALUATED_STATUS, f"ClientError: {reason}")
            else:
                verdicts[name] = ("Error", f"ClientError: profiler rule {rule!r} is not implemented locally "
                                           "(local rules: ProfilerReport, LowGPUUtilization)")
        for name, (status, details) in verdicts.items():
            self.set_status("profiler", name, status, details)
        if report_rule:
            s3 = self.context.s3
            name = report_rule["RuleConfigurationName"]
            base = report_rule.get("S3OutputPath", self.request["OutputDataConfig"]["S3OutputPath"])
            try:
                key = s3.join(base, self.job_name, facts.RULE_OUTPUT_DIR, name, facts.PROFILER_OUTPUT_DIR,
                              facts.PROFILER_REPORT_FILE)
                report = s3.write(key, self.role, RULE_OUTPUT)
            except S3Denied as denied:
                self.set_status("profiler", name, "Error", str(denied))
                return
            checks = [(r["RuleConfigurationName"], r["RuleEvaluationStatus"], r.get("StatusDetails", ""))
                      for r in self.describe().get("DebugRuleEvaluationStatuses", [])]
            checks += [(name, status, details) for name, (status, details) in verdicts.items()]
            write_report(report, self.describe(), samples, epochs, checks)
            self.report_path = report
            self.set_status("profiler", name, "NoIssuesFound",
                            f"Report: {s3.uri_for(report)} ({len(samples)} system samples)")
