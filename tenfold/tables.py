"""Text tables for the terminal: every table tenfold prints is made by `table()` (tabulate's plain format)."""
from __future__ import annotations


def table(rows: list[list], headers: list[str], align: str = "") -> str:
    """`rows` (lists of cells, each already formatted as text; a cell may span lines) under `headers`, with each
    column aligned by `align`, one letter a column: "l" left (the default for the rest) or "r" right. Plain text:
    no rules, two spaces between columns, no trailing spaces."""
    import tabulate
    sides = {"l": "left", "r": "right"}
    colalign = tuple(sides[a] for a in align.ljust(len(headers), "l"))
    padding, tabulate.MIN_PADDING = tabulate.MIN_PADDING, 0  # columns as wide as their widest cell, header included
    try:
        text = tabulate.tabulate([[str(c) for c in row] for row in rows], headers, tablefmt="plain",
                                 colalign=colalign, disable_numparse=True)
    finally:
        tabulate.MIN_PADDING = padding
    return "\n".join(line.rstrip() for line in text.splitlines())
