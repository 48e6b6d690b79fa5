"""fit(), callbacks, the run directory, and resuming: in-process and after a real SIGKILL / Ctrl-C."""
import csv
import re
import json
import signal
import subprocess
import sys
import time

import pytest
import torch

import tenfold
from helpers import REPO, assert_one_line_error, cifar_archive, make_tree, run_cli
from tenfold.config import TrainConfig
from tenfold.errors import ConfigError
from tenfold.presets import preset_config, resolve_config
from tenfold.training import Callback
from tenfold.training.callbacks import epoch_line
from tenfold.training.checkpoint import load_checkpoint
from tenfold.training.run import train


@pytest.fixture
def tree(tmp_path):
    return make_tree(tmp_path / "data", n=40)


def test_training_learns_and_reports_through_callbacks(tree, tmp_path):
    seen = []

    class Spy(Callback):
        def on_epoch_end(self, epoch, logs):
            seen.append((epoch, dict(logs)))
    from tenfold.training import fit
    from tenfold.training.run import build, loaders
    run = build(TrainConfig(data=str(tree), lr=3e-3, batch_size=16, keep_prob=1.0))
    train_loader, val_loader = loaders(run, 16)
    history = fit(run.model, run.optimizer, train_loader, val_loader, epochs=6, callbacks=[Spy()])
    assert [e for e, _ in seen] == history.epoch == [1, 2, 3, 4, 5, 6]
    assert set(seen[0][1]) == {"epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds", "images_per_s",
                               "lr"}
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert history.history["accuracy"][-1] > history.history["accuracy"][0]  # training accuracy, per epoch
    assert history.history["val_accuracy"][-1] >= 0.9  # colour-coded classes: chance is 1/3


def test_a_callback_stops_training_after_a_whole_saved_epoch_and_the_run_resumes(tree, tmp_path):
    class StopAtTwo(Callback):  # as Keras' EarlyStopping would, by setting the flag
        def on_epoch_end(self, epoch, logs):
            self.stop_training = epoch == 2
    out = tmp_path / "run"
    history = train(data=str(tree), epochs=5, out=out, quiet=True, batch_size=32, callbacks=[StopAtTwo()])
    assert history.epoch == [1, 2] and load_checkpoint(out)["epoch"] == 2
    resumed = train(resume=out, quiet=True)
    assert resumed.epoch == [1, 2, 3, 4, 5]


def test_epoch_line_in_the_seeds_words():
    line = epoch_line(1, {"loss": 1.6512, "val_accuracy": 0.40878, "seconds": 4.51})
    assert line == "Epoch  1: Training Loss:  1.65 Validation Accuracy: 40.88% Time 4.5s"


def test_run_directory_holds_checkpoint_history_and_config(tree, tmp_path):
    out = tmp_path / "run"
    train(data=str(tree), epochs=2, out=out, quiet=True, batch_size=32)
    ckpt = load_checkpoint(out)
    assert ckpt["epoch"] == 2 and ckpt["classes"] == ["cat", "dog", "frog"]
    assert ckpt["image_shape"] == [32, 32] and len(ckpt["mean"]) == 3 and len(ckpt["std"]) == 3
    assert ckpt["config"]["batch_size"] == 32 and set(ckpt["rng"]) >= {"torch", "loader"}
    assert ckpt["optimizer"]["state"] and ckpt["model"]["0.0.weight"].shape == (6, 3, 5, 5)
    rows = list(csv.DictReader(open(out / "history.csv")))
    assert list(rows[0]) == ["epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "seconds",
                             "images_per_s", "lr", "val_accuracy_tta"]
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert json.loads((out / "config.json").read_text())["config"]["data"] == str(tree)
    assert not list(out.glob(".*.tmp"))


def weights(run_dir):
    return load_checkpoint(run_dir)["model"]


def assert_same_weights(a, b):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def test_resume_in_process_ends_with_the_same_weights(tree, tmp_path):
    common = dict(data=str(tree), quiet=True, batch_size=16, augment=True, seed=3, threads=2)  # sums split by thread
    train(epochs=3, out=tmp_path / "straight", **common)
    train(epochs=2, out=tmp_path / "paused", **common)
    train(resume=tmp_path / "paused", epochs=3, quiet=True)
    assert_same_weights(tmp_path / "straight", tmp_path / "paused")
    assert [r["loss"] for r in load_checkpoint(tmp_path / "paused")["history"]] == \
        [r["loss"] for r in load_checkpoint(tmp_path / "straight")["history"]]


def rows(run_dir):
    path = run_dir / "history.csv"
    return list(csv.DictReader(open(path))) if path.exists() else []


@pytest.fixture
def big_archive(tmp_path):
    """5,000 images in CIFAR-10's format (4,500 for training): epochs of a second or more, killed in the middle."""
    path = tmp_path / "cifar-10-python.tar.gz"
    path.write_bytes(cifar_archive(n=1000))
    return path


def start_training(data, out, epochs):
    return subprocess.Popen([sys.executable, "-m", "tenfold", "train", "--data", str(data), "--epochs", str(epochs),
                             "--out", str(out), "--batch-size", "64", "--threads", "2"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_epochs(run_dir, n, proc, timeout=120):
    deadline = time.monotonic() + timeout
    while len(rows(run_dir)) < n:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_sigkill_during_epoch_3_then_resume_matches_an_uninterrupted_run(big_archive, tmp_path):
    straight = run_cli("train", "--data", big_archive, "--epochs", 4, "--out", tmp_path / "straight",
                       "--batch-size", 64, "--threads", 2)  # a fixed count: sums are split by thread
    assert straight.returncode == 0, straight.stderr
    run_dir = tmp_path / "killed"
    proc = start_training(big_archive, run_dir, 4)
    wait_for_epochs(run_dir, 2, proc)
    proc.send_signal(signal.SIGKILL)  # during epoch 3: the checkpoint of epoch 2 must be intact
    proc.wait()
    before = rows(run_dir)
    assert load_checkpoint(run_dir)["epoch"] in (2, 3)
    resumed = run_cli("train", "--resume", run_dir)
    assert resumed.returncode == 0, resumed.stderr
    after = rows(run_dir)
    assert [r["epoch"] for r in after] == ["1", "2", "3", "4"]
    assert after[:2] == before[:2]  # epochs 1-2 kept as they were
    assert_same_weights(tmp_path / "straight", run_dir)
    assert resumed.stdout.count("Epoch ") == 4 - len(before)


def test_ctrl_c_exits_130_and_keeps_finished_epochs(big_archive, tmp_path):
    run_dir = tmp_path / "run"
    proc = start_training(big_archive, run_dir, 50)
    wait_for_epochs(run_dir, 1, proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err
    assert "--resume" in err
    assert load_checkpoint(run_dir)["epoch"] >= 1


def test_resume_of_a_finished_run_says_how_to_train_longer(tree, tmp_path):
    train(data=str(tree), epochs=1, out=tmp_path / "r", quiet=True)
    result = run_cli("train", "--resume", tmp_path / "r")
    assert result.returncode == 0 and "--epochs" in result.stderr and "Epoch" not in result.stdout
    longer = run_cli("train", "--resume", tmp_path / "r", "--epochs", 2)
    assert longer.returncode == 0 and "Epoch  2:" in longer.stdout


def test_settings_resolve_in_one_order_defaults_preset_flags():
    assert resolve_config(None, {}) == TrainConfig()
    tiny = resolve_config("fast-tiny", {"epochs": 3, "lr": None, "preset": "fast-tiny"})  # None: a flag not given
    assert tiny == preset_config("fast-tiny").updated(epochs=3) and tiny.model == "airnet_tiny" and tiny.lr > 0.002
    assert resolve_config("fast-tiny", {"model": "lenet5"}).run_name() == "lenet5"
    with pytest.raises(ConfigError, match="--epochs must be at least 1"):
        resolve_config(None, {"epochs": 0})


def test_a_resume_may_change_how_a_run_trains_not_what(tmp_path):
    saved = resolve_config("fast-tiny", {"data": str(tmp_path), "lr": 0.5}).to_dict()
    more = resolve_config(None, {"epochs": 20, "device": "cpu", "threads": 1, "lr": 0.5}, saved)  # lr: the same
    assert (more.epochs, more.device, more.threads, more.lr, more.model) == (20, "cpu", 1, 0.5, "airnet_tiny")
    again = resolve_config("fast-tiny", {"lookahead_decay": 0.773781, "lr": 0.5000001}, saved)  # as printed
    assert again == TrainConfig.from_dict(saved)
    moved = resolve_config(None, {"data": str(tmp_path / "moved")}, saved)  # where the images are now
    assert moved.data == str(tmp_path / "moved") and moved.lr == 0.5
    for flags, named in [({"lr": 0.1}, "--lr (the run's: 0.5)"), ({"batch_size": 64}, "--batch-size"),
                         ({"augment": False}, "--augment (the run's: on)"), ({"image_size": 32}, "not set"),
                         ({"model": "lenet5"}, "--model"), ({"preset": "fast"}, "--preset")]:
        with pytest.raises(ConfigError, match="keeps its settings") as e:
            resolve_config(flags.get("preset"), flags, saved)
        assert named in str(e.value) and "--epochs" in str(e.value)


def test_the_cli_and_the_api_refuse_a_resume_that_changes_a_setting_and_keep_the_run(tree, tmp_path):
    run = tmp_path / "r"
    train(data=str(tree), epochs=1, out=run, quiet=True)
    before = (run / "checkpoint.pt").read_bytes(), (run / "history.csv").read_text()
    assert_one_line_error(run_cli("train", "--resume", run, "--epochs", 2, "--lr", "0.1"), "--lr", "cannot change")
    assert_one_line_error(run_cli("train", "--resume", run, "--out", tmp_path / "elsewhere"), "--out", "own directory")
    with pytest.raises(ConfigError, match="--keep-prob"):
        tenfold.train(resume=run, epochs=2, keep_prob=0.9, quiet=True)
    assert ((run / "checkpoint.pt").read_bytes(), (run / "history.csv").read_text()) == before
    assert json.loads((run / "config.json").read_text())["config"]["bn_momentum"] == 0.4  # every setting, recorded
    same = run_cli("train", "--resume", run, "--epochs", 2, "--data", tree, "--lr", "0.002", "--quiet")
    assert same.returncode == 0, same.stderr  # the run's own values, said again, are no change
    assert load_checkpoint(run)["epoch"] == 2


def test_a_run_whose_data_moved_resumes_with_data_naming_its_new_place(tmp_path):
    data = make_tree(tmp_path / "photos", n=12)
    run = tmp_path / "run"
    train(data=str(data), epochs=1, out=run, quiet=True)
    moved = data.rename(tmp_path / "moved-photos")
    assert_one_line_error(run_cli("train", "--resume", run, "--epochs", 2), "not there any more", "--data NEW_PLACE")
    other = make_tree(tmp_path / "other", n=10)  # other images are another experiment, not this run
    assert_one_line_error(run_cli("train", "--resume", run, "--epochs", 2, "--data", other), "changed since")
    resumed = run_cli("train", "--resume", run, "--epochs", 2, "--data", moved, "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert load_checkpoint(run)["epoch"] == 2 and load_checkpoint(run)["config"]["data"] == str(moved)


@pytest.mark.parametrize("setting,value,words", [
    ("epochs", 1.5, "--epochs must be a whole number"), ("epochs", True, "--epochs must be a whole number"),
    ("batch_size", 0, "--batch-size must be at least 1"), ("epochs", 10 ** 9, "--epochs must be at most 100000"),
    ("seed", 10 ** 30, "--seed must be at most 4294967295"), ("seed", -1, "--seed must be at least 0"),
    ("lr", 0, "--lr must be in (0, inf)"), ("lr", float("inf"), "--lr must be in (0, inf)"),
    ("lr", float("nan"), "--lr must be in"), ("lr", "0.1", "--lr must be a number"),
    ("weight_decay", 1e308, "--weight-decay must be at most 3.403e+38"), ("bias_lr_scale", 1e308, "--bias-lr-scale"),
    ("keep_prob", 0.0, "--keep-prob must be in (0, 1]"), ("warmup", 1.0, "--warmup must be in (0, 1)"),
    ("lr_start_factor", 0.0, "--lr-start-factor"), ("lr_end_factor", 2.0, "--lr-end-factor must be in [0, 1]"),
    ("bn_momentum", 0.0, "--bn-momentum"), ("whiten_eps", -1.0, "--whiten-eps"), ("image_size", 32.0, "whole"),
    ("augment", "yes", "--augment must be True or False"), ("model", 5, "--model must be text"),
    ("schedule", None, "--schedule must be text"), ("flip", "both", "--flip must be random or alternating"),
    ("tta", 3, "--tta must be 0, 1 or 2"), ("translate", 99, "--translate must be at most 16"),
])
def test_every_setting_is_checked_by_its_fields_kind_choices_and_interval(setting, value, words):
    """Before anything is read or written: a wrong type from the API, a value out of range, an overflow."""
    with pytest.raises(ConfigError, match=re.escape(words)):
        TrainConfig(**{setting: value}).validate()


def test_a_resume_that_trains_nothing_leaves_config_json_as_the_checkpoint_says(tree, tmp_path):
    run = tmp_path / "r"
    train(data=str(tree), epochs=1, out=run, quiet=True)
    before = (run / "config.json").read_text()
    again = run_cli("train", "--resume", run, "--precision", "bf16", "--quiet")  # nothing left to train
    assert again.returncode == 0, again.stderr
    assert (run / "config.json").read_text() == before
    assert json.loads(before)["config"]["precision"] == load_checkpoint(run)["config"]["precision"] == "fp32"
