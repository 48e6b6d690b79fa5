"""Atomic writes: a reader (or a crash) sees the old file or the new one, never half of one."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterator, IO

from tenfold import envvars


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", perms: int | None = None) -> Iterator[IO]:
    """Write to a temporary file beside `path`, fsync it, then rename it over `path`.

    The file gets `perms`, else the usual 0666 less the umask (mkstemp alone would leave it 0600).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, perms if perms is not None else 0o666 & ~current_umask())
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def atomic_write(path: str | os.PathLike, write: Callable[[IO], None], mode: str = "wb") -> None:
    with atomic_open(path, mode) as f:
        write(f)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename in `path` durable (a no-op where directories cannot be opened)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


STALE_TEMP = ".*.tmp"  # what atomic_open leaves behind when a process is killed mid-write


@contextlib.contextmanager
def run_lock(run_dir: Path, what: str = "run") -> Iterator[None]:
    """Hold an exclusive lock on `run_dir` (created if need be) for the block's life: a second process gets
    a one-line ConfigError at once. The kernel drops the lock when its holder dies, so a killed run's lock is never
    stale. Temporary files a killed writer left in `run_dir` are removed on taking it."""
    import fcntl
    from tenfold.errors import ConfigError
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        was_empty = not any(run_dir.iterdir())
        fd = os.open(run_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:  # a file in the way, a read-only folder, no permission
        raise ConfigError(f"{run_dir}: cannot hold a run there ({e.strerror or type(e).__name__})")
    locked = False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise ConfigError(f"{run_dir} is in use by another tenfold {what} (pid {holder}); wait for it to end, "
                              "or choose another --out")
        locked = True
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        for stale in run_dir.glob(STALE_TEMP):  # ours would be open; a dead writer's are garbage
            with contextlib.suppress(OSError):
                stale.unlink()
        yield
    finally:
        if locked and not any((run_dir / f).exists() for f in ("checkpoint.pt", "config.json")):
            with contextlib.suppress(OSError):  # nothing came of it: leave the folder as it was
                (run_dir / ".lock").unlink()
                if was_empty:
                    run_dir.rmdir()
        os.close(fd)


def run_busy(run_dir: Path) -> str | None:
    """The pid of the tenfold process holding `run_dir` (training into it, see run_lock), else None."""
    import fcntl
    try:
        fd = os.open(Path(run_dir) / ".lock", os.O_RDONLY)
    except OSError:
        return None  # no lock file: nobody has held it
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return None
    except BlockingIOError:
        return os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
    finally:
        os.close(fd)


CHECKPOINT = "checkpoint.pt"  # a run directory's source of truth (tenfold.training.checkpoint writes it)


def check_run_dir(run_dir: str | Path) -> Path:
    """`run_dir` as a Path when it holds a checkpoint; CheckpointError naming what it is instead (empty, a file,
    nothing, unreadable, a run before its first epoch, another folder). Reads no checkpoint and needs no torch: a
    command taking a run answers a wrong path at once."""
    from tenfold.errors import CheckpointError
    if str(run_dir) == "":
        raise CheckpointError(f"the run directory is empty: give the folder that holds {CHECKPOINT}")
    try:
        problem = run_dir_problem(Path(run_dir), str(run_dir))
    except PermissionError as e:  # stat() inside a folder we may not enter
        problem = f"{run_dir}: cannot read it ({e.strerror})"
    if problem:
        raise CheckpointError(problem)
    return Path(run_dir)


def run_dir_problem(run: Path, said: str) -> str | None:
    """What is wrong with `run` as a run directory (`said`: the path as the user gave it), else None."""
    if run.is_file():
        return f"{said} is a file: give the run directory (the folder that holds {CHECKPOINT})"
    if not run.is_dir():
        return f"{said}: no such run directory"
    checkpoint = run / CHECKPOINT
    if checkpoint.is_file():
        return None
    if checkpoint.exists() or checkpoint.is_symlink():
        return f"{said}: its {CHECKPOINT} is not a file"
    if (run / "config.json").is_file():
        return (f"{said} has no finished epoch yet (it may still be in its first one); "
                f"if it stopped, start it again with --out {said}")
    return f"{said} is not a tenfold run (no {CHECKPOINT})"


def tenfold_home() -> Path:
    """The cache folder: $TENFOLD_HOME, else ~/.cache/tenfold."""
    home = os.environ.get(envvars.HOME) or os.path.join(os.path.expanduser("~"), ".cache", "tenfold")
    return Path(home)


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
