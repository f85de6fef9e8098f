"""Terminal views (rich) of an execution's status and of the best trial; the same for AWS and local runs."""

from __future__ import annotations

import datetime as dt
import sys
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError
from rich import box
from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

import stackfacts as facts
from cli import cost
from cli.backend import Backend
from cli.cost import EndpointCost
from cli.errors import CliError, is_not_found
from cli.loaders import describe_endpoint, load_execution, load_job, load_tuning
from cli.model import Execution, Job, Tuning
from ml import contract

STATUS_STYLE = {
    "SUCCEEDED": "green", "Completed": "green", "InService": "green", contract.NO_ISSUES: "green",
    "RUNNING": "yellow", "InProgress": "yellow", "Creating": "yellow", "Updating": "yellow", "Stopping": "yellow",
    "FAILED": "red", "Failed": "red", "TIMED_OUT": "red", "ABORTED": "red", "Stopped": "red",
    contract.ISSUES_FOUND: "red", "Error": "red", "OutOfService": "red",
}


def console(stderr: bool = False) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    # Piped output keeps long job names whole instead of wrapping at 80 columns.
    return Console(file=stream, width=None if stream.isatty() else 160, highlight=False, soft_wrap=False)


def styled(value: str | None) -> Text:
    value = value or "-"
    return Text(value, style=STATUS_STYLE.get(value, ""))


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s"


def fmt_time(value: dt.datetime | None) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if value else "-"


def fmt_metric(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


@dataclass
class Snapshot:
    execution: Execution
    tuning: Tuning | None
    job: Job | None
    endpoint: dict | None
    is_local: bool = False
    endpoint_cost: EndpointCost | None = None
    dashboard_url: str | None = None  # the stack's DashboardUrl output (AWS only)


STATUS_TRIALS = 20  # trials `status` shows: the newest, and the best wherever it is


def load_snapshot(backend: Backend, arn: str, trials: int = STATUS_TRIALS) -> Snapshot:
    """What `status` shows: light calls only (no S3, no per-trial DescribeTrainingJob), and as many trial
    summaries as it shows: reads that scale with the screen, not with the tuning job."""
    execution = load_execution(backend, arn)
    tuning = job = endpoint = None
    try:
        if execution.tuning_job:
            tuning = load_tuning(backend, execution.tuning_job, newest=trials)
        if execution.training_job:
            job = load_job(backend, execution.training_job)
    except ClientError as exc:
        if not is_not_found(exc):  # just scheduled: SageMaker may not know it yet
            raise
    endpoint_cost = None
    if execution.endpoint:
        endpoint = describe_endpoint(backend, execution.endpoint)
        if endpoint:
            endpoint_cost = cost.endpoint_cost(backend, endpoint, local=backend.is_local)
    dashboard = None if backend.is_local else backend.known_output(facts.OUTPUT_DASHBOARD)
    return Snapshot(execution, tuning, job, endpoint, backend.is_local, endpoint_cost, dashboard)


def execution_panel(execution: Execution) -> Panel:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("execution", execution.name)
    grid.add_row("status", styled(execution.status))
    if execution.current_state:
        grid.add_row("current state", execution.current_state)
    elif execution.last_state:
        grid.add_row("last state", execution.last_state)
    grid.add_row("started", fmt_time(execution.started))
    end = execution.stopped or (dt.datetime.now(dt.UTC) if execution.started else None)
    grid.add_row("duration", fmt_duration((end - execution.started).total_seconds() if end and execution.started
                                          else None))
    if execution.error or execution.cause:
        grid.add_row("error", Text(f"{execution.error or ''}: {execution.cause or ''}".strip(": "), style="red"))
    return Panel(grid, title="Step Functions execution", expand=False)


def trials_table(tuning: Tuning) -> Table:
    counts = ", ".join(f"{v} {k}" for k, v in tuning.counters.items() if isinstance(v, int) and v)
    total = tuning.max_jobs or len(tuning.trials)
    title = (f"Tuning job {tuning.name}: {tuning.status}; {total} trials: {counts or 'none started'}"
             + (f"; best {tuning.objective_name} {fmt_metric(tuning.best_objective)}"
                if tuning.best_objective is not None else ""))
    if len(tuning.trials) < tuning.launched:
        title += f"; showing the newest {len(tuning.trials)} of {tuning.launched} (★ the best)"
    # 80 columns: each trial by what follows the tuning job's name (<tuning job>-003-1d0347bf -> 003-1d0347bf; the
    # title names the tuning job), hyperparameters to 4 significant digits, no vertical rules
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("trial", no_wrap=True)
    for name in tuning.tuned:
        table.add_column(name, justify="right")
    table.add_column(tuning.objective_name, justify="right")
    table.add_column("status")
    table.add_column("time", justify="right")
    for trial in tuning.trials:
        short = trial.name[len(tuning.name) + 1:] if trial.name.startswith(tuning.name + "-") else trial.name
        table.add_row(Text(("★ " if trial.best else "  ") + short, style="bold" if trial.best else ""),
                      *[fmt_hyperparameter(trial.hyperparameters.get(n, "-")) for n in tuning.tuned],
                      fmt_metric(trial.objective), styled(trial.status), fmt_duration(trial.duration_s))
    return table


def fmt_hyperparameter(value: str) -> str:
    """0.0012345678901234567 -> 0.001235: a tuned float to 4 significant digits; integers and words as given."""
    if not any(c in value for c in ".eE"):
        return value
    try:
        return f"{float(value):.4g}"
    except ValueError:
        return value


def job_view(job: Job) -> Group:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("training job", job.name)
    grid.add_row("status", Text.assemble(styled(job.status), f" ({job.secondary_status})"
                                         if job.secondary_status and job.secondary_status != job.status else ""))
    grid.add_row("duration", fmt_duration(job.duration_s))
    for metric in (contract.TEST_ACCURACY, contract.TEST_LOSS):
        if metric in job.final_metrics:
            grid.add_row(metric, fmt_metric(job.final_metrics[metric]))
    if job.failure_reason:
        grid.add_row("failure", Text(job.failure_reason, style="red"))
    parts: list[Any] = [Panel(grid, title="Final training job", expand=False)]
    if job.rules:
        rules = Table(title="Rule verdicts", title_justify="left")
        rules.add_column("kind")
        rules.add_column("rule")
        rules.add_column("verdict")
        rules.add_column("details")
        for rule in job.rules:
            rules.add_row(rule.kind, rule.name, styled(rule.status), rule.details or "")
        parts.append(rules)
    return Group(*parts)


def endpoint_line(endpoint: dict) -> Text:
    return Text.assemble(("endpoint ", "bold"), endpoint["EndpointName"], " ", styled(endpoint["EndpointStatus"]),
                         f" ({endpoint['FailureReason']})" if endpoint.get("FailureReason") else "")


def status_view(snapshot: Snapshot) -> Group:
    parts: list[Any] = [execution_panel(snapshot.execution)]
    if snapshot.tuning:
        parts.append(trials_table(snapshot.tuning))
    elif snapshot.execution.tuning_job:
        parts.append(Text(f"tuning job {snapshot.execution.tuning_job}: not created yet"))
    if snapshot.job:
        parts.append(job_view(snapshot.job))
    if snapshot.endpoint:
        parts.append(endpoint_line(snapshot.endpoint))
    if panel := cost_panel(snapshot):
        parts.append(panel)
    if snapshot.dashboard_url:
        parts.append(Text.assemble(("dashboard ", "bold"), snapshot.dashboard_url))
    return Group(*parts)


def cost_panel(snapshot: Snapshot) -> Panel | None:
    """What the run has cost so far: the trials shown (from their summaries), the final job (its billable seconds)
    and the endpoint per hour; `imgclf report` prices every trial from DescribeTrainingJob."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    jobs: list[cost.JobCost] = []
    if snapshot.tuning and snapshot.tuning.trials:
        trials = [cost.trial_cost(t, snapshot.tuning.instance_type, local=snapshot.is_local)
                  for t in snapshot.tuning.trials]
        jobs += trials
        shown = len(trials) if len(trials) == snapshot.tuning.launched else f"{len(trials)} shown"
        seconds = sum(t.billable_seconds or 0 for t in trials)
        grid.add_row(f"trials ({shown})", f"{seconds} s on {trials[0].instance_type or '?'} = "
                                          f"{cost.fmt_usd(cost.total_usd(trials))}")
    if snapshot.job:
        final = cost.job_cost(snapshot.job, cost.FINAL, local=snapshot.is_local)
        jobs.append(final)
        grid.add_row("final job", cost.job_line(final))
    if jobs:
        grid.add_row("training total", cost.fmt_usd(cost.total_usd(jobs)))
    if snapshot.endpoint_cost:
        grid.add_row("endpoint", cost.endpoint_line(snapshot.endpoint_cost))
    if not grid.rows:
        return None
    grid.add_row("priced as", cost.basis(snapshot.is_local))
    return Panel(grid, title="Cost", expand=False)


def outcome(execution: Execution) -> str:
    """`FAILED in Check input: States.TaskFailed: why`: what an execution that stopped early came to."""
    text = execution.status
    if execution.status != "RUNNING" and execution.last_state and execution.status != "SUCCEEDED":
        text += f" in {execution.last_state}"
    if execution.error or execution.cause:
        text += ": " + ": ".join(str(v) for v in (execution.error, execution.cause) if v)
    return text


def best_of(backend: Backend, execution: Execution) -> dict:
    if not execution.tuning_job:
        raise CliError(f"execution {execution.name} has not started a tuning job ({outcome(execution)})")
    try:
        tuning = load_tuning(backend, execution.tuning_job, with_trials=False)
    except ClientError as exc:
        if not is_not_found(exc):
            raise
        raise CliError(f"execution {execution.name} has no tuning job {execution.tuning_job} "
                       f"({outcome(execution)})") from None
    if not tuning.best_job:
        raise CliError(f"tuning job {tuning.name} has no completed trial yet (status {tuning.status})")
    return {
        "execution": execution.arn,
        "tuning_job": tuning.name,
        "training_job": tuning.best_job,
        "objective": {"metric": tuning.objective_name, "type": tuning.objective_type, "value": tuning.best_objective},
        "hyperparameters": tuning.best_hyperparameters,
        "trials": {"completed": tuning.counters.get("Completed", 0),
                   "total": sum(v for v in tuning.counters.values() if isinstance(v, int))},
    }


def best_table(best: dict) -> Table:
    table = Table(title=f"Best trial of {best['tuning_job']}", title_justify="left", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("training job", best["training_job"])
    objective = best["objective"]
    table.add_row(f"{objective['metric']} ({objective['type']})", fmt_metric(objective["value"]))
    for name, value in best["hyperparameters"].items():
        table.add_row(name, value)
    table.add_row("trials completed", f"{best['trials']['completed']} of {best['trials']['total']}")
    return table
