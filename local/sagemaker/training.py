"""Training jobs: the entry point as a subprocess under SageMaker's training-container contract.

Per job, under <work>/training-jobs/<name>/ (the container's /opt/ml, made local):
    input/config/{hyperparameters,inputdataconfig,resourceconfig,debughookconfig}.json
    input/data/<channel>  -> the channel's folder in the local S3 root
    code/                 sagemaker_submit_directory, extracted (or the repository's ml/ as a fallback)
    model/  output/  output/data/  checkpoints/ (when no CheckpointConfig): removed when the job ends
    logs/algo-1.log       the CloudWatch log stream: everything the script printed
    rules/                rule evaluation spec, verdicts and the rule job's log
    description.json      the last DescribeTrainingJob answer
and in the local S3 root, as SageMaker uploads them:
    <S3OutputPath>/<job>/output/model.tar.gz, output.tar.gz
    <DebugHookConfig.S3OutputPath>/<job>/debug-output/          smdebug tensors (+ training_job_end.ts)
    <S3OutputPath>/<job>/rule-output/<rule>/verdict.json       each Debugger rule's verdict
    <ProfilerConfig.S3OutputPath>/<job>/profiler-output/system/ system metrics
    <S3OutputPath>/<job>/rule-output/ProfilerReport/profiler-output/profiler-report.html
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import shutil
import subprocess
import tarfile
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import stackfacts as facts
from local.sagemaker import container, processes
from local.sagemaker.api import now
from local.sagemaker.context import Context
from local.sagemaker.errors import JobFailure
from local.sagemaker.profiler import SystemMonitor
from local.sagemaker.rule_jobs import RuleJobs, smdebug_python
from local.sagemaker.s3 import S3Denied
from ml import contract

TERMINAL = ("Completed", "Failed", "Stopped")
HOST = facts.TRAINING_HOST
INSTANCE_GROUP = "homogeneousCluster"  # SageMaker's name for the one group of a job without InstanceGroups
# The tuner adds it to each trial's hyperparameters; the training toolkit keeps it from the script (one of its own,
# sagemaker_training/params.py SAGEMAKER_HYPERPARAMETERS).
TUNING_OBJECTIVE_HP = "_tuning_objective_metric"
EPOCH_PROGRESS = re.compile(r"\bepoch=(\d+)/(\d+)")
STATUS_MESSAGES = {
    "Starting": "Launching requested ML instances",
    "Downloading": "Downloading input data",
    "Training": "Training image download completed. Training in progress.",
    "Uploading": "Uploading generated training model",
    "Completed": "Training job completed",
    "Failed": "Training job failed",
    "Stopping": "Stopping the training job",
    "Stopped": "Training job stopped",
    "MaxRuntimeExceeded": "Training job exceeded MaxRuntimeInSeconds provided",
}
END_OF_JOB_FILE = "training_job_end.ts"  # smdebug's marker; SageMaker writes it when the job ends
# What each S3 transfer is, in the FailureReason of a denied one (local.sagemaker.s3.S3Denied).
DATA_DOWNLOAD = "Data download failed"
SOURCE_DOWNLOAD = "Failed to download the source code (sagemaker_submit_directory)"
CHECKPOINTS = "Failed to sync checkpoints with CheckpointConfig.S3Uri"
DEBUG_OUTPUT = "Failed to write Debugger output to DebugHookConfig.S3OutputPath"
PROFILER_OUTPUT = "Failed to write profiler output to ProfilerConfig.S3OutputPath"
UPLOAD = "Please ensure that the role has access to the output path (OutputDataConfig.S3OutputPath)"


def _decode_hp(value: str) -> str:
    # The SageMaker Python SDK JSON-encodes script-mode values ('"train.py"'); raw API callers do not.
    if len(value) >= 2 and value[0] == value[-1] == '"':
        try:
            return str(json.loads(value))
        except ValueError:
            pass
    return value


def metric_values(definitions: list[dict], text: str) -> dict[str, list[float]]:
    """Every value of every MetricDefinition in a log, in order (SageMaker's scraper; the last one is final)."""
    found: dict[str, list[float]] = {}
    for definition in definitions:
        values = []
        for match in re.finditer(definition["Regex"], text, flags=re.MULTILINE):
            raw = match.group(1) if match.groups() else match.group(0)
            try:
                values.append(float(raw))
            except (TypeError, ValueError):
                continue
        if values:
            found[definition["Name"]] = values
    return found


def resource_config(request: dict) -> dict:
    """/opt/ml/input/config/resourceconfig.json for the one local host, with the fields SageMaker writes
    (sagemaker/latest/dg/your-algorithms-training-algo-running-container.html#your-algorithms-training-algo-running-
    container-dist-training): the toolkit derives SM_CURRENT_INSTANCE_TYPE and the instance groups from them."""
    instance_type = request.get("InstanceType", "local")
    return {"current_host": HOST, "current_instance_type": instance_type, "current_group_name": INSTANCE_GROUP,
            "hosts": [HOST], "instance_groups": [{"instance_group_name": INSTANCE_GROUP,
                                                  "instance_type": instance_type, "hosts": [HOST]}],
            "network_interface_name": "eth0"}


def _tar_directory(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    with tarfile.open(tmp, "w:gz") as archive:
        for path in sorted(source.rglob("*")):
            archive.add(path, arcname=str(path.relative_to(source)), recursive=False)
    os.replace(tmp, target)


class TrainingJob:
    """One CreateTrainingJob request, run on a thread; `describe()` is DescribeTrainingJob's answer."""

    def __init__(self, context: Context, request: dict, tuning_job_arn: str | None = None) -> None:
        self.context = context
        self.request = copy.deepcopy(request)
        self.name: str = request["TrainingJobName"]
        self.dir = context.work_dir / "training-jobs" / self.name
        self.log_path = self.dir / "logs" / f"{HOST}.log"
        self.metric_listeners: list[Callable[[str, float, int], None]] = []
        self._stop = threading.Event()
        self._finished = threading.Event()
        self._rules_finished = threading.Event()
        self._proc: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None
        self._line_times: dict[str, float] = {}
        self.epochs: list[dict] = []
        self._log_error: OSError | None = None  # the first failed write to the job's log (a full disk)
        created = now()
        d: dict[str, Any] = {
            "TrainingJobName": self.name,
            "TrainingJobArn": context.arn("training-job", self.name),
            "TrainingJobStatus": "InProgress",
            "SecondaryStatus": "Starting",
            "HyperParameters": dict(request.get("HyperParameters", {})),
            "AlgorithmSpecification": {"EnableSageMakerMetricsTimeSeries": False, **request["AlgorithmSpecification"]},
            "RoleArn": request["RoleArn"],
            "InputDataConfig": copy.deepcopy(request.get("InputDataConfig", [])),
            "OutputDataConfig": copy.deepcopy(request["OutputDataConfig"]),
            "ResourceConfig": copy.deepcopy(request["ResourceConfig"]),
            "StoppingCondition": copy.deepcopy(request["StoppingCondition"]),
            "CreationTime": created,
            "LastModifiedTime": created,
            "SecondaryStatusTransitions": [
                {"Status": "Starting", "StartTime": created, "StatusMessage": STATUS_MESSAGES["Starting"]}],
            "EnableNetworkIsolation": request.get("EnableNetworkIsolation", False),
            "EnableInterContainerTrafficEncryption": request.get("EnableInterContainerTrafficEncryption", False),
            "EnableManagedSpotTraining": request.get("EnableManagedSpotTraining", False),
        }
        # Required in DescribeTrainingJob's shape: the location the model is (or would be) uploaded to.
        d["ModelArtifacts"] = {"S3ModelArtifacts": context.s3.join(
            request["OutputDataConfig"]["S3OutputPath"], self.name, facts.JOB_OUTPUT_DIR, facts.MODEL_ARCHIVE)}
        if tuning_job_arn:
            d["TuningJobArn"] = tuning_job_arn
        for key in ("VpcConfig", "CheckpointConfig", "DebugHookConfig", "DebugRuleConfigurations",
                    "TensorBoardOutputConfig", "ExperimentConfig", "ProfilerConfig", "ProfilerRuleConfigurations",
                    "Environment", "RetryStrategy"):
            if key in request:
                d[key] = copy.deepcopy(request[key])
        if request.get("DebugRuleConfigurations"):
            d["DebugRuleEvaluationStatuses"] = [self._rule_status(c, "debug")
                                                for c in request["DebugRuleConfigurations"]]
        profiling = "ProfilerConfig" in request and not request["ProfilerConfig"].get("DisableProfiler", False)
        d["ProfilingStatus"] = "Enabled" if profiling else "Disabled"
        if request.get("ProfilerRuleConfigurations"):
            d["ProfilerRuleEvaluationStatuses"] = [self._rule_status(c, "profiler")
                                                   for c in request["ProfilerRuleConfigurations"]]
        self.desc = d
        # Its rule jobs, run once it has ended; the statuses they report stay here (DescribeTrainingJob's shape).
        self.rules = RuleJobs(context, job_name=self.name, request=self.request, role=self.role,
                              folder=self.dir / "rules", tensors=self.debug_output_uri(), describe=self.describe,
                              set_status=self._set_rule, log=self._log)

    # --- status --------------------------------------------------------------------------------------------
    def _rule_status(self, config: dict, kind: str) -> dict:
        name = config["RuleConfigurationName"]
        return {"RuleConfigurationName": name,
                "RuleEvaluationJobArn": self.context.arn("processing-job",
                                                         f"{self.name[:26]}-{name[:20]}-{kind[:1]}"),
                "RuleEvaluationStatus": "InProgress", "LastModifiedTime": now()}

    def describe(self) -> dict:
        with self.context.lock:
            return copy.deepcopy(self.desc)

    @property
    def status(self) -> str:
        with self.context.lock:
            return self.desc["TrainingJobStatus"]

    def _transition(self, secondary: str, status: str | None = None, message: str | None = None) -> None:
        stamp = now()
        with self.context.lock:
            transitions = self.desc["SecondaryStatusTransitions"]
            if transitions and "EndTime" not in transitions[-1]:
                transitions[-1]["EndTime"] = stamp
            transitions.append({"Status": secondary, "StartTime": stamp,
                                "StatusMessage": message or STATUS_MESSAGES.get(secondary, secondary)})
            self.desc["SecondaryStatus"] = secondary
            if status:
                self.desc["TrainingJobStatus"] = status
            self.desc["LastModifiedTime"] = stamp
            if status in TERMINAL:
                transitions[-1]["EndTime"] = stamp
            event = {"type": "TrainingJob", "TrainingJobName": self.name,
                     "TrainingJobStatus": self.desc["TrainingJobStatus"], "SecondaryStatus": secondary,
                     "StatusMessage": transitions[-1]["StatusMessage"]}
        self.context.emit(event)

    def _set_rule(self, kind: str, name: str, status: str, details: str | None = None) -> None:
        key = "DebugRuleEvaluationStatuses" if kind == "debug" else "ProfilerRuleEvaluationStatuses"
        with self.context.lock:
            for entry in self.desc.get(key, []):
                if entry["RuleConfigurationName"] == name:
                    entry["RuleEvaluationStatus"] = status
                    entry["LastModifiedTime"] = now()
                    if details:
                        entry["StatusDetails"] = details[:1024]
        self.context.emit({"type": "DebugRuleEvaluation" if kind == "debug" else "ProfilerRuleEvaluation",
                           "TrainingJobName": self.name, "RuleConfigurationName": name, "RuleEvaluationStatus": status,
                           "StatusDetails": details or ""})

    # --- lifecycle -----------------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"training-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """StopTrainingJob: Stopping now, Stopped once the process has ended (SIGTERM, then SIGKILL)."""
        with self.context.lock:
            if self.desc["TrainingJobStatus"] != "InProgress":
                return
        self._transition("Stopping", "Stopping")
        self._stop.set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._finished.wait(timeout)

    def wait_rules(self, timeout: float | None = None) -> bool:
        return self._rules_finished.wait(timeout)

    def kill(self) -> None:
        """Shutdown of the stand-in: end the processes now, whatever the state."""
        self._stop.set()
        if self._proc is not None:
            processes.terminate(self._proc, grace=1.0)
        self.rules.kill()

    # --- the job ---------------------------------------------------------------------------------------------
    def _run(self) -> None:
        monitor: SystemMonitor | None = None
        outcome: tuple[str, str, str | None] = ("Failed", "Failed", None)
        try:
            for sub in ("input/config", "input/data", "model", "output/data", "code", "logs"):
                (self.dir / sub).mkdir(parents=True, exist_ok=True)
            self._transition("Downloading")
            env, cmd, cwd = self._prepare()
            if self._stop.is_set():
                outcome = ("Stopped", "Stopped", None)
            else:
                outcome, monitor = self._train(env, cmd, cwd)
        except (JobFailure, S3Denied) as failure:
            outcome = ("Failed", "Failed", str(failure))
        except Exception as exc:  # the stand-in's own fault, reported as SageMaker's
            outcome = ("Failed", "Failed", f"InternalServerError: {type(exc).__name__}: {exc}")
            self._log(traceback.format_exc())
        status, secondary, reason = outcome
        try:
            self._finish(status, secondary, reason)
        except Exception as exc:  # e.g. no space for model.tar.gz: the job still ends, with the reason
            self._fail_in_memory(f"InternalServerError: the job's output could not be saved: {exc}")
        finally:
            self._finished.set()
        threading.Thread(target=self._evaluate_rules, args=(monitor,), name=f"rules-{self.name}", daemon=True).start()

    def _evaluate_rules(self, monitor: SystemMonitor | None) -> None:
        """After the job (SageMaker reports rule statuses after the training job has ended)."""
        try:
            self.rules.run(monitor.samples if monitor else [], self.epochs)
        finally:
            self.save()
            self._rules_finished.set()

    @property
    def report_path(self) -> Path | None:
        """The profiler report (ProfilerReport rule), once written."""
        return self.rules.report_path

    def _log(self, text: str) -> None:
        """Append to the job's log; never raises (it runs inside error handlers, maybe on a full disk)."""
        try:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with self.log_path.open("a") as log:
                log.write(text if text.endswith("\n") else text + "\n")
        except OSError as exc:
            self._log_error = self._log_error or exc

    def _fail_in_memory(self, reason: str) -> None:
        """End the job as Failed without touching the disk (which may be what failed)."""
        if self.status not in TERMINAL:
            with self.context.lock:
                self.desc["FailureReason"] = reason[:1024]
                self.desc.setdefault("TrainingEndTime", now())
            self._transition("Failed", "Failed", f"{STATUS_MESSAGES['Failed']}: {reason.splitlines()[0][:200]}")
        self._log(f"[stand-in] {reason}")
        self.save()

    @property
    def role(self) -> str:
        """The role SageMaker makes this job's S3 calls with (its rule jobs' too)."""
        return self.request["RoleArn"]

    def _profiler_uri(self) -> str:
        base = self.request["ProfilerConfig"].get("S3OutputPath", self.request["OutputDataConfig"]["S3OutputPath"])
        return self.context.s3.join(base, self.name, facts.PROFILER_OUTPUT_DIR, "system")

    def _output_uris(self) -> tuple[str, str]:
        """model.tar.gz and output.tar.gz: <S3OutputPath>/<job>/output/."""
        output = self.context.s3.join(self.request["OutputDataConfig"]["S3OutputPath"], self.name, facts.JOB_OUTPUT_DIR)
        return f"{output}/{facts.MODEL_ARCHIVE}", f"{output}/{facts.OUTPUT_ARCHIVE}"

    def _check_outputs(self) -> None:
        """Before training: every prefix and object the job will write is one the role may write."""
        self.context.s3.write(self._output_uris()[0], self.role, UPLOAD)  # model.tar.gz (output.tar.gz only with data)
        profiler = self.request.get("ProfilerConfig")
        if profiler and not profiler.get("DisableProfiler", False):
            self.context.s3.write_prefix(self._profiler_uri(), self.role, PROFILER_OUTPUT)

    def _prepare(self) -> tuple[dict[str, str], list[str], Path]:
        config = self.dir / "input" / "config"
        hps = {k: str(v) for k, v in self.request.get("HyperParameters", {}).items()}
        (config / "hyperparameters.json").write_text(json.dumps(hps, indent=2))
        channels: dict[str, dict] = {}
        for channel in self.request.get("InputDataConfig", []):
            name = channel["ChannelName"]
            channels[name] = {"TrainingInputMode": channel.get("InputMode", self.request["AlgorithmSpecification"].get(
                "TrainingInputMode", "File")), "S3DistributionType": "FullyReplicated", "RecordWrapperType": "None"}
            if "ContentType" in channel:
                channels[name]["ContentType"] = channel["ContentType"]
            source = channel["DataSource"].get("S3DataSource")
            if source is None:
                raise JobFailure(f"ClientError: channel {name}: only S3DataSource is supported locally")
            local = self.context.s3.read_prefix(source["S3Uri"], self.role, f"{DATA_DOWNLOAD}: channel {name}")
            target = self.dir / "input" / "data" / name
            if target.is_symlink() or target.is_file():
                target.unlink()
            elif target.exists():
                shutil.rmtree(target)
            if local.is_dir():
                target.symlink_to(local, target_is_directory=True)
            elif local.is_file():
                target.mkdir(parents=True)
                shutil.copy2(local, target / local.name)
            else:
                raise JobFailure(f"ClientError: Data download failed:Could not download {source['S3Uri']}: "
                                 f"no such key or prefix in the local S3 root {self.context.s3.root}")
        (config / "inputdataconfig.json").write_text(json.dumps(channels, indent=2))
        (config / "resourceconfig.json").write_text(json.dumps(resource_config(self.request["ResourceConfig"]),
                                                               indent=2))

        program = _decode_hp(hps.get("sagemaker_program", ""))
        if not program:
            raise JobFailure("AlgorithmError: no sagemaker_program hyperparameter: the local stand-in runs framework "
                             "containers in script mode (sagemaker_program + sagemaker_submit_directory)")
        code = self._source_code(_decode_hp(hps.get("sagemaker_submit_directory", "")))
        entry = code / program
        if not entry.is_file():
            raise JobFailure(f"AlgorithmError: ExecuteUserScriptError: entry point {program} not found in the "
                             f"source directory {code}")

        if "CheckpointConfig" in self.request:
            # Restored from S3 at the start, then written back (SageMaker syncs the local checkpoint folder).
            uri = self.request["CheckpointConfig"]["S3Uri"]
            self.context.s3.read_prefix(uri, self.role, CHECKPOINTS)
            checkpoints = self.context.s3.write_prefix(uri, self.role, CHECKPOINTS)
        else:
            checkpoints = self.dir / "checkpoints"
        checkpoints.mkdir(parents=True, exist_ok=True)
        self._check_outputs()  # a denied upload fails now, not after the training it would throw away

        # The container's environment before the toolkit runs, then what the toolkit adds (local/sagemaker/
        # container.py: sagemaker-training's own Environment over this job's directory, the local /opt/ml).
        env = {k: v for k, v in processes.child_env().items()
               if not k.startswith(("SM_", "SMDEBUG_", "TRAINING_JOB_", "PYTHONPATH", "SAGEMAKER_"))}
        env.update(self.request.get("Environment", {}))
        env.update({"TRAINING_JOB_NAME": self.name, "TRAINING_JOB_ARN": self.desc["TrainingJobArn"]})
        try:
            launch = container.toolkit_launch(self.dir, env)
        except container.ContainerError as exc:
            raise JobFailure(f"AlgorithmError: {exc}") from None
        failure = container.requirements_failure(code, self.request["AlgorithmSpecification"].get("TrainingImage", ""),
                                                 log=lambda line: self._log(f"[stand-in] {line}"))
        if failure:  # the toolkit's pip install would fail or break the DLC: fail now, before any training
            raise JobFailure(f"AlgorithmError: InstallRequirementsError: {failure}")
        env.update(launch.env)
        env.update({
            # The toolkit sets PYTHONPATH to its own sys.path with the code directory first (environment.
            # write_env_vars); here the code directory alone, so the job's interpreter keeps its own packages.
            "PYTHONPATH": str(code), "PYTHONUNBUFFERED": "1",
            "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python",  # smdebug's generated protobuf (design §2)
        })

        hook = self._hook_config()
        python = self.context.python
        if hook is not None:
            python = smdebug_python(self.context.repo_root)  # the container with ml/debugger-requirements.txt installed
            path = config / "debughookconfig.json"
            path.write_text(json.dumps(hook, indent=2))
            # SageMaker writes it to /opt/ml/input/config/debughookconfig.json, smdebug's default; here the job's
            # input/config is elsewhere, so smdebug is told where (its own variable).
            env["SMDEBUG_CONFIG_FILE_PATH"] = str(path)
            self._warn_debugger_requirements(code)

        cmd = [python, str(code / launch.entry_point), *launch.argv]
        if "--checkpoint-dir" not in cmd:
            cmd += ["--checkpoint-dir", str(checkpoints)]  # the container's /opt/ml/checkpoints, made local
        return env, cmd, code

    def _warn_debugger_requirements(self, code: Path) -> None:
        """train.py pip-installs ml/debugger-requirements.txt in the DLC of a Debugger job: say what that would
        change there (the job goes on: the install is the script's choice, not the toolkit's)."""
        requirements, dlc = code / contract.DEBUGGER_REQUIREMENTS, container.dlc_for_image(
            self.request["AlgorithmSpecification"].get("TrainingImage", ""))
        if requirements.is_file() and dlc is not None:
            for problem in container.check_requirements(requirements, dlc):
                self._log(f"[stand-in] warning: on AWS, {problem}")

    def _source_code(self, submit_directory: str) -> Path:
        """sagemaker_submit_directory from the local S3 root (a tar.gz or a folder), else the configured fallback."""
        code = self.dir / "code"
        if submit_directory:
            local = self.context.s3.read(submit_directory, self.role, SOURCE_DOWNLOAD) \
                if submit_directory.startswith(("s3://", "http")) else Path(submit_directory)
            if local.is_file() and tarfile.is_tarfile(local):
                with tarfile.open(local) as archive:
                    archive.extractall(code, filter="data")
                self._log(f"[stand-in] source code: {submit_directory} extracted to {code}")
                return code
            if local.is_dir():
                self._log(f"[stand-in] source code: {local}")
                return local
        self._log(f"[stand-in] source code: {submit_directory or '(none given)'} is not in the local S3 root; "
                  f"using {self.context.source_dir}")
        from infra.packaging import training_sources  # the source bundle's layout: entry shim + the ml package

        for name, source in training_sources(self.context.source_dir).items():
            (code / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, code / name)
        return code

    def debug_output_uri(self) -> str | None:
        hook = self.request.get("DebugHookConfig")
        if hook is None and not self.request.get("DebugRuleConfigurations"):
            return None
        base = hook["S3OutputPath"] if hook else self.request["OutputDataConfig"]["S3OutputPath"]
        return self.context.s3.join(base, self.name, facts.DEBUG_OUTPUT_DIR)

    def _hook_config(self) -> dict | None:
        """The JSON SageMaker writes to /opt/ml/input/config/debughookconfig.json (smdebug's json_config format)."""
        uri = self.debug_output_uri()
        if uri is None:
            return None
        hook = self.request.get("DebugHookConfig", {})
        local = self.context.s3.write_prefix(uri, self.role, DEBUG_OUTPUT)  # smdebug writes its tensors there
        return {"S3OutputPath": uri, "LocalPath": str(local), "HookParameters": hook.get("HookParameters", {}),
                "CollectionConfigurations": hook.get("CollectionConfigurations", [])}

    def _read_output(self, stream, sink) -> None:
        definitions = self.request["AlgorithmSpecification"].get("MetricDefinitions", [])
        compiled = [(d["Name"], re.compile(d["Regex"])) for d in definitions]
        counts: dict[str, int] = {}
        epoch_started = time.monotonic()
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace")
            if self._log_error is None:
                try:
                    sink.write(line)
                    sink.flush()
                except OSError as exc:
                    # Keep draining the pipe: a reader that stops leaves the script blocked on print() forever.
                    self._log_error = exc
            self.context.emit({"type": "TrainingLog", "TrainingJobName": self.name, "line": line.rstrip("\n")})
            progress = EPOCH_PROGRESS.search(line)
            values: dict[str, float] = {}
            for name, regex in compiled:
                for match in regex.finditer(line):
                    try:
                        values[name] = float(match.group(1) if match.groups() else match.group(0))
                    except (TypeError, ValueError):
                        continue
            for name, value in values.items():
                counts[name] = counts.get(name, 0) + 1
                self._line_times[name] = time.time()
                event = {"type": "TrainingMetric", "TrainingJobName": self.name, "MetricName": name, "Value": value}
                if progress:
                    event["Epoch"], event["Epochs"] = int(progress.group(1)), int(progress.group(2))
                self.context.emit(event)
                for listener in list(self.metric_listeners):
                    with contextlib.suppress(Exception):  # a listener must not break the job
                        listener(name, value, counts[name])
            if progress:
                stamp = time.monotonic()
                self.epochs.append({"epoch": int(progress.group(1)), "seconds": stamp - epoch_started, **values})
                epoch_started = stamp

    def _train(self, env: dict[str, str], cmd: list[str], cwd: Path
               ) -> tuple[tuple[str, str, str | None], SystemMonitor | None]:
        failure_file = self.dir / "output" / "failure"
        failure_file.unlink(missing_ok=True)
        limit = self.request["StoppingCondition"].get("MaxRuntimeInSeconds", 86400)
        with self.context.lock:
            self.desc["TrainingStartTime"] = now()
        self._transition("Training")
        started = time.monotonic()
        with self.log_path.open("a") as sink:
            sink.write(f"[stand-in] {' '.join(cmd)}\n")
            sink.flush()
            self._proc = processes.spawn(cmd, owner=self.context, cwd=str(cwd), env=env,
                                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            monitor = None
            profiler = self.request.get("ProfilerConfig")
            if profiler and not profiler.get("DisableProfiler", False):
                interval = profiler.get("ProfilingIntervalInMilliseconds", 500) / 1000
                out = self.context.s3.write_prefix(self._profiler_uri(), self.role, PROFILER_OUTPUT)
                monitor = SystemMonitor(self._proc.pid, interval, out).start()
            reader = threading.Thread(target=self._read_output, args=(self._proc.stdout, sink), daemon=True,
                                      name=f"log-{self.name}")
            reader.start()
            timed_out = False
            while self._proc.poll() is None:
                if self._stop.wait(0.1):
                    break
                if time.monotonic() - started > limit:
                    timed_out = True
                    break
            if self._proc.poll() is None:
                why = f"MaxRuntimeInSeconds ({limit}s) exceeded" if timed_out else "stop"
                with contextlib.suppress(OSError):
                    sink.write(f"[stand-in] {why}: SIGTERM, then SIGKILL after {self.context.stop_grace_seconds:g}s\n")
                    sink.flush()
                processes.terminate(self._proc, self.context.stop_grace_seconds)
            rc = self._proc.wait()
            processes.forget(self._proc)
            reader.join(timeout=10)
        if monitor:
            monitor.stop()
        if timed_out:
            return ("Stopped", "MaxRuntimeExceeded", None), monitor
        if self._stop.is_set():
            return ("Stopped", "Stopped", None), monitor
        if self._log_error is not None:
            # Its metrics (FinalMetricDataList, the tuner's objective) live in that log: not a usable job.
            return ("Failed", "Failed", f"InternalServerError: the job's log could not be written "
                                        f"({self._log_error.strerror or self._log_error}): free disk space"), monitor
        if rc != 0:
            if failure_file.is_file() and failure_file.read_text().strip():
                reason = f"AlgorithmError: {failure_file.read_text().strip()}"
            else:
                tail = self.log_path.read_text(errors="replace").strip().splitlines()[-5:]
                reason = (f"AlgorithmError: ExecuteUserScriptError:\nExitCode {rc}\nErrorMessage \""
                          + "\n".join(tail) + f"\"\nCommand \"{' '.join(cmd[:2])}\"")
            return ("Failed", "Failed", reason), monitor
        return ("Completed", "Completed", None), monitor

    def _finish(self, status: str, secondary: str, reason: str | None) -> None:
        definitions = self.request["AlgorithmSpecification"].get("MetricDefinitions", [])
        log_text = self.log_path.read_text(errors="replace") if self.log_path.is_file() else ""
        final = [{"MetricName": name, "Value": values[-1],
                  "Timestamp": _from_epoch(self._line_times.get(name, time.time()))}
                 for name, values in metric_values(definitions, log_text).items()]
        model_dir = self.dir / "model"
        model_uri, data_uri = self._output_uris()
        data_dir = self.dir / "output" / "data"
        try:
            model_target = self.context.s3.write(model_uri, self.role, UPLOAD) if status in ("Completed", "Stopped") \
                else None
            data_target = self.context.s3.write(data_uri, self.role, UPLOAD) \
                if data_dir.is_dir() and any(data_dir.iterdir()) else None
        except S3Denied as denied:  # the upload is refused: the job fails, nothing is uploaded
            status, secondary, reason, model_target, data_target = "Failed", "Failed", str(denied), None, None
        if model_target is not None:
            # SageMaker uploads /opt/ml/model as model.tar.gz, also after a stop (whatever the script saved in the
            # SIGTERM window, possibly nothing); a failed job uploads no model.
            if status == "Completed":
                self._transition("Uploading")
            model_dir.mkdir(parents=True, exist_ok=True)
            _tar_directory(model_dir, model_target)
        if data_target is not None:
            _tar_directory(data_dir, data_target)
        self._release_storage()
        end = now()
        with self.context.lock:
            d = self.desc
            if final:
                d["FinalMetricDataList"] = final
            if reason:
                d["FailureReason"] = reason[:1024]
            d["TrainingEndTime"] = end
            start = d.get("TrainingStartTime", d["CreationTime"])
            d["TrainingTimeInSeconds"] = max(1, int((end - start).total_seconds()))
            d["BillableTimeInSeconds"] = d["TrainingTimeInSeconds"]
        message = STATUS_MESSAGES.get(secondary)
        if reason and status == "Failed":
            message = f"{message}: {reason.splitlines()[0][:200]}"
        self._transition(secondary, status, message)
        uri = self.debug_output_uri()
        if uri:
            with contextlib.suppress(S3Denied):  # checked before training: only a policy changed since denies it
                marker = self.context.s3.write(self.context.s3.join(uri, END_OF_JOB_FILE), self.role, DEBUG_OUTPUT)
                marker.parent.mkdir(parents=True, exist_ok=True)
                marker.touch()
        self.save()

    def _release_storage(self) -> None:
        """The instance's volume goes when the job ends (SageMaker keeps what it uploaded, the log and the
        description): /opt/ml/model and output/data are in S3 now, and a job-local checkpoint folder (no
        CheckpointConfig) is lost on AWS too. Without this, every local job kept a copy of its model on disk."""
        for sub in ("model", "output/data", "checkpoints"):
            shutil.rmtree(self.dir / sub, ignore_errors=True)

    def save(self) -> None:
        """Persist the description; best effort (a full disk must not stop the job from ending)."""
        from local.sagemaker.api import to_json

        with contextlib.suppress(OSError):
            (self.dir / "description.json").write_text(json.dumps(to_json(self.describe()), indent=2))


def _from_epoch(seconds: float):
    import datetime as dt

    return dt.datetime.fromtimestamp(seconds, dt.UTC)
