"""Argument parsing shared by every command: one-line usage errors and number types."""
from __future__ import annotations

import argparse

EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_TERMINATED = 1, 2, 130, 143


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line and exit 2, instead of argparse's usage dump
        self.exit(EXIT_USAGE, f"error: {message} (see '{self.prog} --help')\n")


def positive_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got '{text}'") from None


def number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got '{text}'") from None


UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(text: str) -> float | None:
    """Seconds from '90s', '30m', '2h', '1d' (a bare number is minutes); 'off' or '0' is None (no limit)."""
    text = text.strip().lower()
    if text in ("off", "0", "none", "never"):
        return None
    unit = UNITS.get(text[-1:], None)
    try:
        value = float(text[:-1] if unit else text) * (unit or 60)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a duration like 30m, 2h or off, got '{text}'") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive duration, got '{text}'")
    return value


def positive_number(text: str) -> float:
    value = number(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number above 0, got '{text}'")
    return value
