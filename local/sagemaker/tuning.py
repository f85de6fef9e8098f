"""Hyperparameter tuning jobs: trials are training jobs, proposed by optuna.

Strategy -> sampler: Bayesian -> TPE, Random -> RandomSampler, Grid -> GridSampler (categorical and integer
ranges), Hyperband -> TPE with a HyperbandPruner on the objective's per-epoch values. TrainingJobEarlyStoppingType
Auto -> MedianPruner, which is SageMaker's documented rule (stop a job whose objective at an epoch is worse than
the median of the earlier jobs at that epoch); a pruned trial's training job is stopped and counts as Stopped.
A failed trial is reported to optuna as FAIL and the tuning job carries on, as SageMaker does.
"""

from __future__ import annotations

import copy
import json
import math
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, Literal

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from local.sagemaker.api import now, validate_request
from local.sagemaker.context import Context
from local.sagemaker.errors import validation
from local.sagemaker.training import TUNING_OBJECTIVE_HP, TrainingJob

# What a ParameterRanges entry becomes: an optuna Int-, Float- or CategoricalDistribution (optuna's own signatures
# take BaseDistribution, which has no low/high: the space is typed loosely, each use reads its own kind).
Distribution = Any

optuna.logging.set_verbosity(optuna.logging.WARNING)
TERMINAL = ("Completed", "Failed", "Stopped")
# TrainingJobDefinition members a trial's CreateTrainingJob request inherits as they are.
INHERITED = ("AlgorithmSpecification", "RoleArn", "InputDataConfig", "VpcConfig", "OutputDataConfig", "ResourceConfig",
             "StoppingCondition", "EnableNetworkIsolation", "EnableInterContainerTrafficEncryption",
             "EnableManagedSpotTraining", "CheckpointConfig", "RetryStrategy", "Environment")


def _reverse_log(low: float, high: float) -> tuple[float, float]:
    # ReverseLogarithmic: log-uniform in 1 - x (values crowd towards 1), valid for 0 <= low < high < 1.
    # log1p/expm1 rather than log(1 - x)/1 - exp(): exact near 0, where 1 - x would cancel.
    start, end = math.log1p(-high), math.log1p(-low)
    # Float rounding can still map an end one ulp outside [low, high]: step it inwards until it maps inside
    # (-expm1 is monotonic), so the script never receives a value outside its range.
    while start < end and -math.expm1(start) > high:
        start = math.nextafter(start, end)
    while start < end and -math.expm1(end) < low:
        end = math.nextafter(end, start)
    return start, end


def search_space(config: dict) -> tuple[dict[str, Distribution], dict[str, str]]:
    """optuna distributions for ParameterRanges, and the scaling of each (to map samples back to values)."""
    ranges = config.get("ParameterRanges", {})
    space: dict[str, Distribution] = {}
    scaling: dict[str, str] = {}
    for r in ranges.get("IntegerParameterRanges", []):
        first, last = int(r["MinValue"]), int(r["MaxValue"])
        scale = r.get("ScalingType", "Auto")
        if first > last:
            raise validation(f"MinValue {first} is greater than MaxValue {last} for hyperparameter {r['Name']}")
        space[r["Name"]] = IntDistribution(first, last, log=scale == "Logarithmic" and first > 0)
        scaling[r["Name"]] = "Integer"
    for r in ranges.get("ContinuousParameterRanges", []):
        low, high = float(r["MinValue"]), float(r["MaxValue"])
        scale = r.get("ScalingType", "Auto")
        if low > high:
            raise validation(f"MinValue {low} is greater than MaxValue {high} for hyperparameter {r['Name']}")
        if scale == "Logarithmic" and low <= 0:
            raise validation(f"Logarithmic scaling needs MinValue > 0 for hyperparameter {r['Name']}")
        if scale == "ReverseLogarithmic":
            if not 0 <= low < high < 1:
                raise validation(f"ReverseLogarithmic scaling needs 0 <= MinValue < MaxValue < 1 for {r['Name']}")
            space[r["Name"]] = FloatDistribution(*_reverse_log(low, high))
            scaling[r["Name"]] = "ReverseLogarithmic"
        else:
            space[r["Name"]] = FloatDistribution(low, high, log=scale == "Logarithmic")
            scaling[r["Name"]] = "Continuous"
    for r in ranges.get("CategoricalParameterRanges", []):
        space[r["Name"]] = CategoricalDistribution(tuple(r["Values"]))
        scaling[r["Name"]] = "Categorical"
    if not space:
        raise validation("HyperParameterTuningJobConfig.ParameterRanges must define at least one range")
    return space, scaling


def hyperparameter_value(value: Any, scale: str) -> str:
    """Tuned values reach the script as strings, as SageMaker sends them."""
    if scale == "ReverseLogarithmic":
        return repr(-math.expm1(value))  # the inverse of _reverse_log's log1p(-x)
    if scale == "Integer":
        return str(int(value))
    if scale == "Continuous":
        return repr(float(value))
    return str(value)


class _GridSampler(optuna.samplers.GridSampler):
    """GridSampler for ask/tell: the job bounds trials to the grid size itself, and GridSampler's own
    `study.stop()` on exhaustion is only legal inside `study.optimize`."""

    def after_trial(self, study, trial, state, values) -> None:
        pass


class TuningJob:
    """One CreateHyperParameterTuningJob request, run on a thread; `describe()` is
    DescribeHyperParameterTuningJob's answer. Its trials are training jobs it has the service start
    (`start_trial(request, tuning job ARN)`, CreateTrainingJob's checks and bookkeeping); `tuning_job(name)` finds a
    warm start's parent among the stand-in's tuning jobs."""

    def __init__(self, context: Context, request: dict, *, start_trial: Callable[[dict, str], TrainingJob],
                 tuning_job: Callable[[str], TuningJob | None]) -> None:
        self.context = context
        self._start_trial, self._tuning_job = start_trial, tuning_job
        self.request = copy.deepcopy(request)
        self.name: str = request["HyperParameterTuningJobName"]
        self.config = request["HyperParameterTuningJobConfig"]
        if "TrainingJobDefinition" not in request:
            raise validation("TrainingJobDefinition is required (TrainingJobDefinitions is not supported locally)")
        self.definition = request["TrainingJobDefinition"]
        objective = self.config.get("HyperParameterTuningJobObjective") or self.definition.get("TuningObjective")
        if not objective:
            raise validation("HyperParameterTuningJobObjective is required")
        self.objective = objective
        metric_names = {d["Name"] for d in self.definition["AlgorithmSpecification"].get("MetricDefinitions", [])}
        if objective["MetricName"] not in metric_names:
            raise validation(f"The objective metric {objective['MetricName']!r} is not defined in "
                             "AlgorithmSpecification.MetricDefinitions")
        self.space, self.scaling = search_space(self.config)
        static = self.definition.get("StaticHyperParameters", {})
        if overlap := sorted(set(static) & set(self.space)):
            raise validation(f"Hyperparameters {overlap} are both static and tunable")
        self.strategy = self.config["Strategy"]
        limits = self.config["ResourceLimits"]
        self.parallel = int(limits.get("MaxParallelTrainingJobs", 1))
        if self.strategy == "Grid":
            if any(not isinstance(d, CategoricalDistribution | IntDistribution) for d in self.space.values()):
                raise validation("Grid search supports categorical and integer parameter ranges only")
            self.grid = {name: (list(d.choices) if isinstance(d, CategoricalDistribution)
                                else list(range(d.low, d.high + 1))) for name, d in self.space.items()}
            grid_size = math.prod(len(v) for v in self.grid.values())
            self.max_jobs = min(int(limits.get("MaxNumberOfTrainingJobs", grid_size)), grid_size)
        else:
            if "MaxNumberOfTrainingJobs" not in limits:
                raise validation("ResourceLimits.MaxNumberOfTrainingJobs is required unless Strategy is Grid")
            self.max_jobs = int(limits["MaxNumberOfTrainingJobs"])
        # Trials are CreateTrainingJob requests: refuse now what each of them would be refused.
        sample = {n: hyperparameter_value(d.choices[0] if isinstance(d, CategoricalDistribution) else d.low,
                                          self.scaling[n]) for n, d in self.space.items()}
        validate_request("CreateTrainingJob", self._trial_request(f"{self.name}-001-00000000", sample))
        self.trials: list[TrainingJob] = []
        self._tuned: dict[str, dict[str, str]] = {}
        self._objective_values: dict[str, float] = {}
        self._stop = threading.Event()
        self._finished = threading.Event()
        created = now()
        self.desc: dict[str, Any] = {
            "HyperParameterTuningJobName": self.name,
            "HyperParameterTuningJobArn": context.arn("hyper-parameter-tuning-job", self.name),
            "HyperParameterTuningJobConfig": copy.deepcopy(self.config),
            "TrainingJobDefinition": copy.deepcopy(self.definition),
            "HyperParameterTuningJobStatus": "InProgress",
            "CreationTime": created,
            "LastModifiedTime": created,
            "TrainingJobStatusCounters": {"Completed": 0, "InProgress": 0, "RetryableError": 0,
                                          "NonRetryableError": 0, "Stopped": 0},
            "ObjectiveStatusCounters": {"Succeeded": 0, "Pending": 0, "Failed": 0},
        }
        self.warm_start: list[dict] = []
        if "WarmStartConfig" in request:
            self.desc["WarmStartConfig"] = copy.deepcopy(request["WarmStartConfig"])
            for parent in request["WarmStartConfig"]["ParentHyperParameterTuningJobs"]:
                self.warm_start += self._parent_trials(parent["HyperParameterTuningJobName"])

    def _trial_request(self, name: str, tuned: dict[str, str]) -> dict:
        request = {k: copy.deepcopy(self.definition[k]) for k in INHERITED if k in self.definition}
        request["TrainingJobName"] = name
        request["HyperParameters"] = {**self.definition.get("StaticHyperParameters", {}), **tuned,
                                      TUNING_OBJECTIVE_HP: self.objective["MetricName"]}
        return request

    def _parent_trials(self, parent: str) -> list[dict]:
        """A parent tuning job's trial summaries: from this stand-in, or from an earlier run's working directory."""
        with self.context.lock:
            job = self._tuning_job(parent)
        if job is not None:
            return [job.summary(t) for t in job.trials]
        saved = self.context.work_dir / "tuning-jobs" / parent / "training-jobs.json"
        if saved.is_file():
            return json.loads(saved.read_text())
        raise validation(f"The parent hyperparameter tuning job {parent} for warm start was not found")

    def _seed_from_parents(self, study: optuna.Study) -> int:
        """Warm start: the parents' finished trials become this study's history (TPE models them)."""
        added = 0
        for summary in self.warm_start:
            metric = summary.get("FinalHyperParameterTuningJobObjectiveMetric")
            if summary.get("TrainingJobStatus") != "Completed" or not metric:
                continue
            params: dict[str, Any] = {}
            for name, distribution in self.space.items():
                raw = summary.get("TunedHyperParameters", {}).get(name)
                if raw is None:
                    break
                try:
                    if self.scaling[name] == "ReverseLogarithmic":
                        value: Any = math.log1p(-float(raw))
                        if -math.expm1(distribution.high) <= float(raw) <= -math.expm1(distribution.low):
                            # inside this range: log(1 - x) may round just past an end; it is still this range
                            value = min(max(value, distribution.low), distribution.high)
                    elif self.scaling[name] == "Integer":
                        value = int(float(raw))
                    elif self.scaling[name] == "Continuous":
                        value = float(raw)
                    else:
                        value = raw
                    inside = distribution._contains(distribution.to_internal_repr(value))
                except ValueError:
                    break
                if not inside:  # outside this job's ranges: the parent's result does not transfer
                    break
                params[name] = value
            else:
                study.add_trial(optuna.trial.create_trial(params=params, distributions=self.space,
                                                          value=float(metric["Value"])))
                added += 1
        return added

    # --- optuna ---------------------------------------------------------------------------------------------
    def _study(self) -> optuna.Study:
        seed = self.config.get("RandomSeed")
        direction: Literal["maximize", "minimize"] = (
            "maximize" if self.objective["Type"] == "Maximize" else "minimize")
        if self.strategy == "Grid":
            sampler: optuna.samplers.BaseSampler = _GridSampler(self.grid, seed=seed)
        elif self.strategy == "Random":
            sampler = optuna.samplers.RandomSampler(seed=seed)
        else:
            # Few trials locally: model after a third of the budget instead of optuna's fixed 10 random starts.
            sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(1, min(10, self.max_jobs // 3)))
        pruner: optuna.pruners.BasePruner = optuna.pruners.NopPruner()
        if self.strategy == "Hyperband":
            # The objective's per-epoch reports are the resource, as SageMaker's Hyperband uses epochs.
            band = self.config.get("StrategyConfig", {}).get("HyperbandStrategyConfig", {})
            pruner = optuna.pruners.HyperbandPruner(min_resource=band.get("MinResource", 1),
                                                    max_resource=band.get("MaxResource", "auto"))
        elif self.config.get("TrainingJobEarlyStoppingType", "Off") == "Auto":
            pruner = optuna.pruners.MedianPruner(n_startup_trials=max(1, self.parallel), n_warmup_steps=0)
        study = optuna.create_study(direction=direction, sampler=sampler, pruner=pruner, study_name=self.name)
        self._seed_from_parents(study)
        return study

    # --- status --------------------------------------------------------------------------------------------
    def describe(self) -> dict:
        with self.context.lock:
            desc = copy.deepcopy(self.desc)
        counters = {"Completed": 0, "InProgress": 0, "RetryableError": 0, "NonRetryableError": 0, "Stopped": 0}
        objectives = {"Succeeded": 0, "Pending": 0, "Failed": 0}
        for job in list(self.trials):
            summary = self.summary(job)
            status = summary["TrainingJobStatus"]
            counters["NonRetryableError" if status == "Failed" else
                     "InProgress" if status in ("InProgress", "Stopping") else status] += 1
            objectives[summary["ObjectiveStatus"]] += 1
        desc["TrainingJobStatusCounters"], desc["ObjectiveStatusCounters"] = counters, objectives
        best = self.best()
        if best is not None:
            desc["BestTrainingJob"] = self.summary(best, with_tuning_name=False)
        if "HyperParameterTuningEndTime" in desc:
            seconds = (desc["HyperParameterTuningEndTime"] - desc["CreationTime"]).total_seconds()
            desc["ConsumedResources"] = {"RuntimeInSeconds": max(1, int(seconds))}
        return desc

    def summary(self, job: TrainingJob, with_tuning_name: bool = True) -> dict:
        d = job.describe()
        status = d["TrainingJobStatus"]
        summary: dict[str, Any] = {"TrainingJobName": d["TrainingJobName"], "TrainingJobArn": d["TrainingJobArn"],
                                   "CreationTime": d["CreationTime"], "TrainingJobStatus": status,
                                   "TunedHyperParameters": dict(self._tuned.get(job.name, {}))}
        if with_tuning_name:
            summary["TuningJobName"] = self.name
        for key in ("TrainingStartTime", "TrainingEndTime", "FailureReason"):
            if key in d:
                summary[key] = d[key]
        value = self._objective_values.get(job.name)
        if value is not None:
            summary["FinalHyperParameterTuningJobObjectiveMetric"] = {
                "Type": self.objective["Type"], "MetricName": self.objective["MetricName"], "Value": value}
            summary["ObjectiveStatus"] = "Succeeded"
        else:
            summary["ObjectiveStatus"] = "Pending" if status in ("InProgress", "Stopping") else "Failed"
        return summary

    def best(self) -> TrainingJob | None:
        sign = 1 if self.objective["Type"] == "Maximize" else -1
        done = [j for j in self.trials if j.status == "Completed" and j.name in self._objective_values]
        return max(done, key=lambda j: sign * self._objective_values[j.name], default=None)

    # --- lifecycle -----------------------------------------------------------------------------------------
    def start(self) -> None:
        threading.Thread(target=self._run, name=f"tuning-{self.name}", daemon=True).start()

    def stop(self) -> None:
        with self.context.lock:
            if self.desc["HyperParameterTuningJobStatus"] != "InProgress":
                return
            self.desc["HyperParameterTuningJobStatus"] = "Stopping"
            self.desc["LastModifiedTime"] = now()
        self._stop.set()
        for job in list(self.trials):
            job.stop()

    def halt(self) -> None:
        """No more trials (the stand-in is closing; its trials are killed with it), without a Stopping status."""
        self._stop.set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._finished.wait(timeout)

    def _set_status(self, status: str, reason: str | None = None) -> None:
        with self.context.lock:
            self.desc["HyperParameterTuningJobStatus"] = status
            self.desc["LastModifiedTime"] = now()
            if status in TERMINAL:
                self.desc["HyperParameterTuningEndTime"] = self.desc["LastModifiedTime"]
            if reason:
                self.desc["FailureReason"] = reason[:1024]
        self.context.emit({"type": "TuningJob", "HyperParameterTuningJobName": self.name,
                           "HyperParameterTuningJobStatus": status, **({"FailureReason": reason} if reason else {})})

    def _run(self) -> None:
        try:
            self._optimise()
            if self._stop.is_set():
                self._set_status("Stopped")
            elif self.best() is None:
                self._set_status("Failed", "No training job succeeded: every training job of the tuning job "
                                           "failed or reported no objective metric")
            else:
                self._set_status("Completed")
        except Exception as exc:  # reported as the tuning job's failure
            self._set_status("Failed", f"InternalServerError: {type(exc).__name__}: {exc}")
        finally:
            self._save()
            self._finished.set()

    def _done_early(self, completed: list[float]) -> bool:
        criteria = self.config.get("TuningJobCompletionCriteria", {})
        best = self.best()
        if best is None:
            return False
        value = self._objective_values[best.name]
        target = criteria.get("TargetObjectiveMetricValue")
        if target is not None and (value >= target if self.objective["Type"] == "Maximize" else value <= target):
            return True
        patience = criteria.get("BestObjectiveNotImproving", {}).get("MaxNumberOfTrainingJobsNotImproving")
        if patience:
            sign = 1 if self.objective["Type"] == "Maximize" else -1
            since, running_best = 0, None
            for v in completed:
                if running_best is None or sign * v > sign * running_best:
                    running_best, since = v, 0
                else:
                    since += 1
            with self.context.lock:
                self.desc["TuningJobCompletionDetails"] = {"NumberOfTrainingJobsObjectiveNotImproving": since}
            return since >= patience
        return False

    def _optimise(self) -> None:
        study = self._study()
        completed: list[float] = []
        futures: set[Future] = set()
        launched = 0
        limit = self.config["ResourceLimits"].get("MaxRuntimeInSeconds")
        deadline = time.monotonic() + limit if limit else None
        with ThreadPoolExecutor(max_workers=self.parallel, thread_name_prefix=f"trial-{self.name}") as pool:
            while True:
                if deadline is not None and time.monotonic() > deadline and not self._stop.is_set():
                    # ResourceLimits.MaxRuntimeInSeconds bounds the whole tuning job: its running trials stop.
                    self.stop()
                stop_launching = self._stop.is_set() or self.context.closed or self._done_early(completed)
                while not stop_launching and len(futures) < self.parallel and launched < self.max_jobs:
                    launched += 1
                    trial = study.ask(self.space)
                    futures.add(pool.submit(self._trial, study, trial, launched, completed))
                if not futures:
                    break
                finished, futures = wait(futures, timeout=0.5, return_when=FIRST_COMPLETED)
                futures = set(futures)
                for future in finished:
                    future.result()  # a bug in _trial surfaces as the tuning job's failure

    def _trial(self, study: optuna.Study, trial: optuna.trial.Trial, index: int, completed: list[float]) -> None:
        tuned = {name: hyperparameter_value(trial.params[name], self.scaling[name]) for name in self.space}
        name = f"{self.name}-{index:03d}-{uuid.uuid4().hex[:8]}"
        request = self._trial_request(name, tuned)
        self._tuned[name] = tuned
        job = self._start_trial(request, self.desc["HyperParameterTuningJobArn"])
        self.trials.append(job)
        self.context.emit({"type": "TuningTrial", "HyperParameterTuningJobName": self.name, "TrainingJobName": name,
                           "Index": index, "TunedHyperParameters": tuned, "TrainingJobStatus": "InProgress"})
        metric = self.objective["MetricName"]
        pruned = threading.Event()

        def on_metric(metric_name: str, value: float, step: int) -> None:
            if metric_name != metric or pruned.is_set() or not math.isfinite(value):
                return
            trial.report(value, step)
            if trial.should_prune():
                pruned.set()
                job.stop()  # SageMaker's early stopping stops the training job

        job.metric_listeners.append(on_metric)
        job.wait()
        d = job.describe()
        final = {m["MetricName"]: m["Value"] for m in d.get("FinalMetricDataList", [])}
        value = final.get(metric)
        if value is not None and math.isfinite(value):
            self._objective_values[name] = value
        status = d["TrainingJobStatus"]
        if pruned.is_set():
            study.tell(trial, state=TrialState.PRUNED)
        elif status == "Completed" and value is not None and name in self._objective_values:
            study.tell(trial, value)
            completed.append(value)
        else:
            study.tell(trial, state=TrialState.FAIL)
        with self.context.lock:
            self.desc["LastModifiedTime"] = now()
        self.context.emit({"type": "TuningTrial", "HyperParameterTuningJobName": self.name, "TrainingJobName": name,
                           "Index": index, "TunedHyperParameters": tuned, "TrainingJobStatus": status,
                           "EarlyStopped": pruned.is_set(), "ObjectiveValue": self._objective_values.get(name),
                           **({"FailureReason": d["FailureReason"]} if "FailureReason" in d else {})})

    def _save(self) -> None:
        from local.sagemaker.api import to_json

        folder = self.context.work_dir / "tuning-jobs" / self.name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "description.json").write_text(json.dumps(to_json(self.describe()), indent=2))
        (folder / "training-jobs.json").write_text(json.dumps(to_json([self.summary(j) for j in self.trials]),
                                                              indent=2))
