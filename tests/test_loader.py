import numpy as np
import pytest
import torch

from tenfold.data import DeviceLoader, ImageSet
from tenfold.data.augment import random_flip, translate
from tenfold.data.loader import channel_stats


def data(n=50):
    rng = np.random.default_rng(0)
    return ImageSet(rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8), np.arange(n) % 5, list("abcde"))


def test_batches_are_normalised_channels_last_and_cover_every_image_once():
    d = data()
    mean, std = channel_stats(d.images)
    loader = DeviceLoader(d, 16, torch.device("cpu"), mean, std, shuffle=True,
                          generator=torch.Generator().manual_seed(1))
    xs, ys = zip(*loader)
    assert [len(y) for y in ys] == [16, 16, 16, 2] and len(loader) == 4
    x = torch.cat(xs)
    assert x.shape == (50, 3, 8, 8) and xs[0].is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(x.mean((0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(x.std((0, 2, 3)), torch.ones(3), atol=1e-2)
    assert sorted(torch.cat(ys).tolist()) == sorted(d.labels.tolist())
    # Labels still belong to their images after shuffling: undo the normalisation and look them up.
    pixels = (xs[0].permute(0, 2, 3, 1) * torch.tensor(std) + torch.tensor(mean)) * 255
    for img, y in zip(pixels.round().to(torch.uint8).numpy(), ys[0].tolist()):
        idx = np.flatnonzero((d.images == img).all(axis=(1, 2, 3)))
        assert d.labels[idx[0]] == y


def test_same_generator_seed_same_order():
    def order(seed):
        loader = DeviceLoader(data(), 10, torch.device("cpu"), [0.5] * 3, [0.25] * 3, shuffle=True,
                              generator=torch.Generator().manual_seed(seed))
        return torch.cat([y for _, y in loader]).tolist()
    assert order(3) == order(3) and order(3) != order(4)


def test_random_crop_shifts_within_the_padding():
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).view(2, 1, 6, 6) + 1
    g = torch.Generator().manual_seed(0)
    assert torch.equal(translate(x, 0, g, 'constant'), x)
    out = translate(x, 2, g, 'constant')
    assert out.shape == x.shape
    for i in range(2):  # each output is a window of the zero-padded input
        padded = torch.nn.functional.pad(x[i, 0], (2, 2, 2, 2))
        windows = [padded[r:r + 6, c:c + 6] for r in range(5) for c in range(5)]
        assert any(torch.equal(out[i, 0], w) for w in windows)


def test_random_flip_mirrors_about_half():
    x = torch.randn(400, 3, 4, 4)
    out = random_flip(x, torch.Generator().manual_seed(0))
    flipped = [(o == xi.flip(2)).all().item() and not (o == xi).all().item() for o, xi in zip(out, x)]
    unchanged = [(o == xi).all().item() for o, xi in zip(out, x)]
    assert all(f or u for f, u in zip(flipped, unchanged))
    assert 150 < sum(flipped) < 250


def test_augment_applies_only_when_asked():
    d = data(20)
    plain = DeviceLoader(d, 20, torch.device("cpu"), [0.5] * 3, [0.25] * 3)
    aug = DeviceLoader(d, 20, torch.device("cpu"), [0.5] * 3, [0.25] * 3, augment=True,
                       generator=torch.Generator().manual_seed(0))
    (a, _), (b, _) = next(iter(plain)), next(iter(aug))
    assert not torch.equal(a, b) and torch.equal(a, next(iter(plain))[0])


def test_the_one_pass_cpu_gather_matches_the_tensor_ops(monkeypatch):
    import tenfold.data.loader as loader_module
    d = data(40)
    mean, std = channel_stats(d.images)
    if loader_module.load_library() is None:
        pytest.skip("no C compiler for tenfold's kernels")
    make = lambda: DeviceLoader(d, 16, torch.device("cpu"), mean, std, shuffle=True,  # noqa: E731
                                generator=torch.Generator().manual_seed(5))
    fast = list(make())
    monkeypatch.setattr(loader_module, "load_library", lambda: None)
    plain = list(make())
    assert len(fast) == len(plain) == 3
    for (xa, ya), (xb, yb) in zip(fast, plain):
        assert torch.equal(ya, yb)
        torch.testing.assert_close(xa, xb, rtol=1e-6, atol=1e-6)
