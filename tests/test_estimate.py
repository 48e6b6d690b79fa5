"""`tenfold presets`' time for each preset on this machine: measured steps, scaled, cached."""
import json
from dataclasses import asdict

import pytest

from helpers import run_cli
from tenfold.training import estimate
from tenfold.training.fastpath import save_cache


def test_an_estimate_scales_measured_steps_to_the_whole_run():
    e = estimate.Estimate(0.0, train_s=0.002, eval_s=0.0005, device="CPU, 2 threads", precision="fp32",
                          measured="2026-11-30")
    per_epoch = 45_000 * 0.002 + 5_000 * 0.0005
    assert estimate.total_seconds(e, 9, 2) == pytest.approx(estimate.STARTUP + 9 * per_epoch + 6 * 5_000 * 0.0005)
    assert estimate.total_seconds(e, 1, 0) == pytest.approx(estimate.STARTUP + per_epoch)
    assert [estimate.format_duration(s) for s in (42, 600, 3 * 3600)] == ["42 s", "10 min", "3.0 h"]


@pytest.mark.slow  # measures real training steps of a preset
def test_presets_are_timed_once_then_recalled(monkeypatch):
    first = estimate.estimate("fast-tiny")
    assert first.train_s > 0 and first.eval_s > 0 and first.precision in ("fp32", "bf16")
    assert first.seconds > 10 * 45_000 * first.train_s  # ten epochs of it, and more
    monkeypatch.setattr(estimate, "measure", lambda *a, **k: pytest.fail("measured twice"))
    again = estimate.estimate("fast-tiny")
    assert again == first and estimate.is_cached("fast-tiny") and not estimate.is_cached("fast")


def test_presets_command_prints_the_estimate_for_this_machine():
    # the wide net measured beforehand at a batch of 128 (at its own 1,024 it takes 20-40 s on 2 CPU cores), cached as
    # `tenfold presets` would cache it: the command measures the others and recalls this one for fast and fast-small
    config, key = estimate.cache_key("fast")
    save_cache({key: asdict(estimate.measure(config, batch=128))}, estimate.CACHE)
    result = run_cli("presets", "--json", timeout=600)
    assert result.returncode == 0, result.stderr
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert set(rows) >= {"lenet5", "fast", "fast-small", "fast-tiny"}
    for r in rows.values():
        assert r["estimate_s"] > 0 and r["estimate"].startswith("here (") and "measured" in r["estimate"]
    assert rows["fast-small"]["estimate_s"] > rows["fast-tiny"]["estimate_s"]  # the wider net, at 9 epochs of 10
    text = run_cli("presets")
    assert "here (" in text.stdout and "timing" not in text.stderr  # cached by the first call: no measuring now
