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
from contextlib import ExitStack
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ml import contract

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT / "data" / "digits"
EPOCH_LINE = re.compile(r"^epoch=(\d+)/(\d+)\b")


# --- terminal progress -------------------------------------------------------------------------------------------
class DemoProgress:
    """Turns execution-history and stand-in events into log lines and per-job epoch bars."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("epochs"), TimeElapsedColumn(), console=console, transient=False)
        self._tasks: dict[str, int] = {}
        self._entered: dict[str, float] = {}
        self._lock = threading.Lock()
        self.trials: dict[str, dict] = {}
        self.rules: dict[str, str] = {}

    def log(self, text: str) -> None:
        self.console.log(text, highlight=False)

    def state_event(self, event: dict) -> None:
        kind = event.get("type", "")
        if details := event.get("stateEnteredEventDetails"):
            self._entered[details["name"]] = time.monotonic()
            self.log(f"[bold cyan]▶ {details['name']}[/]")
        elif details := event.get("stateExitedEventDetails"):
            took = time.monotonic() - self._entered.pop(details["name"], time.monotonic())
            self.log(f"[green]✓ {details['name']}[/] [dim]({took:.1f} s)[/]")
        elif kind in ("TaskFailed", "ExecutionFailed"):
            details = event.get("taskFailedEventDetails") or event.get("executionFailedEventDetails") or {}
            self.log(f"[red]✗ {kind}: {details.get('error', '')}[/] [dim]{str(details.get('cause', ''))[:300]}[/]")

    def sagemaker_event(self, event: dict) -> None:
        kind = event.get("type")
        with self._lock:
            if kind == "TrainingJob" and event.get("TrainingJobStatus") == "InProgress" \
                    and event["TrainingJobName"] not in self._tasks:
                name = event["TrainingJobName"]
                epochs = int(event.get("HyperParameters", {}).get(contract.EPOCHS, 0) or 0)
                label = "trial" if event.get("TuningJobArn") else "training"
                self._tasks[name] = self.progress.add_task(f"{label} {name[-14:]}", total=epochs or None)
            elif kind == "TrainingLog":
                match = EPOCH_LINE.match(event.get("line", ""))
                task = self._tasks.get(event.get("TrainingJobName", ""))
                if match and task is not None:
                    self.progress.update(task, completed=int(match[1]), total=int(match[2]))
                    metrics = contract.parse_metrics(event["line"])
                    if contract.VALID_ACCURACY in metrics:
                        base = self.progress.tasks[task].description.split(" ·")[0]
                        accuracy = metrics[contract.VALID_ACCURACY][-1]
                        self.progress.update(task, description=f"{base} · valid_accuracy {accuracy:.3f}")
            elif kind == "TuningTrial":
                self._trial(event)
            elif kind in ("DebugRuleEvaluation", "ProfilerRuleEvaluation"):
                status = event["RuleEvaluationStatus"]
                if status != "InProgress":
                    self.rules[event["RuleConfigurationName"]] = status
                    colour = "green" if status == contract.NO_ISSUES else "red"
                    self.log(f"  rule [bold]{event['RuleConfigurationName']}[/]: [{colour}]{status}[/] "
                             f"[dim]{event.get('StatusDetails', '')[:120]}[/]")
            elif kind == "Endpoint":
                self.log(f"  endpoint [bold]{event['EndpointName']}[/]: {event['EndpointStatus']} "
                         f"[dim]({event.get('EndpointConfigName', '')})[/]"
                         + (f" [red]{event['FailureReason']}[/]" if event.get("FailureReason") else ""))
            elif kind == "TuningJob" and event.get("HyperParameterTuningJobStatus") != "InProgress":
                self.log(f"  tuning job {event['HyperParameterTuningJobName']}: "
                         f"{event['HyperParameterTuningJobStatus']}")

    def _trial(self, event: dict) -> None:
        name, status = event["TrainingJobName"], event["TrainingJobStatus"]
        self.trials[name] = event
        hps = " ".join(f"{k}={v}" for k, v in sorted(event.get("TunedHyperParameters", {}).items()))
        if status == "InProgress":
            self.log(f"  trial {event.get('Index', '?')} started: {hps}")
            return
        objective = event.get("ObjectiveValue")
        result = f"{contract.OBJECTIVE_METRIC}={objective:.4f}" if objective is not None else "no objective"
        note = " (stopped early)" if event.get("EarlyStopped") else ""
        colour = "green" if status == "Completed" else "yellow"
        self.log(f"  trial {event.get('Index', '?')} [{colour}]{status}{note}[/]: {hps} → {result}"
                 + (f" [dim]{event['FailureReason'][:120]}[/]" if event.get("FailureReason") else ""))


# --- the run -----------------------------------------------------------------------------------------------------
def _ensure_dataset(data: Path, console: Console) -> None:
    if all((data / split).is_dir() for split in contract.CHANNELS):
        return
    from local.digits import render

    counts = render(data)
    console.log(f"rendered the digits dataset into {data} ({', '.join(f'{k} {v}' for k, v in counts.items())})")


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
        best = {"tuning_job": output.get("tuning_job_name"), "training_job": output.get("best_training_job_name"),
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
        shutil.copy2(sm.s3.path(model), out / "model.tar.gz")
        paths["model"] = str(out / "model.tar.gz")
    verdicts = {r["RuleConfigurationName"]: r["RuleEvaluationStatus"]
                for key in ("DebugRuleEvaluationStatuses", "ProfilerRuleEvaluationStatuses") for r in desc.get(key, [])}
    if verdicts:
        (out / "rule-verdicts.json").write_text(json.dumps(verdicts, indent=2))
        paths["rule verdicts JSON"] = str(out / "rule-verdicts.json")
    report = sm.profiler_report(job)
    if report and report.is_file():
        shutil.copy2(report, out / "profiler-report.html")
        paths["profiler report"] = str(out / "profiler-report.html")
    return paths


def _summary(console: Console, output: dict, paths: dict[str, str], api_url: str | None) -> None:
    table = Table(title="local run", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    objective = output.get("objective") or {}
    rows = {
        "best hyperparameters": " ".join(f"{k}={v}" for k, v in sorted(output.get("best_hyperparameters", {}).items())),
        "tuning objective": f"{objective.get('MetricName')} = {objective.get('Value'):.4f}" if objective else "",
        "best trial": output.get("best_training_job_name", ""),
        "training job": output.get("training_job_name", ""),
        "test accuracy": f"{output['test_accuracy']:.4f}" if "test_accuracy" in output else "",
        "health issues": f"{output['health_issues']:g}" if "health_issues" in output else "",
        "rule verdicts": ", ".join(f"{k}: {v}" for k, v in output.get("rule_verdicts", {}).items()),
        "endpoint": f"{output.get('endpoint_name', '')} ({output.get('endpoint_config_name', '')})",
        "REST API": api_url or "",
    }
    for key, value in {**rows, **paths}.items():
        if value:
            table.add_row(key, value)
    console.print(table)


def run(args: argparse.Namespace, console: Console) -> int:
    from cli.recording import ExecutionRecord, write_recording
    from infra import synth_template
    from local.engine import TemplateResolver, run_definition
    from local.rest_api import create_server, load_forwarder
    from local.sagemaker import LocalSageMaker
    from local.serve import local_aws_environment

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    started = time.monotonic()
    _ensure_dataset(args.data, console)

    t0 = time.monotonic()
    console.log("synthesizing the CDK app (profile local) ...")
    template = synth_template({**args.context, "profile": "local"})
    (out / "template.json").write_text(json.dumps(template, indent=1))
    resolver = TemplateResolver(template)
    definition = resolver.definition()
    outputs = {key: resolver.resolve(value["Value"]) for key, value in template.get("Outputs", {}).items()}
    timings["synth"] = time.monotonic() - t0
    dataset_uri, endpoint_name = outputs["DatasetUri"], outputs["EndpointName"]

    ui = DemoProgress(console)
    with ExitStack() as stack:
        sm = stack.enter_context(LocalSageMaker(out / "sagemaker", s3_root=out / "s3", restore=True,
                                                on_event=ui.sagemaker_event))
        dataset_dir = sm.s3.path(dataset_uri)
        for split in contract.CHANNELS:
            shutil.copytree(args.data / split, dataset_dir / split, dirs_exist_ok=True)
        console.log(f"dataset at {dataset_uri} (local S3: {dataset_dir})")

        saved_env = dict(os.environ)
        stack.callback(lambda: (os.environ.clear(), os.environ.update(saved_env)))
        os.environ.update(local_aws_environment(sm.runtime_url, endpoint_name))
        forwarder = load_forwarder()
        # A cold start per run: the module (and its client) may survive from an earlier run in this process.
        forwarder.sagemaker_runtime = forwarder.make_client()
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
        if existing:
            console.log(f"endpoint {endpoint_name} is already InService: this run takes the update path, "
                        "and a prober POSTs an image every second meanwhile")
            stack.callback(prober.start().stop)

        t0 = time.monotonic()
        with ui.progress:
            result = run_definition(definition, args.input, sm, on_event=ui.state_event,
                                    name=f"demo-{time.strftime('%Y%m%d-%H%M%S')}")
        timings["pipeline"] = time.monotonic() - t0
        if prober:
            prober.stop()
        paths = _copy_artifacts(out, sm, result.output, result)
        # What `imgclf ... --local` reads: the same boto3 responses a deployed stack would give.
        write_recording(out, sagemaker=sm, stepfunctions=ExecutionRecord.from_result(result),
                        execution_arn=result.execution_arn, s3=sm.s3.root,
                        stack_outputs={**outputs, "PredictUrl": api_url})

        if not result.succeeded:
            console.print(f"[bold red]the pipeline failed in state {result.failed_state!r}[/]: "
                          f"{result.error}: {str(result.cause)[:600]}")
            console.print(f"execution history: {paths['execution history']}")
            if existing:
                status, _ = post_image(api_url, image)
                console.print(f"the serving endpoint was left untouched and answers: HTTP {status}")
            return 1

        t0 = time.monotonic()
        status, body = post_image(api_url, image)
        timings["predict"] = time.monotonic() - t0
        _summary(console, result.output or {}, paths, api_url)
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="demo-output", help="folder for everything the run produces")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="ImageFolder dataset (train/valid/test)")
    parser.add_argument("--serve", action="store_true", help="keep the REST API up after the run")
    parser.add_argument("--port", type=int, default=8080, help="REST API port with --serve")
    parser.add_argument("-c", "--context", action="append", default=[], metavar="KEY=VALUE",
                        help="CDK context for the synth, as `cdk -c` takes it (e.g. tuning.max_jobs=2)")
    parser.add_argument("--input", default="{}", help="the execution input, JSON (e.g. '{\"max_jobs\": 2}')")
    args = parser.parse_args(argv)
    try:
        args.context = dict(item.split("=", 1) for item in args.context)
        args.input = json.loads(args.input)
    except ValueError as exc:
        parser.error(f"--context takes KEY=VALUE and --input a JSON object: {exc}")
    if not isinstance(args.input, dict):
        parser.error("--input must be a JSON object")
    console = Console()
    # moto's interpreter logs every caught error (a Choice probing an absent optional input field, say) at
    # ERROR; the execution history below is the record that matters.
    logging.getLogger("moto").setLevel(logging.CRITICAL)
    try:
        return run(args, console)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: every job and endpoint process was stopped[/]")
        return 130
    except (ValueError, RuntimeError) as exc:  # bad context or input, a working folder in use
        console.print(f"[red]error:[/] {exc or type(exc).__name__}", highlight=False)
        return 1


if __name__ == "__main__":
    sys.exit(main())
