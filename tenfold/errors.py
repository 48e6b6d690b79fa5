"""The errors the command line turns into one-line messages."""
import os
from pathlib import Path

from tenfold import envvars

ERRORS_ENV = envvars.WORKER_ERRORS  # set by `tenfold train --devices`: where each worker leaves its error


class TenfoldError(Exception):
    """Something the user can fix: the message says what is wrong and what to do."""


class DataError(TenfoldError):
    """A dataset that is missing, corrupt or not in a layout tenfold reads."""


class DownloadError(DataError):
    """A download that failed, was cut short or did not match its checksum."""


class CheckpointError(TenfoldError):
    """A run directory or checkpoint that cannot be used."""


class ConfigError(TenfoldError):
    """A flag or setting outside its allowed range."""


class DivergedError(TenfoldError):
    """The training loss stopped being a finite number (too high a learning rate, fp16 overflow)."""


class Terminated(BaseException):
    """SIGTERM arrived: unwind like Ctrl-C (context managers close, atomic writes are abandoned, not torn)."""


class CloudError(TenfoldError):
    """A cloud or ssh operation failed; the message says what to do."""


def in_launched_worker() -> bool:
    """A worker started by `tenfold train --devices`: its launcher prints the job's one error line."""
    return bool(os.environ.get(ERRORS_ENV)) and "RANK" in os.environ


def record_worker_error(message: str) -> None:
    """Leave this worker's one-line error for the launcher (so the user reads one line, not one per worker)."""
    try:
        Path(os.environ[ERRORS_ENV], f"rank-{os.environ['RANK']}").write_text(message + "\n")
    except OSError:
        pass
