"""The CPU fast path chosen by measurement: the timing, the choice, its cache, and what a run records of it."""

import pytest
import torch

from helpers import make_tree, run_cli
from tenfold.kernels import build
from tenfold.models import create_model
from tenfold.training import fastpath
from tenfold.training.checkpoint import load_checkpoint

needs_kernels = pytest.mark.skipif(not build.available(), reason="no C compiler for tenfold's kernels")


@pytest.fixture(autouse=True)
def new_machine(tenfold_home):
    """Nothing measured yet, as on a new machine: the tests here count what is measured and what recalled."""
    (tenfold_home / fastpath.CACHE).unlink(missing_ok=True)


@pytest.fixture
def tree(tmp_path):
    return make_tree(tmp_path / "data", n=12)


class FakeClock:
    """A timer that each candidate advances by its own cost, so 'measured' times are known exactly."""

    def __init__(self):
        self.now, self.calls = 0.0, []

    def __call__(self):
        return self.now

    def candidate(self, name, costs):
        costs = iter(costs)

        def run():
            self.calls.append(name)
            self.now += next(costs)
        return run


def test_measure_takes_the_median_of_interleaved_rounds():
    clock = FakeClock()
    candidates = {"a": clock.candidate("a", [9.0, 1.0, 5.0, 1.2, 0.9]),  # a warm-up, then four rounds
                  "b": clock.candidate("b", [9.0, 2.0, 0.1, 2.2, 2.1])}
    seconds = fastpath.measure(candidates, rounds=4, warmup=1, timer=clock)
    assert seconds == {"a": pytest.approx(1.1), "b": pytest.approx(2.05)}  # one slow round moves no median
    assert clock.calls == ["a", "b"] + ["a", "b"] * 4                     # warm-ups, then turn by turn
    assert fastpath.fastest(seconds) == "a"


def test_a_hopeless_candidate_runs_once():
    clock = FakeClock()
    candidates = {"fp32": clock.candidate("fp32", [1.0, 1.1, 0.9, 1.0]),
                  "bf16": clock.candidate("bf16", [60.0])}  # emulated: a second call would fail the test
    seconds = fastpath.measure(candidates, rounds=3, warmup=1, timer=clock)
    assert seconds == {"fp32": pytest.approx(1.0), "bf16": 60.0} and clock.calls.count("bf16") == 1


def test_a_cold_first_call_is_not_taken_for_the_candidates_speed():
    """The fused kernel's first call in a process took 336 ms here, its next ones 3 ms, PyTorch's 5 ms: judged
    on its first call it was dropped as hopeless, and the slower path was cached for every later run."""
    clock = FakeClock()
    candidates = {"fused": clock.candidate("fused", [0.336, 0.003, 0.0028, 0.0031, 0.003]),
                  "pytorch": clock.candidate("pytorch", [0.005, 0.0052, 0.0049, 0.005])}
    seconds = fastpath.measure(candidates, rounds=3, warmup=1, timer=clock)
    assert fastpath.fastest(seconds) == "fused" and seconds["fused"] == pytest.approx(0.003)
    slow = {"fp32": clock.candidate("fp32", [0.2, 0.2, 0.2, 0.2]), "bf16": clock.candidate("bf16", [0.9, 0.95])}
    seconds = fastpath.measure(slow, rounds=3, warmup=1, timer=clock)  # tried again, still hopeless: no rounds
    assert seconds == {"fp32": pytest.approx(0.2), "bf16": pytest.approx(0.9)}


def test_a_choice_cached_from_a_cold_call_is_measured_again_once():
    old = {"chosen": "pytorch", "seconds": {"fused": 0.336, "pytorch": 0.005}, "date": "2026-11-30"}  # method 1
    sound = {"chosen": "fused", "seconds": {"fused": 0.003, "pytorch": 0.005}, "date": "2026-11-30"}
    cache, measured = {"a": old, "b": sound}, []
    remeasure = lambda: measured.append(1) or {"fused": 0.003, "pytorch": 0.005}  # noqa: E731
    assert fastpath.cached_choice(cache, "a", "block 1", remeasure).how == "measured"
    assert fastpath.cached_choice(cache, "a", "block 1", remeasure).how == "cached"  # once
    assert fastpath.cached_choice(cache, "b", "block 2", remeasure).how == "cached"  # an old, sound one stays
    hopeless = lambda: measured.append(1) or {"fp32": 0.2, "bf16": 0.9}  # noqa: E731 (retried and still slow)
    fastpath.cached_choice(cache, "c", "precision", hopeless)
    assert fastpath.cached_choice(cache, "c", "precision", hopeless).how == "cached" and len(measured) == 2


@needs_kernels
@pytest.mark.slow  # real kernels, timed in a new process
def test_a_real_run_takes_the_fused_kernel_where_it_is_faster():
    """The real kernels at LeNet-5's first block, cold in a new process: the choice agrees with a warm timing."""
    code = ("import time, torch; from tenfold.kernels import load_library; load_library(); "
            "from tenfold.models import create_model; from tenfold.training import fastpath as f; "
            "m = create_model('lenet5').to(memory_format=torch.channels_last); "
            "x = torch.randn(64, 3, 32, 32).contiguous(memory_format=torch.channels_last); "
            "_, probe, xi = f.conv_block_inputs(m, x)[0]; "
            "steps = {p: f.block_step(probe, xi, p) for p in ('fused', 'pytorch')}; "
            "chosen = f.fastest(f.measure(steps)); "
            "warm = {p: min(f.timed(s, 3, time.perf_counter) for _ in range(5)) for p, s in steps.items()}; "
            "print(chosen, warm['fused'] / warm['pytorch'])")
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.split()
    chosen, ratio = out[0], float(out[1])
    assert chosen == ("fused" if ratio < 0.8 else chosen)  # clearly faster warm: it must be chosen cold too


def test_a_cached_choice_is_not_measured_again_and_a_damaged_one_is():
    cache, measured = {}, []

    def measure():
        measured.append(1)
        return {"fused": 0.5, "pytorch": 1.0}
    first = fastpath.cached_choice(cache, "key", "block 1", measure)
    second = fastpath.cached_choice(cache, "key", "block 1", measure)
    assert (first.chosen, first.how, second.chosen, second.how) == ("fused", "measured", "fused", "cached")
    assert len(measured) == 1 and first.speedup() == pytest.approx(2.0)
    cache["key"] = {"chosen": "nonsense", "seconds": {}}
    assert fastpath.cached_choice(cache, "key", "block 1", measure).how == "measured"


def fake_measure(times):
    """fastpath.measure replaced: fixed seconds per candidate name, and a record of what was measured."""
    asked = []

    def measure(candidates, rounds=5, warmup=1, timer=None):
        asked.append(sorted(candidates))
        for fn in candidates.values():
            fn()  # each candidate still runs once: it must work
        return {name: times[name] for name in candidates}
    return measure, asked


@needs_kernels
def test_each_block_takes_the_faster_path_and_training_is_unchanged(monkeypatch):
    measure, asked = fake_measure({"fused": 1.0, "pytorch": 2.0})
    monkeypatch.setattr(fastpath, "measure", measure)
    torch.manual_seed(0)
    model = create_model("lenet5").to(memory_format=torch.channels_last)
    weights = [p.detach().clone() for p in model.parameters()]
    rng = torch.get_rng_state()
    chosen = fastpath.choose(model, 8, (32, 32), 10, "fp32", tune_precision=False)
    assert [(c.what, c.chosen, c.how) for c in chosen.choices] == [("block 1", "fused", "measured"),
                                                                   ("block 2", "fused", "measured")]
    assert [m.fast_path for m in model.modules() if hasattr(m, "fast_path")] == ["fused", "fused"]
    assert torch.equal(torch.get_rng_state(), rng)  # measuring drew no random numbers of the run's
    assert all(torch.equal(p, q) and p.grad is None for p, q in zip(model.parameters(), weights))
    assert "block 1 fused 2.00x" in chosen.summary() and chosen.summary().endswith("(measured)")

    again = fastpath.choose(model, 8, (32, 32), 10, "fp32", tune_precision=False)  # from $TENFOLD_HOME's cache
    assert [c.how for c in again.choices] == ["cached", "cached"] and len(asked) == 2

    measure, asked = fake_measure({"fused": 3.0, "pytorch": 2.0})
    monkeypatch.setattr(fastpath, "measure", measure)
    slower = fastpath.choose(model, 16, (32, 32), 10, "fp32", tune_precision=False)  # another shape: measured
    assert [c.chosen for c in slower.choices] == ["pytorch", "pytorch"]
    import tenfold.kernels.fused as fused
    calls = []
    monkeypatch.setattr(fused.ConvPoolReLU, "apply", lambda *a: calls.append(1))
    model(torch.randn(16, 3, 32, 32).contiguous(memory_format=torch.channels_last))
    assert calls == []  # PyTorch's ops, as chosen


@needs_kernels
@pytest.mark.parametrize("setting,path", [("1", "fused"), ("0", None)])
def test_tenfold_kernels_still_forces(monkeypatch, setting, path):
    monkeypatch.setenv("TENFOLD_KERNELS", setting)
    monkeypatch.setattr(fastpath, "measure", lambda *a, **k: pytest.fail("a forced choice measures nothing"))
    model = create_model("lenet5")
    chosen = fastpath.choose(model, 8, (32, 32), 10, "fp32", tune_precision=False)
    assert [(c.chosen, c.how) for c in chosen.choices] == ([(path, "forced")] * 2 if path else [])


def test_auto_precision_keeps_the_faster_arithmetic(monkeypatch):
    for times, want in [({"fp32": 1.0, "bf16": 0.5, "fused": 1, "pytorch": 2}, "bf16"),
                        ({"fp32": 0.5, "bf16": 1.0, "fused": 1, "pytorch": 2}, "fp32")]:
        measure, _ = fake_measure(times)
        monkeypatch.setattr(fastpath, "measure", measure)
        model = create_model("airnet_tiny", image_shape=(16, 16))
        chosen = fastpath.choose(model, 4, (16, 16), 10, "bf16", tune_precision=True)
        assert chosen.precision == want and chosen.choices[-1].what == "precision"
        (fastpath.tenfold_home() / fastpath.CACHE).unlink()  # the next case measures afresh


@needs_kernels
def test_a_run_shows_and_records_its_fast_path(tree, tmp_path):
    run = tmp_path / "run"
    result = run_cli("train", "--data", tree, "--epochs", "1", "--batch-size", "16", "--threads", "2", "--out", run)
    assert result.returncode == 0, result.stderr
    assert "fast path: block 1 " in result.stderr and "(measured)" in result.stderr
    env = load_checkpoint(run)["environment"]
    assert env["kernel_isa"] in build.available_isas()
    assert {v["chosen"] for k, v in env["fast_path"].items() if k != "machine"} <= {"fused", "pytorch"}
    assert "torch " in env["fast_path"]["machine"]
    again = run_cli("train", "--data", tree, "--epochs", "1", "--batch-size", "16", "--threads", "2",
                    "--out", tmp_path / "again")
    assert "(cached)" in again.stderr
    resumed = run_cli("train", "--resume", run, "--epochs", "2", "--threads", "2")
    assert "(recorded)" in resumed.stderr  # a resume on the same machine keeps the run's own choices
    cache = fastpath.load_cache()
    assert len(cache) == 2 and all(v["chosen"] in ("fused", "pytorch") for v in cache.values())


def test_measuring_leaves_weights_buffers_and_random_state_alone():
    torch.manual_seed(0)
    model = create_model("airnet_tiny", image_shape=(16, 16))  # BatchNorm: running statistics to keep
    state = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    fastpath.choose(model, 8, (16, 16), 10, "bf16", tune_precision=True)
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def test_a_cache_that_is_not_a_table_is_measured_anew(monkeypatch):
    (fastpath.tenfold_home() / fastpath.CACHE).write_text("[1, 2]")
    measure, asked = fake_measure({"fp32": 1.0, "bf16": 2.0})
    monkeypatch.setattr(fastpath, "measure", measure)
    chosen = fastpath.choose(create_model("airnet_tiny", image_shape=(16, 16)), 4, (16, 16), 10, "bf16", True)
    assert chosen.precision == "fp32" and asked and isinstance(fastpath.load_cache(), dict)


def test_a_model_that_cannot_be_timed_keeps_the_defaults(monkeypatch, capsys):
    monkeypatch.setattr(fastpath, "measure_all", lambda *a: (_ for _ in ()).throw(RuntimeError("no copy")))
    chosen = fastpath.choose(create_model("lenet5"), 8, (32, 32), 10, "fp32", tune_precision=True)
    assert chosen.choices == [] and "could not time this machine's fast path" in capsys.readouterr().err
