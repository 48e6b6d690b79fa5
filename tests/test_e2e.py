"""`tenfold train | evaluate | predict` end to end on a 10,000-image subset of the shared CIFAR-10 copy."""
import json
import re

from conftest import run_cli

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
