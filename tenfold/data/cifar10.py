"""The official CIFAR-10 python archive: download with MD5, atomic extract, defensive parse, uint8 cache."""
from __future__ import annotations

import functools
import hashlib
import io
import os
import pickle
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import numpy as np

from tenfold import envvars
from tenfold.data.imageset import ImageSet
from tenfold.errors import DataError, DownloadError
from tenfold.data.cache import cached_arrays, check_split
from tenfold.fileio import tenfold_home

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
MD5 = "c58f30108f718f92721af3b95e74349a"
ARCHIVE = "cifar-10-python.tar.gz"
FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
CACHE_VERSION = 2  # 2: the arrays carry their SHA-256 (tenfold.data.cache)
CHUNK = 1 << 20  # bytes per read while downloading


def cache_dir() -> Path:
    return tenfold_home() / "cifar10"


def download_url() -> str:
    """The official address, or a mirror named in $TENFOLD_CIFAR10_URL."""
    return os.environ.get(envvars.CIFAR10_URL) or URL


def is_cifar10_archive(spec: str) -> bool:
    """A local copy of the official archive, or its extracted cifar-10-batches-py folder."""
    path = Path(spec)
    if path.is_dir():
        return (path / "data_batch_1").is_file() or (path / FOLDER / "data_batch_1").is_file()
    if not path.is_file():
        return False
    try:
        if not tarfile.is_tarfile(path):
            return False
        with tarfile.open(path) as tar:
            first = tar.next()
            return first is not None and first.name.split("/")[0] == FOLDER
    except (tarfile.TarError, OSError, EOFError, zlib.error):
        return False  # not readable as CIFAR-10: the folder reader gives the precise error


def load(local: str | None = None, quiet: bool = False) -> tuple[ImageSet, ImageSet]:
    """(train 50,000, test 10,000) from the cache, building it on first use.

    `local` is a copy of the archive or its extracted folder; None downloads the official archive.
    """
    if local is None:
        cache = cache_dir() / f"cifar10-uint8-v{CACHE_VERSION}.npz"
        source = functools.partial(official_arrays, quiet)
    else:
        path = Path(local)
        if path.is_dir():
            batches = path / FOLDER if (path / FOLDER).is_dir() else path
            return split_arrays(arrays(*parse_folder(batches)))
        cache = cache_dir() / f"local-{file_digest(path, 'sha256')[:16]}-v{CACHE_VERSION}.npz"
        source = functools.partial(archive_arrays, path)
    return split_arrays(cached_arrays(cache, source, "the CIFAR-10 cache", check_arrays))


def check_arrays(a: dict[str, np.ndarray]) -> None:
    """The cache holds 32x32 train and test images of its classes (see tenfold.data.cache)."""
    for split in ("train", "test"):
        check_split(a, split, "classes")
        if a[f"{split}_x"].shape[1:] != (32, 32, 3):
            raise ValueError(f"{split} images are {a[f'{split}_x'].shape[1:]}, not CIFAR-10's (32, 32, 3)")


def official_arrays(quiet: bool) -> dict[str, np.ndarray]:
    return arrays(*parse_folder(ensure_extracted(quiet=quiet)))


def archive_arrays(path: Path) -> dict[str, np.ndarray]:
    return arrays(*parse_archive(path))


def arrays(train_x, train_y, test_x, test_y, classes) -> dict[str, np.ndarray]:
    """The cache's arrays: uint8 (N, 32, 32, 3) images, int64 labels, the class names."""
    return {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y, "classes": np.array(classes)}


def split_arrays(a: dict[str, np.ndarray]) -> tuple[ImageSet, ImageSet]:
    classes = [str(c) for c in a["classes"]]
    return ImageSet(a["train_x"], a["train_y"], classes), ImageSet(a["test_x"], a["test_y"], classes)


def ensure_extracted(quiet: bool = False) -> Path:
    """Download (if needed), verify and extract the official archive; returns the batches folder."""
    root = cache_dir()
    folder = root / FOLDER
    if folder.is_dir():
        return folder
    archive = root / ARCHIVE
    if not archive.is_file():
        download(download_url(), archive, MD5, quiet=quiet)
    elif file_digest(archive, "md5") != MD5:
        raise DownloadError(f"{archive} does not match CIFAR-10's MD5 {MD5}: delete it and run again to download")
    extract(archive, root)
    return folder


def download(url: str, dest: Path, md5: str, quiet: bool = False) -> None:
    """Stream `url` to `dest` via a .part file; check the MD5; leave nothing behind on failure."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, part = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            got = stream(url, f, quiet)
        if got != md5:
            raise DownloadError(f"downloaded {url} but its MD5 is {got}, expected {md5}: "
                                "the file is corrupt or not CIFAR-10; try again later")
        os.replace(part, dest)
    except BaseException:
        Path(part).unlink(missing_ok=True)
        raise


def stream(url: str, f, quiet: bool) -> str:
    """Copy the response body into `f`, returning its MD5; a short body is an error."""
    from tqdm import tqdm

    h = hashlib.md5()
    hint = (f"without a network, copy {ARCHIVE} to {cache_dir() / ARCHIVE} "
            "or pass --data PATH (that archive, its extracted folder, or an image folder)")
    try:
        with urllib.request.urlopen(url, timeout=60) as r:
            total = int(r.headers.get("Content-Length") or 0)
            bar = tqdm(total=total or None, unit="B", unit_scale=True, desc="CIFAR-10",
                       disable=quiet or not sys.stderr.isatty())
            received = 0
            while chunk := r.read(CHUNK):
                f.write(chunk)
                h.update(chunk)
                received += len(chunk)
                bar.update(len(chunk))
            bar.close()
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or e.__class__.__name__
        raise DownloadError(f"cannot download CIFAR-10 from {url} ({reason}); {hint}")
    except Exception as e:  # http.client.IncompleteRead and friends: the transfer broke off
        raise DownloadError(f"the CIFAR-10 download from {url} broke off ({e.__class__.__name__}); "
                            f"run again, or {hint}")
    if total and received != total:
        raise DownloadError(f"the CIFAR-10 download from {url} broke off after {received} of {total} bytes; "
                            f"run again, or {hint}")
    return h.hexdigest()


def extract(archive: Path, root: Path) -> None:
    """Extract into a temporary folder, then rename it into place in one step."""
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".extract-"))
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")  # refuses absolute paths, links out, devices
        if not (tmp / FOLDER).is_dir():
            raise DataError(f"{archive} holds no {FOLDER} folder: not the CIFAR-10 python archive")
        os.replace(tmp / FOLDER, root / FOLDER)
    except (tarfile.TarError, EOFError, OSError) as e:
        raise DataError(f"{archive} is corrupt or truncated ({e.__class__.__name__}): delete it and run again")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class SafeUnpickler(pickle.Unpickler):
    """Only what CIFAR-10's batches need: numpy arrays and bytes. Anything else is refused."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    }

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refused to load {module}.{name}")
        return super().find_class(module, name)


def unpickle(data: bytes, name: str) -> dict:
    try:
        obj = SafeUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as e:
        raise DataError(f"CIFAR-10 file {name} is corrupt ({e})")
    if not isinstance(obj, dict):
        raise DataError(f"CIFAR-10 file {name} is not a dictionary")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def parse_batch(data: bytes, name: str) -> tuple[np.ndarray, np.ndarray]:
    """One batch -> (N, 32, 32, 3) uint8 images, (N,) int64 labels, checked."""
    d = unpickle(data, name)
    x, y = d.get("data"), d.get("labels")
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3072:
        raise DataError(f"CIFAR-10 file {name}: 'data' is not an (N, 3072) uint8 array")
    if not isinstance(y, (list, np.ndarray)) or len(y) != len(x):
        raise DataError(f"CIFAR-10 file {name}: 'labels' does not match 'data'")
    y = np.asarray(y)
    if y.dtype.kind not in "iu" or (len(y) and (y.min() < 0 or y.max() > 9)):
        raise DataError(f"CIFAR-10 file {name}: labels are not integers 0-9")
    return x.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy(), y.astype(np.int64)  # NCHW planes -> NHWC


def parse_meta(data: bytes) -> list[str]:
    names = unpickle(data, "batches.meta").get("label_names")
    if not isinstance(names, list) or len(names) != 10 or not all(isinstance(n, (bytes, str)) for n in names):
        raise DataError("CIFAR-10 file batches.meta: 'label_names' is not a list of 10 names")
    return [n.decode() if isinstance(n, bytes) else n for n in names]


def assemble(read) -> tuple:
    """Build the arrays from `read(name) -> bytes` for each expected file."""
    classes = parse_meta(read("batches.meta"))
    train = [parse_batch(read(n), n) for n in TRAIN_BATCHES]
    test_x, test_y = parse_batch(read("test_batch"), "test_batch")
    train_x = np.concatenate([b[0] for b in train])
    train_y = np.concatenate([b[1] for b in train])
    return train_x, train_y, test_x, test_y, classes


def parse_folder(folder: Path) -> tuple:
    def read(name: str) -> bytes:
        try:
            return (folder / name).read_bytes()
        except OSError:
            raise DataError(f"CIFAR-10 folder {folder} lacks {name}")
    return assemble(read)


def parse_archive(path: Path) -> tuple:
    """Read the batches straight out of a local archive, without extracting it."""
    try:
        with tarfile.open(path) as tar:
            members = {m.name: m for m in tar.getmembers() if m.isfile()}

            def read(name: str) -> bytes:
                m = members.get(f"{FOLDER}/{name}")
                if m is None:
                    raise DataError(f"{path} lacks {FOLDER}/{name}: not a complete CIFAR-10 archive")
                return tar.extractfile(m).read()
            return assemble(read)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise DataError(f"{path} is corrupt or truncated ({e.__class__.__name__})")


def file_digest(path: Path, algo: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, algo).hexdigest()
