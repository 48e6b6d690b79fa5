"""`tenfold train | evaluate | predict` end to end on a 10,000-image subset of the shared CIFAR-10 copy."""
import csv
import json
import re

from browser import ARTIFACTS, check_page
from helpers import run_cli

EPOCH_LINE = re.compile(r"^Epoch +(\d+): Training Loss: +(\d+\.\d\d) Validation Accuracy: +(\d+\.\d\d)% Time (\d+\.\d)s$")


def test_train_evaluate_predict_on_real_cifar10(cifar_subset, tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli("train", "--data", cifar_subset["train"], "--epochs", 8, "--out", run_dir, "--lr", "3e-3")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    matches = [EPOCH_LINE.match(line) for line in lines]
    assert all(matches) and [int(m[1]) for m in matches] == list(range(1, 9)), lines
    losses = [float(m[2]) for m in matches]
    val_acc = float(matches[-1][3]) / 100
    assert losses[-1] < losses[0]
    # Chance is 10 %; a trainer that does not learn, or mislabels images, cannot reach this.
    assert val_acc >= 0.40, lines
    evaluation = run_cli("evaluate", run_dir, "--data", cifar_subset["test"], "--json")
    assert evaluation.returncode == 0, evaluation.stderr
    report = json.loads(evaluation.stdout)
    assert report["images"] == 2000
    assert report["accuracy"] >= 0.38 and abs(report["accuracy"] - val_acc) < 0.06, (report["accuracy"], val_acc)
    image = next((cifar_subset["test"] / "ship").iterdir())
    pred = run_cli("predict", run_dir, image)
    assert pred.returncode == 0 and pred.stdout.startswith(f"{image}: ")


def test_report_of_a_five_epoch_lenet_run_renders_in_chromium(cifar_subset, tmp_path):
    """The acceptance: `tenfold report RUN` on a 5-epoch LeNet run, judged on unseen images, in a real browser."""
    run_dir = tmp_path / "lenet5"
    assert run_cli("train", "--data", cifar_subset["train"], "--epochs", 5, "--out", run_dir).returncode == 0
    result = run_cli("report", run_dir, "--data", cifar_subset["test"])
    assert result.returncode == 0, result.stderr
    html = (run_dir / "report.html").read_text()
    assert "accuracy on 2,000 images" in html and html.count("<tr><td>") > 5 + 20  # epochs, settings, machine
    check_page(run_dir / "report.html", ARTIFACTS / "report-cifar10-lenet5.png",
               ["curves", "confusion", "per_class_accuracy", "predictions"])


def test_two_gloo_workers_land_in_the_single_process_band(cifar_subset, tmp_path):
    """The acceptance of `--devices 2 --device cpu`: one line per epoch, and the validation accuracy of the
    single-process run with the same global batch, within 4 points (the shuffles differ)."""
    lines, accuracy = {}, {}
    for name, extra in (("one", []), ("two", ["--devices", "2"])):
        r = run_cli("train", "--data", cifar_subset["train"], "--epochs", 3, "--device", "cpu",
                    "--out", tmp_path / name, *extra)
        assert r.returncode == 0, r.stderr
        lines[name] = [line for line in r.stdout.splitlines() if EPOCH_LINE.match(line)]
        accuracy[name] = float(list(csv.DictReader(open(tmp_path / name / "history.csv")))[-1]["val_accuracy"])
    assert len(lines["one"]) == len(lines["two"]) == 3
    assert accuracy["one"] > 0.3 and abs(accuracy["two"] - accuracy["one"]) < 0.04, accuracy
