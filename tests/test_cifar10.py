"""The official download path, against archives in CIFAR-10's own format served from 127.0.0.1."""
import hashlib
import os
import pickle
import socket

import numpy as np
import pytest

from helpers import CIFAR_CLASSES, assert_one_line_error, cifar_archive, run_cli
from tenfold.data import cifar10, open_dataset
from tenfold.errors import DataError, DownloadError


@pytest.fixture
def official(http_server, monkeypatch):
    """Point the official URL and MD5 at a tiny archive on the local server."""
    body = cifar_archive(n=20)
    http_server.routes["/cifar-10-python.tar.gz"] = (body, "ok")
    monkeypatch.setenv("TENFOLD_CIFAR10_URL", http_server.url("/cifar-10-python.tar.gz"))
    monkeypatch.setattr(cifar10, "MD5", hashlib.md5(body).hexdigest())
    return http_server


def cache_files(home):
    root = home / "cifar10"
    return sorted(p.name for p in root.rglob("*")) if root.exists() else []


def held_out(n: int, fraction: float = 0.1) -> int:
    """The validation images of a class of n: a tenth, rounded, at least one while one is left to train on."""
    return min(max(1, int(round(n * fraction))), n - 1) if n >= 2 else 0


def test_download_verify_extract_parse_and_cache(official, tenfold_home):
    splits = open_dataset("cifar10")
    held = sum(held_out(n) for n in np.bincount(cifar10.load()[0].labels, minlength=10))
    assert splits.train.images.shape == (100 - held, 32, 32, 3) and splits.train.images.dtype == np.uint8
    assert splits.val.images.shape[0] == held and splits.test.images.shape == (20, 32, 32, 3)
    assert splits.train.classes == CIFAR_CLASSES
    # The planes (R, G, B) became HWC pixels: class y is the colour (25y, 255-25y, 77y mod 256).
    y = int(splits.test.labels[0])
    assert tuple(splits.test.images[0, 5, 7]) == (y * 25, 255 - y * 25, (y * 77) % 256)
    names = cache_files(tenfold_home)
    assert "cifar-10-python.tar.gz" in names and "data_batch_5" in names
    assert not [n for n in names if n.endswith((".part", ".tmp")) or n.startswith(".extract")]
    # The second open reads the uint8 cache: no new request, even with the server gone.
    official.routes.clear()
    again = open_dataset("cifar10")
    assert np.array_equal(again.train.images, splits.train.images)
    assert official.requests == ["/cifar-10-python.tar.gz"]


def rewritten(change):
    """A damage that leaves a readable .npz whose arrays are not what the cache holds."""
    def damage(path):
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files}
        change(arrays)
        with open(path, "wb") as f:
            np.savez(f, **arrays)
    return damage


DAMAGES = {
    "cut short": lambda p: p.write_bytes(p.read_bytes()[:100]),
    "empty": lambda p: p.write_bytes(b""),
    "zip header, no zip": lambda p: p.write_bytes(b"PK\x03\x04" + b"\0" * 64),
    "other arrays": lambda p: np.savez(open(p, "wb"), x=np.zeros(3)),
    "images cut short": rewritten(lambda a: a.update(train_x=a["train_x"][:2])),
    "float images": rewritten(lambda a: a.update(train_x=a["train_x"].astype(np.float32))),
    "half-height images": rewritten(lambda a: a.update(train_x=a["train_x"][:, :16])),
    "labels past the classes": rewritten(lambda a: a.update(train_y=a["train_y"] + 50)),
}


@pytest.mark.parametrize("damage", DAMAGES.values(), ids=DAMAGES.keys())
def test_a_damaged_cache_is_rebuilt_with_a_warning_for_both_kinds_of_data(official, tenfold_home, tmp_path, capsys,
                                                                           damage):
    """One cache policy: CIFAR-10's arrays and an image folder's, damaged any way (unreadable, or readable but not
    what the cache holds), are removed and rebuilt."""
    from helpers import make_tree
    tree = make_tree(tmp_path / "d", n=4)
    first = open_dataset("cifar10"), open_dataset(str(tree))
    caches = [*(tenfold_home / "cifar10").glob("*.npz"), *(tenfold_home / "datasets").glob("*.npz")]
    assert len(caches) == 2
    for cache in caches:
        damage(cache)
    capsys.readouterr()
    again = open_dataset("cifar10"), open_dataset(str(tree))
    for a, b in zip(first, again):
        assert np.array_equal(a.train.images, b.train.images) and a.train.classes == b.train.classes
        assert np.array_equal(a.train.labels, b.train.labels)
    warnings = [line for line in capsys.readouterr().err.splitlines() if "was damaged" in line]
    assert len(warnings) == 2 and all(line.startswith("warning: ") for line in warnings), warnings
    assert all(np.load(c)["train_x"].dtype == np.uint8 for c in caches)  # written afresh


def test_an_unwritable_cache_costs_the_next_run_its_head_start_not_this_run(official, tenfold_home, capsys):
    cache = tenfold_home / "cifar10" / f"cifar10-uint8-v{cifar10.CACHE_VERSION}.npz"
    cache.mkdir(parents=True)  # a folder where the cache goes: it cannot be written (even by root)
    splits = open_dataset("cifar10")
    assert splits.test.images.shape == (20, 32, 32, 3)
    assert "could not write the CIFAR-10 cache" in capsys.readouterr().err
    assert not [p for p in cache.parent.iterdir() if p.name.endswith(".tmp")]  # nothing half-written left


def test_validation_is_the_last_tenth_of_each_class(official):
    splits = open_dataset("cifar10")
    full, _ = cifar10.load()
    for c in range(10):
        idx = np.flatnonzero(full.labels == c)
        n_val = held_out(len(idx))
        want = full.images[idx[len(idx) - n_val:]]
        got = splits.val.images[splits.val.labels == c]
        assert np.array_equal(got, want)


def test_checksum_mismatch_leaves_nothing(official, monkeypatch, tenfold_home):
    monkeypatch.setattr(cifar10, "MD5", "0" * 32)
    with pytest.raises(DownloadError, match="MD5"):
        open_dataset("cifar10")
    assert cache_files(tenfold_home) == []


def test_interrupted_download_leaves_no_partial_file(official, tenfold_home):
    body, _ = official.routes["/cifar-10-python.tar.gz"]
    official.routes["/cifar-10-python.tar.gz"] = (body, "cut")
    with pytest.raises(DownloadError, match="broke off"):
        open_dataset("cifar10")
    assert cache_files(tenfold_home) == []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_no_network_says_how_to_use_a_local_copy(monkeypatch, tenfold_home):
    monkeypatch.setenv("TENFOLD_CIFAR10_URL", f"http://127.0.0.1:{free_port()}/cifar-10-python.tar.gz")
    with pytest.raises(DownloadError) as err:
        open_dataset("cifar10")
    assert "--data" in str(err.value) and str(tenfold_home / "cifar10" / "cifar-10-python.tar.gz") in str(err.value)
    assert cache_files(tenfold_home) == []


def test_cli_checksum_mismatch_is_one_line(http_server, tmp_path):
    # The CLI keeps the real MD5, so the tiny archive is a mismatch: as a tampered mirror would be.
    http_server.routes["/c.tar.gz"] = (cifar_archive(n=4), "ok")
    result = run_cli("train", "--epochs", "1", "--out", tmp_path / "run",
                     env={"TENFOLD_CIFAR10_URL": http_server.url("/c.tar.gz")})
    assert_one_line_error(result, "MD5")
    assert not (tmp_path / "run").exists()


def test_local_copy_of_the_archive(tmp_path):
    path = tmp_path / "cifar-10-python.tar.gz"
    path.write_bytes(cifar_archive(n=30))
    splits = open_dataset(str(path))
    assert len(splits.train) + len(splits.val) == 150 and len(splits.test) == 30


def test_refuses_pickles_that_run_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))
    path = tmp_path / "cifar-10-python.tar.gz"
    path.write_bytes(cifar_archive(n=4, batches={"data_batch_3": pickle.dumps({b"data": Evil()}, protocol=2)}))
    with pytest.raises(DataError, match="refused to load"):
        open_dataset(str(path))


@pytest.mark.parametrize("bad,message", [
    ({b"data": np.zeros((4, 100), np.uint8), b"labels": [0, 1, 2, 3]}, "3072"),
    ({b"data": np.zeros((4, 3072), np.float32), b"labels": [0, 1, 2, 3]}, "uint8"),
    ({b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1, 2]}, "labels"),
    ({b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1, 2, 12]}, "0-9"),
    ({b"labels": [0, 1, 2, 3]}, "data"),
])
def test_malformed_batches_are_rejected(tmp_path, bad, message):
    path = tmp_path / "cifar-10-python.tar.gz"
    path.write_bytes(cifar_archive(n=4, batches={"data_batch_2": pickle.dumps(bad, protocol=2)}))
    with pytest.raises(DataError, match=message):
        open_dataset(str(path))


def test_truncated_local_archive(tmp_path):
    path = tmp_path / "cifar-10-python.tar.gz"
    body = cifar_archive(n=40)
    path.write_bytes(body[: len(body) * 2 // 3])
    result = run_cli("train", "--data", path, "--epochs", "1", "--out", tmp_path / "run")
    assert_one_line_error(result, str(path))
