"""Every bad input: one line on stderr, a non-zero exit, no traceback, and nothing saved damaged."""
import hashlib
import subprocess
import sys
import shutil
import tarfile

import pytest
import torch

from helpers import REPO, assert_one_line_error, make_tree, run_cli
from tenfold.training.run import train


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return make_tree(tmp_path_factory.mktemp("cli") / "data", n=10, splits=("train", "test"))


@pytest.fixture(scope="module")
def finished_run(tree, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "run"
    train(data=str(tree), epochs=1, out=out, quiet=True)
    return out


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("flags,words", [
    (["--epochs", "0"], ["--epochs", "at least 1"]),
    (["--batch-size", "0"], ["--batch-size"]),
    (["--keep-prob", "0"], ["--keep-prob", "(0, 1]"]),
    (["--seed", "99999999999999999999999"], ["--seed", "at most"]),
    (["--weight-decay", "1e308", "--optimizer", "sgd"], ["--weight-decay", "a float32"]),
    (["--keep-prob", "1.5"], ["--keep-prob"]),
    (["--val-split", "1"], ["--val-split"]),
    (["--lr", "-1"], ["--lr"]),
    (["--model", "resnet9000"], ["unknown model", "lenet5"]),
    (["--model", "nowhere.py:net"], ["nowhere.py"]),
    (["--device", "cuda"], ["cuda"]),
    (["--device", "tpu"], ["--device"]),
    (["--epochs", "three"], ["--epochs", "three"]),
    (["--optimizer", "rmsprop"], ["--optimizer"]),
])
def test_bad_flags(tree, tmp_path, flags, words):
    result = run_cli("train", "--data", tree, "--out", tmp_path / "run", *flags)
    assert_one_line_error(result, *words)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_bad_data(tmp_path):
    cases = {}
    cases["missing"] = tmp_path / "no-such.tar.gz"
    (tmp_path / "junk.tar.gz").write_bytes(b"\x1f\x8b\x08\x00" + bytes(range(256)) * 8)
    cases["corrupt"] = tmp_path / "junk.tar.gz"
    tree = make_tree(tmp_path / "t", n=30)
    with tarfile.open(tmp_path / "full.tar.gz", "w:gz") as t:
        t.add(tree, arcname=".")
    body = (tmp_path / "full.tar.gz").read_bytes()
    (tmp_path / "cut.tar.gz").write_bytes(body[: len(body) // 2])
    cases["truncated"] = tmp_path / "cut.tar.gz"
    empty = make_tree(tmp_path / "e", n=3)
    (empty / "train" / "owl").mkdir()
    cases["empty class"] = empty
    broken = tmp_path / "b" / "train" / "cat"
    broken.mkdir(parents=True)
    (broken / "x.jpg").write_bytes(b"not a jpeg")
    cases["undecodable"] = tmp_path / "b"
    words = {"missing": ["no such file"], "corrupt": ["corrupt"], "truncated": ["cut.tar.gz"],
             "empty class": ["owl", "no images"], "undecodable": ["none of the 1 files", "not an image"]}
    for name, path in cases.items():
        result = run_cli("train", "--data", path, "--epochs", "1", "--out", tmp_path / name.replace(" ", "-"))
        assert_one_line_error(result, *words[name])


def test_resume_on_a_folder_that_is_not_a_run(tmp_path):
    assert_one_line_error(run_cli("train", "--resume", tmp_path), "not a tenfold run")
    assert_one_line_error(run_cli("train", "--resume", tmp_path / "nope"), "no such run directory")
    assert_one_line_error(run_cli("evaluate", tmp_path), "not a tenfold run")


def test_out_that_already_holds_a_run_is_refused_untouched(tree, finished_run):
    before = digest(finished_run / "checkpoint.pt")
    result = run_cli("train", "--data", tree, "--out", finished_run, "--epochs", "1")
    assert_one_line_error(result, "already holds a run", "--resume")
    assert digest(finished_run / "checkpoint.pt") == before


def test_checkpoint_that_does_not_match_the_model(finished_run, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    ckpt = torch.load(finished_run / "checkpoint.pt", weights_only=True)
    ckpt["model"]["0.0.weight"] = torch.zeros(8, 3, 5, 5)
    torch.save(ckpt, bad / "checkpoint.pt")
    before = digest(bad / "checkpoint.pt")
    assert_one_line_error(run_cli("train", "--resume", bad, "--epochs", "3"), "does not match")
    assert_one_line_error(run_cli("evaluate", bad), "does not match")
    assert digest(bad / "checkpoint.pt") == before


def test_tenfold_debug_shows_what_caused_an_error(finished_run, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(finished_run, bad)
    (bad / "checkpoint.pt").write_bytes(b"not a checkpoint")
    plain = run_cli("predict", bad, "x.png")
    assert_one_line_error(plain, "corrupt")
    debug = run_cli("predict", bad, "x.png", env={"TENFOLD_DEBUG": "1"})
    assert debug.returncode == 1 and debug.stderr.splitlines()[-1] == plain.stderr.strip()
    assert "Traceback" in debug.stderr and "During handling of the above exception" in debug.stderr
    assert "CheckpointError" in debug.stderr and "UnpicklingError" in debug.stderr


def test_corrupt_checkpoint(finished_run, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "checkpoint.pt").write_bytes((finished_run / "checkpoint.pt").read_bytes()[:5000])
    assert_one_line_error(run_cli("train", "--resume", bad), "corrupt")
    assert_one_line_error(run_cli("predict", bad, "x.png"), "corrupt")


def test_evaluate_and_predict(tree, finished_run, tmp_path):
    result = run_cli("evaluate", finished_run)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1].startswith("Test Accuracy: ")
    assert "Confusion matrix" in result.stdout and "cat" in result.stdout
    as_json = run_cli("evaluate", finished_run, "--json")
    import json
    data = json.loads(as_json.stdout)
    assert data["images"] == 30 and len(data["confusion_matrix"]) == 3
    assert sum(map(sum, data["confusion_matrix"])) == 30
    image = tree / "test" / "dog" / "0001.png"
    (tmp_path / "note.txt").write_text("hello")
    pred = run_cli("predict", finished_run, image, tmp_path / "note.txt")
    assert pred.returncode == 1 and "note.txt" in pred.stderr and "Traceback" not in pred.stderr
    line = pred.stdout.strip()
    assert line.startswith(f"{image}: ") and line.count("%") == 3
    probs = [float(tok.rstrip("%")) for tok in line.split() if tok.endswith("%")]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 100.1


@pytest.mark.parametrize("command", ["evaluate", "predict", "report", "export", "serve"])
def test_a_wrong_run_path_is_answered_before_torch_loads(command, tmp_path):
    """A typo in the run's path costs no torch import (seconds on a laptop): the answer comes at once."""
    (tmp_path / "notes.txt").write_text("x")
    extra = ["image.jpg"] if command == "predict" else []
    for path, said in [(tmp_path / "missing", "no such run directory"), (tmp_path / "notes.txt", "is a file"),
                       (tmp_path, "is not a tenfold run")]:
        code = ("import sys; from tenfold.cli import main; code = main(sys.argv[1:]); "
                "print(code, 'torch' in sys.modules)")
        result = subprocess.run([sys.executable, "-c", code, command, str(path), *extra], capture_output=True,
                                text=True, cwd=REPO)
        assert result.stdout.split() == ["1", "False"], result.stderr
        assert_one_line_error(subprocess.CompletedProcess([], 1, "", result.stderr), said)


def test_run_and_out_paths_that_are_not_what_they_seem(tmp_path, monkeypatch):
    """Found by trying: each was a misleading line or "unexpected PermissionError" before."""
    from pathlib import Path

    from tenfold.errors import CheckpointError, TenfoldError
    from tenfold.export.target import check_out
    from tenfold.fileio import check_run_dir
    (tmp_path / "run" / "checkpoint.pt").mkdir(parents=True)
    (tmp_path / "broken").symlink_to(tmp_path / "nothing")
    cases = [("", "the run directory is empty"), (tmp_path / "run", "its checkpoint.pt is not a file")]
    for path, said in cases:
        with pytest.raises(CheckpointError, match=said):
            check_run_dir(path)
    with pytest.raises(TenfoldError, match="broken is a broken link, not a folder"):
        check_out(tmp_path / "broken" / "x.onnx")
    monkeypatch.setattr("os.access", lambda path, mode: False)  # a folder this user may not write in
    with pytest.raises(TenfoldError, match=f"cannot write in {tmp_path} \\(permission denied\\)"):
        check_out(tmp_path / "new" / "x.onnx")

    def denied(self):
        raise PermissionError(13, "Permission denied", str(self))
    monkeypatch.setattr(Path, "is_file", denied)  # a folder this user may not enter
    with pytest.raises(CheckpointError, match="cannot read it \\(Permission denied\\)"):
        check_run_dir(tmp_path / "run")


def test_an_unreadable_checkpoint_is_not_called_corrupt(finished_run, monkeypatch):
    from tenfold.errors import CheckpointError
    from tenfold.training import checkpoint

    def denied(*a, **k):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(checkpoint.torch, "load", denied)
    with pytest.raises(CheckpointError, match="cannot read it \\(Permission denied\\)"):
        checkpoint.load_checkpoint(finished_run)
