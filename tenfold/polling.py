"""One way to wait for something outside this process (an instance, an ssh server, a port): poll a check until
it answers or a deadline passes. (tenfold's agent on the instance has its own loops: it uses the standard
library only.)"""
from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")


def wait_until(check: Callable[[], T | None], timeout: float, interval: float) -> T | None:
    """Call `check()` every `interval` seconds until it returns something other than None, and return that; None
    when `timeout` seconds have passed without an answer (the check runs at least once, and once more at the
    deadline). A check raises to stop the wait at once (for what waiting cannot fix)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result is not None:
            return result
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        time.sleep(min(interval, left))
