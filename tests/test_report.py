"""`tenfold report`, `train --report/--tensorboard`: figures on synthetic data, report.html in a real Chromium."""
from __future__ import annotations

import csv
import hashlib
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from browser import ARTIFACTS, check_page
from helpers import assert_one_line_error, make_tree, run_cli
from tenfold.report import plot_confusion, plot_history, plot_per_class, plot_predictions
from tenfold.training.checkpoint import load_checkpoint

FIGURES = ["curves", "confusion", "per_class_accuracy", "predictions"]
ROWS = [{"epoch": 1, "loss": 2.0, "accuracy": 0.30, "val_loss": 1.8, "val_accuracy": 0.35},
        {"epoch": 2, "loss": 1.5, "accuracy": 0.50, "val_loss": float("nan"), "val_accuracy": float("nan")},
        {"epoch": 3, "loss": 1.2, "accuracy": 0.60, "val_loss": 1.3, "val_accuracy": 0.55,
         "val_accuracy_tta": 0.58}]


@pytest.fixture(scope="module")
def lenet_run(tmp_path_factory):
    """A finished 5-epoch LeNet run on a small tree with a test split (what the acceptance asks for)."""
    root = tmp_path_factory.mktemp("report")
    data = make_tree(root / "data", classes=("cat", "dog", "frog", "ship"), n=24, splits=("train", "test"))
    run = root / "run"
    env = {"TENFOLD_HOME": str(root / "home")}
    r = run_cli("train", "--data", data, "--epochs", "5", "--batch-size", "16", "--out", run, env=env)
    assert r.returncode == 0, r.stderr
    return run, data, env


def lines_by_label(ax) -> dict:
    return {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in ax.get_lines()}


def test_history_plot_draws_training_and_validation_curves():
    fig = plot_history(ROWS)
    loss, acc = fig.axes
    assert lines_by_label(loss)["training"] == ([1, 2, 3], [2.0, 1.5, 1.2])
    assert lines_by_label(loss)["validation"] == ([1, 3], [1.8, 1.3])  # an epoch without validation is left out
    assert lines_by_label(acc)["training"] == ([1, 2, 3], [0.30, 0.50, 0.60])
    assert lines_by_label(acc)["validation, test-time augmentation"] == ([3], [0.58])
    assert loss.get_title() == "Loss" and acc.get_title() == "Accuracy"


def test_confusion_matrix_is_normalised_per_true_class():
    cm = np.array([[8, 2, 0], [0, 5, 5], [0, 0, 0]])
    fig = plot_confusion(cm, ["cat", "dog", "frog"])
    ax = fig.axes[0]
    shown = ax.get_images()[0].get_array()
    np.testing.assert_allclose(shown, [[0.8, 0.2, 0], [0, 0.5, 0.5], [0, 0, 0]])  # an empty row stays 0, not NaN
    assert [t.get_text() for t in ax.get_xticklabels()] == ["cat", "dog", "frog"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["cat", "dog", "frog"]
    assert "80%" in [t.get_text() for t in ax.texts]


def test_per_class_bars_and_overall_line():
    fig = plot_per_class({"cat": 0.9, "dog": 0.5, "frog": None}, 0.7)
    ax = fig.axes[0]
    assert [round(p.get_height(), 3) for p in ax.patches] == [0.9, 0.5, 0.0]
    assert [t.get_text() for t in ax.texts] == ["90%", "50%", "n/a"]
    assert ax.get_lines()[0].get_ydata()[0] == pytest.approx(0.7)


def test_prediction_grid_shows_true_label_and_top3_and_marks_mistakes():
    classes = ["cat", "dog", "frog", "ship"]
    images = np.zeros((2, 32, 32, 3), np.uint8)
    probs = np.array([[0.7, 0.2, 0.06, 0.04], [0.1, 0.6, 0.25, 0.05]])
    fig = plot_predictions(images, probs, classes, labels=np.array([0, 2]))
    pictures, bars = fig.axes[0::2], fig.axes[1::2]
    assert [a.get_title() for a in pictures] == ["true: cat", "✗ true: frog"]  # the second is misclassified
    assert pictures[1].title.get_color() != pictures[0].title.get_color()
    assert [t.get_text() for t in bars[0].get_yticklabels()] == ["cat", "dog", "frog"]  # top-3, most probable first
    assert [t.get_text() for t in bars[0].texts] == ["70%", "20%", "6%"]
    assert [t.get_text() for t in bars[1].get_yticklabels()] == ["dog", "frog", "cat"]
    assert [t.get_text() for t in bars[1].texts] == ["60%", "25%", "10%"]
    assert sorted(p.get_width() for p in bars[1].patches) == pytest.approx([0.1, 0.25, 0.6])


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_report_command_writes_figures_and_a_self_contained_page(lenet_run):
    run, data, env = lenet_run
    before = digest(run / "checkpoint.pt")
    r = run_cli("report", run, env=env)
    assert r.returncode == 0, r.stderr
    assert Path(r.stdout.strip()) == run / "report.html"
    for name in FIGURES:
        with Image.open(run / f"{name}.png") as im:
            assert im.width > 300 and im.height > 200
    html = (run / "report.html").read_text()
    sources = re.findall(r'<img src="([^"]+)"', html)
    assert len(sources) == 4 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert not re.search(r"https?://|<script|<link", html)  # nothing fetched, nothing run: works from disk
    assert "the test split of" in html and "lenet5" in html and "Environment" in html
    for row in load_checkpoint(run)["history"]:  # per-epoch timings and images/s
        assert f"<td>{row['seconds']:.1f}</td>" in html
        assert f"<td>{row['images_per_s']:,.0f}</td>" in html
    assert digest(run / "checkpoint.pt") == before and not list(run.glob(".*.tmp"))


def test_report_renders_in_headless_chromium(lenet_run):
    run, data, env = lenet_run
    if not (run / "report.html").exists():
        assert run_cli("report", run, env=env).returncode == 0
    shot = check_page(run / "report.html", ARTIFACTS / "report-screenshot.png", FIGURES)
    print(f"screenshot: {shot}")


def test_report_without_a_test_split_uses_the_validation_split(tmp_path):
    data = make_tree(tmp_path / "data", n=20)  # train/ only
    run = tmp_path / "run"
    r = run_cli("train", "--data", data, "--epochs", "1", "--batch-size", "16", "--out", run, "--report")
    assert r.returncode == 0, r.stderr
    assert "report written to" in r.stderr
    assert "the validation split of" in (run / "report.html").read_text()


def test_report_errors_are_one_line(lenet_run, tmp_path):
    run, data, env = lenet_run
    assert_one_line_error(run_cli("report", tmp_path / "nope"), "no such run directory")
    other = make_tree(tmp_path / "other", classes=("cat", "zebra"), n=4, splits=("test",))
    before = digest(run / "checkpoint.pt")
    assert_one_line_error(run_cli("report", run, "--data", other, env=env), "zebra")
    assert digest(run / "checkpoint.pt") == before


def read_scalars(log_dir: Path) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_scalars_read_back_and_survive_resume(tmp_path):
    data = make_tree(tmp_path / "data", n=20)
    run = tmp_path / "run"
    assert run_cli("train", "--data", data, "--epochs", "2", "--batch-size", "16", "--out", run,
                   "--tensorboard").returncode == 0
    r = run_cli("train", "--resume", run, "--epochs", "4", "--tensorboard")
    assert r.returncode == 0, r.stderr
    scalars = read_scalars(run / "tensorboard")
    rows = list(csv.DictReader(open(run / "history.csv")))
    assert {"loss/train", "loss/validation", "accuracy/train", "accuracy/validation", "learning_rate",
            "speed/images_per_s"} <= set(scalars)
    for tag, column in (("loss/train", "train_loss"), ("accuracy/validation", "val_accuracy"),
                        ("accuracy/train", "train_accuracy")):
        assert [s for s, _ in scalars[tag]] == [1, 2, 3, 4]
        assert [v for _, v in scalars[tag]] == pytest.approx([float(r[column]) for r in rows], rel=1e-5)


def test_tensorboard_missing_is_a_one_line_error(tmp_path):
    fake = tmp_path / "site"
    (fake / "tensorboard").mkdir(parents=True)
    (fake / "tensorboard" / "__init__.py").write_text("raise ImportError('no tensorboard here')\n")
    data = make_tree(tmp_path / "data", n=4)
    r = run_cli("train", "--data", data, "--epochs", "1", "--out", tmp_path / "run", "--tensorboard",
                env={"PYTHONPATH": os.pathsep.join([str(fake), *sys.path])})
    assert_one_line_error(r, "pip install 'tenfold[tensorboard]'")
    assert not (tmp_path / "run").exists()  # nothing started


def test_a_metric_added_to_the_table_reaches_csv_tensorboard_and_the_report(monkeypatch, tmp_path):
    """One place: a row in tenfold.training.metrics.METRICS, and every writer has it."""
    from tenfold.report.html import epochs_table
    from tenfold.training import metrics
    from tenfold.training.checkpoint import history_csv
    from tenfold.training.tensorboard import TensorBoard
    monkeypatch.setattr(metrics, "METRICS", (*metrics.METRICS, metrics.Metric(
        "grad_norm", "grad_norm", "training/grad_norm", "gradient norm", "loss")))
    for module in ("tenfold.training.checkpoint", "tenfold.training.tensorboard", "tenfold.report.html"):
        monkeypatch.setattr(f"{module}.METRICS", metrics.METRICS)
    row = {"epoch": 1, "loss": 1.0, "accuracy": 0.5, "val_loss": 1.1, "val_accuracy": 0.4, "seconds": 2.0,
           "images_per_s": 100.0, "lr": 0.01, "grad_norm": 3.25}
    assert history_csv([row]).splitlines()[0].endswith(",grad_norm") and "3.250000" in history_csv([row])
    assert "<th>gradient norm</th>" in epochs_table([row]) and "<td>3.2500</td>" in epochs_table([row])
    board = TensorBoard(tmp_path / "tb")
    board.on_train_begin({"start_epoch": 0})
    board.on_epoch_end(1, row)
    board.on_train_end({})
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(tmp_path / "tb")).Reload()
    assert events.Scalars("training/grad_norm")[0].value == 3.25


def test_a_metric_added_to_the_table_reaches_the_csv_the_epoch_line_the_plots_and_the_report():
    """Adding a metric is one row of tenfold.training.metrics.METRICS: every writer reads the table."""
    from tenfold.report.html import epochs_table
    from tenfold.training.callbacks import epoch_line
    from tenfold.training.checkpoint import history_csv
    from tenfold.training.metrics import METRICS, Metric
    row = Metric("val_top3", "val_top3_accuracy", "accuracy/validation_top3", "validation top-3", "fraction",
                 line=("Top-3:", "{:.1%}"), curve=("^-", "validation, top 3"))
    rows = [{**r, "val_top3": 0.5 + r["epoch"] / 10} for r in ROWS]
    METRICS.append(row)
    try:
        header, *lines = history_csv(rows).splitlines()
        line, fig, html = epoch_line(3, {**rows[2], "seconds": 1.0}), plot_history(rows), epochs_table(rows)
    finally:
        METRICS.remove(row)
    assert header.split(",")[-1] == "val_top3_accuracy" and lines[2].endswith(",0.800000")
    assert line.endswith("Top-3: 80.0%")
    assert lines_by_label(fig.axes[1])["validation, top 3"] == ([1, 2, 3], [0.6, 0.7, 0.8])
    assert "<th>validation top-3</th>" in html and "80.00%" in html
