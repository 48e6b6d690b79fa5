"""Where `tenfold export` writes, checked before anything heavy loads (no torch here): a wrong path is answered
at once, and nothing of the run is ever written over."""
from __future__ import annotations

import os
from pathlib import Path

from tenfold.errors import TenfoldError
from tenfold.fileio import check_run_dir, run_busy


def check_export(run_dir: str | Path, out: str | Path | None) -> Path:
    """The file to write (`out`, else RUN_DIR/model.onnx), once the run and the path pass: CheckpointError for
    what is not a run, TenfoldError for a run still training and for a bad `out` (see check_out). Makes nothing."""
    check_run_dir(run_dir)
    holder = run_busy(Path(run_dir))
    if holder:
        raise TenfoldError(f"{run_dir} is still training (tenfold pid {holder}); export it when it has finished")
    return check_out(Path(out) if out is not None else Path(run_dir) / "model.onnx")


def check_out(path: Path) -> Path:
    """TenfoldError for a folder, for a file that exists and is not an earlier export (a run's checkpoint.pt, say),
    for a path through a file."""
    if path.is_dir():
        raise TenfoldError(f"--out {path} is a folder; name the file to write (e.g. {path / 'model.onnx'})")
    if path.exists() and path.suffix.lower() != ".onnx":
        raise TenfoldError(f"--out {path} exists and is not an .onnx file: tenfold writes over an earlier export "
                           "only; name another file")
    through = next((p for p in path.parents if p.exists() or p.is_symlink()), None)
    if through is not None and not through.is_dir():
        what = "a broken link" if through.is_symlink() and not through.exists() else "a file"
        raise TenfoldError(f"--out {path}: {through} is {what}, not a folder")
    if through is not None and not os.access(through, os.W_OK | os.X_OK):
        raise TenfoldError(f"--out {path}: cannot write in {through} (permission denied)")
    return path


def make_folder(path: Path) -> Path:
    """`path` (checked by check_export) once its folder exists: TenfoldError when it cannot be made."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as e:  # made a file since it was checked
        raise TenfoldError(f"--out {path}: {e.filename} is a file, not a folder") from e
    except OSError as e:
        raise TenfoldError(f"--out {path}: cannot make its folder ({e.strerror})") from e
    return path
