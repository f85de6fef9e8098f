"""The results report: report.html (self-contained, figures embedded), the PNG figures beside it, and report.md.

gather() reads everything through the Backend (AWS or a recorded local run: one code path); render() only
formats what gather() found and says plainly what is missing instead of inventing it.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import json
import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

import stackfacts as facts
from cli import cost
from cli.aws import console_execution_url, console_s3_url, s3_location
from cli.backend import Backend
from cli.errors import CliError, is_not_found
from cli.evaluate import Predictions, evaluate, extract_model, load_predictions
from cli.loaders import (
    describe_endpoint,
    find_profiler_report,
    job_curves,
    list_keys,
    load_execution,
    load_job,
    load_tuning,
    read_job_outputs,
    read_object,
)
from cli.model import Curves, Execution, Job, ProfilerReport, Tuning
from cli.recording.reader import confined
from cli.views import fmt_duration, fmt_metric, fmt_time
from ml import contract

FIGURES = {
    "objective_vs_lr": "tuning_objective_vs_lr.png",
    "objective_by_trial": "tuning_objective_by_trial.png",
    "curves_final": "training_curves_final.png",
    "curves_trials": "training_curves_trials.png",
    "confusion": "confusion_matrix.png",
    "samples": "test_predictions.png",
}
FULL_MATRIX_MAX_CLASSES = 20  # above this the confusion figure shows the top confusions instead
SAMPLE_IMAGES = 12


# --- what the report is made of ------------------------------------------------------------------------------
@dataclass
class JobResult:
    name: str
    job: Job | None
    curves: Curves | None = None
    outputs: dict[str, Any] = field(default_factory=dict)
    note: str | None = None  # why there is no output archive / no job description


@dataclass
class PredictionsRequest:
    file: Path | None = None
    model: Path | None = None
    test_data: Path | None = None
    from_run: bool = False  # download the final job's model.tar.gz and test channel and evaluate them
    by_default: bool = False  # from_run without being asked (a local run): a model that cannot be evaluated is a note

    def __post_init__(self) -> None:
        if (self.model is None) != (self.test_data is None):
            raise CliError("--model and --test-data go together", 2)
        if sum([self.file is not None, self.model is not None, self.from_run]) > 1:
            raise CliError("choose one of --predictions, --model/--test-data and --evaluate", 2)


@dataclass
class ReportData:
    source: str
    region: str
    is_local: bool
    execution: Execution
    tuning: Tuning | None
    trials: list[JobResult]
    final: JobResult | None
    profiler: ProfilerReport | None
    profiler_copy: str | None
    endpoint: dict | None
    predictions: Predictions | None
    predictions_note: str
    display_names: dict[str, str] = field(default_factory=dict)  # local image path -> where it came from
    endpoint_cost: cost.EndpointCost | None = None
    dashboard_url: str | None = None  # the stack's CloudWatch dashboard (DashboardUrl output; none for a local run)
    generated: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))

    @property
    def test_metrics(self) -> dict[str, float]:
        if self.final is None:
            return {}
        history_test = (self.final.outputs.get(contract.HISTORY_FILE) or {}).get("test") or {}
        final = self.final.job.final_metrics if self.final.job else {}
        return {m: v for m in (contract.TEST_ACCURACY, contract.TEST_LOSS)
                if (v := history_test.get(m, final.get(m))) is not None}

    @property
    def health(self) -> dict | None:
        return self.final.outputs.get(contract.HEALTH_FILE) if self.final else None


def _job_result(backend: Backend, name: str) -> JobResult:
    try:
        job = load_job(backend, name)
    except ClientError as exc:
        if is_not_found(exc):
            return JobResult(name, None, note="no such training job")
        raise
    outputs, note = read_job_outputs(backend, job)
    return JobResult(name, job, job_curves(backend, job, outputs), outputs, note)


def _download_prefix(backend: Backend, uri: str, target: Path) -> int:
    bucket, prefix = s3_location(uri)
    prefix = prefix.rstrip("/") + "/"
    count = 0
    for item in list_keys(backend, bucket, prefix):
        relative = item["Key"][len(prefix):]
        if not relative or relative.endswith("/"):
            continue
        try:
            path = confined(target, *relative.split("/"))  # a key like 'test//etc/x' or '../x' stays in target
        except ValueError:
            continue
        data, _ = read_object(backend, bucket, item["Key"])
        if data is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            count += 1
    return count


def _evaluate_run(backend: Backend, job: Job, work: Path, names: dict[str, str],
                  progress: Callable[[int, int], Any] | None) -> tuple[Predictions | None, str]:
    if not job.model_uri or not job.test_data_uri:
        return None, f"the final job {job.name} has no model artifact or no test channel to evaluate"
    data, why = read_object(backend, *s3_location(job.model_uri))
    if data is None:
        return None, f"the model {job.model_uri} could not be read ({why})"
    model_dir = extract_model(data, work / "model")
    test_dir = work / contract.TEST
    if _download_prefix(backend, job.test_data_uri, test_dir) == 0:
        return None, f"the test channel {job.test_data_uri} holds no readable images"
    predictions = evaluate(model_dir, test_dir, f"{job.name} ({job.model_uri}) on {job.test_data_uri}", progress)
    base = job.test_data_uri.rstrip("/")
    for p in predictions.items:
        if p.image:
            names[p.image] = f"{base}/{Path(p.image).relative_to(test_dir).as_posix()}"
    return predictions, ""


def gather(backend: Backend, arn: str, out_dir: Path, request: PredictionsRequest, work: Path,
           progress: Callable[[int, int], Any] | None = None) -> ReportData:
    execution = load_execution(backend, arn)
    tuning = None
    if execution.tuning_job:
        try:
            tuning = load_tuning(backend, execution.tuning_job)
        except ClientError as exc:  # scheduled, then the execution failed before SageMaker created it
            if not is_not_found(exc):
                raise
    trials = [_job_result(backend, t.name) for t in tuning.trials] if tuning else []
    final = _job_result(backend, execution.training_job) if execution.training_job else None

    profiler = profiler_copy = None
    if final and final.job:
        profiler = find_profiler_report(backend, final.job)
        if profiler and profiler.found:
            data, _ = read_object(backend, profiler.bucket, profiler.key)
            if data is not None:
                out_dir.mkdir(parents=True, exist_ok=True)
                (out_dir / facts.PROFILER_REPORT_FILE).write_bytes(data)
                profiler_copy = facts.PROFILER_REPORT_FILE
    endpoint = describe_endpoint(backend, execution.endpoint) if execution.endpoint else None

    names: dict[str, str] = {}
    predictions, note = None, ("no predictions on the test set: pass --evaluate (runs the final model on the "
                               "run's test channel), --model DIR --test-data DIR, or --predictions FILE")
    if request.file:
        predictions = load_predictions(request.file)
    elif request.model and request.test_data:  # given together (PredictionsRequest checks it)
        predictions = evaluate(request.model, request.test_data, progress=progress)
    elif request.from_run:
        if final is None or final.job is None:
            note = "no final training job to evaluate"
        elif request.by_default:
            try:
                predictions, note = _evaluate_run(backend, final.job, work, names, progress)
            except Exception as exc:  # asked for nothing: the report goes on without predictions
                predictions = None
                note = f"the final model could not be evaluated on the test set ({str(exc)[:200]})"
        else:
            predictions, note = _evaluate_run(backend, final.job, work, names, progress)
    endpoint_cost = cost.endpoint_cost(backend, endpoint, local=backend.is_local) if endpoint else None
    dashboard = None if backend.is_local else backend.known_output(facts.OUTPUT_DASHBOARD)
    return ReportData(source=backend.source, region=backend.region, is_local=backend.is_local, execution=execution,
                      tuning=tuning, trials=trials, final=final, profiler=profiler, profiler_copy=profiler_copy,
                      endpoint=endpoint, predictions=predictions, predictions_note=note, display_names=names,
                      endpoint_cost=endpoint_cost, dashboard_url=dashboard)


# --- figures ---------------------------------------------------------------------------------------------------
def new_figure(width: float, height: float):
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def _save(fig: Any, path: Path) -> Path:
    fig.savefig(path, format="png", metadata={"Software": None})
    return path


def _palette(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def fig_objective_vs_lr(tuning: Tuning, path: Path) -> Path | None:
    scored = [t for t in tuning.trials if t.objective is not None and t.hyperparameter(contract.LR) is not None]
    if not scored:
        return None
    fig = new_figure(7, 4.2)
    ax = fig.add_subplot()
    sizes = sorted({t.hyperparameters.get(contract.BATCH_SIZE, "?") for t in scored},
                   key=lambda v: (not v.isdigit(), int(v) if v.isdigit() else 0, v))
    colours = dict(zip(sizes, _palette(len(sizes)), strict=True))
    epochs = [t.hyperparameter(contract.EPOCHS) or 1 for t in scored]
    lo, hi = min(epochs), max(epochs)
    for size in sizes:
        group = [t for t in scored if t.hyperparameters.get(contract.BATCH_SIZE, "?") == size]
        ax.scatter([t.hyperparameter(contract.LR) for t in group], [t.objective for t in group],
                   s=[40 + 80 * ((t.hyperparameter(contract.EPOCHS) or lo) - lo) / max(hi - lo, 1) for t in group],
                   color=colours[size], label=f"{contract.BATCH_SIZE} {size}", edgecolor="black", linewidth=0.5,
                   zorder=3)
    if (best := tuning.best) and best.objective is not None and best.hyperparameter(contract.LR) is not None:
        ax.scatter([best.hyperparameter(contract.LR)], [best.objective], marker="*", s=320, facecolor="none",
                   edgecolor="black", linewidth=1.2, zorder=4, label="best")
    ax.set_xscale("log")
    ax.set_xlabel(f"{contract.LR} (log scale)")
    ax.set_ylabel(tuning.objective_name)
    ax.set_title(f"Tuning: {tuning.objective_name} against {contract.LR} (marker size: {contract.EPOCHS})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    return _save(fig, path)


def fig_objective_by_trial(tuning: Tuning, path: Path) -> Path | None:
    if not any(t.objective is not None for t in tuning.trials):
        return None
    fig = new_figure(7, 3.8)
    ax = fig.add_subplot()
    maximize = tuning.objective_type.lower().startswith("max")
    xs, ys, running, best_so_far = [], [], [], None
    for i, trial in enumerate(tuning.trials, 1):
        if trial.objective is None:
            continue
        xs.append(i)
        ys.append(trial.objective)
        better = best_so_far is None or (trial.objective > best_so_far if maximize else trial.objective < best_so_far)
        best_so_far = trial.objective if better else best_so_far
        running.append(best_so_far)
    groups: dict[str, list[tuple[int, float]]] = {}
    for x, y in zip(xs, ys, strict=True):
        status = tuning.trials[x - 1].status
        groups.setdefault({"Completed": "completed", "Stopped": "stopped early (objective so far)"}.get(
            status, status.lower()), []).append((x, y))
    colours = {"completed": "#1f77b4", "stopped early (objective so far)": "#ff7f0e"}
    for label, points in groups.items():
        ax.plot([x for x, _ in points], [y for _, y in points], "o", color=colours.get(label, "#7f7f7f"),
                label=label, zorder=3)
    ax.step(xs, running, where="post", color="#2ca02c", label="best so far")
    failed = [i for i, t in enumerate(tuning.trials, 1) if t.objective is None]
    if failed:
        bottom = min(ys)
        ax.plot(failed, [bottom] * len(failed), "x", color="#d62728", label="no objective (failed/stopped)")
    ax.set_xticks(range(1, len(tuning.trials) + 1))
    ax.set_xlabel("trial (launch order)")
    ax.set_ylabel(tuning.objective_name)
    ax.set_title(f"Tuning: {tuning.objective_name} over trials")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    return _save(fig, path)


def _log_scale_if_spread(ax: Any, ratio: float = 30.0) -> None:
    """A diverging first epoch (loss 100+) flattens every other point: switch such loss axes to log."""
    values = [y for line in ax.get_lines() for y in line.get_ydata() if y > 0]
    if values and max(values) / min(values) > ratio:
        ax.set_yscale("log")


def fig_final_curves(result: JobResult, test_accuracy: float | None, path: Path) -> Path | None:
    curves = result.curves
    if curves is None:
        return None
    fig = new_figure(9, 3.6)
    loss, acc = fig.subplots(1, 2)
    for metric, style in ((contract.TRAIN_LOSS, "o-"), (contract.VALID_LOSS, "s--")):
        xs, ys = curves.series(metric)
        if xs:
            loss.plot(xs, ys, style, label=metric)
    xs, ys = curves.series(contract.VALID_ACCURACY)
    if xs:
        acc.plot(xs, ys, "o-", color="#2ca02c", label=contract.VALID_ACCURACY)
    if test_accuracy is not None:
        acc.axhline(test_accuracy, color="#9467bd", linestyle=":",
                    label=f"{contract.TEST_ACCURACY} {test_accuracy:.4f}")
    _log_scale_if_spread(loss)
    for ax, title in ((loss, "loss"), (acc, "accuracy")):
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.suptitle(f"Final training job {result.name} ({curves.source})")
    return _save(fig, path)


def fig_trial_curves(trials: list[JobResult], tuning: Tuning, path: Path) -> Path | None:
    drawn = [(i, r, r.curves) for i, r in enumerate(trials, 1) if r.curves and r.curves.epochs]
    if not drawn:
        return None
    fig = new_figure(11, 3.8)
    axes = fig.subplots(1, 3)
    colours = _palette(len(trials))
    best = tuning.best_job
    for i, result, curves in drawn:
        is_best = result.name == best
        for ax, metric in zip(axes, CURVE_PANELS, strict=True):
            xs, ys = curves.series(metric)
            if xs:
                ax.plot(xs, ys, "o-" if is_best else ".-", color=colours[i - 1], linewidth=2.6 if is_best else 1.2,
                        markersize=4, label=f"#{i}{' (best)' if is_best else ''}", zorder=3 if is_best else 2)
    for ax, metric in zip(axes, CURVE_PANELS, strict=True):
        if metric != contract.VALID_ACCURACY:
            _log_scale_if_spread(ax)
        ax.set_title(metric + (" (log scale)" if ax.get_yscale() == "log" else ""))
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    axes[-1].legend(fontsize=7, loc="lower right", ncols=2)
    fig.suptitle(f"Tuning trials of {tuning.name}: per-epoch metrics")
    return _save(fig, path)


CURVE_PANELS = (contract.TRAIN_LOSS, contract.VALID_LOSS, contract.VALID_ACCURACY)


def fig_confusion(predictions: Predictions, path: Path) -> Path:
    classes = predictions.classes
    if len(classes) <= FULL_MATRIX_MAX_CLASSES:
        matrix = predictions.matrix()
        side = max(4.5, 0.45 * len(classes) + 2)
        fig = new_figure(side + 1, side)
        ax = fig.add_subplot()
        image = ax.imshow(matrix, cmap="Blues")
        fig.colorbar(image, ax=ax, shrink=0.8, label="images")
        ax.set_xticks(range(len(classes)), classes, rotation=45 if max(map(len, classes)) > 2 else 0, ha="right"
                      if max(map(len, classes)) > 2 else "center", fontsize=8)
        ax.set_yticks(range(len(classes)), classes, fontsize=8)
        peak = max(max(row) for row in matrix) or 1
        if len(classes) <= 12:
            for r, row in enumerate(matrix):
                for c, count in enumerate(row):
                    if count:
                        ax.text(c, r, str(count), ha="center", va="center", fontsize=8,
                                color="white" if count > peak / 2 else "black")
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"Confusion matrix ({len(predictions.items)} test images, accuracy {predictions.accuracy:.4f})")
        return _save(fig, path)
    top = predictions.top_confusions(20)
    fig = new_figure(8, max(3, 0.32 * len(top) + 1.5))
    ax = fig.add_subplot()
    labels = [f"{t} → {p}" for t, p, _ in reversed(top)]
    ax.barh(labels or ["(none)"], [c for _, _, c in reversed(top)] or [0], color="#d62728")
    ax.set_xlabel("test images")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_title(f"Top confusions of {len(classes)} classes (accuracy {predictions.accuracy:.4f})")
    ax.tick_params(axis="y", labelsize=8)
    return _save(fig, path)


def pick_samples(predictions: Predictions, n: int = SAMPLE_IMAGES) -> list:
    """A few readable test images: up to a third misclassified, the rest correct, spread over the classes."""
    readable = [p for p in predictions.items if p.image and Path(p.image).is_file()]
    wrong = [p for p in readable if p.predicted != p.label][: n // 3]
    right: list = []
    by_class: dict[str, list] = {}
    for p in readable:
        if p.predicted == p.label:
            by_class.setdefault(p.label, []).append(p)
    while len(right) < n - len(wrong) and any(by_class.values()):
        for label in sorted(by_class):
            if by_class[label] and len(right) < n - len(wrong):
                right.append(by_class[label].pop(0))
    return right + wrong


def fig_samples(predictions: Predictions, path: Path) -> Path | None:
    samples = pick_samples(predictions)
    if not samples:
        return None
    from PIL import Image

    cols = min(6, len(samples))
    rows = math.ceil(len(samples) / cols)
    fig = new_figure(1.6 * cols, 1.8 * rows)
    for i, p in enumerate(samples):
        ax = fig.add_subplot(rows, cols, i + 1)
        with Image.open(p.image) as img:
            ax.imshow(img.convert("RGB"))
        ok = p.predicted == p.label
        ax.set_title(f"{p.predicted}" + ("" if ok else f"\n(true {p.label})"), fontsize=8,
                     color="#2ca02c" if ok else "#d62728")
        ax.axis("off")
    fig.suptitle("Test images with predicted labels (red: wrong)", fontsize=10)
    return _save(fig, path)


# --- tables (one model, rendered to HTML and Markdown) ---------------------------------------------------------
@dataclass
class Table:
    headers: list[str]  # none: a key/value table (its first column names each row)
    rows: list[list[str]]
    marked: set[int] = field(default_factory=set)  # rows to highlight (the best trial)

    def markdown(self) -> str:
        def cell(value: str) -> str:
            return value.replace("|", "\\|").replace("\n", " ")

        # Markdown tables need a header row: a key/value table's first row is it (never an empty one).
        if not self.headers and not self.rows:
            return ""
        head, rows = (self.headers, self.rows) if self.headers else (self.rows[0], self.rows[1:])
        lines = ["| " + " | ".join(map(cell, head)) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
        return "\n".join(lines)

    def html(self) -> str:
        best = ' class="best"'
        if not self.headers:
            body = "".join(f"<tr><th>{html.escape(row[0])}</th>" + "".join(f"<td>{html.escape(v)}</td>"
                                                                           for v in row[1:]) + "</tr>"
                           for row in self.rows)
            return f"<table><tbody>{body}</tbody></table>"
        head = "".join(f"<th>{html.escape(h)}</th>" for h in self.headers)
        body = "".join(
            f"<tr{best if i in self.marked else ''}>"
            + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>" for i, row in enumerate(self.rows))
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def trials_table(data: ReportData) -> Table | None:
    tuning = data.tuning
    if tuning is None:
        return None
    details = {r.name: r for r in data.trials}
    headers = ["#", "training job", *tuning.tuned, tuning.objective_name, "status", "duration", "best"]
    rows, marked = [], set()
    for i, trial in enumerate(tuning.trials):
        job = details.get(trial.name)
        duration = job.job.duration_s if job and job.job and job.job.duration_s is not None else trial.duration_s
        status = trial.status + (f" ({trial.failure_reason})" if trial.failure_reason else "")
        rows.append([str(i + 1), trial.name, *[trial.hyperparameters.get(n, "-") for n in tuning.tuned],
                     fmt_metric(trial.objective), status, fmt_duration(duration), "★ best" if trial.best else ""])
        if trial.best:
            marked.add(i)
    return Table(headers, rows, marked)


def rules_table(data: ReportData) -> Table | None:
    if not data.final or not data.final.job or not data.final.job.rules:
        return None
    return Table(["kind", "rule", "verdict", "details"],
                 [[r.kind, r.name, r.status, r.details or ""] for r in data.final.job.rules])


def health_table(data: ReportData) -> Table | None:
    health = data.health
    if not health or not isinstance(health.get("checks"), dict):
        return None
    return Table(["check", "verdict", "detail"],
                 [[name, str(v.get("status", "?")), str(v.get("detail", ""))] for name, v in health["checks"].items()])


def summary_table(data: ReportData) -> Table:
    e = data.execution
    rows = [["execution", e.name], ["status", e.status + (f" ({e.error}: {e.cause})" if e.error else "")],
            ["started", fmt_time(e.started)],
            ["duration", fmt_duration((e.stopped - e.started).total_seconds() if e.started and e.stopped else None)]]
    if data.tuning:
        t = data.tuning
        rows.append(["tuning job", f"{t.name} ({t.status}, {t.strategy or '?'}, {len(t.trials)} trials)"])
        if t.best_job:
            hps = ", ".join(f"{k}={v}" for k, v in t.best_hyperparameters.items())
            rows.append([f"best {t.objective_name}", f"{fmt_metric(t.best_objective)} — {t.best_job} ({hps})"])
    if data.final and data.final.job:
        j = data.final.job
        rows.append(["final training job", f"{j.name} ({j.status}, {fmt_duration(j.duration_s)}"
                                           f"{', ' + j.instance if j.instance else ''})"])
    for metric, value in data.test_metrics.items():
        rows.append([metric, fmt_metric(value)])
    if data.endpoint:
        rows.append(["endpoint", f"{data.endpoint['EndpointName']} ({data.endpoint['EndpointStatus']})"])
    rows.append(["read from", data.source])
    return Table([], rows)


def per_class_table(predictions: Predictions) -> Table:
    """Precision (of the images predicted as the class, how many are) and recall (of the class's images, how many
    were found), from the confusion matrix."""
    matrix = predictions.matrix()
    rows = []
    for i, name in enumerate(predictions.classes):
        hits, truth = matrix[i][i], sum(matrix[i])
        predicted = sum(row[i] for row in matrix)
        rows.append([name, f"{hits / predicted:.3f}" if predicted else "-", f"{hits / truth:.3f}" if truth else "-",
                     str(truth)])
    return Table(["class", "precision", "recall", "images"], rows)


def timings_table(data: ReportData) -> Table | None:
    """Where the time went: each state of the execution (loops summed) that took a second or more."""
    e = data.execution
    rows = [[name, fmt_duration(seconds)] for name, seconds in e.state_seconds.items() if seconds >= 1]
    if not rows:
        return None
    total = (e.stopped - e.started).total_seconds() if e.started and e.stopped else None
    return Table(["state", "time"], [*rows, ["whole execution", fmt_duration(total)]])


def jobs_table(data: ReportData) -> Table | None:
    """Each training job's time (trials and the final job)."""
    rows = [[f"trial #{i}", r.name, fmt_duration(r.job.duration_s if r.job else None)]
            for i, r in enumerate(data.trials, 1)]
    if data.final:
        rows.append(["final", data.final.name, fmt_duration(data.final.job.duration_s if data.final.job else None)])
    return Table(["job", "name", "training time"], rows) if rows else None


def job_costs(data: ReportData) -> list[cost.JobCost]:
    """Every trial and the final job, priced (cli/cost.py); jobs SageMaker never described are left out."""
    costs = [cost.job_cost(r.job, cost.TRIAL, local=data.is_local) for r in data.trials if r.job]
    if data.final and data.final.job:
        costs.append(cost.job_cost(data.final.job, cost.FINAL, local=data.is_local))
    return costs


def cost_table(data: ReportData) -> Table | None:
    costs = job_costs(data)
    if not costs:
        return None
    rows = [[c.kind, c.name, c.instance_type or "-", str(c.instance_count),
             "-" if c.billable_seconds is None else str(c.billable_seconds),
             "-" if c.usd_per_hour is None else f"${c.usd_per_hour}", cost.fmt_usd(c.usd)] for c in costs]
    rows.append(["total", "", "", "", str(sum(c.billable_seconds or 0 for c in costs)), "",
                 cost.fmt_usd(cost.total_usd(costs))])
    return Table(["job", "name", "instance", "count", "billable s", "$/hour", "cost"], rows)


def confusions_table(predictions: Predictions) -> Table:
    return Table(["true", "predicted", "images"], [[t, p, str(c)] for t, p, c in predictions.top_confusions(10)])


# --- rendering -------------------------------------------------------------------------------------------------
@dataclass
class Rendered:
    html: Path
    markdown: Path
    figures: dict[str, Path]
    predictions: Path | None


def render_figures(data: ReportData, out: Path) -> dict[str, Path]:
    figures: dict[str, Path | None] = {}
    if data.tuning:
        figures["objective_vs_lr"] = fig_objective_vs_lr(data.tuning, out / FIGURES["objective_vs_lr"])
        figures["objective_by_trial"] = fig_objective_by_trial(data.tuning, out / FIGURES["objective_by_trial"])
        figures["curves_trials"] = fig_trial_curves(data.trials, data.tuning, out / FIGURES["curves_trials"])
    if data.final:
        figures["curves_final"] = fig_final_curves(data.final, data.test_metrics.get(contract.TEST_ACCURACY),
                                                   out / FIGURES["curves_final"])
    if data.predictions:
        figures["confusion"] = fig_confusion(data.predictions, out / FIGURES["confusion"])
        figures["samples"] = fig_samples(data.predictions, out / FIGURES["samples"])
    for name, file in FIGURES.items():  # a figure from an earlier report that this run cannot draw must not linger
        if figures.get(name) is None and (out / file).exists():
            (out / file).unlink()
    return {k: v for k, v in figures.items() if v is not None}


@dataclass
class Section:
    title: str
    blocks: list[tuple[str, Any]]  # ("text", str) | ("table", Table) | ("figure", key) | ("link", (text, href))


def sections(data: ReportData) -> list[Section]:
    out: list[Section] = [Section("Summary", [("table", summary_table(data))])]

    tuning: list[tuple[str, Any]] = []
    if data.tuning:
        t = data.tuning
        tuning.append(("text", f"{t.strategy or ''} tuning of {', '.join(t.tuned)} to {t.objective_type.lower()} "
                               f"{t.objective_name}: {len(t.trials)} trials"
                               + (f" ({t.max_parallel} at a time)" if t.max_parallel else "") + "."))
        tuning.append(("table", trials_table(data)))
        tuning += [("figure", "objective_vs_lr"), ("figure", "objective_by_trial")]
    else:
        tuning.append(("text", "This execution has not started a tuning job."))
    out.append(Section("Hyperparameter tuning", tuning))

    curves: list[tuple[str, Any]] = []
    if data.final:
        source = data.final.curves.source if data.final.curves else None
        curves.append(("text", f"Final training job {data.final.name}: "
                               + (f"per-epoch metrics from {source}." if source else
                                  "no per-epoch metrics (no history.json"
                                  + (f": {data.final.note}" if data.final.note else "")
                                  + ", and no CloudWatch series).")))
        curves.append(("figure", "curves_final"))
    if data.trials:
        by_source: dict[str, list[str]] = {}
        for i, result in enumerate(data.trials, 1):
            by_source.setdefault(result.curves.source if result.curves else "", []).append(f"#{i}")
        parts = [f"from {source} for {', '.join(numbers)}" for source, numbers in by_source.items() if source]
        if "" in by_source:
            parts.append(f"none for {', '.join(by_source[''])} (stopped or failed before writing history.json, and "
                         "no CloudWatch series: their final values are in the table above)")
        curves.append(("text", "Per-epoch metrics of the tuning trials: " + "; ".join(parts) + "."))
        curves.append(("figure", "curves_trials"))
    if not curves:
        curves.append(("text", "No training job has run yet."))
    out.append(Section("Training curves", curves))

    rules: list[tuple[str, Any]] = []
    if table := rules_table(data):
        pending = bool(data.final and data.final.job and data.final.job.rules_pending)
        rules.append(("text", "SageMaker Debugger and Profiler rule verdicts of the final training job"
                              + (" (some still in progress)." if pending else ".")))
        rules.append(("table", table))
    else:
        rules.append(("text", "No Debugger or Profiler rule verdicts (rules off, or no final training job yet)."))
    if table := health_table(data):
        issues = (data.health or {}).get("issues") or []
        rules.append(("text", f"The training script's own health checks ({contract.HEALTH_FILE}): "
                              + (f"issues found in {', '.join(issues)}." if issues else "no issues found.")))
        rules.append(("table", table))
    elif data.final:
        why = data.final.note or "not in its output"
        rules.append(("text", f"No {contract.HEALTH_FILE} from the final job ({why})."))
    if data.profiler:
        if data.profiler_copy:
            rules.append(("link", ("Profiler report (copied beside this report)", data.profiler_copy)))
            rules.append(("text", f"Source: {data.profiler.uri}"))
        elif data.is_local:
            rules.append(("text", f"No profiler report at {data.profiler.uri}."))
        else:
            rules.append(("link", (f"Profiler report in S3 (expected at {data.profiler.uri})",
                                   console_s3_url(data.profiler.bucket, data.profiler.key, data.region))))
    out.append(Section("Rules and health checks", rules))

    evaluation: list[tuple[str, Any]] = []
    if metrics := data.test_metrics:
        evaluation.append(("text", "Held-out test set, as measured by the final training job: "
                                   + ", ".join(f"{k} {fmt_metric(v)}" for k, v in metrics.items()) + "."))
    if data.predictions:
        p = data.predictions
        evaluation.append(("text", f"{len(p.items)} predictions on the test set ({p.source}): accuracy "
                                   f"{p.accuracy:.4f} over {len(p.classes)} classes."))
        evaluation.append(("figure", "confusion"))
        evaluation.append(("text", "Per class:"))
        evaluation.append(("table", per_class_table(p)))
        if p.top_confusions(1):
            evaluation.append(("text", "Most frequent confusions:"))
            evaluation.append(("table", confusions_table(p)))
        evaluation.append(("figure", "samples"))
    else:
        evaluation.append(("text", f"No confusion matrix: {data.predictions_note}."))
    out.append(Section("Evaluation", evaluation))

    timings: list[tuple[str, Any]] = []
    if table := timings_table(data):
        timings += [("text", "Time per state of the execution (a polling loop's visits summed):"), ("table", table)]
    if table := jobs_table(data):
        timings += [("text", "Time per training job:"), ("table", table)]
    if timings:
        out.append(Section("Timings", timings))

    deployment: list[tuple[str, Any]] = []
    if data.endpoint:
        e = data.endpoint
        deployment.append(("table", Table(["endpoint", "status", "config", "last modified"], [[
            e["EndpointName"], e["EndpointStatus"], e.get("EndpointConfigName", "-"),
            fmt_time(e.get("LastModifiedTime"))]])))
    else:
        deployment.append(("text", "No endpoint was created or updated by this execution."))
    if data.dashboard_url:
        deployment.append(("link", ("CloudWatch dashboard (API, forwarder, endpoint, training jobs)",
                                    data.dashboard_url)))
    out.append(Section("Deployment", deployment))

    costs: list[tuple[str, Any]] = []
    if table := cost_table(data):
        costs.append(("text", "Billable seconds of each training job (DescribeTrainingJob's BillableTimeInSeconds, "
                              "spot savings included) x instances x the instance's price per hour: "
                              f"{cost.basis(data.is_local)}."))
        costs.append(("table", table))
    if data.endpoint_cost:
        costs.append(("text", f"Endpoint: {cost.endpoint_line(data.endpoint_cost)}."))
    if costs:
        out.append(Section("Cost", costs))
    return out


CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;padding:0 1rem;
color:#222}
h1{font-size:1.6rem}h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
table{border-collapse:collapse;margin:.6rem 0;font-size:13px}th,td{border:1px solid #ddd;padding:.25rem .6rem;
text-align:left;vertical-align:top}th{background:#f5f5f5}tr.best td{background:#fff6d6;font-weight:600}
img{max-width:100%;border:1px solid #eee;margin:.5rem 0}.meta{color:#666;font-size:12px}
"""


def render_html(data: ReportData, figures: dict[str, Path]) -> str:
    e = data.execution
    title = f"Results of {e.name}"
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
             f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
    link = "" if data.is_local else (f" · <a href=\"{html.escape(console_execution_url(e.arn, data.region))}\">"
                                     "execution in the AWS console</a>")
    parts.append(f"<p class=\"meta\">{html.escape(e.arn)}{link}<br>read from {html.escape(data.source)}, "
                 f"{html.escape(fmt_time(data.generated))}</p>")
    for section in sections(data):
        parts.append(f"<h2>{html.escape(section.title)}</h2>")
        for kind, value in section.blocks:
            if kind == "text":
                parts.append(f"<p>{html.escape(value)}</p>")
            elif kind == "table":
                parts.append(value.html())
            elif kind == "link":
                parts.append(f"<p><a href=\"{html.escape(value[1])}\">{html.escape(value[0])}</a></p>")
            elif kind == "figure" and value in figures:
                encoded = base64.b64encode(figures[value].read_bytes()).decode("ascii")
                parts.append(f"<figure><img alt=\"{html.escape(figures[value].stem)}\" "
                             f"src=\"data:image/png;base64,{encoded}\"></figure>")
    parts.append("</body></html>")
    return "\n".join(parts)


def render_markdown(data: ReportData, figures: dict[str, Path]) -> str:
    e = data.execution
    lines = [f"# Results of {e.name}", "", f"`{e.arn}` — read from {data.source}, {fmt_time(data.generated)}", ""]
    for section in sections(data):
        lines += [f"## {section.title}", ""]
        for kind, value in section.blocks:
            if kind == "text":
                lines += [value, ""]
            elif kind == "table":
                lines += [value.markdown(), ""]
            elif kind == "link":
                lines += [f"[{value[0]}]({value[1]})", ""]
            elif kind == "figure" and value in figures:
                lines += [f"![{figures[value].stem}]({figures[value].name})", ""]
    return "\n".join(lines)


def write_report(data: ReportData, out: Path) -> Rendered:
    out.mkdir(parents=True, exist_ok=True)
    figures = render_figures(data, out)
    html_path, md_path = out / "report.html", out / "report.md"
    html_path.write_text(render_html(data, figures), encoding="utf-8")
    md_path.write_text(render_markdown(data, figures), encoding="utf-8")
    predictions_path = None
    if data.predictions:
        predictions_path = out / "predictions.json"
        body = data.predictions.to_json()
        for item in body["predictions"]:
            if item.get("image") in data.display_names:
                item["image"] = data.display_names[item["image"]]
        predictions_path.write_text(json.dumps(body, indent=1))
    return Rendered(html_path, md_path, figures, predictions_path)


def build_report(backend: Backend, arn: str, out: Path, request: PredictionsRequest,
                 progress: Callable[[int, int], Any] | None = None) -> Rendered:
    with tempfile.TemporaryDirectory(prefix="imgclf-report-") as work:
        return write_report(gather(backend, arn, out, request, Path(work), progress), out)

