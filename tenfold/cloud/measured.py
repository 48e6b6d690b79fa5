"""This account's measured throughputs: what `tenfold bench` recorded on its instances, for `tenfold cloud plan`.

Standard library only (no boto3): `tenfold cloud run` to any ssh host imports a bench's results after the fetch.
"""
from __future__ import annotations

from pathlib import Path

from tenfold.fileio import atomic_write_text, tenfold_home

HEADER = "type,model,precision,batch_size,image_size,train_images_per_s,measured,source"


def measured_path() -> Path:
    return tenfold_home() / "cloud" / "measured.csv"


def account_measurements() -> str:
    return measured_path().read_text() if measured_path().exists() else ""


def import_measurements(folder) -> int:
    """Add the measurements `tenfold bench` left in `folder` (runs/bench, fetched from an instance) to this
    account's measured.csv, each line once; how many were new."""
    have = set(account_measurements().splitlines())
    new = [line for f in sorted(Path(folder).glob("measured-*.csv")) for line in f.read_text().splitlines()[1:]
           if line.strip() and line not in have]
    new = list(dict.fromkeys(new))
    if new:
        text = account_measurements() or HEADER + "\n"
        measured_path().parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(measured_path(), text + "\n".join(new) + "\n")
    return len(new)
