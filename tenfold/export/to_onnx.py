"""`tenfold export`: a run as one ONNX file, preprocessing inside, checked and verified before it is kept.

The graph is tenfold.export.graph.Preprocessed, exported with PyTorch's current exporter (torch.export,
`torch.onnx.export(dynamo=True)`) with a dynamic batch size; `onnx.checker` checks it, then onnxruntime runs it
on a few images and its probabilities are compared with tenfold's own. Only then is the file moved into place:
a failed export leaves any earlier file untouched. Nothing in it is pickled: ONNX is a protobuf of the graph,
its weights and string metadata.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tenfold.data import ImageSet
from tenfold.errors import TenfoldError
from tenfold.export.graph import Preprocessed, plain_pytorch
from tenfold.fileio import current_umask, fsync_dir
from tenfold.export.target import check_export, make_folder
from tenfold.training.infer import Trained, load_trained, probabilities
from tenfold.training.run import run_photo
from tenfold.version import __version__

TOLERANCE = 1e-4     # the largest difference in any probability between onnxruntime and tenfold that passes
CHECK_IMAGES = 8     # images the export is verified on (noise, flat colours and gradients: every pixel range)
NEEDS = "onnx, onnxruntime and onnxscript (pip install 'tenfold[export]')"


@dataclass
class Exported:
    path: Path
    opset: int
    input_shape: tuple[int, int, int]   # (H, W, 3) of each uint8 image; the batch dimension is dynamic
    classes: list[str]
    max_difference: float               # onnxruntime against tenfold on the check images, probability units
    checked_images: int
    onnxruntime: str                    # its version
    tenfold_precision: str              # what `tenfold predict` computes in here (the file: fp32)


def export_onnx(run_dir: str | Path, out: str | Path | None = None) -> Exported:
    """Write run `run_dir` as ONNX to `out` (default RUN_DIR/model.onnx): input `images`, uint8 (N, H, W, 3) RGB
    at the run's size; output `probabilities`, float32 (N, classes). Metadata: classes (JSON), image_size
    ([H, W]), resize ("stretch" or "crop"), tenfold_version. Raises TenfoldError (missing extra, a model the
    exporter cannot trace, a verification over TOLERANCE, an unwritable `out`); CheckpointError for a bad run."""
    out = check_export(run_dir, out)
    onnx, ort = import_onnx()
    trained = load_trained(run_dir, "cpu")
    make_folder(out)
    program = trace(Preprocessed(plain_pytorch(trained.model), trained.ckpt["mean"], trained.ckpt["std"],
                                 run_photo(trained.ckpt)).eval(), trained.shape)
    program.model.metadata_props.update(metadata(trained, run_dir))
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        program.save(tmp)
        onnx.checker.check_model(tmp, full_check=True)
        difference = verify(tmp, trained, ort)
        if difference > TOLERANCE:
            raise TenfoldError(f"the exported model disagrees with tenfold by {difference:.1e} in probability "
                               f"(over {TOLERANCE:g}); nothing was written")
        os.chmod(tmp, 0o666 & ~current_umask())  # as any file the user writes (mkstemp makes it private)
        os.replace(tmp, out)
        fsync_dir(out.parent)
    finally:
        Path(tmp).unlink(missing_ok=True)
    opset = next(v for domain, v in program.model.opset_imports.items() if domain == "")
    return Exported(out, opset, (*trained.shape, 3), trained.classes, difference, CHECK_IMAGES, ort.__version__,
                    trained.precision)


def import_onnx():
    try:
        import onnx
        import onnxruntime
        import onnxscript  # noqa: F401  (torch.onnx's exporter builds the graph with it)
    except ImportError as e:  # not installed (e.name), or installed and broken (its own message)
        raise TenfoldError(f"tenfold export needs {NEEDS}; {e.name or e}: missing or broken") from e
    return onnx, onnxruntime


def trace(module: Preprocessed, shape: tuple[int, int]):
    """torch.onnx's ONNXProgram of `module`, batch size dynamic. The exporter's progress lines, warnings and
    logged graphs are kept quiet; a failure is one TenfoldError naming its root cause."""
    sample = torch.zeros(2, *shape, 3, dtype=torch.uint8)  # 2, not 1: torch.export specialises a size of 1
    batch = torch.export.Dim("batch")
    logging.disable(logging.CRITICAL)  # torch.export logs whole graphs when it fails, torch.onnx its steps
    try:
        with warnings.catch_warnings(), open(os.devnull, "w") as null, contextlib.redirect_stdout(null), \
                contextlib.redirect_stderr(null):  # and the graphs torch.export prints when it fails
            warnings.simplefilter("ignore")
            return torch.onnx.export(module, (sample,), input_names=["images"], output_names=["probabilities"],
                                     dynamic_shapes={"images": {0: batch}}, dynamo=True, verbose=False)
    except Exception as e:  # the exporter raises many kinds; each means this model's graph cannot be written
        raise TenfoldError(f"this run's model could not be exported to ONNX: {root_cause(e)} (a model must be "
                           "one graph: no Python decisions on tensor values; TENFOLD_DEBUG=1 shows the "
                           "exporter's report)") from e
    finally:
        logging.disable(logging.NOTSET)


def root_cause(error: BaseException) -> str:
    """The first line of the innermost cause (the exporter wraps torch.export's error in its own), plain text."""
    while error.__cause__ is not None:
        error = error.__cause__
    first = (str(error).strip().splitlines() or [""])[0]
    return re.sub(r"\x1b\[[0-9;]*m", "", f"{error.__class__.__name__}: {first}")[:200]


def metadata(trained: Trained, run_dir: str | Path) -> dict[str, str]:
    """What a user of the file needs besides the graph, as ONNX metadata_props (strings; onnxruntime shows
    them as InferenceSession.get_modelmeta().custom_metadata_map)."""
    h, w = trained.shape
    return {"classes": json.dumps(trained.classes), "image_size": json.dumps([h, w]), "resize": trained.fit,
            "input": f"images: uint8 (N, {h}, {w}, 3) RGB, 0-255",
            "output": f"probabilities: float32 (N, {len(trained.classes)}), softmax over classes",
            "model": str(trained.ckpt["config"].get("model")), "run": Path(run_dir).resolve().name,
            "tenfold_version": __version__}


def check_images(shape: tuple[int, int], n: int = CHECK_IMAGES) -> np.ndarray:
    """(n, H, W, 3) uint8: noise, flat colours and gradients, fixed (seeded)."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, *shape, 3), dtype=np.uint8)
    images[n // 2:n // 2 + n // 4] = rng.integers(0, 256, (n // 4, 1, 1, 3), dtype=np.uint8)  # flat colours
    ramp = np.linspace(0, 255, shape[1], dtype=np.float32)[None, :, None]  # left to right
    for i in range(n // 2 + n // 4, n):
        images[i] = (ramp * rng.uniform(0.2, 1, 3)).astype(np.uint8)
    return images


def verify(path: str, trained: Trained, ort) -> float:
    """The largest |onnxruntime - tenfold| probability on the check images, batched and one at a time."""
    images = check_images(trained.shape)
    expected = probabilities(trained, ImageSet(images, np.zeros(len(images), np.int64), trained.classes), tta=0,
                             precision="fp32")
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    batched = session.run(None, {"images": images})[0]
    single = session.run(None, {"images": images[:1]})[0]  # the batch dimension really is dynamic
    return float(max(np.abs(batched - expected).max(), np.abs(single - expected[:1]).max()))
