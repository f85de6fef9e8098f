"""LocalSageMaker: the SageMaker API operations the state machine and tooling use, served on this machine.

    sm = LocalSageMaker("demo-output/sagemaker")
    sm.create_training_job(**request)          # boto3-style, or sm.call("CreateTrainingJob", request)
    sm.describe_training_job(TrainingJobName="x")
    sm.runtime_url                              # AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME for InvokeEndpoint
    sm.close()                                  # stops every job and endpoint; children never outlive it

Requests are validated against botocore's SageMaker model; refusals raise SageMakerError (a botocore ClientError)
carrying SageMaker's error code and message. Responses carry SageMaker's shapes (datetimes as in boto3).

Progress events (on_event= / add_listener), each a dict with "type" and "time" (epoch seconds):
    TrainingJob             TrainingJobName, TrainingJobStatus, SecondaryStatus, StatusMessage
                            (the first one also TuningJobArn, HyperParameters)
    TrainingLog             TrainingJobName, line                      every line the script prints
    TrainingMetric          TrainingJobName, MetricName, Value[, Epoch, Epochs]   a MetricDefinitions match
    DebugRuleEvaluation     TrainingJobName, RuleConfigurationName, RuleEvaluationStatus, StatusDetails
    ProfilerRuleEvaluation  (same fields)
    TuningJob               HyperParameterTuningJobName, HyperParameterTuningJobStatus
                            (the first one also Strategy, MaxNumberOfTrainingJobs, MaxParallelTrainingJobs)
    TuningTrial             HyperParameterTuningJobName, TrainingJobName, Index, TunedHyperParameters,
                            TrainingJobStatus[, EarlyStopped, ObjectiveValue, FailureReason]   at start and end
    Endpoint                EndpointName, EndpointStatus, EndpointConfigName[, FailureReason]
Listeners run on the job threads: keep them quick, and they must not raise (errors are swallowed).
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import os
import re
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from botocore import xform_name

from local.sagemaker import processes
from local.sagemaker.api import (
    DEFAULT_ACCOUNT,
    DEFAULT_REGION,
    arn,
    now,
    paginate,
    service_model,
    validate_request,
)
from local.sagemaker.context import Context
from local.sagemaker.errors import SageMakerError, in_use, not_found, validation
from local.sagemaker.hosting import Endpoint, Hosting, RuntimeProxy
from local.sagemaker.s3 import LocalS3, S3Authorizer
from local.sagemaker.scaling import DEFAULT_PERIOD_S, Autoscaler, ScalingRegistry, variant_resource_id
from local.sagemaker.training import TrainingJob
from local.sagemaker.tuning import TuningJob

REPO_ROOT = Path(__file__).resolve().parents[2]
Listener = Callable[[dict], None]
DEBUGGER_ENV = "LOCAL_SAGEMAKER_DEBUGGER"  # "unavailable": play an account without SageMaker Debugger
DEBUGGER_MEMBERS = ("DebugHookConfig", "DebugRuleConfigurations", "ProfilerRuleConfigurations",
                    "TensorBoardOutputConfig")
DEBUGGER_REFUSED = ("Amazon SageMaker Debugger is not available to this account (closed to new customers since "
                    "2026-07-30): the request may not carry {members}")


class LocalSageMaker:
    """A thread-safe SageMaker stand-in with a working directory (see the package docs for its layout)."""

    def __init__(self, work_dir: str | Path, *, s3_root: str | Path | None = None, source_dir: str | Path | None = None,
                 region: str = DEFAULT_REGION, account: str = DEFAULT_ACCOUNT, python: str = sys.executable,
                 stop_grace_seconds: float = 5.0, endpoint_startup_timeout: float = 180.0, runtime_port: int = 0,
                 restore: bool = False, on_event: Listener | None = None,
                 debugger_available: bool | None = None, scaling_period_s: float = DEFAULT_PERIOD_S,
                 authorize_s3: S3Authorizer | None = None) -> None:
        work_dir = Path(work_dir).resolve()
        # An account that has SageMaker Debugger (the default) or a new one (closed to new customers since
        # 2026-07-30): False refuses every Debugger/Profiler member at CreateTrainingJob. Default from the
        # environment, so `make demo` and its tests can play a new account: LOCAL_SAGEMAKER_DEBUGGER=unavailable.
        if debugger_available is None:
            debugger_available = os.environ.get(DEBUGGER_ENV, "available").lower() != "unavailable"
        self.debugger_available = debugger_available
        work_dir.mkdir(parents=True, exist_ok=True)
        self._lock_file = (work_dir / ".lock").open("a+")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.seek(0)
            holder = self._lock_file.read().strip() or "another process"
            self._lock_file.close()
            raise RuntimeError(f"{work_dir} is in use by a running stand-in (pid {holder}): stop it first or "
                               "use another working directory") from None
        self._lock_file.truncate(0)
        self._lock_file.write(str(os.getpid()))
        self._lock_file.flush()
        # authorize_s3 (local.iam.TemplateIAM.sagemaker_s3): every S3 call made for a job or endpoint is authorized
        # against the role it runs with (the template's execution role), as SageMaker's calls are.
        s3 = LocalS3(Path(s3_root) if s3_root else work_dir / "s3", authorize=authorize_s3)
        self._listeners: list[Listener] = [on_event] if on_event else []
        # What jobs and endpoints may use of the stand-in: they are given this, never the service.
        self.context = Context(
            work_dir=work_dir, s3=s3, lock=threading.RLock(), emit=self.emit, region=region, account=account,
            python=python, repo_root=REPO_ROOT,
            source_dir=Path(source_dir).resolve() if source_dir else REPO_ROOT / "ml",
            stop_grace_seconds=stop_grace_seconds, endpoint_startup_timeout=endpoint_startup_timeout)
        # What the service and local tooling read of it: the same objects (the context is frozen: never reassign).
        self.work_dir, self.s3, self.lock = work_dir, s3, self.context.lock
        self.region, self.account, self.stop_grace_seconds = region, account, stop_grace_seconds
        self.training_jobs: dict[str, TrainingJob] = {}
        self.tuning_jobs: dict[str, TuningJob] = {}
        # The endpoints' Application Auto Scaling: policies mirrored from the engine's moto (local.sagemaker.scaling),
        # kept with the endpoints in hosting/state.json; scaling goes through the API, as Application Auto Scaling's.
        registry = ScalingRegistry(account, region, on_change=lambda: self.hosting.save())
        self.hosting = Hosting(self.context, registry)
        self.scaling = Autoscaler(self.context, registry, endpoints=lambda: list(self.hosting.endpoints.values()),
                                  scale=lambda request: self.call("UpdateEndpointWeightsAndCapacities", request),
                                  period_s=scaling_period_s)
        self._runtime = RuntimeProxy(self.context, self.hosting, runtime_port)
        if restore:
            self.hosting.restore()
        self.scaling.start()

    @property
    def closed(self) -> bool:
        """close() has begun: no operation is served, no job or endpoint starts anything more."""
        return self.context.closed

    # --- plumbing --------------------------------------------------------------------------------------------
    @property
    def runtime_url(self) -> str:
        """The sagemaker-runtime endpoint URL: set AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME to it."""
        return self._runtime.url

    def add_listener(self, listener: Listener) -> None:
        with self.lock:
            self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        with self.lock, contextlib.suppress(ValueError):
            self._listeners.remove(listener)

    def emit(self, event: dict) -> None:
        """Progress for UIs: jobs, metrics, log lines, trials, rule verdicts, endpoint states (see README of local)."""
        event = {"time": time.time(), **event}
        with self.lock:
            listeners = list(self._listeners)
        for listener in listeners:
            with contextlib.suppress(Exception):  # a UI bug must not break a job
                listener(event)

    def call(self, operation: str, params: dict | None = None) -> dict:
        """Run one SageMaker operation by its API name with a request dict; SageMakerError on refusal."""
        params = copy.deepcopy(params or {})
        handler = getattr(self, f"_op_{operation}", None)
        if handler is None:
            raise SageMakerError("UnknownOperationException",
                                 f"The local SageMaker stand-in does not implement {operation}", operation)
        if self.closed:
            raise SageMakerError("ServiceUnavailable", "The local SageMaker stand-in is shut down", operation, 503)
        validate_request(operation, params)
        try:
            return handler(params) or {}
        except SageMakerError as exc:
            raise exc.with_operation(operation) from None

    @classmethod
    def operations(cls) -> list[str]:
        return sorted(name[4:] for name in dir(cls) if name.startswith("_op_"))

    def __getattr__(self, name: str) -> Callable[..., dict]:
        # boto3's client surface: create_training_job(**request) -> call("CreateTrainingJob", request)
        operation = _SNAKE_TO_OPERATION.get(name)
        if operation is None or not hasattr(type(self), f"_op_{operation}"):
            raise AttributeError(name)
        return lambda **params: self.call(operation, params)

    def __enter__(self) -> LocalSageMaker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop every tuning job, training job, rule job and endpoint server, and the runtime URL."""
        if self.closed:
            return
        self.context.shutdown.set()
        self.scaling.close()
        for tuning in list(self.tuning_jobs.values()):
            tuning.halt()
        for job in list(self.training_jobs.values()):
            job.kill()
        self.hosting.shutdown()
        self._runtime.close()
        processes.kill_all(owner=self.context)
        # Their processes are gone; their threads finish the bookkeeping. One deadline for all of them, not 10 s
        # each in turn: on a busy machine a Ctrl-C must not take a minute to return.
        deadline = time.monotonic() + 10
        for job in list(self.training_jobs.values()):
            job.wait(max(0.0, deadline - time.monotonic()))
        with contextlib.suppress(OSError):
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()

    # --- conveniences for local tooling (not SageMaker API) ---------------------------------------------------
    def wait_for_training_job(self, name: str, timeout: float | None = None, rules: bool = False) -> dict:
        job = self._training_job(name)
        if not job.wait(timeout) or (rules and not job.wait_rules(timeout)):
            raise TimeoutError(f"training job {name} still running after {timeout}s")
        return job.describe()

    def wait_for_tuning_job(self, name: str, timeout: float | None = None) -> dict:
        job = self._tuning_job(name)
        if not job.wait(timeout):
            raise TimeoutError(f"tuning job {name} still running after {timeout}s")
        return job.describe()

    def wait_for_endpoint(self, name: str, timeout: float | None = None) -> dict:
        endpoint = self._endpoint(name)
        if not endpoint.done.wait(timeout):
            raise TimeoutError(f"endpoint {name} still {endpoint.status} after {timeout}s")
        return endpoint.describe()

    def training_job_dir(self, name: str) -> Path:
        return self._training_job(name).dir

    def training_log(self, name: str) -> Path:
        return self._training_job(name).log_path

    def profiler_report(self, name: str) -> Path | None:
        return self._training_job(name).report_path

    # --- training jobs ----------------------------------------------------------------------------------------
    def _training_job(self, name: str) -> TrainingJob:
        with self.lock:
            job = self.training_jobs.get(name)
        if job is None:
            raise not_found()
        return job

    def _start_training_job(self, request: dict, tuning_job_arn: str | None = None) -> TrainingJob:
        name = request["TrainingJobName"]
        if not self.debugger_available:
            members = [m for m in DEBUGGER_MEMBERS if m in request]
            if not request.get("ProfilerConfig", {"DisableProfiler": True}).get("DisableProfiler", False):
                members.append("ProfilerConfig (other than DisableProfiler: true)")
            if members:  # refused at create, before any job exists (a ValidationException, HTTP 400)
                raise validation(DEBUGGER_REFUSED.format(members=", ".join(members)))
        for definition in request["AlgorithmSpecification"].get("MetricDefinitions", []):
            try:
                re.compile(definition["Regex"])
            except re.error as exc:
                raise validation(f"Invalid regex for metric {definition['Name']}: {exc}") from None
        names = [c["ChannelName"] for c in request.get("InputDataConfig", [])]
        if len(names) != len(set(names)):
            raise validation("Channel names must be unique within InputDataConfig")
        rules = [c["RuleConfigurationName"] for c in request.get("DebugRuleConfigurations", [])
                 + request.get("ProfilerRuleConfigurations", [])]
        if len(rules) != len(set(rules)):
            raise validation("RuleConfigurationName must be unique across debug and profiler rules")
        with self.lock:
            if any(n.lower() == name.lower() for n in self.training_jobs):
                job_arn = arn("training-job", name, self.region, self.account)
                raise in_use("Training job names must be unique within an AWS account and region, and a training "
                             f"job with this name already exists ({job_arn})")
            job = TrainingJob(self.context, request, tuning_job_arn)
            self.training_jobs[name] = job
        self.emit({"type": "TrainingJob", "TrainingJobName": name, "TrainingJobStatus": "InProgress",
                   "SecondaryStatus": "Starting", "TuningJobArn": tuning_job_arn,
                   "HyperParameters": dict(request.get("HyperParameters", {}))})
        job.start()
        return job

    def _op_CreateTrainingJob(self, p: dict) -> dict:  # SageMaker's operation names
        return {"TrainingJobArn": self._start_training_job(p).desc["TrainingJobArn"]}

    def _op_DescribeTrainingJob(self, p: dict) -> dict:
        return self._training_job(p["TrainingJobName"]).describe()

    def _op_StopTrainingJob(self, p: dict) -> dict:
        job = self._training_job(p["TrainingJobName"])
        status = job.status
        if status != "InProgress":
            raise validation(f"The request was rejected because the training job is in status {status}.")
        job.stop()
        return {}

    def _op_ListTrainingJobs(self, p: dict) -> dict:
        with self.lock:
            jobs = [j.describe() for j in self.training_jobs.values()]
        jobs = _filter(jobs, p, "TrainingJobName", "TrainingJobStatus")
        summaries = [{k: d[k] for k in ("TrainingJobName", "TrainingJobArn", "CreationTime", "TrainingEndTime",
                                        "LastModifiedTime", "TrainingJobStatus", "SecondaryStatus") if k in d}
                     for d in _sort(jobs, p, {"Name": "TrainingJobName", "CreationTime": "CreationTime",
                                               "Status": "TrainingJobStatus"}, "CreationTime")]
        page, token = paginate(summaries, p)
        return {"TrainingJobSummaries": page, **({"NextToken": token} if token else {})}

    # --- tuning jobs ------------------------------------------------------------------------------------------
    def _tuning_job(self, name: str) -> TuningJob:
        with self.lock:
            job = self.tuning_jobs.get(name)
        if job is None:
            raise not_found(f"Amazon SageMaker can't find a tuning job with name {name}")
        return job

    def _op_CreateHyperParameterTuningJob(self, p: dict) -> dict:
        name = p["HyperParameterTuningJobName"]
        job = TuningJob(self.context, p, start_trial=self._start_training_job,  # validates the configuration
                        tuning_job=lambda parent: self.tuning_jobs.get(parent))
        with self.lock:
            if any(n.lower() == name.lower() for n in self.tuning_jobs):
                raise in_use(f"Hyperparameter tuning job with name {name} already exists")
            self.tuning_jobs[name] = job
        self.emit({"type": "TuningJob", "HyperParameterTuningJobName": name,
                   "HyperParameterTuningJobStatus": "InProgress", "Strategy": job.strategy,
                   "MaxNumberOfTrainingJobs": job.max_jobs, "MaxParallelTrainingJobs": job.parallel})
        job.start()
        return {"HyperParameterTuningJobArn": job.desc["HyperParameterTuningJobArn"]}

    def _op_DescribeHyperParameterTuningJob(self, p: dict) -> dict:
        return self._tuning_job(p["HyperParameterTuningJobName"]).describe()

    def _op_StopHyperParameterTuningJob(self, p: dict) -> dict:
        job = self._tuning_job(p["HyperParameterTuningJobName"])
        status = job.describe()["HyperParameterTuningJobStatus"]
        if status != "InProgress":
            raise validation(f"The hyperparameter tuning job is in status {status} and cannot be stopped")
        job.stop()
        return {}

    def _op_ListTrainingJobsForHyperParameterTuningJob(self, p: dict) -> dict:
        job = self._tuning_job(p["HyperParameterTuningJobName"])
        summaries = [job.summary(t) for t in list(job.trials)]
        if "StatusEquals" in p:
            summaries = [s for s in summaries if s["TrainingJobStatus"] == p["StatusEquals"]]
        sort_by = p.get("SortBy", "Name")
        if sort_by == "FinalObjectiveMetricValue":
            # Jobs without an objective go last whatever the order, as SageMaker lists them.
            with_value = [s for s in summaries if "FinalHyperParameterTuningJobObjectiveMetric" in s]
            without = [s for s in summaries if "FinalHyperParameterTuningJobObjectiveMetric" not in s]
            with_value.sort(key=lambda s: s["FinalHyperParameterTuningJobObjectiveMetric"]["Value"],
                            reverse=p.get("SortOrder", "Descending") == "Descending")
            summaries = with_value + without
        else:
            key = {"Name": "TrainingJobName", "CreationTime": "CreationTime", "Status": "TrainingJobStatus"}[sort_by]
            summaries.sort(key=lambda s: s[key], reverse=p.get("SortOrder", "Ascending") == "Descending")
        page, token = paginate(summaries, p)
        return {"TrainingJobSummaries": page, **({"NextToken": token} if token else {})}

    def _op_ListHyperParameterTuningJobs(self, p: dict) -> dict:
        with self.lock:
            jobs = [j.describe() for j in self.tuning_jobs.values()]
        jobs = _filter(jobs, p, "HyperParameterTuningJobName", "HyperParameterTuningJobStatus")
        keys = ("HyperParameterTuningJobName", "HyperParameterTuningJobArn", "HyperParameterTuningJobStatus",
                "CreationTime", "HyperParameterTuningEndTime", "LastModifiedTime", "TrainingJobStatusCounters",
                "ObjectiveStatusCounters")
        summaries = [{**{k: d[k] for k in keys if k in d}, "Strategy": d["HyperParameterTuningJobConfig"]["Strategy"],
                      "ResourceLimits": d["HyperParameterTuningJobConfig"]["ResourceLimits"]}
                     for d in _sort(jobs, p, {"Name": "HyperParameterTuningJobName", "Status":
                                              "HyperParameterTuningJobStatus", "CreationTime": "CreationTime"},
                                    "Name")]
        page, token = paginate(summaries, p)
        return {"HyperParameterTuningJobSummaries": page, **({"NextToken": token} if token else {})}

    # --- models -----------------------------------------------------------------------------------------------
    def _model(self, name: str) -> dict:
        with self.lock:
            model = self.hosting.models.get(name)
        if model is None:
            raise validation(f"Could not find model \"{arn('model', name, self.region, self.account)}\".")
        return model

    def _op_CreateModel(self, p: dict) -> dict:
        name = p["ModelName"]
        model_arn = arn("model", name, self.region, self.account)
        container = p.get("PrimaryContainer") or (p.get("Containers") or [None])[0]
        if container is None:
            raise validation("Either PrimaryContainer or Containers must be specified")
        if "ModelDataUrl" in container:
            self.s3.parse(container["ModelDataUrl"])  # a malformed URL is a ValidationException
        with self.lock:
            if name in self.hosting.models:
                raise validation(f"Cannot create already existing model \"{model_arn}\".")
            self.hosting.models[name] = {
                "ModelName": name, "ModelArn": model_arn, "CreationTime": now(),
                **{k: copy.deepcopy(p[k]) for k in ("PrimaryContainer", "Containers", "ExecutionRoleArn", "VpcConfig",
                                                    "EnableNetworkIsolation", "InferenceExecutionConfig") if k in p}}
        self.hosting.save()
        return {"ModelArn": model_arn}

    def _op_DescribeModel(self, p: dict) -> dict:
        return copy.deepcopy(self._model(p["ModelName"]))

    def _op_DeleteModel(self, p: dict) -> dict:
        self._model(p["ModelName"])
        with self.lock:
            self.hosting.models.pop(p["ModelName"], None)
        self.hosting.save()
        return {}

    def _op_ListModels(self, p: dict) -> dict:
        with self.lock:
            models = [copy.deepcopy(m) for m in self.hosting.models.values()]
        models = _filter(models, p, "ModelName", None)
        summaries = [{k: m[k] for k in ("ModelName", "ModelArn", "CreationTime")}
                     for m in _sort(models, p, {"Name": "ModelName", "CreationTime": "CreationTime"}, "CreationTime")]
        page, token = paginate(summaries, p)
        return {"Models": page, **({"NextToken": token} if token else {})}

    # --- endpoint configs -------------------------------------------------------------------------------------
    def _config(self, name: str) -> dict:
        with self.lock:
            config = self.hosting.configs.get(name)
        if config is None:
            raise validation(f"Could not find endpoint configuration "
                             f"\"{arn('endpoint-config', name, self.region, self.account)}\".")
        return config

    def _op_CreateEndpointConfig(self, p: dict) -> dict:
        name = p["EndpointConfigName"]
        config_arn = arn("endpoint-config", name, self.region, self.account)
        for variant in p["ProductionVariants"]:
            if variant.get("ModelName"):
                self._model(variant["ModelName"])
        variants = [v["VariantName"] for v in p["ProductionVariants"]]
        if len(variants) != len(set(variants)):
            raise validation("VariantName must be unique within ProductionVariants")
        with self.lock:
            if name in self.hosting.configs:
                raise validation(f"Cannot create already existing endpoint configuration \"{config_arn}\".")
            self.hosting.configs[name] = {
                "EndpointConfigName": name, "EndpointConfigArn": config_arn, "CreationTime": now(),
                **{k: copy.deepcopy(p[k]) for k in ("ProductionVariants", "DataCaptureConfig", "KmsKeyId",
                                                    "AsyncInferenceConfig", "ShadowProductionVariants",
                                                    "ExecutionRoleArn", "VpcConfig", "EnableNetworkIsolation")
                   if k in p}}
        self.hosting.save()
        return {"EndpointConfigArn": config_arn}

    def _op_DescribeEndpointConfig(self, p: dict) -> dict:
        return copy.deepcopy(self._config(p["EndpointConfigName"]))

    def _op_DeleteEndpointConfig(self, p: dict) -> dict:
        self._config(p["EndpointConfigName"])
        with self.lock:
            self.hosting.configs.pop(p["EndpointConfigName"], None)
        self.hosting.save()
        return {}

    def _op_ListEndpointConfigs(self, p: dict) -> dict:
        with self.lock:
            configs = [copy.deepcopy(c) for c in self.hosting.configs.values()]
        configs = _filter(configs, p, "EndpointConfigName", None)
        summaries = [{k: c[k] for k in ("EndpointConfigName", "EndpointConfigArn", "CreationTime")}
                     for c in _sort(configs, p, {"Name": "EndpointConfigName", "CreationTime": "CreationTime"},
                                    "CreationTime")]
        page, token = paginate(summaries, p)
        return {"EndpointConfigs": page, **({"NextToken": token} if token else {})}

    # --- endpoints --------------------------------------------------------------------------------------------
    def _endpoint(self, name: str) -> Endpoint:
        with self.lock:
            endpoint = self.hosting.endpoints.get(name)
        if endpoint is None:
            raise validation(f"Could not find endpoint \"{arn('endpoint', name, self.region, self.account)}\".")
        return endpoint

    def _op_CreateEndpoint(self, p: dict) -> dict:
        name = p["EndpointName"]
        endpoint_arn = arn("endpoint", name, self.region, self.account)
        self._config(p["EndpointConfigName"])
        with self.lock:
            if name in self.hosting.endpoints:
                raise validation(f"Cannot create already existing endpoint \"{endpoint_arn}\".")
            endpoint = Endpoint(self.context, name, endpoint_arn, p["EndpointConfigName"], self.hosting.data_capture)
            if "DeploymentConfig" in p:
                endpoint.deployment_config = copy.deepcopy(p["DeploymentConfig"])
            self.hosting.endpoints[name] = endpoint
        self.hosting.create(endpoint)
        return {"EndpointArn": endpoint_arn}

    def _op_DescribeEndpoint(self, p: dict) -> dict:
        return self._endpoint(p["EndpointName"]).describe()

    def _op_UpdateEndpoint(self, p: dict) -> dict:
        """RetainAllVariantProperties true keeps each same-named variant's live DesiredInstanceCount and
        DesiredWeight, less the ExcludeRetainedVariantProperties, which come from the new config (false, the
        default: the new config's values; API_UpdateEndpoint.html, API_VariantProperty.html). Refused like AWS
        refuses it: an update that changes the instance type of (or removes) a variant registered with Application
        Auto Scaling (sagemaker/latest/dg/endpoint-scaling-update.html: "the update fails")."""
        endpoint = self._endpoint(p["EndpointName"])
        config = self._config(p["EndpointConfigName"])
        retained: set[str] = set()
        if p.get("RetainAllVariantProperties", False):
            retained = {"DesiredInstanceCount", "DesiredWeight"} - {
                x["VariantPropertyType"] for x in p.get("ExcludeRetainedVariantProperties") or ()}
        with self.lock:
            live = self.hosting.configs.get(endpoint.config_name, {})
        new = {v["VariantName"]: v for v in config["ProductionVariants"]}
        for variant in live.get("ProductionVariants", []):
            name = variant["VariantName"]
            if self.scaling.registry.target(variant_resource_id(endpoint.name, name)) is None:
                continue
            if name not in new or new[name].get("InstanceType") != variant.get("InstanceType"):
                raise validation(f"The update of endpoint \"{endpoint.arn}\" would change the instance type of (or "
                                 f"remove) variant {name}, which is registered with Application Auto Scaling: "
                                 "deregister it (DeregisterScalableTarget) before the update, register it after.")
        with self.lock:
            if endpoint.status != "InService":
                raise validation(f"Cannot update in-progress endpoint \"{endpoint.arn}\".")
            endpoint.status = "Updating"  # claimed under the lock: a concurrent update is refused
        self.hosting.update(endpoint, p["EndpointConfigName"], copy.deepcopy(p.get("DeploymentConfig")),
                            retained=retained)
        return {"EndpointArn": endpoint.arn}

    def _op_UpdateEndpointWeightsAndCapacities(self, p: dict) -> dict:
        """What Application Auto Scaling calls to scale a variant: "When it receives the request, SageMaker sets
        the endpoint status to Updating. After updating the endpoint, it sets the status to InService."
        (https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_UpdateEndpointWeightsAndCapacities.html)"""
        endpoint = self._endpoint(p["EndpointName"])
        changes = {c["VariantName"]: c for c in p["DesiredWeightsAndCapacities"]}
        with self.lock:
            missing = [name for name in changes if endpoint.variant(name) is None]
            if missing:
                raise validation(f"The variant name(s) [{', '.join(missing)}] is/are not present in the endpoint "
                                 f"\"{endpoint.arn}\".")
            for name, change in changes.items():
                if "ServerlessUpdateConfig" in change:
                    raise validation(f"Variant {name} is not a serverless variant")
                if change.get("DesiredInstanceCount", 1) < 1:
                    raise validation(f"DesiredInstanceCount for variant {name} must be at least 1 (scaling an "
                                     "instance-based variant to zero needs inference components)")
            if endpoint.status != "InService":
                raise validation(f"Cannot update in-progress endpoint \"{endpoint.arn}\".")
            endpoint.status = "Updating"  # claimed under the lock, as UpdateEndpoint does
            endpoint.last_modified = now()
        self.hosting.set_capacity(endpoint, copy.deepcopy(changes))
        return {"EndpointArn": endpoint.arn}

    def _op_DeleteEndpoint(self, p: dict) -> dict:
        endpoint = self._endpoint(p["EndpointName"])
        threading.Thread(target=self.hosting.delete, args=(endpoint,), daemon=True).start()
        return {}

    def _op_ListEndpoints(self, p: dict) -> dict:
        with self.lock:
            endpoints = [e.describe() for e in self.hosting.endpoints.values()]
        endpoints = _filter(endpoints, p, "EndpointName", "EndpointStatus")
        summaries = [{k: e[k] for k in ("EndpointName", "EndpointArn", "CreationTime", "LastModifiedTime",
                                        "EndpointStatus")}
                     for e in _sort(endpoints, p, {"Name": "EndpointName", "CreationTime": "CreationTime",
                                                   "Status": "EndpointStatus"}, "CreationTime")]
        page, token = paginate(summaries, p)
        return {"Endpoints": page, **({"NextToken": token} if token else {})}


_SNAKE_TO_OPERATION = {xform_name(op): op for op in service_model().operation_names}


def _filter(items: list[dict], p: dict, name_key: str, status_key: str | None) -> list[dict]:
    """The List* filters SageMaker shares: NameContains, StatusEquals, Creation/LastModifiedTime windows."""
    out = []
    for item in items:
        if "NameContains" in p and p["NameContains"].lower() not in item[name_key].lower():
            continue
        if status_key and "StatusEquals" in p and item.get(status_key) != p["StatusEquals"]:
            continue
        if "CreationTimeAfter" in p and not item["CreationTime"] > p["CreationTimeAfter"]:
            continue
        if "CreationTimeBefore" in p and not item["CreationTime"] < p["CreationTimeBefore"]:
            continue
        modified = item.get("LastModifiedTime", item["CreationTime"])
        if "LastModifiedTimeAfter" in p and not modified > p["LastModifiedTimeAfter"]:
            continue
        if "LastModifiedTimeBefore" in p and not modified < p["LastModifiedTimeBefore"]:
            continue
        out.append(item)
    return out


def _sort(items: list[dict], p: dict, keys: dict[str, str], default: str) -> list[dict]:
    key = keys.get(p.get("SortBy", default), keys[default])
    return sorted(items, key=lambda d: d[key], reverse=p.get("SortOrder", "Descending") == "Descending")
