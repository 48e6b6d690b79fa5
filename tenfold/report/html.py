"""report.html: one self-contained page (figures embedded as data: URLs, no external URL, no script)."""
from __future__ import annotations

import base64
import datetime
import math
from html import escape
from pathlib import Path
from tenfold.training.metrics import HTML_FORMATS, METRICS, text as metric_text

CAPTIONS = {
    "curves.png": "Loss and accuracy per epoch, training and validation.",
    "confusion.png": "Confusion matrix, normalised per true class.",
    "per_class_accuracy.png": "Accuracy per class; the dashed line is the overall accuracy.",
    "predictions.png": "Random images with their true class and the model's top-3 probabilities; "
                       "misclassified ones in red.",
}

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1100px;
       padding: 0 1em; color: #222; }
h1 { margin-bottom: .2em; } .sub { color: #666; margin-top: 0; }
.cards { display: flex; flex-wrap: wrap; gap: 1em; margin: 1.5em 0; }
.card { border: 1px solid #ddd; border-radius: 8px; padding: .8em 1.2em; min-width: 150px; }
.card b { display: block; font-size: 1.6em; }
figure { margin: 2em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: .9em; }
table { border-collapse: collapse; margin: 1em 0; font-size: .9em; }
th, td { border-bottom: 1px solid #e5e5e5; padding: .3em .8em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
"""


def percent(value) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.2%}"


def table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(str(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def epochs_table(history: list[dict]) -> str:
    """One row per epoch, one column per metric (tenfold.training.metrics); a metric only some epochs have, only
    when some do (test-time augmentation)."""
    shown = [m for m in METRICS if m.always or any(m.key in r for r in history)]
    rows = [[r["epoch"], *(metric_text(m, r.get(m.key), HTML_FORMATS) for m in shown)] for r in history]
    return table(["epoch", *(m.heading for m in shown)], rows)


def cards(ckpt: dict, summary: dict, split: str) -> str:
    history = ckpt["history"]
    last = history[-1]
    val = [r["val_accuracy"] for r in history if not math.isnan(r.get("val_accuracy", math.nan))]
    tta = "val_accuracy_tta" in last
    views = {1: " (with its mirror)", 2: " (6 test-time views)"}.get(summary.get("tta", 0), "")
    items = [(percent(summary["accuracy"]), f"accuracy on {summary['images']:,} images{views}"),
             (percent(last.get("val_accuracy")), "final validation accuracy"),
             *([(percent(last["val_accuracy_tta"]), "final validation accuracy, with test-time augmentation")]
               if tta else []),
             (percent(max(val)) if val else "n/a", "best validation accuracy (of the epochs, without test-time "
                                                   "augmentation)" if tta else "best validation accuracy"),
             (str(ckpt["epoch"]), "epochs"),
             (f"{sum(r['seconds'] for r in history):,.1f} s", "training time, all epochs"),
             (f"{sum(r['images_per_s'] for r in history) / len(history):,.0f}", "images/s (mean)")]
    html = "".join(f'<div class="card"><b>{escape(v)}</b>{escape(k)}</div>' for v, k in items)
    return f'<div class="cards">{html}</div><p>Accuracy measured on {escape(split)}.</p>'


def figure(name: str, content: bytes) -> str:
    data = base64.b64encode(content).decode("ascii")
    caption = CAPTIONS.get(name, name)
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{escape(caption)}" id="{escape(name[:-4])}">'
            f"<figcaption>{escape(caption)}</figcaption></figure>")


def environment_rows(env: dict | None) -> list[list]:
    def shown(k, v):  # the fast path as the start line said it, not its raw record
        if k == "fast_path" and isinstance(v, dict):
            from tenfold.training.fastpath import FastPath
            return FastPath.from_record(v).summary(how=False) or "PyTorch's ops"
        return v
    return ([[k, shown(k, v)] for k, v in (env or {}).items() if v is not None]
            or [["(not recorded by this run's tenfold)", ""]])


def render(run_dir: Path, ckpt: dict, summary: dict, split: str, tta: int, images: dict[str, bytes]) -> str:
    cfg = ckpt["config"]
    title = f"tenfold report: {Path(run_dir).resolve().name}"
    data_rows = [["source", ckpt.get("data_source", cfg.get("data"))], ["training images", ckpt.get("num_train")],
                 ["validation images", ckpt.get("num_val")], ["classes", ", ".join(ckpt["classes"])],
                 ["image size", "x".join(map(str, ckpt.get("input_shape", ckpt["image_shape"])))
                  + (f" (centre crops of photos cached at {ckpt['image_shape'][0]} px)" if ckpt.get("photo") else "")],
                 *([["pretrained weights", ckpt["weights"]]] if ckpt.get("weights") else []),
                 ["report's test-time views", tta]]
    body = [f"<h1>{escape(title)}</h1>",
            f'<p class="sub">{escape(cfg["model"])}{" (preset " + escape(cfg["preset"]) + ")" if cfg.get("preset") else ""}'
            f" &middot; {escape(str(Path(run_dir).resolve()))} &middot; written "
            f"{datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}</p>",
            cards(ckpt, {**summary, "tta": tta}, split),
            *(figure(name, content) for name, content in images.items()),
            "<h2>Epochs</h2>", epochs_table(ckpt["history"]),
            "<h2>Configuration</h2>", table(["setting", "value"], [[k, v] for k, v in cfg.items()]),
            "<h2>Data</h2>", table(["", ""], data_rows),
            "<h2>Environment (where it was trained)</h2>",
            table(["", ""], environment_rows(ckpt.get("environment")))]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(title)}</title><style>{STYLE}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")
