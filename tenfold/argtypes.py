"""Argument parsing shared by every command: one-line usage errors and number types."""
from __future__ import annotations

import argparse

EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_TERMINATED = 1, 2, 130, 143


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors, no abbreviated options (`--epoch` is not `--epochs`: a typo must not pass
    for another flag) and a "did you mean" for a near miss."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message):  # one line and exit 2, instead of argparse's usage dump
        prog = (self.chosen or self).prog
        self.exit(EXIT_USAGE, f"error: {message}{self.suggestion(message)} (see '{prog} --help')\n")

    def suggestion(self, message: str) -> str:
        import difflib
        if not message.startswith("unrecognized arguments:"):
            return ""
        known = sorted(set(options(self.chosen or self)), key=len)
        for word in message.split(":", 1)[1].split():
            flag = word.split("=", 1)[0]
            if not flag.startswith("--"):
                continue
            close = [k for k in known if k.startswith(flag)] or \
                difflib.get_close_matches(flag, known, n=1, cutoff=0.75)  # a prefix first: --epo is --epochs
            if close:
                return f"; did you mean {close[0]}?"
        return ""

    chosen = None  # the sub-command's parser, once one is chosen (its flags are the ones to suggest)

    def parse_known_args(self, args=None, namespace=None):
        result = super().parse_known_args(args, namespace)
        command = getattr(result[0], "command", None)
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction) and command in action.choices:
                self.chosen = action.choices[command]
        return result


def options(parser: argparse.ArgumentParser):
    """Every --long option of `parser` and of its sub-commands."""
    for action in parser._actions:
        yield from (o for o in action.option_strings if o.startswith("--"))
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from options(sub)


def positive_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got '{text}'")


def number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got '{text}'")


UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(text: str, bare: str = "m") -> float | None:
    """Seconds from '90s', '30m', '2h', '1d' (a bare number is in `bare` units: minutes unless told); 'off' or
    '0' is None (no limit). The one duration parser of every flag that takes one."""
    text = text.strip().lower()
    if text in ("off", "0", "none", "never"):
        return None
    unit = UNITS.get(text[-1:], None)
    try:
        value = float(text[:-1] if unit else text) * (unit or UNITS[bare])
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a duration like 30m, 2h or off, got '{text}'")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive duration, got '{text}'")
    return value


def duration_text(seconds: float) -> str:
    """The inverse of `duration`: 3600 -> '1h', 1800 -> '30m', 90 -> '90s', as the flags take it."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def positive_number(text: str) -> float:
    value = number(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number above 0, got '{text}'")
    return value


def add_settings(parser: argparse.ArgumentParser, config_class) -> None:
    """One flag per field of `config_class` (TrainConfig), from the field: --name-with-dashes, its type, choices,
    help and default as the field declares them (see tenfold.config.setting). Every flag's default is None, so
    that a resumed run knows which flags were given; the config holds the defaults."""
    import dataclasses
    types = {"int": positive_int, "int | None": positive_int, "float": number, "str": str, "str | None": str}
    for f in dataclasses.fields(config_class):
        meta, flag = f.metadata, "--" + f.name.replace("_", "-")
        help_text = meta.get("help", "")
        if meta.get("show_default", True) and f.default not in (None, False):
            help_text += f" (default {f.default:g})" if isinstance(f.default, float) else f" (default {f.default})"
        if f.type == "bool":
            action = argparse.BooleanOptionalAction if meta.get("negatable") else "store_true"
            parser.add_argument(flag, action=action, default=None, help=help_text)
            continue
        choices = meta.get("choices")
        kind = int if choices and isinstance(choices[0], int) else types[f.type]
        parser.add_argument(flag, type=kind, choices=choices, metavar=meta.get("metavar"), help=help_text)


# The flags of `tenfold train` that are not settings (the settings reach workers resolved, as JSON): what a
# worker of `--devices` is started with, besides them.
RUN_FLAGS = {"out": "--out", "resume": "--resume", "quiet": "--quiet", "report": "--report",
             "tensorboard": "--tensorboard"}


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """Every flag of `tenfold train`: TrainConfig's settings, then the run's own flags. The one parser of a train
    command, for the command line and for a cloud job's command (which names its run as tenfold train would)."""
    from tenfold.config import TrainConfig
    add_settings(p, TrainConfig)  # every setting's flag, help and default from TrainConfig's fields
    p.add_argument("--out", help="run directory (default runs/MODEL-DATE-TIME)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run after its last finished epoch")
    p.add_argument("--quiet", action="store_true", help="no epoch lines or progress bar")
    p.add_argument("--devices", help="workers: N, or auto (every GPU); with --device cpu, N CPU workers (gloo)")
    p.add_argument("--max-restarts", type=int, help="with --devices: restart the workers from the last "
                                                     "checkpoint up to this many times if one fails (default 0)")
    p.add_argument("--report", action="store_true", help="write the figures and report.html at the end")
    p.add_argument("--tensorboard", action="store_true",
                   help="also log TensorBoard scalars to RUN_DIR/tensorboard (needs tenfold[tensorboard])")
