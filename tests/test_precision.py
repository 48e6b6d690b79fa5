"""Arithmetic and compilation: --precision auto|fp32|bf16|fp16 (fp16 with loss scaling), --compile, and a loss
that stops being finite."""
import math
import shutil

import pytest
import torch

from helpers import assert_one_line_error, make_tree, run_cli
from tenfold.errors import ConfigError
from tenfold.training.checkpoint import load_checkpoint
from tenfold.training.device import cpu_has, resolve_precision
from tenfold.training.run import train

ZEN4 = "flags\t\t: fpu vme sse avx2 avx512f avx512_bf16 avx512vl vaes"
SAPPHIRE_RAPIDS = "flags\t\t: fpu avx512f avx512_fp16 amx_bf16 amx_tile amx_int8"
ZEN3 = "flags\t\t: fpu vme sse avx2 fma"


@pytest.fixture
def pets(tmp_path):
    return make_tree(tmp_path / "pets", n=100, splits=("train", "test"))


def test_cpu_features_are_read_from_the_flags():
    assert cpu_has("bf16", ZEN4) and not cpu_has("fp16", ZEN4)
    assert cpu_has("bf16", SAPPHIRE_RAPIDS) and cpu_has("fp16", SAPPHIRE_RAPIDS)
    assert not cpu_has("bf16", ZEN3) and not cpu_has("fp16", ZEN3)
    assert not cpu_has("bf16", "flags: avx512_bf16x")  # a whole flag, not a prefix


@pytest.mark.parametrize("has_bf16,expected", [(True, "bf16"), (False, "fp32")])
def test_auto_on_a_cpu_takes_bf16_only_where_it_has_bf16_units(monkeypatch, has_bf16, expected):
    monkeypatch.setattr("tenfold.training.device.cpu_has", lambda kind: has_bf16 and kind == "bf16")
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == expected
    assert [resolve_precision(p, cpu) for p in ("fp32", "bf16", "fp16")] == ["fp32", "bf16", "fp16"]  # as asked
    assert resolve_precision("auto", torch.device("mps")) == "fp32"


@pytest.mark.parametrize("capability,auto", [((7, 5), "fp16"), ((7, 0), "fp16"), ((8, 0), "bf16"), ((9, 0), "bf16")])
def test_auto_on_a_gpu_takes_bf16_from_ampere_on_and_fp16_before(monkeypatch, capability, auto):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")
    gpu = torch.device("cuda")
    assert resolve_precision("auto", gpu) == auto
    assert resolve_precision("fp16", gpu) == "fp16" and resolve_precision("fp32", gpu) == "fp32"
    if auto == "fp16":  # no bf16 units: refused, not emulated slowly
        with pytest.raises(ConfigError, match=r"Tesla T4 \(compute capability 7\.\d\) has no bf16 units"):
            resolve_precision("bf16", gpu)
    else:
        assert resolve_precision("bf16", gpu) == "bf16"


def test_fp16_trains_with_a_loss_scale_that_survives_a_resume(pets, tmp_path):
    args = ["--data", pets, "--batch-size", 90, "--seed", 3]  # 270 training images: 3 steps an epoch
    result = run_cli("train", *args, "--precision", "fp16", "--epochs", 4, "--out", tmp_path / "straight")
    assert result.returncode == 0, result.stderr
    assert "lenet5 on CPU, " in result.stderr and ", fp16 autocast;" in result.stderr
    assert ("has no fp16 units, so fp16 is emulated" in result.stderr) == (not cpu_has("fp16"))
    straight = load_checkpoint(tmp_path / "straight")
    assert straight["environment"]["precision"] == "fp16" and straight["config"]["precision"] == "fp16"
    assert straight["scaler"]["scale"] > 1 and straight["scaler"]["_growth_tracker"] == 12  # no step skipped
    assert straight["history"][-1]["val_accuracy"] > 0.9  # three noisy colours: fp16 learns them

    assert run_cli("train", *args, "--precision", "fp16", "--epochs", 2, "--out", tmp_path / "cut").returncode == 0
    resumed = run_cli("train", "--resume", tmp_path / "cut", "--epochs", 4)
    assert resumed.returncode == 0 and "ignoring" not in resumed.stderr, resumed.stderr
    cut = load_checkpoint(tmp_path / "cut")
    assert cut["scaler"] == straight["scaler"]  # the growth tracker continued from the checkpoint, not from 0
    assert all(torch.equal(cut["model"][k], straight["model"][k]) for k in straight["model"])

    # how a run computes may change on resume (another machine); what it trains may not
    more = run_cli("train", "--resume", tmp_path / "cut", "--epochs", 5, "--precision", "fp32")
    assert more.returncode == 0 and "warning" not in more.stderr and "autocast" not in more.stderr, more.stderr
    after = load_checkpoint(tmp_path / "cut")
    assert after["config"]["precision"] == "fp32" and "scaler" not in after and after["epoch"] == 5


def test_a_bf16_run_evaluates_in_what_the_device_does_best(pets, tmp_path, monkeypatch):
    from tenfold.training import infer
    train(data=str(pets), epochs=1, out=tmp_path / "run", quiet=True, precision="bf16", batch_size=90)
    assert infer.load_trained(tmp_path / "run", "cpu").precision == resolve_precision("auto", torch.device("cpu"))
    monkeypatch.setattr("tenfold.training.device.cpu_has", lambda kind: False)
    assert infer.load_trained(tmp_path / "run", "cpu").precision == "fp32"
    train(data=str(pets), epochs=1, out=tmp_path / "fp32", quiet=True, batch_size=90)
    assert infer.load_trained(tmp_path / "fp32", "cpu").precision == "fp32"


FAILS_IN_EPOCH_2 = """
import torch
from torch import nn

class FailsLater(nn.Module):  # a net whose outputs turn to NaN from the 4th training step (epoch 2 at 3 steps)
    def __init__(self, num_classes):
        super().__init__()
        self.fc = nn.Linear(3 * 32 * 32, num_classes)
        self.register_buffer("steps", torch.zeros(()))

    def forward(self, x):
        if self.training:
            self.steps += 1
        out = self.fc(x.flatten(1))
        return out * float("nan") if self.training and self.steps > 3 else out

def net(num_classes):
    return FailsLater(num_classes)
"""


def test_a_diverging_run_stops_with_one_line_and_keeps_its_last_good_epoch(pets, tmp_path):
    result = run_cli("train", "--data", pets, "--optimizer", "sgd", "--lr", 1e9, "--out", tmp_path / "wild",
                     "--quiet")
    assert_one_line_error(result, "epoch 1: the training loss became nan", "no epoch was saved", "a lower --lr")
    assert not (tmp_path / "wild" / "checkpoint.pt").exists()

    (tmp_path / "net.py").write_text(FAILS_IN_EPOCH_2)
    result = run_cli("train", "--data", pets, "--model", f"{tmp_path / 'net.py'}:net", "--batch-size", 90,
                     "--precision", "bf16", "--epochs", 3, "--out", tmp_path / "later", "--quiet")
    assert_one_line_error(result, "epoch 2: the training loss became nan", "the checkpoint keeps epoch 1",
                          "--precision fp32")
    kept = load_checkpoint(tmp_path / "later")
    assert kept["epoch"] == 1 and all(torch.isfinite(v).all() for v in kept["model"].values())
    assert len(kept["history"]) == 1 and math.isfinite(kept["history"][0]["loss"])


@pytest.mark.skipif(shutil.which("g++") is None, reason="torch.compile on the CPU needs a C++ compiler (make test-deps)")
def test_compiled_training_learns_as_eager_and_saves_plain_weights(pets, tmp_path):
    """bf16 and compiled: the airnets' global max-pool once made every gradient non-finite here."""
    settings = dict(data=str(pets), preset="fast-tiny", epochs=2, batch_size=90, precision="bf16", quiet=True)
    from tenfold.api import train as api_train
    eager = api_train(out=str(tmp_path / "eager"), **settings)
    compiled = api_train(out=str(tmp_path / "compiled"), compile=True, **settings)
    for e, c in zip(eager.history["loss"], compiled.history["loss"], strict=True):
        assert math.isfinite(c) and c == pytest.approx(e, rel=0.05)
    assert compiled.history["val_accuracy"][-1] == pytest.approx(eager.history["val_accuracy"][-1], abs=0.05)
    ckpt = load_checkpoint(tmp_path / "compiled")
    assert ckpt["config"]["compile"] is True
    assert not any("_orig_mod" in k or k.startswith("module.") for k in ckpt["model"])
    # the same weights load into a plain model: evaluate and resume without compiling
    assert run_cli("evaluate", tmp_path / "compiled", "--json").returncode == 0
    resumed = run_cli("train", "--resume", tmp_path / "compiled", "--epochs", 3, "--no-compile")
    assert resumed.returncode == 0 and ", compiled;" not in resumed.stderr, resumed.stderr
    assert load_checkpoint(tmp_path / "compiled")["config"]["compile"] is False
    # a machine where compiling fails (here: no C++ compiler for the CPU code): one line, the checkpoint intact
    broken = {"CXX": str(tmp_path / "no-such-g++"), "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")}
    failed = run_cli("train", "--resume", tmp_path / "compiled", "--epochs", 4, "--compile", "--quiet", env=broken)
    assert_one_line_error(failed, "--compile failed on this machine", "no working c++ compiler", "--no-compile")
    after = load_checkpoint(tmp_path / "compiled")
    assert after["epoch"] == 3 and after["config"]["compile"] is False


def test_a_cpu_capped_below_avx512_has_no_bf16_units_for_pytorch():
    from tenfold.training.device import capped_below_avx512
    assert capped_below_avx512({"ATEN_CPU_CAPABILITY": "avx2"}) and capped_below_avx512({"ONEDNN_MAX_CPU_ISA": "AVX2"})
    assert not capped_below_avx512({}) and not capped_below_avx512({"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_AMX"})
