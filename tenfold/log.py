"""tenfold's messages to people: through the standard `logging` module, on the "tenfold" logger.

Library code says what it is doing with `note()` (INFO) and what needs attention with `warn()` (WARNING); it never
prints. By default the "tenfold" logger writes to stderr as the command line always has ("tenfold: ..." and
"warning: ..."), as PyTorch Lightning's logger does, so a notebook sees the same lines; silence or redirect them
with the standard calls, e.g. `logging.getLogger("tenfold").setLevel(logging.WARNING)`.
"""
from __future__ import annotations

import logging
import sys

logger = logging.getLogger("tenfold")

PREFIX = {logging.INFO: "tenfold: ", logging.WARNING: "warning: "}  # what each level's line starts with


class Lines(logging.Formatter):
    """A record as the command line prints it: its level's prefix, then the message (no time, no logger name)."""

    def format(self, record: logging.LogRecord) -> str:
        prefix = getattr(record, "prefix", None)
        if prefix is None:
            prefix = PREFIX.get(record.levelno, "error: " if record.levelno > logging.WARNING else "")
        return prefix + record.getMessage()


class Stderr(logging.Handler):
    """Writes to whatever sys.stderr is at the time (a test's capture, a redirected stream), flushed at once."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            print(self.format(record), file=sys.stderr, flush=True)
        except Exception:  # noqa: BLE001 (logging's own rule: a failing handler reports, never raises)
            self.handleError(record)


def setup() -> None:
    """The default, at import (`import tenfold` does it): INFO and above to stderr, unless the application already
    gave the logger a handler or a level of its own."""
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)
    if not logger.handlers:
        handler = Stderr()
        handler.setFormatter(Lines())
        logger.addHandler(handler)
        logger.propagate = False  # the lines once, not again through a root handler an application set up


def note(message: str, prefix: str = "tenfold: ") -> None:
    """What tenfold is doing (INFO): `tenfold: message` on stderr by default; advice takes prefix="note: "."""
    logger.info(message, extra={"prefix": prefix})


def warn(message: str) -> None:
    """What needs the user's attention (WARNING): `warning: message` on stderr by default."""
    logger.warning(message)


setup()
