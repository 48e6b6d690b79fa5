"""Image folders and archives of them, built by the tests."""
import tarfile
import zipfile

import numpy as np
import pytest

from helpers import class_image, make_tree
from tenfold.data import folder, open_dataset, open_test_set
from tenfold.data.dataset import hold_out, ImageSet
from tenfold.errors import DataError


def pack(tree, dest, kind):
    """The tree as .tar, .tar.gz or .zip, under an extra top folder when `kind` says so."""
    if kind == "zip":
        with zipfile.ZipFile(dest, "w") as z:
            for p in sorted(tree.rglob("*")):
                z.write(p, f"mydata/{p.relative_to(tree)}")
    else:
        with tarfile.open(dest, "w:gz" if kind == "tar.gz" else "w") as t:
            t.add(tree, arcname=".")
    return dest


def test_folder_classes_sorted_and_rgb_uint8(tmp_path):
    make_tree(tmp_path / "d", classes=("zebra", "ant", "moth"), n=10)
    splits = open_dataset(str(tmp_path / "d"))
    assert splits.train.classes == ["ant", "moth", "zebra"]
    assert splits.train.images.dtype == np.uint8 and splits.train.images.shape[1:] == (32, 32, 3)
    assert len(splits.train) == 27 and len(splits.val) == 3
    # "ant" (label 0) was drawn with colour index 1 (green) by make_tree's class order.
    assert splits.train.images[splits.train.labels == 0].mean(axis=(0, 1, 2)).argmax() == 1


@pytest.mark.parametrize("kind", ["tar", "tar.gz", "zip"])
def test_archives_give_the_same_arrays_as_the_folder(tmp_path, kind):
    tree = make_tree(tmp_path / "d", n=6, splits=("train", "test"))
    want = open_dataset(str(tree))
    got = open_dataset(str(pack(tree, tmp_path / f"data.{kind}", kind)))
    assert got.train.classes == want.train.classes
    assert np.array_equal(got.train.images, want.train.images) and np.array_equal(got.test.labels, want.test.labels)


def test_uniform_size_is_kept_and_mixed_sizes_become_image_size(tmp_path):
    make_tree(tmp_path / "u", n=5, size=(24, 20))
    assert open_dataset(str(tmp_path / "u")).train.shape == (20, 24)  # (height, width)
    mixed = make_tree(tmp_path / "m", n=5, size=(40, 40))
    class_image(0, 99, (64, 48), "L").save(mixed / "train" / "cat" / "gray.png")
    class_image(1, 99, (16, 16), "RGBA").save(mixed / "train" / "dog" / "rgba.png")
    class_image(2, 99, (50, 50), "P").save(mixed / "train" / "frog" / "pal.gif")
    class_image(2, 98, (50, 50), "CMYK").save(mixed / "train" / "frog" / "cmyk.jpg")
    splits = open_dataset(str(mixed), val_split=0.0)
    assert splits.train.images.shape == (19, 32, 32, 3)
    assert open_dataset(str(mixed), val_split=0.0, image_size=16).train.images.shape == (19, 16, 16, 3)


def test_val_and_test_folders(tmp_path):
    tree = make_tree(tmp_path / "d", n=4, splits=("train", "val", "test"))
    splits = open_dataset(str(tree), val_split=0.5)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (12, 12, 12)  # val/ wins over --val-split
    test = open_test_set(str(tree), ["cat", "dog", "frog", "owl"], (32, 32))
    assert len(test) == 12 and set(test.labels) == {0, 1, 2}


def test_test_set_maps_names_onto_the_models_classes(tmp_path):
    tree = make_tree(tmp_path / "t", classes=("dog", "cat"), n=3)
    flat = tree / "train"  # a folder of class folders given directly
    test = open_test_set(str(flat), ["ant", "cat", "dog"], (32, 32))
    assert sorted(set(test.labels.tolist())) == [1, 2]
    with pytest.raises(DataError, match="not trained on: cat"):
        open_test_set(str(flat), ["dog", "owl"], (32, 32))
    with pytest.raises(DataError, match="no test/ split"):
        open_test_set(str(tree), ["cat", "dog"], (32, 32))


def test_undecodable_images_are_skipped_with_a_count(tmp_path, capsys):
    tree = make_tree(tmp_path / "d", n=5)
    (tree / "train" / "cat" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (tree / "train" / "dog" / "empty.png").write_bytes(b"")
    (tree / "train" / "dog" / "notes.txt").write_text("not an image, not counted")
    splits = open_dataset(str(tree), val_split=0.0)
    assert len(splits.train) == 15
    err = capsys.readouterr().err
    assert "skipped 3 of 18 file(s)" in err  # judged by content: the .txt is looked at, and named
    assert "train/cat/broken.jpg (" in err and "train/dog/empty.png (empty file)" in err
    assert "train/dog/notes.txt (not an image" in err
    open_dataset(str(tree), val_split=0.0)     # cached: the same names again
    assert "train/dog/empty.png (empty file)" in capsys.readouterr().err


def test_nothing_decodable_is_an_error(tmp_path):
    d = tmp_path / "d" / "train" / "cat"
    d.mkdir(parents=True)
    (d / "a.png").write_bytes(b"junk")
    with pytest.raises(DataError, match="none of the 1 files in class folders is an image"):
        open_dataset(str(tmp_path / "d"))


def test_empty_class_folder_is_an_error(tmp_path):
    tree = make_tree(tmp_path / "d", n=3)
    (tree / "train" / "owl").mkdir()
    with pytest.raises(DataError, match="class folder 'train/owl' holds no images"):
        open_dataset(str(tree))
    archive = pack(tree, tmp_path / "d.tar", "tar")
    with pytest.raises(DataError, match="'train/owl' holds no images"):
        open_dataset(str(archive))


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04garbage", b"\x1f\x8b\x08garbage" * 10])
def test_corrupt_archives(tmp_path, content):
    path = tmp_path / "data.zip"
    path.write_bytes(content)
    with pytest.raises(DataError, match="data.zip"):
        open_dataset(str(path))


def test_missing_path(tmp_path):
    with pytest.raises(DataError, match="no such file or folder"):
        open_dataset(str(tmp_path / "nope"))


def test_decoded_cache_is_reused_and_keyed_by_content(tmp_path, monkeypatch, tenfold_home):
    tree = make_tree(tmp_path / "d", n=4)
    archive = pack(tree, tmp_path / "d.tar.gz", "tar.gz")
    first = open_dataset(str(archive))
    assert len(list((tenfold_home / "datasets").glob("*.npz"))) == 1

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again despite the cache")
    monkeypatch.setattr(folder, "decode_all", no_decoding)
    again = open_dataset(str(archive))
    assert np.array_equal(again.train.images, first.train.images)
    # New content under the same name is a different dataset: it must be decoded afresh.
    class_image(0, 7).save(tree / "train" / "cat" / "extra.png")
    pack(tree, archive, "tar.gz")
    with pytest.raises(AssertionError, match="decoded again"):
        open_dataset(str(archive))


def test_damaged_cache_is_rebuilt(tmp_path, tenfold_home):
    tree = make_tree(tmp_path / "d", n=4)
    first = open_dataset(str(tree))
    (cache,) = (tenfold_home / "datasets").glob("*.npz")
    cache.write_bytes(cache.read_bytes()[:100])
    assert np.array_equal(open_dataset(str(tree)).train.images, first.train.images)


def test_hold_out_is_the_last_fraction_of_each_class():
    labels = np.array([0, 1] * 10)
    data = ImageSet(np.arange(20).reshape(20, 1, 1, 1).repeat(3, -1).astype(np.uint8), labels, ["a", "b"])
    train, val = hold_out(data, 0.2)
    assert val.images[:, 0, 0, 0].tolist() == [16, 17, 18, 19]
    assert len(train) == 16
    small = data.subset(np.arange(6))                      # 3 images a class
    train, val = hold_out(small, 0.9)                      # one image of each class is left to train on
    assert sorted(train.labels.tolist()) == [0, 1] and len(val) == 4
    train, val = hold_out(small, 0.1)                      # 0.1 of 3 rounds to none: one is held out all the same
    assert sorted(val.labels.tolist()) == [0, 1] and len(train) == 4


def test_library_messages_go_through_the_tenfold_logger(tmp_path, tenfold_home, capsys):
    """A warning is a `logging` record on the "tenfold" logger: an application's handler gets it, not stderr."""
    import logging
    from tenfold.log import logger
    tree = make_tree(tmp_path / "d", n=4)
    open_dataset(str(tree))
    (cache,) = (tenfold_home / "datasets").glob("*.npz")
    cache.write_bytes(b"not a cache")
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record)
    saved = logger.handlers[:]
    logger.handlers[:] = [Keep()]
    try:
        capsys.readouterr()
        open_dataset(str(tree))
    finally:
        logger.handlers[:] = saved
    assert [(r.name, r.levelno) for r in records] == [("tenfold", logging.WARNING)]
    assert "was damaged" in records[0].getMessage() and "was damaged" not in capsys.readouterr().err
