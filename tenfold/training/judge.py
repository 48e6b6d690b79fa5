"""What a run is judged on, and how it did there: --data's test split, else the run's own test split, else its
validation split; never an image the run trained on (by pixel digests)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tenfold.data import ImageSet, Splits, open_dataset, open_test_set
from tenfold.data.dataset import relabel
from tenfold.errors import DataError
from tenfold.training.infer import Trained, load_trained, probabilities, summarise
from tenfold.training.run import data_spec as run_data, run_photo
from tenfold.tables import table


@dataclass
class Judged:
    """The images a run is judged on, with what the model made of them."""
    data: ImageSet
    split: str          # which split of which data, in words
    probs: np.ndarray   # (N, classes) softmax probabilities
    summary: dict       # accuracy, per-class accuracy, confusion matrix


def pick_split(trained: Trained, data: str | None, splits: Splits | None, quiet: bool) -> tuple[ImageSet, str]:
    """--data's test split (or all its images, in class folders); else, and also when --data is the run's own data,
    the run's test split; else its validation split as held out in training. Never images the run trained on."""
    source = run_data(trained.ckpt)
    if data is not None and not same_path(data, source):
        return (open_test_set(data, trained.classes, trained.shape, quiet=quiet, fit=trained.fit),
                f"the test split of {data}")
    if splits is None and source != "cifar10" and not Path(source).exists():
        raise DataError(f"this run's data ({source}) is not here: pass --data PATH with images to judge it on")
    if splits is None:
        cfg = trained.ckpt["config"]
        splits = open_dataset(source, cfg.get("val_split", 0.1), cfg.get("image_size"), quiet=quiet,
                              photo=run_photo(trained.ckpt))
    if splits.test is not None:
        return relabel(splits.test, trained.classes, trained.shape), f"the test split of {source}"
    if splits.val is not None:
        return splits.val, f"the validation split of {source} (it has no test split)"
    raise DataError(f"{source} has neither a test nor a validation split to report on: pass --data PATH "
                    "with test images")


def same_path(a: str, b: str) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except (OSError, RuntimeError):
        return a == b


def unseen(trained: Trained, images: ImageSet, split: str) -> tuple[ImageSet, str]:
    """`images` less any the run trained on (by their pixels' digests: a copied folder, its train/ subfolder,
    data that changed since the run), with the count left out named in `split`."""
    trained_on = trained.ckpt.get("train_digests")
    if trained_on is None or not len(images):
        return images, split
    seen = np.isin(images.digests(), trained_on.numpy())
    if not seen.any():
        return images, split
    if seen.all():
        raise DataError(f"all {len(images)} images of {split} were trained on by this run; judge it on images it "
                        "never saw (its validation or test split, or --data PATH with new images)")
    return images.subset(np.flatnonzero(~seen)), f"{split}, less {int(seen.sum())} image(s) the run trained on"


def judge(trained: Trained, data: str | None = None, splits: Splits | None = None, quiet: bool = False,
          tta: int | None = None) -> Judged:
    images, split = unseen(trained, *pick_split(trained, data, splits, quiet))
    probs = probabilities(trained, images, tta)
    return Judged(images, split, probs, summarise(images.labels, probs.argmax(1), trained.classes))


def evaluate_run(run_dir: str | Path, data: str | None = None, device: str = "auto",
                 quiet: bool = False, tta: int | None = None) -> dict:
    """Accuracy, per-class accuracy and the confusion matrix, judged as `tenfold report` and the Python API judge:
    on `data`'s test split, else on the run's own test split, else on its validation split; never on images the
    run trained on. The result names the split (`split`)."""
    trained = load_trained(run_dir, device)
    judged = judge(trained, data, quiet=quiet, tta=tta)
    return {"run": str(run_dir), "data": data or run_data(trained.ckpt), "split": judged.split,
            "tta": trained.views(tta), **judged.summary}


def format_evaluation(result: dict) -> str:
    classes, cm = result["classes"], np.array(result["confusion_matrix"])
    views = {0: "", 1: " (2 test-time views)", 2: " (6 test-time views)"}[result.get("tta", 0)]
    accuracy = [[c, "n/a" if result["per_class_accuracy"][c] is None else f"{result['per_class_accuracy'][c]:.2%}",
                 f"{cm[i, i]}/{cm[i].sum()}"] for i, c in enumerate(classes)]
    confusion = [[c, *cm[i]] for i, c in enumerate(classes)]
    return "\n".join([f"Judged on {result['images']} images: {result.get('split', result['data'])}{views}", "",
                      table(accuracy, ["class", "accuracy", "correct/total"], "lrr"), "",
                      "Confusion matrix (rows: true class, columns: predicted class)",
                      table(confusion, ["", *(c[:5] for c in classes)], "l" + "r" * len(classes)), "",
                      f"Test Accuracy: {result['accuracy']:.2%}"])
