"""Real-world image folders: decoded as a viewer shows them, every image the user sees found, what cannot work
refused in one line, what was skipped named. Rebuilt from public bug reports against image-folder loaders."""
import io
import os
import subprocess
import tarfile
import zipfile

import numpy as np
import pytest
from PIL import Image, ImageOps

from helpers import assert_one_line_error, class_image, make_tree, run_cli
from tenfold.data.dataset import open_dataset
from tenfold.data.decode import decode
from tenfold.errors import ConfigError, DataError


def pattern(w: int, h: int) -> Image.Image:
    """An image whose every orientation differs: a gradient across, another down."""
    x = np.linspace(0, 255, w, dtype=np.uint8)[None, :].repeat(h, 0)
    y = np.linspace(0, 255, h, dtype=np.uint8)[:, None].repeat(w, 1)
    return Image.fromarray(np.stack([x, y, np.full_like(x, 60)], -1), "RGB")


def png_bytes(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG", **kw)
    return buf.getvalue()


@pytest.mark.parametrize("orientation", [2, 3, 5, 6, 7, 8])
def test_exif_orientation_is_applied(orientation):
    stored = pattern(48, 24)
    exif = stored.getexif()
    exif[0x0112] = orientation
    data = png_bytes(stored, exif=exif)
    shown = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    got = decode(data)
    assert got.shape == shown.shape == ((24, 48, 3) if orientation < 5 else (48, 24, 3))
    assert np.array_equal(got, shown)
    assert decode(data, (12, 24)).shape == (12, 24, 3)


def test_sideways_phone_photos_train_and_predict_upright(tmp_path):
    """48x24 JPEGs stored with Orientation 6: training sees them 24 wide and 48 high, as predict does."""
    for c, colour in (("a", (200, 30, 30)), ("b", (30, 30, 200))):
        (tmp_path / "d" / "train" / c).mkdir(parents=True)
        for i in range(4):
            im = Image.new("RGB", (48, 24), colour)
            im.paste((250, 250, 250), (0, 0, 8, 24))  # a white band on the stored left: the shown top
            exif = im.getexif()
            exif[0x0112] = 6
            im.save(tmp_path / "d" / "train" / c / f"{i}.jpg", exif=exif, quality=95)
    data = open_dataset(str(tmp_path / "d"), val_split=0.0, quiet=True)
    assert data.train.shape == (48, 24)
    top, bottom = data.train.images[0, :6].mean(), data.train.images[0, -6:].mean()
    assert top > 240 and bottom < 150
    from tenfold.training.infer import load_image
    assert np.array_equal(load_image(str(tmp_path / "d" / "train" / "a" / "0.jpg"), (48, 24)),
                          data.train.images[0])


def test_transparency_is_composited_on_white():
    noise = np.random.default_rng(0).integers(0, 256, (6, 6, 4), dtype=np.uint8)
    noise[..., 3] = 0
    noise[0, 0, 3] = 255                                      # one opaque pixel keeps its colour
    rgba = decode(png_bytes(Image.fromarray(noise, "RGBA")))
    assert (rgba[1:, 1:] == 255).all() and np.array_equal(rgba[0, 0], noise[0, 0, :3])
    palette = Image.new("P", (4, 4), 1)
    palette.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    assert (decode(png_bytes(palette, transparency=1)) == 255).all()
    assert (decode(png_bytes(Image.new("LA", (4, 4), (0, 0)))) == 255).all()
    half = np.zeros((2, 2, 4), np.uint8)
    half[..., 3] = 128                                        # half-transparent black over white: mid grey
    assert abs(int(decode(png_bytes(Image.fromarray(half, "RGBA")))[0, 0, 0]) - 127) <= 1


def test_wide_integer_images_are_scaled_not_clipped():
    grey16 = Image.frombytes("I;16", (4, 4), (np.full(16, 32768)).astype("<u2").tobytes())
    assert (decode(png_bytes(grey16)) == 128).all()           # Pillow's own conversion gives 255
    grey32 = Image.frombytes("I", (2, 2), np.full(4, 100, "<i4").tobytes())
    buf = io.BytesIO()
    grey32.save(buf, "TIFF")
    assert (decode(buf.getvalue()) == 100).all()              # 8-bit values in a wide container stay


def test_formats_are_judged_by_content_not_extension(tmp_path):
    for c in ("cat", "dog"):
        d = tmp_path / "d" / c
        d.mkdir(parents=True)
        for i, (fmt, ext) in enumerate([("JPEG", ".jfif"), ("AVIF", ".avif"), ("JPEG", ".JPG"), ("PNG", ".PNG"),
                                        ("PNG", ".jpg"), ("WEBP", ""), ("BMP", ".dat"), ("TIFF", ".TIF"),
                                        ("GIF", ".gif"), ("JPEG", ".jpeg")]):
            class_image(i % 2, i, (16, 16)).save(d / f"{i}{ext}", fmt)
    data = open_dataset(str(tmp_path / "d"), val_split=0.0, quiet=True)
    assert len(data.train) == 20


def test_heic_without_its_plugin_names_the_plugin():
    heic = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64
    try:
        import pillow_heif  # noqa: F401
    except ImportError:
        assert "pillow-heif" in decode(heic)
    else:
        pytest.skip("pillow-heif is installed: HEIC files decode")


def test_skipped_files_are_named_with_the_reason_on_every_run(tmp_path):
    tree = make_tree(tmp_path / "d", classes=("cat", "dog"), n=10)
    (tree / "train" / "cat" / "cut.png").write_bytes(png_bytes(pattern(32, 32))[:60])
    (tree / "train" / "dog" / "zero.jpg").write_bytes(b"")
    (tree / "train" / "dog" / "page.jpg").write_text("<!DOCTYPE html><html><body>Access denied</body></html>")
    for _ in range(2):  # the second run reads the cache, and says the same
        result = run_cli("train", "--data", tree, "--epochs", 1, "--out", tmp_path / f"r{_}")
        assert result.returncode == 0, result.stderr
        assert "skipped 3 of 23 file(s)" in result.stderr
        for named in ("train/cat/cut.png (truncated or damaged)", "train/dog/zero.jpg (empty file)",
                      "train/dog/page.jpg (an HTML or XML page"):
            assert named in result.stderr, result.stderr


def test_a_tar_of_dot_and_a_windows_zip_read_as_the_folder(tmp_path):
    tree = tmp_path / "ds"
    for c, colour in (("cat", 0), ("dog", 1)):
        (tree / c).mkdir(parents=True)
        for i in range(4):
            class_image(colour, i).save(tree / c / f"{i}.png")
    tgz = tmp_path / "ds.tgz"
    subprocess.run(["tar", "-C", str(tree), "-czf", str(tgz), "."], check=True)  # members ./cat/0.png
    win = tmp_path / "win.zip"
    with zipfile.ZipFile(win, "w") as z:
        for c in ("cat", "dog"):
            for i in range(4):
                z.writestr(f"train\\{c}\\{i}.png", (tree / c / f"{i}.png").read_bytes())
    folder = open_dataset(str(tree), val_split=0.25, quiet=True)
    for archive in (tgz, win):
        got = open_dataset(str(archive), val_split=0.25, quiet=True)
        assert got.train.classes == ["cat", "dog"]
        assert np.array_equal(got.train.images, folder.train.images) and np.array_equal(got.val.labels,
                                                                                         folder.val.labels)


def test_nested_folders_links_and_capitals(tmp_path):
    root = tmp_path / "d"
    make_tree(tmp_path / "src", classes=("cat", "dog"), n=3, splits=("train",))
    (root / "TRAIN").mkdir(parents=True)
    os.symlink(tmp_path / "src" / "train" / "cat", root / "TRAIN" / "cat")       # a class folder that is a link
    (root / "TRAIN" / "dog").mkdir()
    (root / "TRAIN" / "dog" / "2025" / "summer").mkdir(parents=True)             # photos in sub-folders
    for i in range(3):
        class_image(1, i).save(root / "TRAIN" / "dog" / "2025" / "summer" / f"{i}.png")
    os.symlink(tmp_path / "gone.png", root / "TRAIN" / "dog" / "gone.png")       # a dangling link
    os.symlink(root / "TRAIN", root / "TRAIN" / "dog" / "loop")                  # a loop: walked once
    data = open_dataset(str(root), val_split=0.0)
    assert data.train.classes == ["cat", "dog"] and len(data.train) == 6


def test_links_inside_a_tar_are_followed(tmp_path):
    src = make_tree(tmp_path / "t", classes=("cat", "dog"), n=3, splits=("all",))
    (src / "train").mkdir()
    os.symlink("../all/cat", src / "train" / "cat")                 # a class folder linked inside the archive
    (src / "train" / "dog").mkdir()
    for i in range(3):
        os.symlink(f"../../all/dog/{i:04d}.png", src / "train" / "dog" / f"{i}.png")  # files linked
    with tarfile.open(tmp_path / "t.tar", "w") as tar:
        tar.add(src, arcname="t")
    data = open_dataset(str(tmp_path / "t.tar"), val_split=0.0, quiet=True)
    assert data.train.classes == ["cat", "dog"] and len(data.train) == 6


def test_several_roots_in_one_archive_are_refused(tmp_path):
    path = tmp_path / "two.zip"
    with zipfile.ZipFile(path, "w") as z:
        for top in ("a", "b"):
            for c in ("cat", "dog"):
                z.writestr(f"{top}/train/{c}/0.png", png_bytes(pattern(8, 8)))
    with pytest.raises(DataError, match="several dataset roots"):
        open_dataset(str(path), quiet=True)


def test_one_class_is_refused_and_small_classes_still_validate(tmp_path):
    one = make_tree(tmp_path / "one", classes=("cat",), n=6)
    assert_one_line_error(run_cli("train", "--data", one, "--out", tmp_path / "r"), "at least 2 classes", "cat")
    assert_one_line_error(run_cli("train", "--data", one / "train" / "cat", "--out", tmp_path / "r"))
    many = make_tree(tmp_path / "many", classes=tuple(f"c{i:02d}" for i in range(40)), n=5, size=(8, 8))
    data = open_dataset(str(many), quiet=True)  # default --val-split 0.1: 0.5 of an image a class
    assert len(data.val) == 40 and sorted(set(data.val.labels.tolist())) == list(range(40))
    assert len(data.train) == 160


def test_large_photos_default_to_a_small_size_said_in_the_start_line(tmp_path):
    tree = make_tree(tmp_path / "d", classes=("cat", "dog"), n=3, size=(640, 480), fmt="jpg")
    result = run_cli("train", "--data", tree, "--epochs", 1, "--out", tmp_path / "r")
    assert result.returncode == 0, result.stderr
    assert "images at 64x64 (--image-size N to change)" in result.stderr
    from tenfold.training.checkpoint import load_checkpoint
    assert load_checkpoint(tmp_path / "r")["image_shape"] == [64, 64]
    assert os.path.getsize(tmp_path / "r" / "checkpoint.pt") < 20e6


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from tenfold.api import train
    root = tmp_path_factory.mktemp("predict")
    tree = make_tree(root / "d", classes=("cat", "dog"), n=12)
    train(data=str(tree), epochs=2, out=str(root / "run"), quiet=True)
    return root


def test_predict_takes_a_folder_or_a_pattern(run_dir):
    folder = run_dir / "d" / "train" / "dog"
    (folder / "notes.txt").write_text("not an image")
    result = run_cli("predict", run_dir / "run", folder)
    assert result.returncode == 0, result.stderr
    names = [line.split(":")[0] for line in result.stdout.splitlines()]
    assert names == sorted(str(p) for p in folder.glob("*.png")) and "notes.txt" in result.stderr
    pattern_result = run_cli("predict", run_dir / "run", str(folder / "000*.png"))
    assert pattern_result.returncode == 0 and len(pattern_result.stdout.splitlines()) == 10
    assert_one_line_error(run_cli("predict", run_dir / "run", str(folder / "*.gif")), "no file matches")


def test_python_predict_takes_one_array_as_one_image(run_dir):
    from tenfold.api import predict
    img = np.asarray(class_image(1, 5))
    one = predict(run_dir / "run", img)
    assert len(one.probabilities) == 1
    big = predict(run_dir / "run", np.asarray(class_image(1, 5, (640, 480))))
    assert len(big.probabilities) == 1 and big.top(1)[0][0][0] == one.top(1)[0][0][0]
    floats = predict(run_dir / "run", img.astype(np.float32) / 255)
    assert np.allclose(floats.probabilities, one.probabilities, atol=1e-5)
    assert len(predict(run_dir / "run", np.stack([img, img])).probabilities) == 2
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        predict(run_dir / "run", img.astype(np.float32))
    with pytest.raises(ConfigError, match="shape"):
        predict(run_dir / "run", np.zeros((5, 5, 7), np.uint8))


def test_names_that_are_not_utf8_and_odd_names(tmp_path):
    tree = make_tree(tmp_path / "d", classes=("cat", "dog"), n=3)
    os.rename(bytes(tree / "train" / "dog"), bytes(tree / "train") + b"/d\xffg")   # a Latin-1 name, not UTF-8
    (tree / "train" / "cat" / "bad\nname.png").write_bytes(b"")
    result = run_cli("train", "--data", tree, "--epochs", 1, "--out", tmp_path / "r")
    assert result.returncode == 0, result.stderr
    assert "train/cat/bad\\nname.png (empty file)" in result.stderr  # on one line


def test_a_split_linked_to_another_is_walked_too(tmp_path):
    root = make_tree(tmp_path / "d", classes=("cat", "dog"), n=5, splits=("train", "val"))
    os.symlink("val", root / "test")                                 # `ln -s val test`
    data = open_dataset(str(root), quiet=True)
    assert len(data.train) == 10 and len(data.val) == 10 and len(data.test) == 10


def test_links_to_an_ancestor_in_a_tar_are_loops_not_classes(tmp_path):
    root = make_tree(tmp_path / "I", classes=("cat", "dog"), n=3)
    os.symlink(".", root / "train" / "dog" / "loop")
    os.symlink("..", root / "train" / "dog" / "up")
    os.symlink("/nonexistent/x.png", root / "train" / "cat" / "dangling.png")
    folder = open_dataset(str(root), val_split=0.0, quiet=True)
    subprocess.run(["tar", "-C", str(root), "-czf", str(tmp_path / "I.tgz"), "."], check=True)
    archive = open_dataset(str(tmp_path / "I.tgz"), val_split=0.0, quiet=True)
    assert len(folder.train) == len(archive.train) == 6
    assert np.array_equal(folder.train.labels, archive.train.labels)
    from tenfold.data import folder as folder_module
    files, dirs = folder_module.list_source(tmp_path / "I.tgz")
    assert "broken link" in decode(files["train/cat/dangling.png"])


def test_a_thumbnail_first_does_not_shrink_the_photos(tmp_path):
    tree = make_tree(tmp_path / "d", classes=("cat", "dog"), n=3, size=(640, 480), fmt="jpg")
    class_image(0, 99, (16, 16)).save(tree / "train" / "cat" / "!thumb.png")
    assert open_dataset(str(tree), val_split=0.0, quiet=True).train.shape == (64, 64)


def test_sixteen_bit_images_keep_their_brightness_order():
    values = [255, 256, 1000, 65535]
    got = [decode(png_bytes(Image.frombytes("I;16", (2, 2), np.full(4, v, "<u2").tobytes())))[0, 0, 0]
           for v in values]
    assert got == sorted(got) and got[0] <= 1 and got[-1] == 255


def test_a_readme_beside_the_class_folders_does_not_move_the_root(tmp_path):
    make_tree(tmp_path / "L" / "images", classes=("cat", "dog"), n=3, splits=("",))
    (tmp_path / "L" / "README.md").write_text("# my photos")
    data = open_dataset(str(tmp_path / "L"), val_split=0.0, quiet=True)
    assert data.train.classes == ["cat", "dog"]


def test_python_predict_takes_pil_images_and_refuses_others_in_one_line(run_dir):
    from tenfold.api import predict
    assert len(predict(run_dir / "run", class_image(1, 5)).probabilities) == 1
    assert len(predict(run_dir / "run", np.asarray(class_image(1, 5)).tolist()).probabilities) == 1
    for bad in (None, 5):
        with pytest.raises(ConfigError, match="predict takes"):
            predict(run_dir / "run", bad)
