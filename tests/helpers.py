"""What the tests share besides fixtures (those are in conftest.py): the repository's paths, a CLI runner, waiting,
the one-line error check, learnable image trees, CIFAR-10 archives in the official format, a local HTTP server,
the README's onnxruntime example run as written."""
from __future__ import annotations

import http.server
import io
import os
import re
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED_CIFAR = REPO.parent / "shared" / "datasets" / "cifar10-train-jpeg.tar.gz"
COLOURS = [(220, 40, 40), (40, 200, 40), (40, 40, 220), (200, 200, 40), (200, 40, 200), (40, 200, 200)]


def class_image(cls: int, i: int, size=(32, 32), mode: str = "RGB") -> Image.Image:
    """A learnable image: the class's colour with noise, so a working trainer separates classes."""
    rng = np.random.default_rng(cls * 100003 + i)
    base = np.array(COLOURS[cls % len(COLOURS)], dtype=np.float32)
    pixels = np.clip(base + rng.normal(0, 40, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, "RGB").convert(mode)


def make_tree(root: Path, classes=("cat", "dog", "frog"), n: int = 12, splits=("train",),
              size=(32, 32), fmt: str = "png") -> Path:
    for split in splits:
        for c, name in enumerate(classes):
            d = root / split / name
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                class_image(c, i + 1000 * len(split), size).save(d / f"{i:04d}.{fmt}")
    return root


def run_cli(*args, env: dict | None = None, timeout: float = 300, cwd=None) -> subprocess.CompletedProcess:
    """`tenfold ARGS` as a user runs it: a new process, its exit code, stdout and stderr."""
    full_env = {k: v for k, v in os.environ.items() if k != "TENFOLD_DEBUG"}  # unless the test sets it
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "tenfold", *map(str, args)], capture_output=True, text=True,
                          env=full_env, timeout=timeout, cwd=cwd or REPO)


def wait_for(condition, what: str = "condition", timeout: float = 120.0) -> None:
    """Poll `condition()` until it holds; fail the test, naming `what`, after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def assert_one_line_error(result: subprocess.CompletedProcess, *words: str) -> None:
    """A non-zero exit, no traceback, and one line on stderr naming the problem."""
    assert result.returncode != 0, result
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("warning:")]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines
    for w in words:
        assert w.lower() in lines[0].lower(), (w, lines[0])


class Server:
    """A local HTTP server on 127.0.0.1: routes map a path to (body, mode)."""

    def __init__(self):
        self.routes: dict[str, tuple[bytes, str]] = {}
        self.requests: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append(self.path)
                body, mode = server.routes.get(self.path, (b"", "missing"))
                if mode == "missing":
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                # "cut": the connection closes halfway through, as a dropped download does
                self.wfile.write(body[: len(body) // 2] if mode == "cut" else body)
                self.wfile.flush()
                if mode == "cut":
                    self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_port}{path}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def cifar_batch(n: int, seed: int) -> dict:
    """One batch in the official format: bytes keys, (n, 3072) uint8 planes, a list of labels."""
    rng = np.random.default_rng(seed)
    labels = [int(v) for v in rng.integers(0, 10, n)]
    data = np.zeros((n, 3072), dtype=np.uint8)
    for i, y in enumerate(labels):  # each class a distinct flat colour, plane by plane (R, G, B)
        data[i] = np.repeat(np.array([y * 25, 255 - y * 25, (y * 77) % 256], dtype=np.uint8), 1024)
    return {b"batch_label": f"batch {seed}".encode(), b"labels": labels, b"data": data,
            b"filenames": [f"img_{seed}_{i}.png".encode() for i in range(n)]}


def cifar_archive(n: int = 20, batches: dict | None = None) -> bytes:
    """A cifar-10-python.tar.gz in the official layout (protocol-2 pickles, as the original's)."""
    import pickle
    files = {f"data_batch_{i}": cifar_batch(n, i) for i in range(1, 6)}
    files["test_batch"] = cifar_batch(n, 99)
    files["batches.meta"] = {b"label_names": [c.encode() for c in CIFAR_CLASSES],
                             b"num_cases_per_batch": n, b"num_vis": 3072}
    files.update(batches or {})
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, obj in files.items():
            payload = obj if isinstance(obj, bytes) else pickle.dumps(obj, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def readme_example() -> str:
    """The README's onnxruntime example, as a user would paste it."""
    readme = (REPO / "README.md").read_text()
    block = re.search(r"<!-- onnxruntime example -->\s*```python\n(.*?)```", readme, re.S)
    assert block, "README.md lost its onnxruntime example"
    return block.group(1)


def readme_probabilities(model: str, image: str) -> np.ndarray:
    """Run the README's example on one image; its `probabilities` (classes,)."""
    namespace: dict = {}
    code = readme_example().replace('"runs/lenet5/model.onnx"', repr(model)).replace('"cat.jpg"', repr(image))
    exec(compile(code, "README.md", "exec"), namespace)
    return namespace["probabilities"]
