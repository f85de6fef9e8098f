"""The report's content: its tables hold the trials' real values, its figures exist and are real PNGs, report.html
is self-contained, and what is missing is said rather than invented."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cli.main import main
from cli.report import FIGURES
from tests.support.cli import BUCKET, Scenario, png_bytes, record
from tests.support.scratch import module_scratch

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"



def write_predictions(folder: Path, classes: list[str], wrong: dict[tuple[str, str], int], per_class: int = 5) -> Path:
    """A predictions file over real image files: `per_class` right per class plus the given confusions."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for c in classes:
        for i in range(per_class):
            image = folder / f"{c}-{i}.png"
            image.write_bytes(png_bytes(24, (classes.index(c) * 23) % 255))
            rows.append({"label": c, "predicted": c, "score": 0.9, "image": str(image)})
    for (true, predicted), count in wrong.items():
        for i in range(count):
            image = folder / f"{true}-as-{predicted}-{i}.png"
            image.write_bytes(png_bytes(24, 128))
            rows.append({"label": true, "predicted": predicted, "score": 0.4, "image": str(image)})
    path = folder / "predictions.json"
    path.write_text(json.dumps({"predictions": rows}))
    return path


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory, run_dir, request) -> Path:
    work = module_scratch(request, tmp_path_factory, "report")
    predictions = write_predictions(work / "preds", [str(d) for d in range(10)], {("3", "8"): 3, ("9", "4"): 1})
    assert main(["report", "--local", str(run_dir), "--out", str(work / "out"), "--predictions",
                 str(predictions)]) == 0
    return work / "out"


def table_rows(markdown: str, header_start: str) -> list[list[str]]:
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split(" | ")])
    return rows


def test_trials_table_holds_every_trials_real_values(report_dir, scenario):
    rows = table_rows((report_dir / "report.md").read_text(), "| # | training job | batch-size | lr | epochs |")
    assert len(rows) == len(scenario.trials)
    for i, (row, spec) in enumerate(zip(rows, scenario.trials, strict=True)):
        number, name, batch, lr, epochs, objective, status, duration, best = row
        assert (number, name, batch, lr, epochs) == (str(i + 1), scenario.trial_name(i), spec.batch_size, spec.lr,
                                                     spec.epochs)
        assert objective == (f"{spec.objective:.4f}" if spec.objective is not None else "-")
        assert status.startswith("Completed" if spec.objective is not None else "Failed (AlgorithmError")
        assert duration == f"{spec.minutes}m 00s"
        assert best == ("★ best" if i == scenario.best_index else "")


def test_html_marks_the_best_trial(report_dir, scenario):
    html = (report_dir / "report.html").read_text()
    best_rows = re.findall(r'<tr class="best">(.*?)</tr>', html)
    assert len(best_rows) == 1 and scenario.best_name in best_rows[0] and "0.9851" in best_rows[0]


def test_summary_rules_and_health(report_dir, scenario):
    markdown = (report_dir / "report.md").read_text()
    best = scenario.trials[scenario.best_index]
    assert f"| best valid_accuracy | 0.9851 — {scenario.best_name} (batch-size={best.batch_size}, lr={best.lr}, " \
           f"epochs={best.epochs}) |" in markdown
    assert "| test_accuracy | 0.9812 |" in markdown
    rules = table_rows(markdown, "| kind | rule | verdict | details |")
    assert ["Debugger", "LossNotDecreasing", "IssuesFound", "train loss 2.3 -> 2.29 (-0.4%)"] in rules
    assert ["Profiler", "ProfilerReport", "NoIssuesFound", ""] in rules and len(rules) == 6
    health = table_rows(markdown, "| check | verdict | detail |")
    assert [row[0] for row in health] == ["VanishingGradient", "Overfit", "LossNotDecreasing",
                                         "PoorWeightInitialization"]
    assert "issues found in LossNotDecreasing" in markdown
    assert "[Profiler report (copied beside this report)](profiler-report.html)" in markdown


def test_figures_are_real_pngs(report_dir):
    for name in FIGURES.values():
        data = (report_dir / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE), name
        with Image.open(io.BytesIO(data)) as image:
            pixels = np.asarray(image.convert("L"), dtype=float)
        assert image.width >= 400 and image.height >= 250, name
        assert pixels.std() > 5, f"{name} is blank"


def test_html_is_self_contained_with_every_figure_embedded(report_dir):
    html = (report_dir / "report.html").read_text()
    assert "<script" not in html and "<link" not in html and 'src="http' not in html
    embedded = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(embedded) == len(FIGURES)
    for encoded in embedded:
        decoded = base64.b64decode(encoded)
        assert decoded.startswith(PNG_SIGNATURE)
    assert {base64.b64decode(e) for e in embedded} == {(report_dir / n).read_bytes() for n in FIGURES.values()}
    markdown = (report_dir / "report.md").read_text()
    for name in FIGURES.values():
        assert f"]({name})" in markdown


def test_evaluation_section(report_dir):
    markdown = (report_dir / "report.md").read_text()
    assert "54 predictions on the test set" in markdown and "accuracy 0.9259 over 10 classes" in markdown
    assert table_rows(markdown, "| true | predicted | images |") == [["3", "8", "3"], ["9", "4", "1"]]
    saved = json.loads((report_dir / "predictions.json").read_text())
    assert len(saved["predictions"]) == 54 and saved["accuracy"] == pytest.approx(50 / 54)


def test_many_classes_show_top_confusions(tmp_path, run_dir):
    classes = [f"breed_{i:03d}" for i in range(40)]
    predictions = write_predictions(tmp_path / "p", classes, {("breed_001", "breed_002"): 4,
                                                              ("breed_010", "breed_011"): 2}, per_class=1)
    out = tmp_path / "out"
    assert main(["report", "--local", str(run_dir), "--out", str(out), "--predictions", str(predictions)]) == 0
    markdown = (out / "report.md").read_text()
    assert table_rows(markdown, "| true | predicted | images |")[0] == ["breed_001", "breed_002", "4"]
    assert (out / FIGURES["confusion"]).read_bytes().startswith(PNG_SIGNATURE)


def test_csv_predictions(tmp_path, run_dir):
    csv = tmp_path / "p.csv"
    csv.write_text("label,predicted\ncat,cat\ncat,dog\ndog,dog\n")
    out = tmp_path / "out"
    assert main(["report", "--local", str(run_dir), "--out", str(out), "--predictions", str(csv)]) == 0
    markdown = (out / "report.md").read_text()
    assert "3 predictions on the test set" in markdown and "accuracy 0.6667 over 2 classes" in markdown
    assert not (out / FIGURES["samples"]).exists()  # no image files: no sample figure, and no invented one


def test_without_predictions_the_report_says_so(tmp_path, run_dir, report_dir):
    out = tmp_path / "out"
    shutil.copytree(report_dir, out)  # an earlier report's confusion figures must not survive
    assert main(["report", "--local", str(run_dir), "--out", str(out), "--no-evaluate"]) == 0
    markdown = (out / "report.md").read_text()
    assert "No confusion matrix: no predictions on the test set: pass --evaluate" in markdown
    assert not (out / FIGURES["confusion"]).exists() and not (out / FIGURES["samples"]).exists()
    assert "confusion_matrix" not in (out / "report.html").read_text()


def test_a_local_report_evaluates_by_default_and_says_why_it_could_not(tmp_path, run_dir):
    """A local run's report tries the final model on the test set unasked; a model it cannot read is a note."""
    out = tmp_path / "out"
    assert main(["report", "--local", str(run_dir), "--out", str(out)]) == 0
    markdown = (out / "report.md").read_text()
    assert "No confusion matrix: the model s3://" in markdown and "could not be read" in markdown


@pytest.mark.parametrize("args, message", [
    (["--predictions", "missing.json"], "no such predictions file"),
    (["--model", "m"], "--model and --test-data go together"),
    (["--evaluate", "--predictions", "p.json"], "choose one of"),
])
def test_bad_report_options(tmp_path, run_dir, capsys, args, message):
    code = main(["report", "--local", str(run_dir), "--out", str(tmp_path), *args])
    assert code == 2 and message in capsys.readouterr().err


class RunningScenario(Scenario):
    """Tuning still running: the history stops inside the Tune state; no final job, no endpoint yet."""

    def events(self) -> list[dict]:
        return super().events()[:4]

    def describe_tuning(self) -> dict:
        described = super().describe_tuning()
        described["HyperParameterTuningJobStatus"] = "InProgress"
        return described


def test_report_of_an_execution_still_tuning(tmp_path, capsys):
    scenario = RunningScenario(status="RUNNING")
    record(tmp_path / "run", scenario)
    assert main(["status", "--local", str(tmp_path / "run")]) == 0
    assert "current state" in capsys.readouterr().out
    out = tmp_path / "out"
    assert main(["report", "--local", str(tmp_path / "run"), "--out", str(out)]) == 0
    markdown = (out / "report.md").read_text()
    assert "| status | RUNNING |" in markdown
    assert "No Debugger or Profiler rule verdicts" in markdown
    assert "No endpoint was created or updated by this execution." in markdown
    assert (out / FIGURES["objective_vs_lr"]).is_file() and not (out / FIGURES["curves_final"]).exists()


def test_report_without_s3_outputs_uses_the_jobs_final_metrics(tmp_path):
    scenario = Scenario(with_history=False)
    record(tmp_path / "run", scenario)
    out = tmp_path / "out"
    assert main(["report", "--local", str(tmp_path / "run"), "--out", str(out)]) == 0
    markdown = (out / "report.md").read_text()
    assert "no per-epoch metrics (no history.json" in markdown  # not a curve invented from one final value
    assert "Per-epoch metrics of the tuning trials: none for #1, #2, #3, #4, #5, #6" in markdown
    assert not (out / FIGURES["curves_final"]).exists() and not (out / FIGURES["curves_trials"]).exists()
    assert "No health.json from the final job" in markdown
    assert "| test_accuracy | 0.9812 |" in markdown


# --- predictions made by the trained model itself (slow: needs the session's trained model) ---------------------
def _model_tar(model_dir: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for path in sorted(model_dir.rglob("*")):
            archive.add(path, arcname=path.relative_to(model_dir).as_posix(), recursive=False)
    return buffer.getvalue()


@pytest.mark.slow
def test_evaluate_the_runs_model_on_its_test_channel(tmp_path, trained_model, digits_dir, scenario):
    run = tmp_path / "run"
    record(run, scenario)
    s3 = run / "s3" / BUCKET
    (s3 / "jobs" / scenario.final_job / "output").mkdir(parents=True, exist_ok=True)
    (s3 / "jobs" / scenario.final_job / "output" / "model.tar.gz").write_bytes(_model_tar(trained_model))
    shutil.copytree(digits_dir / "test", s3 / "data" / "test")
    out = tmp_path / "out"
    assert main(["report", "--local", str(run), "--out", str(out), "--evaluate"]) == 0
    saved = json.loads((out / "predictions.json").read_text())
    count = sum(1 for _ in (digits_dir / "test").rglob("*.png"))
    assert len(saved["predictions"]) == count and saved["classes"] == [str(d) for d in range(10)]
    assert saved["accuracy"] > 0.8  # the 3-epoch fixture model is a real classifier
    assert saved["predictions"][0]["image"].startswith(f"s3://{BUCKET}/data/test/")
    markdown = (out / "report.md").read_text()
    assert f"{count} predictions on the test set ({scenario.final_job}" in markdown
    for name in ("confusion", "samples"):
        assert (out / FIGURES[name]).read_bytes().startswith(PNG_SIGNATURE)


@pytest.mark.slow
def test_model_and_test_data_options(tmp_path, trained_model, digits_dir, run_dir):
    out = tmp_path / "out"
    assert main(["report", "--local", str(run_dir), "--out", str(out), "--model", str(trained_model),
                 "--test-data", str(digits_dir / "test")]) == 0
    saved = json.loads((out / "predictions.json").read_text())
    assert saved["accuracy"] > 0.8 and Path(saved["predictions"][0]["image"]).is_file()


def test_trials_are_ordered_by_sagemakers_trial_number(scenario):
    """Trials launched together have creation times microseconds apart, in either order: the -NNN- decides."""
    from cli.model import tuning_from

    summaries = scenario.list_trials()  # listed newest first
    first, last = summaries[-1], summaries[0]
    first["CreationTime"], last["CreationTime"] = last["CreationTime"], first["CreationTime"]
    tuning = tuning_from(scenario.describe_tuning(), summaries)
    assert [t.name for t in tuning.trials] == scenario.trial_names
    assert [t.best for t in tuning.trials].index(True) == scenario.best_index


# --- issue 12 item 14 --------------------------------------------------------------------------------------------
def test_per_class_precision_and_recall(report_dir):
    """Class 3: 5 right, 3 taken for 8 (recall 5/8); class 8: 5 right of 8 predicted as 8 (precision 5/8)."""
    markdown = (report_dir / "report.md").read_text()
    rows = {row[0]: row[1:] for row in table_rows(markdown, "| class | precision | recall | images |")}
    assert rows["3"] == ["1.000", "0.625", "8"] and rows["8"] == ["0.625", "1.000", "5"]
    assert rows["4"] == ["0.833", "1.000", "5"] and rows["9"] == ["1.000", "0.833", "6"]


def test_timings_per_state_and_per_job(report_dir, scenario):
    markdown = (report_dir / "report.md").read_text()
    assert "## Timings" in markdown
    states = dict(table_rows(markdown, "| state | time |"))
    assert "whole execution" in states and len(states) > 2
    jobs = {row[1]: row[2] for row in table_rows(markdown, "| job | name | training time |")}
    assert set(jobs) == {*scenario.trial_names, scenario.final_job}
    assert jobs[scenario.final_job] == "5m 00s"


def test_no_empty_header_rows(report_dir):
    markdown = (report_dir / "report.md").read_text()
    assert not re.search(r"^\|( *\|)+ *$", markdown, re.M) and "|  |" not in markdown.split("\n|---", 1)[0][-40:]
    assert "| run |  |" not in markdown and "| execution | run-0001 |" in markdown
    html = (report_dir / "report.html").read_text()
    assert "<th></th>" not in html


def test_local_metrics_give_every_trial_its_curve(tmp_path):
    """A stopped trial writes no history.json; the epoch lines it logged are its curve, as CloudWatch holds them."""
    import datetime as dt
    from types import SimpleNamespace

    from cli.loaders import fetch_metric_data
    from cli.model import CURVE_METRICS, metric_queries, metric_series
    from local.demo import LocalMetrics
    from ml import contract

    job = SimpleNamespace(
        epochs=[{"epoch": 1, "seconds": 5.0, contract.VALID_ACCURACY: 0.5, contract.TRAIN_LOSS: 1.2},
                {"epoch": 2, "seconds": 5.0, contract.VALID_ACCURACY: 0.7, contract.TRAIN_LOSS: 0.8}],
        describe=lambda: {"TrainingStartTime": dt.datetime(2026, 1, 1, tzinfo=dt.UTC)})
    stand_in = SimpleNamespace(training_jobs={"stopped-trial": job})

    start = dt.datetime(2025, 12, 31, tzinfo=dt.UTC)
    response = fetch_metric_data(LocalMetrics(stand_in), "stopped-trial", start, start + dt.timedelta(days=2))
    series = metric_series(response, metric_queries("stopped-trial", CURVE_METRICS))
    assert [v for _, v in series[contract.VALID_ACCURACY]] == [0.5, 0.7]
    assert [v for _, v in series[contract.TRAIN_LOSS]] == [1.2, 0.8]
    assert series[contract.VALID_LOSS] == []


def test_profiler_report_in_the_main_reports_style_with_legends_beside_the_plots(tmp_path, monkeypatch):
    from cli.report import CSS
    from local.sagemaker import profiler

    legends: list[dict] = []
    original = profiler._figure_html

    def capture(fig) -> str:  # every legend of every axes, where it is anchored
        for ax in fig.axes:
            if (legend := ax.get_legend()) is not None:
                box = legend.get_bbox_to_anchor().transformed(ax.transAxes.inverted())
                legends.append({"x0": box.x0, "texts": [t.get_text() for t in legend.get_texts()]})
        return original(fig)

    monkeypatch.setattr(profiler, "_figure_html", capture)
    samples = [profiler.Sample(t=i, cpu_process=50.0 + i, cpu_cores=[40.0, 60.0], rss_mb=300.0 + i,
                               memory_percent=30.0, read_mb=1.0, write_mb=2.0) for i in range(5)]
    epochs = [{"epoch": 1, "seconds": 3.0, "valid_accuracy": 0.5}, {"epoch": 2, "seconds": 2.5}]
    path = profiler.write_report(tmp_path / "profiler-report.html", {"TrainingJobName": "job"}, samples, epochs,
                                 [("ProfilerReport", "NoIssuesFound", "")])
    page = path.read_text()
    assert CSS in page and "<th></th>" not in page
    assert len(legends) == 2 and all(legend["x0"] >= 1.0 for legend in legends)  # right of the plot area
    assert any("machine memory %" in legend["texts"] for legend in legends)  # the twin axis's curve is named


def test_cost_line_per_job_is_billable_seconds_times_the_table_price(report_dir, scenario):
    """A local run is priced as the same run on AWS: its billable seconds x the cloud profile's instances' prices."""
    from cli.cost import cloud_instances
    from cli.prices import HOSTING_USD_PER_HOUR, PRICES_AS_OF, PRICES_SOURCE, TRAINING_USD_PER_HOUR

    markdown = (report_dir / "report.md").read_text()
    assert "## Cost" in markdown and PRICES_SOURCE in markdown and PRICES_AS_OF in markdown
    cloud = cloud_instances()
    rows = table_rows(markdown, "| job | name | instance | count | billable s | $/hour | cost |")
    *jobs, total = rows
    assert [r[1] for r in jobs] == [*scenario.trial_names, scenario.final_job]
    expected_total = 0.0
    for kind, name, instance, count, billable, price, cost in jobs:
        seconds = scenario.describe_job(name)["BillableTimeInSeconds"]
        want_type, want_count = ((cloud.training, cloud.training_count) if name == scenario.final_job
                                 else (cloud.tuning, 1))
        usd = seconds * want_count * TRAINING_USD_PER_HOUR[want_type] / 3600
        expected_total += usd
        assert kind == ("final" if name == scenario.final_job else "trial")
        assert (instance, count, billable, price) == (want_type, str(want_count), str(seconds),
                                                      f"${TRAINING_USD_PER_HOUR[want_type]}")
        assert cost == f"${usd:.4f}", (name, cost, usd)
    # The final job ran on spot: its billable seconds (30% of its training time) are what it is priced at.
    final = scenario.describe_job(scenario.final_job)
    assert final["BillableTimeInSeconds"] < final["TrainingTimeInSeconds"]
    assert total[0] == "total" and total[-1] == f"${expected_total:.4f}"
    hourly = scenario.endpoint_instances * HOSTING_USD_PER_HOUR[cloud.serving]
    assert f"Endpoint: {scenario.endpoint_instances} x {cloud.serving} = ${hourly:.4f}/hour while it runs." in markdown


def test_on_aws_jobs_and_endpoint_are_priced_at_their_own_instances(scenario):
    from cli import cost
    from cli.model import job_from
    from cli.prices import TRAINING_USD_PER_HOUR

    described = {**scenario.describe_job(scenario.final_job),
                 "ResourceConfig": {"InstanceType": "ml.m5.2xlarge", "InstanceCount": 2, "VolumeSizeInGB": 30}}
    priced = cost.job_cost(job_from(described), cost.FINAL, local=False)
    assert (priced.instance_type, priced.instance_count) == ("ml.m5.2xlarge", 2)
    assert priced.usd == described["BillableTimeInSeconds"] * 2 * TRAINING_USD_PER_HOUR["ml.m5.2xlarge"] / 3600
    unknown = cost.job_cost(job_from({**described, "ResourceConfig": {"InstanceType": "ml.x9.huge"}}), cost.FINAL,
                            local=False)
    assert unknown.usd is None and "no price in the table" in cost.job_line(unknown)
