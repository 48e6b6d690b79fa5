"""The fast recipes' pieces: whitening, lookahead, the schedule, alternating flip, test-time augmentation, and
the presets end to end (including an interrupted preset run resuming to the same weights)."""
import json

import numpy as np
import pytest
import torch
from torch import nn

from helpers import assert_one_line_error, make_tree, run_cli
from tenfold.data.augment import flip_mask
from tenfold.data.dataset import ImageSet
from tenfold.data.loader import DeviceLoader
from tenfold.models.airbench import Whiten
from tenfold.training import Callback
from tenfold.training.checkpoint import load_checkpoint
from tenfold.models import create_model
from tenfold.training.recipe import Lookahead, LRSchedule, onecycle, predict_tta, tta_views
from tenfold.training.run import train


def correlated_images(n=400, seed=0) -> torch.Tensor:
    """Smooth, colour-correlated images: neighbouring pixels and channels strongly correlated."""
    g = torch.Generator().manual_seed(seed)
    base = torch.nn.functional.interpolate(torch.randn(n, 1, 8, 8, generator=g), size=16, mode="bilinear")
    return base.repeat(1, 3, 1, 1) * torch.tensor([1.0, 0.8, 0.6]).view(1, 3, 1, 1) + \
        0.1 * torch.randn(n, 3, 16, 16, generator=g)


def test_whitening_decorrelates_the_patches():
    x = correlated_images()
    layer = Whiten()
    layer.init_from(x)
    with torch.no_grad():
        out = layer(x)                                           # (N, 24, 15, 15)
    first = out[:, :12].permute(0, 2, 3, 1).reshape(-1, 12)
    first = first - first.mean(0)
    cov = first.T @ first / len(first)
    off = cov - torch.diag(torch.diag(cov))
    assert off.abs().max() < 0.02                                # decorrelated ...
    assert torch.diag(cov).min() > 0.5 and torch.diag(cov).max() < 1.01  # ... and about unit variance
    assert torch.equal(out[:, 12:], -out[:, :12])                # the negations
    raw = x.unfold(2, 2, 1).unfold(3, 2, 1).permute(0, 2, 3, 1, 4, 5).reshape(-1, 12)
    raw_cov = torch.corrcoef(raw.T)
    assert (raw_cov - torch.eye(12)).abs().max() > 0.5          # the input was far from it
    assert not layer.weight.requires_grad


def test_lookahead_averages_every_5_steps_and_ends_on_the_slow_weights():
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    la = Lookahead(model, total_steps=10, every=5, decay=0.5)
    for step in range(1, 11):
        with torch.no_grad():
            model.weight.add_(1.0)                               # an optimiser step
        la.on_batch_end(step - 1, {})
        if step == 5:  # slow = lerp(0, 5, 1 - 0.5 * (5/10)^3); the net restarts from it
            expected = 5 * (1 - 0.5 * 0.125)
            assert model.weight.item() == pytest.approx(expected) and la.slow["weight"].item() == pytest.approx(expected)
    # step 10: the end, decay 1: the net takes the slow weights (unchanged since step 5)
    assert model.weight.item() == pytest.approx(5 * (1 - 0.5 * 0.125))


def test_onecycle_warms_up_then_decays():
    values = [onecycle(s, 100) for s in range(101)]
    assert values[0] == pytest.approx(0.2) and max(values) == pytest.approx(1.0, abs=0.01)
    assert values[100] == pytest.approx(0.07) and values.index(max(values)) in (23, 24)
    assert all(a <= b for a, b in zip(values[:23], values[1:24])) and all(a >= b for a, b in zip(values[24:], values[25:]))


def test_the_recipe_constants_are_settings_the_model_and_schedule_obey():
    """Whitening eps, BatchNorm momentum and the one-cycle shape come from the config (so config.json records them)."""
    net = create_model("airnet_tiny", bn_momentum=0.1, whiten_eps=0.5)
    assert {m.momentum for m in net.modules() if isinstance(m, nn.BatchNorm2d)} == {0.1}
    x = correlated_images(200)
    loose, tight = Whiten(eps=0.5), Whiten()
    loose.init_from(x), tight.init_from(x)
    assert loose.weight.abs().max() < tight.weight.abs().max()   # a larger eps damps the noise directions
    weight = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [weight], "initial_lr": 1.0}], lr=1.0)
    schedule = LRSchedule(opt, total_steps=10, shape=(0.5, 0.0, 0.4))
    rates = [opt.param_groups[0]["lr"]]
    for step in range(10):
        schedule.on_batch_end(step, {})
        rates.append(opt.param_groups[0]["lr"])
    assert rates[0] == pytest.approx(0.4) and rates[5] == pytest.approx(1.0) and rates[10] == pytest.approx(0.0)


def test_alternating_flip_mirrors_every_image_once_per_pair_of_epochs():
    base = torch.rand(1000, generator=torch.Generator().manual_seed(0)) < 0.5
    assert torch.equal(flip_mask(1000, 1, base) ^ flip_mask(1000, 2, base), torch.ones(1000, dtype=torch.bool))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (64, 8, 8, 3), dtype=np.uint8)
    loader = DeviceLoader(ImageSet(images, np.zeros(64, dtype=np.int64), ["a"]), 64, torch.device("cpu"),
                          [0.5] * 3, [0.25] * 3, augment=True, crop_pad=0, flip="alternating", seed=1)
    plain = DeviceLoader(ImageSet(images, np.zeros(64, dtype=np.int64), ["a"]), 64, torch.device("cpu"),
                         [0.5] * 3, [0.25] * 3)
    x = next(iter(plain))[0]
    flipped = []
    for _ in range(4):
        out = next(iter(loader))[0]
        is_flipped = torch.tensor([torch.allclose(o, xi.flip(2), atol=1e-5) for o, xi in zip(out, x)])
        assert all(torch.allclose(o, xi, atol=1e-5) for o, xi, f in zip(out, x, is_flipped) if not f)
        flipped.append(is_flipped)
    assert torch.equal(flipped[0] ^ flipped[1], torch.ones(64, dtype=torch.bool))   # epochs 1, 2: once each
    assert torch.equal(flipped[2] ^ flipped[3], torch.ones(64, dtype=torch.bool))   # epochs 3, 4: a new pattern
    assert not torch.equal(flipped[0], flipped[2]) and 16 < int(flipped[0].sum()) < 48


def test_tta_views_of_a_mirror_symmetric_image_agree():
    x = torch.randn(2, 3, 8, 8)
    x = x + x.flip(3)                                            # left-right symmetric
    views = tta_views(x, 2)
    assert len(views) == 6 and sum(w for _, w in views) == pytest.approx(1.0)
    assert torch.equal(views[0][0], views[1][0])                 # the image and its mirror: identical
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(5))
    model(x)
    assert torch.allclose(predict_tta(model, x, 1), model(x), atol=1e-6)
    y = torch.randn(2, 3, 8, 8)                                  # not symmetric: the mirror view differs
    assert not torch.allclose(predict_tta(model, y, 1), model(y), atol=1e-4)


@pytest.fixture
def pets(tmp_path):
    return make_tree(tmp_path / "pets", n=100, splits=("train", "test"))


def test_presets_list_and_run_and_resume_to_the_same_weights(pets, tmp_path):
    listed = run_cli("presets", "--json", "--no-measure")  # the estimates: test_estimate.py
    assert listed.returncode == 0
    names = [p["name"] for p in json.loads(listed.stdout)]
    assert {"lenet5", "fast", "fast-small", "fast-tiny"} <= set(names)
    result = run_cli("train", "--preset", "fast-tiny", "--data", pets, "--epochs", 4, "--batch-size", 64,
                     "--threads", 2, "--out", tmp_path / "straight")  # a fixed count: sums are split by thread
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 4 and "(test-time augmentation:" in lines[-1] and "(test-time" not in lines[-2]
    ckpt = load_checkpoint(tmp_path / "straight")
    assert ckpt["config"]["preset"] == "fast-tiny" and ckpt["config"]["model"] == "airnet_tiny"
    assert ckpt["config"]["batch_size"] == 64 and ckpt["config"]["flip"] == "alternating"  # the flag won
    assert ckpt["history"][-1]["val_accuracy_tta"] > 0.9       # three noisy colours: easy
    # the same run, stopped after epoch 2 and resumed: the lookahead's slow weights, the schedule's step and the
    # flip pattern all continue, so the weights end identical
    class StopAfter2(Callback):
        def on_epoch_end(self, epoch, logs):
            if epoch == 2:
                raise KeyboardInterrupt  # as Ctrl-C there would

    with pytest.raises(KeyboardInterrupt):
        train(out=tmp_path / "cut", quiet=True, callbacks=[StopAfter2()], **ckpt["config"])
    assert load_checkpoint(tmp_path / "cut")["epoch"] == 2
    train(resume=tmp_path / "cut", quiet=True)
    resumed = load_checkpoint(tmp_path / "cut")
    assert all(torch.equal(resumed["model"][k], ckpt["model"][k]) for k in ckpt["model"])
    evaluation = run_cli("evaluate", tmp_path / "straight", "--json")
    assert evaluation.returncode == 0 and json.loads(evaluation.stdout)["tta"] == 2
    assert_one_line_error(run_cli("train", "--preset", "fastest", "--data", pets), "unknown preset 'fastest'")
    assert_one_line_error(run_cli("train", "--preset", "fast-tiny", "--precision", "fp64", "--data", pets),
                          "--precision")
