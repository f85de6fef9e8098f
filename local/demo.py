"""`make demo`: the pipeline `cdk deploy` would run, end to end on this machine, ending with a prediction.

    python -m local.demo [--out demo-output] [--serve] [--port 8080]

1. render the local digits dataset (local/digits.csv.gz) and put it where the stack's bucket would hold it;
2. synthesize the CDK app (profile "local") and take the state machine definition from the template;
3. execute it with moto's ASL interpreter, its SageMaker tasks served by the local stand-in (tuning trials,
   Debugger-enabled training, rule verdicts, blue/green endpoint);
4. put the REST front and the unchanged Lambda handler before the endpoint and POST a held-out image.

The stand-in keeps its endpoints in --out, so running the demo again takes the update path: the old endpoint keeps
answering (a prober counts its answers) until the new one is InService.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import shutil
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from contextlib import ExitStack
from pathlib import Path
from typing import IO, Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

import stackfacts as facts
from ml import contract

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT / "data" / "digits"
EPOCH_LINE = re.compile(r"^epoch=(\d+)/(\d+)\b")
KEEP_RUNS = 3  # runs whose job files --out keeps (about 1 GB each with the digits)


# --- terminal progress -------------------------------------------------------------------------------------------
class DemoProgress:
    """Turns execution-history and stand-in events into one story of the run, and per-job epoch bars.

    Each state is shown once: a state entered again (a polling loop: wait, describe, check) is counted, and the
    loop is summed up in one line when the execution moves on. Stand-in events are shown in time order with the
    state events: the history arrives by polling, so a stand-in line waits (at most `hold` seconds) until the
    history has caught up with it.
    """

    def __init__(self, console: Console, describe_endpoint: Callable[..., dict] | None = None,
                 hold: float = 1.0) -> None:
        self.console = console
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("epochs"), TimeElapsedColumn(), console=console, transient=False)
        self.describe_endpoint = describe_endpoint
        self.hold = hold
        self._tasks: dict[str, TaskID] = {}
        self._labels: dict[str, str] = {}
        self._entered: dict[str, float] = {}
        self._seen: set[str] = set()
        self._loop: dict[str, int] = {}  # states re-entered since the last new state -> times
        self._loop_started: float | None = None
        self._pending: list[tuple[float, int, str]] = []  # (time, sequence, line) of stand-in events not shown yet
        self._sequence = 0
        self._history_time = 0.0  # the newest history event's timestamp
        self._lock = threading.RLock()
        self.events: list[dict] = []
        self.trials: dict[str, dict] = {}
        self.rules: dict[str, str] = {}

    def log(self, text: str) -> None:
        log_line(self.console, text)

    # stand-in lines wait for the history to catch up, so that a state comes before what it causes
    def _later(self, at: float, text: str) -> None:
        self._sequence += 1
        self._pending.append((at, self._sequence, text))

    def flush(self, until: float | None = None) -> None:
        """Show the stand-in lines up to `until` (a time.time()); all of them when None."""
        with self._lock:
            ready = sorted(p for p in self._pending if until is None or p[0] <= until)
            self._pending = [p for p in self._pending if not (until is None or p[0] <= until)]
            for _, _, text in ready:
                self.log(text)

    def tick(self) -> None:
        """Called now and then: stand-in lines older than `hold` are shown even if the history is quiet."""
        self.flush(time.time() - self.hold)

    def _end_loop(self) -> None:
        if self._loop:
            took = time.monotonic() - (self._loop_started or time.monotonic())
            times = max(self._loop.values())
            self.log(f"  [dim]↻ {' → '.join(self._loop)}: {times} more time{'s' if times > 1 else ''} "
                     f"({took:.0f} s)[/]")
            self._loop, self._loop_started = {}, None

    def state_event(self, event: dict) -> None:
        with self._lock:
            self.events.append(event)
            at = _timestamp(event.get("timestamp"))
            if at is not None:
                self._history_time = max(self._history_time, at)
                self.flush(at)
            kind = event.get("type", "")
            if details := event.get("stateEnteredEventDetails"):
                name = details["name"]
                self._entered[name] = time.monotonic()
                if name in self._seen:
                    if not self._loop:
                        self._loop_started = time.monotonic()
                    self._loop[name] = self._loop.get(name, 0) + 1
                    return
                self._end_loop()
                self._seen.add(name)
                self.log(f"[bold cyan]▶ {name}[/]")
            elif details := event.get("stateExitedEventDetails"):
                name = details["name"]
                took = time.monotonic() - self._entered.pop(name, time.monotonic())
                if name not in self._loop and took >= 1.0:  # an instant state needs no second line
                    self.log(f"[green]✓ {name}[/] [dim]({took:.0f} s)[/]")
            elif kind == "TaskFailed":  # often caught (a probe for an endpoint that does not exist yet)
                details = event.get("taskFailedEventDetails") or {}
                self.log(f"  [yellow]↳ {details.get('error', '')}[/] [dim]{str(details.get('cause', ''))[:160]}[/]")
            elif kind in ("ExecutionFailed", "ExecutionAborted", "ExecutionTimedOut"):
                self._end_loop()
                details = (event.get("executionFailedEventDetails") or event.get("executionAbortedEventDetails")
                           or event.get("executionTimedOutEventDetails") or {})
                self.log(f"[red]✗ {kind}: {details.get('error', '')}[/] "
                         f"[dim]{str(details.get('cause', ''))[:300]}[/]")
            elif kind == "ExecutionSucceeded":
                self._end_loop()

    def finish(self) -> None:
        """The run is over: sum up an open loop, show what is left, stop every timer."""
        with self._lock:
            self._end_loop()
            self.flush()
            for task in self._tasks.values():
                self.progress.stop_task(task)

    def _label(self, event: dict) -> str:
        """`trial 3` for a tuning trial (<tuning job>-003-<hex>), else the job's whole name: never cut mid-word."""
        name = event["TrainingJobName"]
        if event.get("TuningJobArn"):
            tuning = event["TuningJobArn"].rsplit("/", 1)[-1]
            # SageMaker lower-cases names in ARNs
            number = name[len(tuning) + 1:].split("-", 1)[0] if name.lower().startswith(tuning.lower() + "-") else ""
            return f"trial {int(number)}" if number.isdigit() else f"trial {name}"
        return f"training {name}"

    def sagemaker_event(self, event: dict) -> None:
        kind = event.get("type")
        at = event.get("time", time.time())
        with self._lock:
            if kind == "TrainingJob":
                name = event["TrainingJobName"]
                if event.get("TrainingJobStatus") == "InProgress" and name not in self._tasks:
                    epochs = int(event.get("HyperParameters", {}).get(contract.EPOCHS, 0) or 0)
                    self._labels[name] = self._label(event)
                    self._tasks[name] = self.progress.add_task(self._labels[name], total=epochs or None)
                elif event.get("TrainingJobStatus") in ("Completed", "Failed", "Stopped") and name in self._tasks:
                    self.progress.stop_task(self._tasks[name])  # its timer stops with the job
            elif kind == "TrainingLog":
                match = EPOCH_LINE.match(event.get("line", ""))
                task = self._tasks.get(event.get("TrainingJobName", ""))
                if match and task is not None:
                    self.progress.update(task, completed=int(match[1]), total=int(match[2]))
                    metrics = contract.parse_metrics(event["line"])
                    if contract.VALID_ACCURACY in metrics:
                        accuracy = metrics[contract.VALID_ACCURACY][-1]
                        self.progress.update(task, description=f"{self._labels[event['TrainingJobName']]} · "
                                                               f"valid_accuracy {accuracy:.3f}")
            elif kind == "TuningTrial":
                self._trial(event, at)
            elif kind in ("DebugRuleEvaluation", "ProfilerRuleEvaluation"):
                status = event["RuleEvaluationStatus"]
                if status != "InProgress":
                    self.rules[event["RuleConfigurationName"]] = status
                    colour = "green" if status == contract.NO_ISSUES else "red"
                    details = event.get("StatusDetails", "")[:120]
                    self._later(at, f"  rule [bold]{event['RuleConfigurationName']}[/]: [{colour}]{status}[/]"
                                    + (f" [dim]{details}[/]" if details else ""))
            elif kind == "Endpoint":
                config_name = event.get("EndpointConfigName", "")
                if event["EndpointStatus"] == "Updating" and self.describe_endpoint is not None:
                    # DescribeEndpoint names the serving config until the update ends; the new one is in
                    # PendingDeploymentSummary: https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_DescribeEndpoint.html
                    with contextlib.suppress(Exception):
                        pending = self.describe_endpoint(EndpointName=event["EndpointName"]).get(
                            "PendingDeploymentSummary") or {}
                        if pending.get("EndpointConfigName"):
                            config_name = f"{config_name} → {pending['EndpointConfigName']}"
                self._later(at, f"  endpoint [bold]{event['EndpointName']}[/]: {event['EndpointStatus']} "
                                f"[dim]({config_name})[/]"
                                + (f" [red]{event['FailureReason']}[/]" if event.get("FailureReason") else ""))
            elif kind == "TuningJob" and event.get("HyperParameterTuningJobStatus") != "InProgress":
                self._later(at, f"  tuning job {event['HyperParameterTuningJobName']}: "
                                f"{event['HyperParameterTuningJobStatus']}")

    def _trial(self, event: dict, at: float) -> None:
        name, status = event["TrainingJobName"], event["TrainingJobStatus"]
        self.trials[name] = event
        hps = _hyperparameters(event.get("TunedHyperParameters", {}))
        if status == "InProgress":
            self._later(at, f"  trial {event.get('Index', '?')} started: {hps}")
            return
        objective = event.get("ObjectiveValue")
        result = f"{contract.OBJECTIVE_METRIC}={objective:.4f}" if objective is not None else "no objective"
        note = " (stopped early)" if event.get("EarlyStopped") else ""
        colour = "green" if status == "Completed" else "yellow"
        self._later(at, f"  trial {event.get('Index', '?')} [{colour}]{status}{note}[/]: {hps} → {result}"
                        + (f" [dim]{event['FailureReason'][:120]}[/]" if event.get("FailureReason") else ""))


def _timestamp(value: object) -> float | None:
    """A history event's timestamp (ISO 8601 or datetime) as time.time() seconds."""
    import datetime as dt

    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = dt.datetime.fromisoformat(value)
    if isinstance(value, dt.datetime):
        return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).timestamp()
    return None


def log_line(console: Console, text: str) -> None:
    """A time-stamped line (console.log would add a source column, and pad every line to the console's width)."""
    console.print(f"[dim]{time.strftime('%H:%M:%S')}[/] {text}", highlight=False)


def demo_console(file: IO[str] | None = None) -> Console:
    """No source column (`demo.py:57`) on every line; piped output is never wrapped (one event, one line)."""
    stream = file or sys.stdout
    tty = bool(getattr(stream, "isatty", lambda: False)())
    return Console(file=stream, log_path=False, soft_wrap=not tty, width=None if tty else 160)


# --- the run -----------------------------------------------------------------------------------------------------
class DemoError(Exception):
    """Something to fix before a run can start: one line, exit 1."""


def check_dataset(data: Path) -> None:
    """Only the default dataset is ever rendered: any other path must already hold train/ valid/ test/."""
    if all((data / split).is_dir() for split in contract.CHANNELS):
        return
    if data.resolve() == DEFAULT_DATA.resolve():
        return  # rendered by _ensure_dataset
    missing = [split for split in contract.CHANNELS if not (data / split).is_dir()]
    what = "does not exist" if not data.exists() else f"has no {'/, '.join(missing)}/ folder"
    raise DemoError(f"dataset {data} {what}: give an ImageFolder dataset (train/ valid/ test/, one folder of "
                    f"images per class), or leave DATA out for the digits")


def check_port(port: int) -> None:
    """--serve on a port in use fails now, not after minutes of training."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As the server binds (waitress sets SO_REUSEADDR): a port in TIME_WAIT after the last run is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            raise DemoError(f"port {port} is in use ({exc.strerror}): stop what listens there or pass another "
                            "PORT=") from None


def _ensure_dataset(data: Path, console: Console) -> None:
    check_dataset(data)
    if all((data / split).is_dir() for split in contract.CHANNELS):
        _check_dataset(data)
        return
    from local.digits import render

    counts = render(data)
    log_line(console, f"rendered the digits dataset into {data} "
                      f"({', '.join(f'{k} {v}' for k, v in counts.items())})")
    _check_dataset(data)


def stage_dataset(data: Path, target: Path) -> None:
    """The dataset given, exactly: each split in the local S3 is replaced, never overlaid on an earlier run's."""
    for split in contract.CHANNELS:
        destination = target / split
        if destination.exists():
            shutil.rmtree(destination)
        shutil.copytree(data / split, destination)


def _check_dataset(data: Path) -> None:
    """upload-data's own check (one for both): missing splits or classes, empty classes, links out of the tree.
    Files that are not images are left to training, which skips and counts them."""
    from cli.dataset import check_layout

    if problems := check_layout(data, ignore_non_images=True).problems:
        raise DemoError(f"{data} is not an ImageFolder dataset: {'; '.join(problems)}")


def _held_out_image(data: Path) -> tuple[Path, str]:
    test = data / contract.TEST
    folder = sorted(d for d in test.iterdir() if d.is_dir())[3 % len(list(test.iterdir()))]
    image = sorted(p for p in folder.iterdir() if p.suffix.lower() in contract.IMAGE_EXTENSIONS)[0]
    return image, folder.name


def post_image(url: str, image: Path, timeout: float = 30.0) -> tuple[int, dict]:
    body = image.read_bytes()
    content_type = contract.MEDIA_TYPE_BY_FORMAT.get(contract.sniff_image_format(body) or "", "image/jpeg")
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


class Prober:
    """POSTs an image every `interval` seconds while the pipeline runs: proof that an update has no downtime."""

    def __init__(self, url: str, image: Path, interval: float = 1.0) -> None:
        self.url, self.image, self.interval = url, image, interval
        self.ok = self.failed = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="endpoint-prober")

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                status, body = post_image(self.url, self.image, timeout=20)
            except (OSError, ValueError) as exc:
                status, body = 0, {"error": {"message": str(exc)}}
            if status == 200:
                self.ok += 1
            else:
                self.failed += 1
                self.failures.append(f"{status}: {body.get('error', {}).get('message', '')}"[:200])

    def start(self) -> Prober:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Idempotent: called once the pipeline ends, and again on the way out of an interrupted run."""
        self._stop.set()
        self._thread.join(timeout=30)


def _copy_artifacts(out: Path, sm, output: dict | None, execution) -> dict[str, str]:
    """The run's deliverables at the top of --out, beside the stand-in's full working tree."""
    paths: dict[str, str] = {}
    execution.save(out / "execution.json")
    paths["execution history"] = str(out / "execution.json")
    output = output or {}
    if "best_hyperparameters" in output:
        best = {"tuning_job": output.get("tuning_job_name"), "tuning_status": output.get("tuning_status"),
                "training_job": output.get("best_training_job_name"),
                "hyperparameters": output["best_hyperparameters"], "objective": output.get("objective")}
        (out / "best-hyperparameters.json").write_text(json.dumps(best, indent=2))
        paths["best hyperparameters JSON"] = str(out / "best-hyperparameters.json")
    logs = out / "logs"
    logs.mkdir(exist_ok=True)
    for name in list(sm.training_jobs):
        if sm.training_log(name).is_file():
            shutil.copy2(sm.training_log(name), logs / f"{name}.log")
    paths["job logs"] = str(logs)
    job = output.get("training_job_name")
    if not job:  # a failed run: the newest job that is not a tuning trial, if any got that far
        finals = [n for n, j in sm.training_jobs.items() if not sm.describe_training_job(TrainingJobName=n)
                  .get("TuningJobArn")]
        job = finals[-1] if finals else None
    if not job:
        return paths
    desc = sm.describe_training_job(TrainingJobName=job)
    model = desc.get("ModelArtifacts", {}).get("S3ModelArtifacts")
    if model and sm.s3.path(model).is_file():
        shutil.copy2(sm.s3.path(model), out / facts.MODEL_ARCHIVE)
        paths["model"] = str(out / facts.MODEL_ARCHIVE)
    verdicts = {r["RuleConfigurationName"]: r["RuleEvaluationStatus"]
                for key in ("DebugRuleEvaluationStatuses", "ProfilerRuleEvaluationStatuses") for r in desc.get(key, [])}
    if verdicts:
        (out / "rule-verdicts.json").write_text(json.dumps(verdicts, indent=2))
        paths["rule verdicts JSON"] = str(out / "rule-verdicts.json")
    report = sm.profiler_report(job)
    if report and report.is_file():
        shutil.copy2(report, out / facts.PROFILER_REPORT_FILE)
        paths["profiler report"] = str(out / facts.PROFILER_REPORT_FILE)
    return paths


class LocalMetrics:
    """CloudWatch's GetMetricData over the stand-in's training jobs: the metrics of each epoch line, as SageMaker
    publishes what the MetricDefinitions regexes match (namespace and dimension: facts.METRIC_DIMENSIONS). Recorded
    with a run, it gives the report the curves of every trial, stopped ones included (they write no history.json)."""

    def __init__(self, sm) -> None:
        self.sm = sm

    def _points(self, job_name: str, metric: str) -> list[tuple[Any, float]]:
        import datetime as dt

        job = self.sm.training_jobs.get(job_name)
        if job is None:
            return []
        start = job.describe().get("TrainingStartTime")
        if start is None:
            return []
        points: list[tuple[Any, float]] = []
        elapsed = 0.0
        for epoch in list(job.epochs):
            elapsed += float(epoch.get("seconds", 0.0))
            if metric in epoch:
                points.append((start + dt.timedelta(seconds=elapsed, microseconds=len(points)), epoch[metric]))
        return points

    def get_metric_data(self, MetricDataQueries: list[dict], **_: Any) -> dict:
        results = []
        for query in MetricDataQueries:
            metric = query["MetricStat"]["Metric"]
            job = next((d["Value"] for d in metric.get("Dimensions", [])
                        if d["Name"] == facts.TRAINING_METRIC_DIMENSION), "")
            points = self._points(job, metric["MetricName"])
            results.append({"Id": query["Id"], "Label": query.get("Label", metric["MetricName"]),
                            "Timestamps": [t for t, _ in points], "Values": [v for _, v in points],
                            "StatusCode": "Complete"})
        return {"MetricDataResults": results, "Messages": []}


def aborted(events: list[dict], error: str, cause: str) -> list[dict]:
    """The history seen so far, ended as Step Functions ends a stopped execution (an ExecutionAborted event with
    executionAbortedEventDetails: https://docs.aws.amazon.com/step-functions/latest/apireference/API_HistoryEvent.html)."""
    import datetime as dt

    last = events[-1]["id"] if events and "id" in events[-1] else len(events)
    return [*events, {"type": "ExecutionAborted", "id": last + 1, "previousEventId": last,
                      "timestamp": dt.datetime.now(dt.UTC).isoformat(),
                      "executionAbortedEventDetails": {"error": error, "cause": cause}}]


class LiveRecording:
    """Records the running execution every `interval` seconds, so `imgclf status --local --watch` follows this
    run while it runs; `finish` records how it ended (an interrupted run too)."""

    def __init__(self, out: Path, sm, ui: DemoProgress, name: str, stack_outputs: dict[str, str],
                 interval: float = 5.0) -> None:
        self.out, self.sm, self.ui, self.name, self.stack_outputs = out, sm, ui, name, stack_outputs
        self.interval = interval
        self.arn: str | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True, name="live-recording")

    def start(self) -> LiveRecording:
        self._thread.start()
        return self

    def _find_arn(self) -> str | None:
        """The execution's ARN as the engine's Step Functions (moto, active while the run lasts) lists it."""
        import boto3

        client = boto3.client("stepfunctions", region_name=facts.LOCAL_REGION, aws_access_key_id="local",
                              aws_secret_access_key="local")
        for machine in client.list_state_machines().get("stateMachines", []):
            for execution in client.list_executions(stateMachineArn=machine["stateMachineArn"]).get("executions", []):
                if execution["name"] == self.name:
                    return execution["executionArn"]
        return None

    def record(self, status: str, events: list[dict], arn: str | None = None, **details: Any) -> None:
        from cli.recording.writer import ExecutionRecord, write_recording

        arn = arn or self.arn
        if arn is None:
            return
        with self._lock:
            write_recording(self.out, sagemaker=self.sm, execution_arn=arn, s3=self.sm.s3.root,
                            cloudwatch=LocalMetrics(self.sm),
                            stepfunctions=ExecutionRecord(execution_arn=arn, status=status, events=events, **details),
                            stack_outputs=self.stack_outputs)

    def state_event(self, event: dict) -> None:
        """The engine's on_event: called while its Step Functions (moto) is up, so the ARN is looked up here, never
        after the run (a boto3 call then would leave this machine)."""
        if self.arn is None:
            try:
                self.arn = self._find_arn()
            except Exception as exc:  # a progress record must never break the run
                logging.getLogger(__name__).info("live recording: %s", exc)
        self.ui.state_event(event)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                if self.arn and self.ui.events:
                    self.record("RUNNING", list(self.ui.events))
            except Exception as exc:  # a progress record must never break the run
                logging.getLogger(__name__).info("live recording: %s", exc)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)


def _job_folders(out: Path, described: dict) -> list[Path]:
    """Where a training job's files are in a run folder: its working tree, its log copy, its S3 outputs."""
    from awsshapes import parse_s3_uri

    job = described["TrainingJobName"]
    folders = [out / "sagemaker" / "training-jobs" / job, out / "logs" / f"{job}.log"]
    for config_key in ("OutputDataConfig", "DebugHookConfig", "ProfilerConfig"):
        base = (described.get(config_key) or {}).get("S3OutputPath")
        if base:
            bucket, key = parse_s3_uri(base.rstrip("/") + "/" + job)
            folders.append(out / "s3" / bucket / key)
    checkpoints = (described.get("CheckpointConfig") or {}).get("S3Uri", "")
    if checkpoints.rstrip("/").endswith("/" + job):
        bucket, key = parse_s3_uri(checkpoints.rstrip("/"))
        folders.append(out / "s3" / bucket / key)
    return folders


def _remove(path: Path, protected: set[Path]) -> int | None:
    """Delete a file or a folder tree without following links (a job's input/data links to the dataset itself),
    except the protected files; the bytes freed, or None when there was nothing."""
    if path.is_symlink() or path.is_file():
        if path.is_file() and not path.is_symlink() and path.resolve() in protected:
            return None
        size = 0 if path.is_symlink() else path.stat().st_size
        path.unlink()
        return size
    if not path.is_dir():
        return None
    freed = removed = 0
    for top, dirs, files in os.walk(path, topdown=False, followlinks=False):
        for name in files + [d for d in dirs if (Path(top) / d).is_symlink()]:
            entry = Path(top) / name
            if entry.is_symlink() or entry.resolve() not in protected:
                freed += 0 if entry.is_symlink() else entry.stat().st_size
                entry.unlink()
                removed += 1
        with contextlib.suppress(OSError):  # not empty: it holds a protected file
            Path(top).rmdir()
            removed += 1
    return freed if removed else None


def prune_runs(out: Path, keep: int, protected: AbstractSet[Path] = frozenset()) -> tuple[int, int]:
    """Delete the job files (working trees, logs, S3 outputs, checkpoints) of every run but the newest `keep`;
    the files in `protected` (model archives an endpoint serves) stay. The recorded API answers stay, so
    `imgclf status` still shows old runs. Returns (runs pruned, bytes freed)."""
    from cli.recording.writer import recorded_runs

    runs = recorded_runs(out)
    kept_jobs = {d["TrainingJobName"] for _, jobs in runs[:keep] for d in jobs}
    old_jobs = [d for _, jobs in runs[keep:] for d in jobs]
    protected = {p.resolve() for p in protected}
    freed, pruned = 0, set()
    for described in old_jobs:
        if described["TrainingJobName"] in kept_jobs:
            continue
        for folder in _job_folders(out, described):
            removed = _remove(folder, protected)
            if removed is not None:
                freed += removed
                pruned.add(described["TrainingJobName"])
    older = max(0, len(runs) - keep)
    return (older if pruned else 0), freed


def _served_models(sm) -> set[Path]:
    """The model archives the stand-in's endpoints serve (or are being updated to): an endpoint may serve one from
    any earlier run, and restarts it from that archive."""
    paths = set()
    for endpoint in sm.list_endpoints(MaxResults=100).get("Endpoints", []):
        described = sm.describe_endpoint(EndpointName=endpoint["EndpointName"])
        configs = {described.get("EndpointConfigName"),
                   (described.get("PendingDeploymentSummary") or {}).get("EndpointConfigName")}
        for config_name in filter(None, configs):
            with contextlib.suppress(Exception):  # a config deleted meanwhile serves nothing
                variants = sm.describe_endpoint_config(EndpointConfigName=config_name)["ProductionVariants"]
                for variant in variants:
                    container = sm.describe_model(ModelName=variant["ModelName"]).get("PrimaryContainer", {})
                    if container.get("ModelDataUrl"):
                        paths.add(sm.s3.path(container["ModelDataUrl"]))
    return paths


def _hyperparameters(values: dict) -> str:
    from cli.views import fmt_hyperparameter

    return " ".join(f"{k}={fmt_hyperparameter(str(v).strip(chr(34)))}" for k, v in sorted(values.items()))


def _summary(console: Console, output: dict, paths: dict[str, str], api_url: str | None,
             serving: bool = False) -> None:
    table = Table(title="local run", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    objective = output.get("objective") or {}
    rows = {
        "best hyperparameters": _hyperparameters(output.get("best_hyperparameters", {})),
        "tuning objective": f"{objective.get('MetricName')} = {objective.get('Value'):.4f}" if objective else "",
        "best trial": output.get("best_training_job_name", ""),
        "tuning job": f"{output.get('tuning_job_name', '')} ({output['tuning_status']})"
        if output.get("tuning_status") else "",
        "training job": output.get("training_job_name", ""),
        "test accuracy": f"{output['test_accuracy']:.4f}" if "test_accuracy" in output else "",
        "health issues": f"{output['health_issues']:g}" if "health_issues" in output else "",
        "rule verdicts": ", ".join(f"{k}: {v}" for k, v in output.get("rule_verdicts", {}).items()),
        "profiler rules": "unavailable (not listed by SageMaker)" if output.get("profiler") == "unavailable" else "",
        "endpoint": f"{output.get('endpoint_name', '')} ({output.get('endpoint_config_name', '')})",
        "REST API": api_url if serving else "",
    }
    for key, value in {**rows, **paths}.items():
        if value:
            table.add_row(key, value)
    console.print(table)


def load_template(path: Path, prefix: str) -> dict:
    """A synthesized template (`cdk synth`'s cdk.out/<Stack>.template.json), checked against the context given."""
    from infra.definition import state_machine_resource

    try:
        template = json.loads(path.read_text())
        state_machine_resource(template)
    except OSError as exc:
        raise DemoError(f"--template {path}: {exc.strerror}") from None
    except (ValueError, AttributeError) as exc:
        raise DemoError(f"--template {path} is not this app's synthesized template: {exc}") from None
    synthesized_prefix = template.get("Outputs", {}).get(facts.OUTPUT_RESOURCE_PREFIX, {}).get("Value")
    if synthesized_prefix != prefix:
        raise DemoError(f"--template {path} was synthesized with prefix {synthesized_prefix!r}, the context given "
                        f"says {prefix!r}: pass the -c options it was synthesized with")
    return template


def gated_rules(template: dict) -> tuple[str, ...]:
    """The rules the template's state machine gates the deploy on (its rule gate's `$.verdicts.<rule>` choices)."""
    from infra.definition import state_machine_resource
    from infra.pipeline import S

    text = state_machine_resource(template)["Properties"]["DefinitionString"]
    gate = json.loads(text if isinstance(text, str) else "{}").get("States", {}).get(S.GATE_RULES, {})
    return tuple(dict.fromkeys(re.findall(r"\$\.verdicts\.([A-Za-z0-9]+)", json.dumps(gate))))


def stage_assets(template_path: Path, resolver, s3) -> list[str]:
    """Publish the template's file assets (the training source bundle) from the cloud assembly beside it into the
    local S3, where `cdk deploy` would publish them (<Stack>.assets.json names each destination), so the jobs run
    the very bundle that would be deployed. Returns their S3 URIs."""
    manifest = template_path.with_name(template_path.name.removesuffix(".template.json") + ".assets.json")
    if not manifest.is_file():
        raise DemoError(f"--template {template_path}: no {manifest.name} beside it (give the template inside "
                        "the cloud assembly `cdk synth` wrote, e.g. cdk.out/ImageClassifier.template.json)")
    staged = []
    for asset in json.loads(manifest.read_text()).get("files", {}).values():
        source = template_path.parent / asset["source"]["path"]
        if asset["source"].get("packaging") != "file" or source.suffix == ".json":  # the template itself
            continue
        if not source.is_file():
            raise DemoError(f"--template {template_path}: asset {source.name} is missing from the cloud assembly")
        for destination in asset["destinations"].values():
            uri = f"s3://{resolver({'Fn::Sub': destination['bucketName']})}/{destination['objectKey']}"
            target = s3.path(uri)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
            staged.append(uri)
    return staged


def failure_reason(cause: str | None, sm) -> str:
    """What a failed run's cause comes down to: a .sync job's cause is its whole Describe* answer, whose
    FailureReason (for a tuning job, also its first failed trial's: the trial says why, e.g. an S3 AccessDenied)
    is what the user needs to read; any other cause as it is."""
    try:
        described = json.loads(cause or "")
    except ValueError:
        return cause or ""
    if not isinstance(described, dict) or "FailureReason" not in described:
        return cause or ""
    reason = str(described["FailureReason"])
    tuning = described.get("HyperParameterTuningJobName")
    if tuning:
        with contextlib.suppress(Exception):  # best effort: the reason above stands on its own
            failed = sm.list_training_jobs_for_hyper_parameter_tuning_job(
                HyperParameterTuningJobName=tuning, StatusEquals="Failed")["TrainingJobSummaries"]
            if failed:
                reason += f" (trial {failed[0]['TrainingJobName']}: {failed[0].get('FailureReason', '')})"
    return reason


def check_gate_rules(gate_rules: tuple[str, ...]) -> None:
    """A gate on a rule the stand-in cannot evaluate would end every run at the rule gate ("Error" is no verdict):
    say so before anything trains."""
    from local.sagemaker.profiler import not_evaluated_locally

    blind = {rule: why for rule in gate_rules if (why := not_evaluated_locally(rule))}
    if blind:
        rules = ", ".join(blind)
        raise DemoError(f"debugger.gate_rules {rules}: {'; '.join(blind.values())}, so the gate would fail every "
                        f"local run; drop {rules} from debugger.gate_rules for local runs")


def run(args: argparse.Namespace, console: Console) -> int:
    from cli.recording.writer import ExecutionRecord, write_recording
    from infra import load_config_for, synth_template
    from infra.api import FORWARDER_HANDLER
    from infra.config import validate_input
    from infra.definition import Resolver
    from local.engine import run_definition
    from local.iam import TemplateIAM, function_authorizer, state_machine_authorizer
    from local.rest_api import create_server, load_forwarder
    from local.sagemaker import LocalSageMaker
    from local.serve import local_aws_environment

    # Context and input errors in one line, in seconds, before anything is synthesized or trained.
    # A given template was synthesized with its own context (`-c` as given to `cdk synth`; cdk.json's otherwise).
    template_path = Path(args.template).resolve() if args.template else None
    context = dict(args.context) if template_path else {**args.context, "profile": "local"}
    cfg = load_config_for(context)
    validate_input(args.input, cfg)
    template = load_template(template_path, cfg.prefix) if template_path else None
    check_gate_rules(gated_rules(template) if template else cfg.debugger.active_gate_rules)
    check_dataset(args.data)  # before anything starts: a mistyped DATA never trains the digits instead
    if args.serve:
        check_port(args.port)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    started = time.monotonic()
    _ensure_dataset(args.data, console)

    t0 = time.monotonic()
    if template is None:
        log_line(console, "synthesizing the CDK app (profile local) ...")
        template = synth_template(context)
    else:
        log_line(console, f"running the synthesized template {template_path}")
    (out / "template.json").write_text(json.dumps(template, indent=1))
    resolver = Resolver(template, region=facts.LOCAL_REGION, account=facts.LOCAL_ACCOUNT)
    definition = resolver.definition()
    outputs = resolver.outputs()
    timings["synth"] = time.monotonic() - t0
    dataset_uri, endpoint_name = outputs["DatasetUri"], outputs["EndpointName"]
    # IAM as AWS enforces it: the state machine role on every Task call, the SageMaker execution role on every S3
    # call of a job or endpoint (and the bucket policy), the forwarder's role on InvokeEndpoint.
    iam = TemplateIAM(resolver)
    validate_input(args.input, cfg, dataset_prefix=dataset_uri)

    ui = DemoProgress(console)
    with ExitStack() as stack:
        sm = stack.enter_context(LocalSageMaker(out / "sagemaker", s3_root=out / "s3", restore=True,
                                                on_event=ui.sagemaker_event, authorize_s3=iam.sagemaker_s3))
        ui.describe_endpoint = sm.describe_endpoint
        if template_path:
            for uri in stage_assets(template_path, resolver, sm.s3):
                log_line(console, f"source bundle of the template at {uri}")
        dataset_dir = sm.s3.path(dataset_uri)
        stage_dataset(args.data, dataset_dir)
        log_line(console, f"dataset at {dataset_uri} (local S3: {dataset_dir})")

        saved_env = dict(os.environ)

        def restore_environment() -> None:
            os.environ.clear()
            os.environ.update(saved_env)

        stack.callback(restore_environment)
        os.environ.update(local_aws_environment(sm.runtime_url, endpoint_name))
        forwarder = load_forwarder()
        # A cold start per run: the module (and its client) may survive from an earlier run in this process.
        vars(forwarder)["sagemaker_runtime"] = function_authorizer(resolver, FORWARDER_HANDLER, iam).install(
            forwarder.make_client())
        log_level = forwarder.logger.log_level
        forwarder.logger.setLevel("WARNING")  # its per-request JSON lines would drown the progress display
        stack.callback(forwarder.logger.setLevel, log_level)
        server = create_server(forwarder.handler, "127.0.0.1", args.port if args.serve else 0)
        threading.Thread(target=server.serve, daemon=True, name="rest-front").start()
        stack.callback(server.stop)
        api_url = f"http://127.0.0.1:{server.port}{contract.PREDICT_PATH}"
        image, label = _held_out_image(args.data)

        existing = [e["EndpointName"] for e in sm.list_endpoints().get("Endpoints", [])
                    if e["EndpointName"] == endpoint_name and e["EndpointStatus"] == "InService"]
        prober = Prober(api_url, image) if existing else None
        if prober is not None:
            log_line(console, f"endpoint {endpoint_name} is already InService: this run takes the update path, "
                              "and a prober POSTs an image every second meanwhile")
            stack.callback(prober.start().stop)

        t0 = time.monotonic()
        name = f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
        # The API outlives the run only with --serve: a URL that is gone once the demo exits is not recorded.
        recorded_outputs = {**outputs, **({facts.OUTPUT_API_URL: api_url} if args.serve else {})}
        live = LiveRecording(out, sm, ui, name, recorded_outputs, interval=args.record_interval).start()
        stack.callback(live.stop)
        ticking = threading.Event()

        def tick() -> None:
            while not ticking.wait(0.25):
                ui.tick()

        threading.Thread(target=tick, daemon=True, name="demo-ticker").start()
        stack.callback(ticking.set)
        try:
            with ui.progress:
                try:
                    result = run_definition(definition, args.input, sm, on_event=live.state_event, name=name,
                                            authorize=state_machine_authorizer(resolver, iam))
                finally:
                    ticking.set()
                    ui.finish()
        except KeyboardInterrupt:
            live.stop()
            with contextlib.suppress(Exception):  # the record of an interrupted run, then the interrupt goes on
                live.record("ABORTED", aborted(ui.events, "KeyboardInterrupt", "interrupted on this machine (Ctrl-C)"),
                            error="KeyboardInterrupt", cause="interrupted on this machine (Ctrl-C)")
            raise
        live.stop()
        timings["pipeline"] = time.monotonic() - t0
        if prober:
            prober.stop()
        paths = _copy_artifacts(out, sm, result.output, result)
        # What `imgclf ... --local` reads: the same boto3 responses a deployed stack would give.
        write_recording(out, sagemaker=sm, stepfunctions=ExecutionRecord.from_result(result),
                        execution_arn=result.execution_arn, s3=sm.s3.root, cloudwatch=LocalMetrics(sm),
                        stack_outputs=recorded_outputs)
        runs, freed = prune_runs(out, args.keep_runs, _served_models(sm))
        if runs:
            log_line(console, f"pruned the job files of {runs} older run{'s' if runs > 1 else ''} "
                              f"({freed / 1e6:.0f} MB; --keep-runs {args.keep_runs} keeps the newest)")

        if not result.succeeded:
            console.print(f"[bold red]the pipeline failed in state {result.failed_state!r}[/]: "
                          f"{escape(str(result.error))}: {escape(failure_reason(result.cause, sm)[:1200])}",
                          highlight=False)
            console.print(f"execution history: {paths['execution history']}")
            if existing:
                status, _ = post_image(api_url, image)
                console.print(f"the serving endpoint was left untouched and answers: HTTP {status}")
            return 1

        t0 = time.monotonic()
        status, body = post_image(api_url, image)
        timings["predict"] = time.monotonic() - t0
        _summary(console, result.output or {}, paths, api_url, serving=args.serve)
        if prober:
            verdict = "[green]no downtime[/]" if prober.failed == 0 else f"[red]{prober.failed} failed[/]"
            console.print(f"during the update the endpoint answered {prober.ok} of {prober.ok + prober.failed} "
                          f"requests: {verdict} " + "; ".join(prober.failures[:3]))
        console.print(f"POST {image.relative_to(args.data)} (a held-out '{label}') to {api_url}")
        console.print(f"HTTP {status} {json.dumps(body)}")
        timings["total"] = time.monotonic() - started
        (out / "timings.json").write_text(json.dumps({k: round(v, 2) for k, v in timings.items()}, indent=2))
        console.print("phases: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))
        if status != 200:
            return 1
        top = body["predictions"][0]
        mark = "[green]correct[/]" if top["label"] == label else f"[red]wrong (expected {label})[/]"
        console.print(f"[bold]prediction: {top['label']}[/] (score {top['score']:.3f}) — {mark}")
        if args.serve:
            console.print(f"serving on {api_url} — Ctrl-C to stop. Try:\n  curl -s -X POST -H 'Content-Type: "
                          f"image/png' --data-binary @{image} {api_url}")
            threading.Event().wait()
    return 0


def _quiet_jsii_exit() -> None:
    """jsii stops its Node process at exit by writing to it; after a Ctrl-C that process is already gone (the
    terminal interrupted it too) and the write would print a BrokenPipeError traceback. Close the dead pipe."""
    runtime = sys.modules.get("jsii._runtime")
    provider = getattr(getattr(runtime, "kernel", None), "provider", None)
    if provider is None or "_process" not in vars(type(provider)):
        return
    with contextlib.suppress(Exception):
        node = provider._process  # memoized: started by the synth
        proc = getattr(node, "_process", None)
        if proc is not None and proc.poll() is not None and proc.stdin and not proc.stdin.closed:
            with contextlib.suppress(OSError):
                proc.stdin.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="demo-output", help="folder for everything the run produces")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="ImageFolder dataset (train/valid/test); only the default is rendered when missing")
    parser.add_argument("--serve", action="store_true", help="keep the REST API up after the run")
    parser.add_argument("--port", type=int, default=8080, help="REST API port with --serve")
    parser.add_argument("-c", "--context", action="append", default=[], metavar="KEY=VALUE",
                        help="CDK context for the synth, as `cdk -c` takes it (e.g. tuning.max_jobs=2)")
    parser.add_argument("--input", default="{}", help="the execution input, JSON (e.g. '{\"max_jobs\": 2}')")
    parser.add_argument("--keep-runs", type=int, default=KEEP_RUNS, metavar="N",
                        help="keep the job files of the newest N runs in --out; older ones are deleted")
    parser.add_argument("--template", type=Path, metavar="PATH",
                        help="run this synthesized template (cdk.out/ImageClassifier.template.json from `cdk synth`; "
                             "pass the -c options it was synthesized with) instead of synthesizing profile local")
    parser.add_argument("--record-interval", type=float, default=5.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        args.context = dict(item.split("=", 1) for item in args.context)
        args.input = json.loads(args.input)
    except ValueError as exc:
        parser.error(f"--context takes KEY=VALUE and --input a JSON object: {exc}")
    if not isinstance(args.input, dict):
        parser.error("--input must be a JSON object")
    if args.keep_runs < 1:
        parser.error("--keep-runs must be at least 1 (the run just made)")
    console = demo_console()
    # moto's interpreter logs every caught error (a Choice probing an absent optional input field, say) at
    # ERROR; the execution history below is the record that matters.
    logging.getLogger("moto").setLevel(logging.CRITICAL)
    try:
        return run(args, console)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: every job and endpoint process was stopped[/]")
        return 130
    except DemoError as exc:
        console.print(f"[red]error:[/] {exc}", highlight=False)
        return 1
    except (ValueError, RuntimeError) as exc:  # bad context or input, a working folder in use
        console.print(f"[red]error:[/] {exc or type(exc).__name__}", highlight=False)
        return 1
    except OSError as exc:  # a full disk, a port taken between the check and the bind: one line, no traceback
        console.print(f"[red]error:[/] {exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""),
                      highlight=False)
        return 1
    finally:
        _quiet_jsii_exit()


if __name__ == "__main__":
    sys.exit(main())
