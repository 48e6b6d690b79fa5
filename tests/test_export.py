"""`tenfold export`: an ONNX file with the preprocessing inside, equal to `tenfold predict` under onnxruntime."""
import json
import re

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from PIL import Image

from helpers import assert_one_line_error, class_image, make_tree, readme_probabilities, run_cli

CLASSES = ("cat", "dog", "frog")


def unseen_images(root, n: int = 100) -> list:
    """`n` new images of the three classes: PNGs at the training size and others, small and large JPEGs, and
    every seventh a PNG with transparency (an alpha channel fading to clear)."""
    root.mkdir()
    sizes, paths = [(32, 32), (50, 40), (24, 30), (300, 200)], []
    for i in range(n):
        cls, size = i % 3, sizes[(i // 3) % len(sizes)]
        fmt = "jpg" if i % 5 == 0 else "png"
        paths.append(root / f"{i:03d}-{CLASSES[cls]}.{fmt}")
        image = class_image(cls, 50_000 + i, size)
        if i % 7 == 3:
            image.putalpha(Image.linear_gradient("L").resize(size))
            paths[-1] = paths[-1].with_suffix(".png")
        image.save(paths[-1])
    return paths


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return make_tree(tmp_path_factory.mktemp("data"), classes=CLASSES, n=24)


@pytest.fixture(scope="module")
def lenet_run(tree, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "lenet5"
    trained = run_cli("train", "--data", tree, "--epochs", 2, "--out", out, "--quiet")
    assert trained.returncode == 0, trained.stderr
    return out


@pytest.fixture(scope="module")
def preset_run(tree, tmp_path_factory):
    """The fast-tiny preset (patch whitening, BatchNorm, GELU, TTA 2) for four short epochs, in fp32: the ONNX
    file computes in fp32, and so must the `tenfold predict` it is compared with."""
    out = tmp_path_factory.mktemp("runs") / "fast-tiny"
    trained = run_cli("train", "--data", tree, "--preset", "fast-tiny", "--epochs", 4, "--batch-size", 24,
                      "--precision", "fp32", "--out", out, "--quiet")
    assert trained.returncode == 0, trained.stderr
    return out


@pytest.fixture(scope="module")
def lenet_exported(lenet_run):
    """`tenfold export` of the LeNet-5 run into a folder that does not exist yet: (the result, the file)."""
    out = lenet_run.parent / "elsewhere" / "lenet.onnx"
    return run_cli("export", lenet_run, "--out", out), out


def exported_file(run_fixture: str, request) -> tuple[object, str]:
    """The run and its ONNX file, exported by `tenfold export`."""
    run = request.getfixturevalue(run_fixture)
    if run_fixture == "lenet_run":
        result, path = request.getfixturevalue("lenet_exported")
    else:
        result, path = run_cli("export", run), run / "model.onnx"
    assert result.returncode == 0, result.stderr
    difference = float(re.search(r"largest difference from tenfold's own probabilities (\S+)", result.stdout)[1])
    assert difference <= 1e-4 and path.is_file()
    return run, str(path)


def predicted(run, paths) -> np.ndarray:
    """`tenfold predict --tta 0 --json --top K` for every class: (N, classes) probabilities in class order."""
    result = run_cli("predict", run, *paths, "--tta", 0, "--json", "--top", len(CLASSES))
    assert result.returncode == 0, result.stderr
    rows = [{p["class"]: p["probability"] for p in item["top"]} for item in json.loads(result.stdout)]
    return np.array([[row[c] for c in CLASSES] for row in rows])


@pytest.mark.parametrize("run_fixture", ["lenet_run", "preset_run"])
def test_onnxruntime_equals_tenfold_predict_on_100_unseen_images(run_fixture, request, tmp_path):
    run, model = exported_file(run_fixture, request)
    paths = unseen_images(tmp_path / "unseen")
    expected = predicted(run, paths)
    got = np.stack([readme_probabilities(model, str(p)) for p in paths])
    assert got.shape == (100, 3) and np.abs(got - expected).max() <= 1e-4
    assert (got.argmax(1) == expected.argmax(1)).all()
    assert (expected.argmax(1) == np.arange(100) % 3).mean() > 0.6  # a model that learnt something: top-1 matters


def test_the_file_carries_its_contract_and_no_pickle(lenet_exported):
    result, out = lenet_exported  # written into a folder that did not exist
    assert result.returncode == 0, result.stderr
    assert f"wrote {out}" in result.stdout and "uint8 images (N, 32, 32, 3) -> probabilities (N, 3)" in result.stdout
    assert sorted(p.name for p in out.parent.iterdir()) == ["lenet.onnx"]  # no weights beside it, no temp file
    from tenfold.fileio import current_umask
    assert out.stat().st_mode & 0o777 == 0o666 & ~current_umask()  # readable as any file the user writes
    model = onnx.load(out)
    onnx.checker.check_model(model, full_check=True)
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["classes"]) == list(CLASSES) and json.loads(meta["image_size"]) == [32, 32]
    assert meta["resize"] == "stretch" and meta["tenfold_version"] and meta["model"] == "lenet5"
    [images], [probs] = model.graph.input, model.graph.output
    assert images.name == "images" and images.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    dims = images.type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [32, 32, 3]  # any batch size
    assert probs.name == "probabilities" and probs.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    # a protobuf of operators and tensors only: every node a standard ONNX operator, no opaque blob
    assert {n.domain for n in model.graph.node} <= {"", "ai.onnx"}
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    batch = np.stack([np.asarray(class_image(c, 7)) for c in range(3)] * 5)  # 15 images at once
    p = session.run(None, {"images": batch})[0]
    assert p.shape == (15, 3) and np.allclose(p.sum(1), 1, atol=1e-5)


def test_a_failed_export_keeps_the_earlier_file(lenet_run, lenet_exported, monkeypatch):
    from tenfold.errors import TenfoldError
    from tenfold.export import to_onnx
    before = lenet_exported[1].read_bytes()
    (lenet_run / "model.onnx").write_bytes(before)  # an earlier export
    monkeypatch.setattr(to_onnx, "TOLERANCE", -1.0)  # no export can pass: verification fails after writing
    with pytest.raises(TenfoldError, match="disagrees with tenfold .* nothing was written"):
        to_onnx.export_onnx(lenet_run)
    assert (lenet_run / "model.onnx").read_bytes() == before
    assert not [p for p in lenet_run.iterdir() if p.name.endswith(".tmp")]


def test_export_errors_are_one_line_and_never_touch_the_run(lenet_run, tmp_path):
    from tenfold.fileio import run_lock
    assert_one_line_error(run_cli("export", tmp_path), "not a tenfold run")
    assert_one_line_error(run_cli("export", lenet_run / "checkpoint.pt"), "is a file: give the run directory")
    assert_one_line_error(run_cli("export", lenet_run, "--out", tmp_path), "is a folder")
    checkpoint = (lenet_run / "checkpoint.pt").read_bytes()
    for own in ("checkpoint.pt", "config.json", "history.csv"):  # the run's own files are never written over
        assert_one_line_error(run_cli("export", lenet_run, "--out", lenet_run / own), "is not an .onnx file")
    assert (lenet_run / "checkpoint.pt").read_bytes() == checkpoint
    assert_one_line_error(run_cli("export", lenet_run, "--out", lenet_run / "config.json" / "x.onnx"),
                          "config.json is a file, not a folder")
    with run_lock(lenet_run, "train"):  # as a training process holds it
        assert_one_line_error(run_cli("export", lenet_run, "--out", tmp_path / "x.onnx"), "is still training")
    wrong = run_cli("export", lenet_run, "--format", "tflite")
    assert wrong.returncode == 2 and "invalid choice: 'tflite'" in wrong.stderr


def test_a_model_the_exporter_cannot_trace_is_a_one_line_error(tree, tmp_path):
    net = tmp_path / "net.py"
    net.write_text("import torch\n"
                   "class Net(torch.nn.Module):\n"
                   "    def __init__(self, num_classes):\n"
                   "        super().__init__()\n"
                   "        self.fc = torch.nn.Linear(3 * 32 * 32, num_classes)\n"
                   "    def forward(self, x):\n"
                   "        y = self.fc(x.flatten(1))\n"
                   "        return y if float(y.sum()) > 0 else -y  # control flow on the data: not one graph\n"
                   "def make(num_classes):\n"
                   "    return Net(num_classes)\n")
    trained = run_cli("train", "--data", tree, "--model", f"{net}:make", "--epochs", 1, "--out", tmp_path / "r",
                      "--quiet")
    assert trained.returncode == 0, trained.stderr
    assert_one_line_error(run_cli("export", tmp_path / "r"), "could not be exported to ONNX")
    assert not (tmp_path / "r" / "model.onnx").exists()


def test_without_the_extra_the_error_names_the_install(lenet_run, monkeypatch):
    import sys

    from tenfold.errors import TenfoldError
    from tenfold.export import to_onnx
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed
    with pytest.raises(TenfoldError, match=r"pip install 'tenfold\[export\]'.*onnxruntime: missing"):
        to_onnx.export_onnx(lenet_run)
