"""Debugger's system monitoring, locally: psutil samples of the job's process tree and a self-contained HTML report.

SageMaker's profiler samples CPU, GPU, memory and I/O of the training instance every
ProfilingIntervalInMilliseconds and writes them under <ProfilerConfig.S3OutputPath>/<job>/profiler-output/system;
the ProfilerReport rule renders them as profiler-report.html. Framework (step-level) profiling is deprecated for
PyTorch >= 2.0, so step timings here come from what the training script logs per epoch.
"""

from __future__ import annotations

import base64
import html
import io
import json
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

import stackfacts as facts

# Rules the stand-in cannot evaluate, and why. SageMaker answers a rule that could not run with
# RuleEvaluationStatus "Error" (botocore shape ProfilerRuleEvaluationStatus: InProgress | NoIssuesFound |
# IssuesFound | Error | Stopping | Stopped; https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_ProfilerRuleEvaluationStatus.html),
# so a rule that was not evaluated is never reported as NoIssuesFound.
NOT_EVALUATED_STATUS = "Error"


def not_evaluated_locally(rule: str) -> str | None:
    """Why the local stand-in cannot evaluate the built-in rule `rule` (None: it can)."""
    if rule == "LowGPUUtilization":
        if shutil.which("nvidia-smi") is None:
            return "LowGPUUtilization was not evaluated: no GPU on this machine"
        return "LowGPUUtilization was not evaluated: the local profiler does not sample GPU utilization"
    return None


@dataclass
class Sample:
    t: float  # seconds since the monitor started
    cpu_process: float  # % of one core used by the job's process tree (can exceed 100)
    cpu_cores: list[float]  # % per core, whole machine
    rss_mb: float  # resident memory of the job's process tree
    memory_percent: float  # whole machine
    read_mb: float  # cumulative disk reads of the process tree
    write_mb: float


@dataclass
class SystemMonitor:
    """Samples one process tree on a thread until `stop()`; also appends SageMaker-style JSON lines."""

    pid: int
    interval: float = 0.5
    out_dir: Path | None = None  # <...>/profiler-output/system
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> SystemMonitor:
        self._thread = threading.Thread(target=self._run, name=f"profiler-{self.pid}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> list[Sample]:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        return self.samples

    def _tree(self, root: psutil.Process) -> list[psutil.Process]:
        try:
            return [root, *root.children(recursive=True)]
        except psutil.Error:
            return [root]

    def _run(self) -> None:
        try:
            root = psutil.Process(self.pid)
        except psutil.Error:
            return
        started = time.monotonic()
        known: dict[int, psutil.Process] = {}
        psutil.cpu_percent(percpu=True)  # primes the per-core counters
        sink = None
        if self.out_dir is not None:
            path = Path(self.out_dir) / "incremental" / f"{int(time.time())}.{facts.TRAINING_HOST}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            sink = path.open("a")
        try:
            while not self._stop.wait(self.interval):
                cpu = rss = read = write = 0.0
                for proc in self._tree(root):
                    proc = known.setdefault(proc.pid, proc)  # cpu_percent needs the same object each time
                    try:
                        with proc.oneshot():
                            cpu += proc.cpu_percent()
                            rss += proc.memory_info().rss
                            io_counters = proc.io_counters() if hasattr(proc, "io_counters") else None
                            if io_counters:
                                read += io_counters.read_bytes
                                write += io_counters.write_bytes
                    except psutil.Error:
                        continue
                sample = Sample(time.monotonic() - started, cpu, psutil.cpu_percent(percpu=True), rss / 2**20,
                                psutil.virtual_memory().percent, read / 2**20, write / 2**20)
                self.samples.append(sample)
                if sink:
                    now = time.time()
                    for i, value in enumerate(sample.cpu_cores):
                        sink.write(json.dumps({"Name": f"cpu{i}", "Type": "cpu", "Dimension": "CPUUtilization",
                                               "Value": value, "Timestamp": now}) + "\n")
                    sink.write(json.dumps({"Name": "MemoryUsedPercent", "Type": "memory", "Dimension": "Memory",
                                           "Value": sample.memory_percent, "Timestamp": now}) + "\n")
                    sink.flush()
                if not root.is_running():
                    break
        finally:
            if sink:
                sink.close()


# --- report -----------------------------------------------------------------------------------------
def _figure_html(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")  # the figure's own dpi, as the main report's
    data = base64.b64encode(buffer.getvalue()).decode()
    return f'<img alt="figure" src="data:image/png;base64,{data}"/>'


def _table(rows: list[tuple], header: tuple = ()) -> str:
    """A table; without a header, a key/value table (no empty header row)."""
    if not header:
        body = "".join(f"<tr><th>{html.escape(str(row[0]))}</th>" + "".join(f"<td>{html.escape(str(c))}</td>"
                                                                            for c in row[1:]) + "</tr>"
                       for row in rows)
        return f"<table><tbody>{body}</tbody></table>"
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def write_report(path: Path, job: dict, samples: list[Sample], epochs: list[dict],
                 checks: list[tuple[str, str, str]]) -> Path:
    """profiler-report.html: system usage over time, epoch timings, metrics and rule summaries (no network), in the
    main report's style (cli.report: its figure size, fonts and stylesheet); legends beside the plots, never on
    the curves."""
    from cli.report import CSS, new_figure

    outside = {"loc": "upper left", "bbox_to_anchor": (1.02, 1.0), "fontsize": 8, "frameon": False}
    sections: list[str] = []
    if samples:
        t = [s.t for s in samples]
        fig = new_figure(9, 5.5)
        ax_cpu, ax_mem = fig.subplots(2, 1, sharex=True)
        ax_cpu.plot(t, [s.cpu_process for s in samples], label="training process tree\n(% of one core)")
        ax_cpu.plot(t, [sum(s.cpu_cores) / max(len(s.cpu_cores), 1) for s in samples], label="machine (mean %)")
        ax_cpu.set_ylabel("CPU %")
        ax_cpu.legend(**outside)
        rss = ax_mem.plot(t, [s.rss_mb for s in samples], color="tab:green", label="training RSS (MiB)")
        ax_mem.set_ylabel("MiB")
        ax_mem.set_xlabel("seconds since the training process started")
        twin = ax_mem.twinx()
        machine = twin.plot(t, [s.memory_percent for s in samples], color="tab:red", alpha=0.5,
                            label="machine memory %")
        twin.set_ylabel("machine memory %")
        ax_mem.legend(handles=[*rss, *machine], **{**outside, "bbox_to_anchor": (1.12, 1.0)})
        fig.suptitle("System utilization")
        sections.append("<h2>System utilization</h2>" + _figure_html(fig))
        cpu = [s.cpu_process for s in samples]
        rows = [("samples", len(samples)), ("duration (s)", f"{t[-1]:.1f}"),
                ("CPU p50 / p95 / max (% of a core)",
                 " / ".join(f"{v:.0f}" for v in _percentiles(cpu, (50, 95, 100)))),
                ("peak RSS (MiB)", f"{max(s.rss_mb for s in samples):.0f}"),
                ("disk read / written (MiB)", f"{samples[-1].read_mb:.1f} / {samples[-1].write_mb:.1f}")]
        sections.append(_table(rows, ("system metric", "value")))
    else:
        sections.append("<p>No system samples: the training process ended before the first sampling interval.</p>")
    if epochs:
        fig = new_figure(9, 3)
        ax = fig.subplots()
        ax.bar([str(e["epoch"]) for e in epochs], [e["seconds"] for e in epochs], color="tab:purple")
        ax.set_xlabel("epoch")
        ax.set_ylabel("wall seconds")
        fig.suptitle("Epoch time (from the training log)")
        sections.append("<h2>Step time</h2>" + _figure_html(fig))
        keys = sorted({k for e in epochs for k in e if k not in ("epoch", "seconds")})
        rows = [(e["epoch"], f"{e['seconds']:.1f}", *(f"{e.get(k, ''):.4g}" if k in e else "" for k in keys))
                for e in epochs]
        sections.append(_table(rows, ("epoch", "seconds", *keys)))
    sections.append("<h2>Rules</h2>" + _table(checks, ("rule", "status", "details")))
    metrics = [(m["MetricName"], f"{m['Value']:.6g}") for m in job.get("FinalMetricDataList", [])]
    if metrics:
        sections.append("<h2>Final metrics</h2>" + _table(metrics, ("metric", "value")))
    summary = [("training job", job.get("TrainingJobName")), ("status", job.get("TrainingJobStatus")),
               ("secondary status", job.get("SecondaryStatus")),
               ("training time (s)", job.get("TrainingTimeInSeconds", "")),
               ("instance", job.get("ResourceConfig", {}).get("InstanceType", "")),
               ("run locally on", f"{psutil.cpu_count()} CPU cores, "
                                  f"{psutil.virtual_memory().total / 2**30:.1f} GiB memory, no GPU")]
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Profiler report: {html.escape(str(job.get("TrainingJobName")))}</title>
<style>{CSS}</style></head><body>
<h1>SageMaker Debugger profiling report (local)</h1>
{_table(summary)}
{"".join(sections)}
<p>Framework profiling (per-step and data-loader timelines) is deprecated for PyTorch 2.x; step time above is
per epoch, from the training log.</p>
</body></html>"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page)
    return path


def _percentiles(values: list[float], qs: tuple[int, ...]) -> list[float]:
    ordered = sorted(values)
    return [ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))] for q in qs]
