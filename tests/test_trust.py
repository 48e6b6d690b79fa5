"""A run you can trust: one run per folder, honest evaluation, divergence stopped before it is saved, workers that
run the resolved configuration, self-contained run directories, signals and full disks, and the end of a run."""
import json
import os
import resource
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from helpers import REPO, assert_one_line_error, make_tree, run_cli
from tenfold.fileio import run_lock
from tenfold.training.checkpoint import load_checkpoint


@pytest.fixture
def tree(tmp_path):
    return make_tree(tmp_path / "pets", classes=("cat", "dog"), n=21)  # 42 images: no train/val/test beyond train/


def test_a_locked_run_directory_is_refused_at_once(tree, tmp_path):
    run = tmp_path / "run"
    with run_lock(run):
        result = run_cli("train", "--data", tree, "--out", run, "--epochs", 1)
    assert_one_line_error(result, "in use by another tenfold", f"pid {os.getpid()}")
    assert not (run / "checkpoint.pt").exists()
    # a holder killed outright leaves no stale lock, and its half-written temporary file goes at the next start
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; "
                               "from tenfold.fileio import run_lock; "
                               f"ctx = run_lock(Path({str(run)!r})); ctx.__enter__(); print('held', flush=True); "
                               "time.sleep(60)"], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    (run / ".checkpoint.pt.x1y2.tmp").write_bytes(b"\0" * 1000)
    holder.kill()
    holder.wait()
    result = run_cli("train", "--data", tree, "--out", run, "--epochs", 1, "--quiet")
    assert result.returncode == 0, result.stderr
    assert not list(run.glob(".*.tmp"))


def test_default_run_names_never_collide(tmp_path, monkeypatch):
    from tenfold.config import TrainConfig
    from tenfold.training.run import default_run_dir
    monkeypatch.chdir(tmp_path)
    names = {default_run_dir(TrainConfig()) for _ in range(3)}  # the same second, three runs
    assert len(names) == 3 and all(p.is_dir() for p in names)


def test_out_on_a_folder_of_the_users_own_files_is_refused(tree, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("do not overwrite")
    assert_one_line_error(run_cli("train", "--data", tree, "--out", mine), "holds other files", "thesis.tex")
    assert (mine / "thesis.tex").read_text() == "do not overwrite" and not (mine / "config.json").exists()


def test_evaluation_never_judges_training_images(tree, tmp_path):
    from tenfold.api import evaluate
    result = run_cli("train", "--data", tree, "--epochs", 2, "--out", tmp_path / "run", "--quiet")
    assert result.returncode == 0, result.stderr
    ckpt = load_checkpoint(tmp_path / "run")
    cli = json.loads(run_cli("evaluate", tmp_path / "run", "--json").stdout)
    assert cli["images"] == ckpt["num_val"] == 4 and "validation split" in cli["split"]
    same = json.loads(run_cli("evaluate", tmp_path / "run", "--data", tree, "--json").stdout)
    assert same["images"] == 4                                  # --data the run's own folder: still held out
    api = evaluate(tmp_path / "run")
    assert api.accuracy == cli["accuracy"] and api.images == 4
    text = run_cli("evaluate", tmp_path / "run").stdout
    assert "validation split" in text


@pytest.mark.parametrize("flags, said", [(["--optimizer", "sgd", "--lr", "1e20"], "loss became"),
                                         (["--lr", "1e4"], "training loss became")])
def test_a_diverging_run_stops_before_saving_a_bad_epoch(tree, tmp_path, flags, said):
    run = tmp_path / "run"
    result = run_cli("train", "--data", tree, "--epochs", 4, "--out", run, "--quiet", *flags)
    assert_one_line_error(result, said, "lower --lr")
    if (run / "checkpoint.pt").exists():
        ckpt = load_checkpoint(run)
        assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
        assert all(np.isfinite(r["val_loss"]) and r["loss"] < 100 for r in ckpt["history"])


def test_predict_never_prints_nan(tree, tmp_path):
    run = tmp_path / "run"
    assert run_cli("train", "--data", tree, "--epochs", 1, "--out", run, "--quiet").returncode == 0
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    ckpt["model"] = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
                     for k, v in ckpt["model"].items()}
    torch.save(ckpt, run / "checkpoint.pt")
    result = run_cli("predict", run, next((tree / "train" / "cat").iterdir()))
    assert_one_line_error(result, "diverged")
    assert "nan" not in result.stdout.lower()


def test_workers_run_the_resolved_configuration(monkeypatch):
    """A launched worker takes the launcher's resolved settings as they are, --no-compile included, instead of
    flags spelt again (argparse drops a False)."""
    from tenfold import cli
    from tenfold.config import TrainConfig
    from tenfold.training import run
    seen = {}
    monkeypatch.setattr(run, "train", lambda *a, **k: seen.update(args=a, kwargs=k))
    resolved = TrainConfig(data="/d", epochs=3, compile=False, lr=0.5, preset="fast-tiny").to_dict()
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv(cli.WORKER_CONFIG, json.dumps(resolved))
    args = cli.make_parser().parse_args(["train", "--out", "/r"])
    cli.cmd_train(args)
    from tenfold.presets import resolve_config
    flags = {k: v for k, v in seen["kwargs"].items() if k in resolved}
    assert resolve_config(flags["preset"], flags).to_dict() == resolved and seen["kwargs"]["out"] == "/r"
    args = cli.make_parser().parse_args(["train", "--resume", "/r"])
    cli.cmd_train(args)
    assert seen["kwargs"]["compile"] is False and seen["kwargs"]["epochs"] == 3 and "lr" not in seen["kwargs"]
    parsed = cli.make_parser().parse_args(["train", "--devices", "2", "--no-compile", "--lr", "0.1", "--out", "x"])
    argv = cli.worker_argv(parsed)
    assert argv == ["--out", "x"]  # the settings travel resolved, not as flags


NET = """
import torch
from torch import nn

def net(num_classes=10):
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 16), nn.BatchNorm1d(16), nn.ReLU(),
                         nn.Linear(16, num_classes))
"""


def test_a_run_is_self_contained(tmp_path):
    work = tmp_path / "work"
    make_tree(work / "data", classes=("cat", "dog"), n=11)  # 20 training images: batch 19 leaves a batch of 1
    (work / "net.py").write_text(NET)
    env = {"PYTHONPATH": str(REPO)}
    first = run_cli("train", "--data", "data", "--model", "net.py:net", "--epochs", 1, "--batch-size", 19,
                    "--out", "run", "--quiet", cwd=work, env=env)
    assert first.returncode == 0, first.stderr  # BatchNorm1d never sees a batch of one
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (work / "run").rename(elsewhere / "moved")
    (work / "net.py").unlink()
    moved = elsewhere / "moved"
    resumed = run_cli("train", "--resume", moved, "--epochs", 2, "--quiet", cwd=elsewhere, env=env)
    assert resumed.returncode == 0, resumed.stderr
    predicted = run_cli("predict", moved, next((work / "data" / "train" / "dog").iterdir()), cwd=elsewhere, env=env)
    assert predicted.returncode == 0, predicted.stderr
    assert load_checkpoint(moved)["epoch"] == 2


def test_an_error_in_a_user_model_names_the_file_and_epoch(tree, tmp_path):
    (tmp_path / "bad.py").write_text(NET + """
class Boom(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.inner, self.calls = net(num_classes), 0
    def forward(self, x):
        self.calls += 1
        if self.training and self.calls > 6:
            raise ValueError("shapes do not line up")
        return self.inner(x)

def boom(num_classes=10):
    return Boom(num_classes)
""")
    result = run_cli("train", "--data", tree, "--model", f"{tmp_path / 'bad.py'}:boom", "--batch-size", 8,
                     "--epochs", 3, "--out", tmp_path / "run", "--quiet")
    assert_one_line_error(result, "bad.py:boom", "epoch 2", "shapes do not line up")


def no_bigger_files_than(size: int):
    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG, as a full disk does
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
    return limit


def test_a_checkpoint_that_cannot_be_written_is_one_line_and_leaves_nothing(tree, tmp_path):
    run = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "tenfold", "train", "--data", str(tree), "--epochs", "1",
                             "--out", str(run), "--quiet"], cwd=REPO, capture_output=True, text=True,
                            preexec_fn=no_bigger_files_than(400_000))  # the data fits, the checkpoint not
    assert_one_line_error(result, "could not save epoch 1", "start the run again")
    assert not list(run.glob(".*.tmp")) and not (run / "checkpoint.pt").exists()


def test_a_signal_that_breaks_a_write_still_exits_as_a_signal(monkeypatch, capsys):
    from tenfold import cli

    def broken_by_sigterm(args):
        cli.SIGNALLED.append(signal.SIGTERM)
        raise RuntimeError("[enforce fail at inline_container.cc:778] . unexpected pos 1984 vs 1872")
    monkeypatch.setattr(cli, "SIGNALLED", [])
    monkeypatch.setitem(cli.COMMANDS, "models", broken_by_sigterm)
    assert cli.main(["models"]) == 143
    assert "terminated" in capsys.readouterr().err


def test_resuming_past_a_one_cycle_schedule_says_what_happens(tree, tmp_path):
    run = tmp_path / "run"
    assert run_cli("train", "--data", tree, "--epochs", 2, "--schedule", "onecycle", "--out", run,
                   "--quiet").returncode == 0
    result = run_cli("train", "--resume", run, "--epochs", 4)
    assert result.returncode == 0 and "continue at its final rate" in result.stderr
    lrs = [r["lr"] for r in load_checkpoint(run)["history"]]
    assert lrs[2] == pytest.approx(lrs[1]) and lrs[3] == pytest.approx(lrs[1])  # no restart at 10x


def test_resuming_on_changed_data_is_refused(tree, tmp_path):
    run = tmp_path / "run"
    assert run_cli("train", "--data", tree, "--epochs", 1, "--out", run, "--quiet").returncode == 0
    (tree / "train" / "cat" / "0000.png").unlink()
    assert_one_line_error(run_cli("train", "--resume", run, "--epochs", 2, "--quiet"), "changed since the run started",
                          "38 training / 4 validation images then, 37 / 4 now")
    assert load_checkpoint(run)["epoch"] == 1


def test_ctrl_c_names_the_real_run_directory(tmp_path):
    data = make_tree(tmp_path / "d", classes=("cat", "dog"), n=400)
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "tenfold", "train", "--data", str(data), "--epochs", "500",
                             "--out", str(run), "--batch-size", "8"], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().startswith("Epoch  1")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert f"tenfold train --resume {run}" in err and "RUN_DIR" not in err


def test_abbreviated_flags_are_refused_with_a_suggestion(tree):
    result = run_cli("train", "--data", tree, "--epoch", 2)
    assert result.returncode == 2 and "did you mean --epochs?" in result.stderr
    assert_one_line_error(result, "--epoch")


def test_a_run_ends_with_a_summary_and_the_report_labels_tta(tree, tmp_path):
    run = tmp_path / "run"
    result = run_cli("train", "--data", tree, "--epochs", 2, "--tta", 1, "--out", run)
    assert result.returncode == 0, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("tenfold: done: validation accuracy") and "with test-time augmentation" in last
    assert f"tenfold evaluate {run}" in last and f"tenfold predict {run} IMAGE" in last
    assert run_cli("report", run).returncode == 0
    html = (run / "report.html").read_text()
    assert "final validation accuracy, with test-time augmentation" in html
    assert "best validation accuracy (of the epochs, without test-time augmentation)" in html


def test_more_workers_than_images(tmp_path):
    data = make_tree(tmp_path / "d", classes=("a", "b"), n=2)
    (data / "train" / "b" / "0001.png").unlink()           # 2 training images; 1 validation image
    too_many = run_cli("train", "--data", data, "--devices", 3, "--device", "cpu", "--batch-size", 6, "--epochs", 1,
                       "--out", tmp_path / "r3", "--quiet")
    assert_one_line_error(too_many, "2 training images cannot be shared by 3 workers")
    two = run_cli("train", "--data", data, "--devices", 2, "--device", "cpu", "--batch-size", 2, "--epochs", 1,
                  "--out", tmp_path / "r2", "--quiet")      # one worker's share of the validation image is empty
    assert two.returncode == 0, two.stderr
    assert load_checkpoint(tmp_path / "r2")["history"][0]["val_accuracy"] in (0.0, 1.0)


def test_evaluation_leaves_out_images_the_run_trained_on_wherever_they_come_from(tree, tmp_path):
    run = tmp_path / "run"
    assert run_cli("train", "--data", tree, "--epochs", 1, "--out", run, "--quiet").returncode == 0
    held = load_checkpoint(run)["num_val"]
    sub = json.loads(run_cli("evaluate", run, "--data", tree / "train", "--json").stdout)   # its own train/ folder
    assert sub["images"] == held and "less 38 image(s) the run trained on" in sub["split"]
    import shutil
    shutil.copytree(tree / "train" / "cat", tmp_path / "copy" / "cat")
    copied = json.loads(run_cli("evaluate", run, "--data", tmp_path / "copy", "--json").stdout)  # a copy of cat/
    assert copied["images"] == 2 and "less 19 image(s)" in copied["split"]   # only its 2 held-out images count
    only_trained = tmp_path / "trained"
    (only_trained / "cat").mkdir(parents=True)
    shutil.copy(tree / "train" / "cat" / "0000.png", only_trained / "cat")
    assert_one_line_error(run_cli("evaluate", run, "--data", only_trained), "were trained on by this run")
    from helpers import class_image
    for i in range(5):  # the data changed: 26 cats hold out 3, the last of them trained on before
        class_image(0, 900 + i).save(tree / "train" / "cat" / f"!new{i}.png")
    again = json.loads(run_cli("evaluate", run, "--json").stdout)
    assert "less 1 image(s) the run trained on" in again["split"] and again["images"] == held
    assert_one_line_error(run_cli("train", "--resume", run, "--epochs", 2, "--quiet"), "changed since")


def test_rough_edges_of_a_users_first_hour(tree, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert_one_line_error(run_cli("train", "--data", tree, "--out", afile, "--quiet"), "cannot hold a run")
    assert_one_line_error(run_cli("train", "--resume", "", "--quiet"), "--resume needs a value")
    assert_one_line_error(run_cli("train", "--data", tree, "--lr", "inf", "--quiet"), "--lr must be in (0, inf)")
    assert run_cli("train", "--epo", 2).stderr.count("did you mean --epochs?") == 1
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    run_cli("train", "--data", tree, "--out", mine, "--quiet")
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]          # no lock left in the user's folder
    run = tmp_path / "no val"
    result = run_cli("train", "--data", tree, "--epochs", 1, "--val-split", 0, "--report", "--out", run)
    assert result.returncode == 0 and "no report" in result.stderr
    assert f"tenfold evaluate '{run}'" in result.stderr
