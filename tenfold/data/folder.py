"""Image folders (`train/<class>/*`, optional `val/`, `test/`) and .tar/.tar.gz/.zip archives of them.

Images are decoded once, in parallel, to uint8 RGB at one size and cached under $TENFOLD_HOME keyed by the
source's content, so a second run starts in well under a second.
"""
from __future__ import annotations

import hashlib
import io
import os
import sys
import tarfile
import zipfile
import zlib
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path, PurePosixPath

import numpy as np

from tenfold.data.dataset import ImageSet
from tenfold.errors import DataError
from tenfold.fileio import atomic_open, tenfold_home

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm"}
SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
CACHE_VERSION = 2
Size = tuple[int, int]  # (height, width)


def warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr)


def load(spec: str, size: Size | None, default_size: int = 32, quiet: bool = False,
         as_test: bool = False, fit: str = "stretch") -> dict[str, ImageSet]:
    """{'train': ..., 'val': ..., 'test': ...} for the splits present (cached after the first call).
    `fit`: "stretch" resizes each image to `size`; "crop" keeps the aspect ratio (shorter side to `size`, then the
    centre), as photos for a pretrained model want."""
    path = Path(spec)
    if not path.exists():
        raise DataError(f"{spec}: no such file or folder")
    key = cache_key(path, size, default_size, as_test, fit)
    cache = tenfold_home() / "datasets" / f"{key}.npz"
    if cache.is_file():
        try:
            return read_cache(cache)
        except Exception:  # numpy/zipfile raise many kinds for a damaged file: rebuild, never trust it
            cache.unlink(missing_ok=True)
    files, dirs = list_source(path)
    layout = find_layout(files, dirs, spec, as_test)
    parts = decode_splits(layout, size, default_size, spec, quiet, fit)
    write_cache(cache, parts)
    return parts


def cache_key(path: Path, size: Size | None, default_size: int, as_test: bool, fit: str = "stretch") -> str:
    """A digest of the source's bytes (archives) or of every file's name, size and mtime (folders)."""
    h = hashlib.sha256(f"v{CACHE_VERSION} {size} {default_size} {as_test} {fit}".encode())
    if path.is_dir():
        for root, dirnames, filenames in sorted(os.walk(path)):
            dirnames.sort()
            for name in sorted(filenames) + [d + "/" for d in dirnames]:
                st = os.stat(os.path.join(root, name))
                h.update(f"{os.path.relpath(os.path.join(root, name), path)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    else:
        with open(path, "rb") as f:
            h.update(hashlib.file_digest(f, "sha256").digest())
    return h.hexdigest()[:32]


# --- listing the source: {relative posix path: bytes or a reader} and the set of folders ---------------

def list_source(path: Path) -> tuple[dict[str, object], set[str]]:
    if path.is_dir():
        return list_folder(path)
    name = path.name.lower()
    try:
        if zipfile.is_zipfile(path):
            return list_zip(path)
        if tarfile.is_tarfile(path):
            return list_tar(path)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, zlib.error) as e:
        raise DataError(f"{path}: corrupt or truncated archive ({e.__class__.__name__})") from None
    if name.endswith((".tar", ".tar.gz", ".tgz", ".zip")):
        raise DataError(f"{path}: corrupt or truncated archive")
    raise DataError(f"{path}: not a folder, .tar, .tar.gz or .zip of images")


def keep(rel: str) -> bool:
    parts = PurePosixPath(rel).parts
    return not any(p.startswith(".") or p == "__MACOSX" for p in parts)


def list_folder(path: Path) -> tuple[dict[str, object], set[str]]:
    files, dirs = {}, set()
    for root, dirnames, filenames in os.walk(path):
        rel_root = Path(root).relative_to(path).as_posix()
        for d in dirnames:
            dirs.add(d if rel_root == "." else f"{rel_root}/{d}")
        for f in filenames:
            rel = f if rel_root == "." else f"{rel_root}/{f}"
            if keep(rel):
                files[rel] = Path(root) / f
    return files, {d for d in dirs if keep(d)}


def list_tar(path: Path) -> tuple[dict[str, object], set[str]]:
    files, dirs = {}, set()
    try:
        with tarfile.open(path) as tar:
            for m in tar:  # one pass: a .tar.gz can only be read in order
                name = m.name.strip("/").removeprefix("./")
                if not keep(name):
                    continue
                if m.isdir():
                    dirs.add(name)
                elif m.isfile():
                    files[name] = tar.extractfile(m).read()
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise DataError(f"{path}: corrupt or truncated archive ({e.__class__.__name__})") from None
    return files, dirs | parent_dirs(files)


def list_zip(path: Path) -> tuple[dict[str, object], set[str]]:
    files, dirs = {}, set()
    try:
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                name = info.filename.strip("/")
                if not keep(name):
                    continue
                if info.is_dir():
                    dirs.add(name)
                else:
                    files[name] = z.read(info)
    except (zipfile.BadZipFile, EOFError, OSError) as e:
        raise DataError(f"{path}: corrupt or truncated archive ({e.__class__.__name__})") from None
    return files, dirs | parent_dirs(files)


def parent_dirs(files) -> set[str]:
    return {str(p) for f in files for p in PurePosixPath(f).parents if str(p) != "."}


# --- layout: which files belong to which split and class ------------------------------------------------

def find_layout(files: dict[str, object], dirs: set[str], spec: str,
                as_test: bool) -> dict[str, dict[str, list]]:
    """{split: {class: [source, ...]}}; the root is the shallowest folder holding train/ (or test/)."""
    images = {f: src for f, src in files.items() if PurePosixPath(f).suffix.lower() in IMAGE_EXTENSIONS}
    root = split_root(dirs, "test" if as_test else "train")
    if as_test and root is None and split_root(dirs, "train") is not None:
        raise DataError(f"{spec}: has train/ but no test/ split; give a folder with test/<class>/* "
                        "or one of <class>/* folders")
    if root is not None:
        split_dirs = {alias: f"{root}{alias}" for alias in SPLIT_NAMES}
    else:
        root = class_root(images)  # no train/: the folder's subfolders are the classes
        if root is None:
            raise DataError(f"{spec}: no images in train/<class>/ or <class>/ folders")
        split_dirs = {"test" if as_test else "train": root.rstrip("/")}
    layout: dict[str, dict[str, list]] = {}
    for alias, sdir in split_dirs.items():
        if sdir != "" and sdir not in dirs:
            continue
        prefix = f"{sdir}/" if sdir else ""
        classes = sorted(d[len(prefix):] for d in dirs if d.startswith(prefix) and "/" not in d[len(prefix):])
        split = SPLIT_NAMES.get(alias, alias)
        by_class = {c: sorted(f for f in images if f.startswith(f"{prefix}{c}/")) for c in classes}
        for c, members in by_class.items():
            if not members:
                raise DataError(f"{spec}: class folder '{prefix}{c}' holds no images")
        if by_class:
            layout[split] = {c: [images[f] for f in members] for c, members in by_class.items()}
    if not layout:
        raise DataError(f"{spec}: no class folders with images found")
    return layout


def split_root(dirs: set[str], split: str) -> str | None:
    """'' or 'some/prefix/' for the shallowest folder named `split` (e.g. 'train'), else None."""
    hits = sorted((d for d in dirs if PurePosixPath(d).name == split), key=lambda d: d.count("/"))
    if not hits:
        return None
    parent = str(PurePosixPath(hits[0]).parent)
    return "" if parent == "." else parent + "/"


def class_root(images: dict[str, object]) -> str | None:
    """For `<root>/<class>/<file>` trees: the root, if every image sits one folder below it."""
    parents = {str(PurePosixPath(f).parent.parent) for f in images if "/" in f}
    if len(parents) != 1 or any("/" not in f for f in images):
        return None
    parent = parents.pop()
    return "" if parent == "." else parent + "/"


def photo_size(spec: str) -> Size | None:
    """(H, W) of the first image file in folder `spec` (archives: None, they are not read twice)."""
    path = Path(spec)
    if not path.is_dir():
        return None
    for root, dirnames, filenames in os.walk(path):
        dirnames.sort()
        for f in sorted(filenames):
            if Path(f).suffix.lower() in IMAGE_EXTENSIONS and keep(f):
                shape = first_shape([Path(root) / f])
                if shape:
                    return shape
    return None


# --- decoding --------------------------------------------------------------------------------------------

def read_bytes(src) -> bytes:
    return src if isinstance(src, bytes) else Path(src).read_bytes()


def decode(src, size: Size | None, only: Size | None = None, fit: str = "stretch"):
    """uint8 (H, W, 3) RGB resized to `size` if given; None if it does not decode. The EXIF orientation is applied
    first, so the pixels stand as a photo viewer shows them. `fit="crop"`: the shorter side to `size`, then the
    centre (aspect ratio kept).

    With `only`, an image of another size is not decoded: its (H, W) comes back instead, to be redone.
    """
    from PIL import Image, ImageOps
    try:
        with Image.open(io.BytesIO(read_bytes(src))) as im:
            own = (im.height, im.width)
            if only is not None and own != only:
                return own
            if fit == "crop" and size is not None:
                scale = max(size[0] / im.height, size[1] / im.width)  # JPEG: decode at a reduced scale first
                im.draft("RGB", (max(1, int(im.width * scale)), max(1, int(im.height * scale))))
                im = ImageOps.exif_transpose(im).convert("RGB")
                im = ImageOps.fit(im, (size[1], size[0]), Image.Resampling.BILINEAR, centering=(0.5, 0.5))
                return np.asarray(im, dtype=np.uint8)
            if size is not None and own != size:
                im.draft("RGB", (size[1], size[0]))  # JPEG: decode at a reduced scale first, much faster
                im = im.convert("RGB").resize((size[1], size[0]), Image.Resampling.BILINEAR, reducing_gap=3.0)
            else:
                im = im.convert("RGB")
            return np.asarray(im, dtype=np.uint8)
    except Exception:  # Pillow raises many kinds for bad files; each just means "skip this one"
        return None


def decode_chunk(args) -> list:
    items, size, only, fit = args
    return [decode(s, size, only, fit) for s in items]


def parallel_decode(items: list, size: Size | None, only: Size | None = None, fit: str = "stretch",
                    progress: bool = False) -> list:
    """Decode in worker processes (Pillow holds the GIL for small images, so threads do not scale). Photos
    (`fit="crop"`) cost far more per file than CIFAR-sized images: they go to workers from 64 files on, with a
    progress bar on a terminal when `progress`."""
    per_worker = 2000 if fit == "stretch" else 32
    workers = min(os.cpu_count() or 1, max(1, len(items) // per_worker))
    step = max(1, min(per_worker, len(items) // (4 * workers)))
    chunks = [(items[i:i + step], size, only, fit) for i in range(0, len(items), step)]
    bar = decode_bar(len(items)) if progress else None
    try:
        if workers == 1:
            return [a for chunk in chunks for a in tick(bar, decode_chunk(chunk))]
        import multiprocessing as mp
        # spawn, not fork: forking a process that already runs torch's thread pools can deadlock
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
            return [a for chunk in pool.map(decode_chunk, chunks) for a in tick(bar, chunk)]
    finally:
        if bar is not None:
            bar.close()


def decode_bar(total: int):
    """A tqdm bar for decoding on a terminal; None elsewhere (logs stay clean)."""
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm
    return tqdm(total=total, unit="img", desc="Decoding", leave=False, file=sys.stderr, dynamic_ncols=True)


def tick(bar, decoded: list) -> list:
    if bar is not None:
        bar.update(len(decoded))
    return decoded


def first_shape(items: list) -> Size | None:
    from PIL import Image
    for src in items[:100]:
        try:
            with Image.open(io.BytesIO(read_bytes(src))) as im:
                return im.height, im.width
        except Exception:
            continue
    return None


def decode_all(items: list, size: Size | None, default_size: int, spec: str, fit: str = "stretch",
               progress: bool = False) -> list:
    """One pass when the images share a size (the common case); a second only for those that differ."""
    if size is not None:
        return parallel_decode(items, size, fit=fit, progress=progress)
    guess = first_shape(items) or (default_size, default_size)
    arrays = parallel_decode(items, None, only=guess)
    if all(a is None or isinstance(a, np.ndarray) for a in arrays):
        return arrays  # uniform: every image kept its own size
    target = (default_size, default_size)
    redo = [i for i, a in enumerate(arrays) if isinstance(a, tuple) or (isinstance(a, np.ndarray) and guess != target)]
    for i, a in zip(redo, parallel_decode([items[i] for i in redo], target)):
        arrays[i] = a
    return arrays


def decode_splits(layout: dict, size: Size | None, default_size: int, spec: str,
                  quiet: bool, fit: str = "stretch") -> dict[str, ImageSet]:
    """Decode every split at one size: `size`, else the images' own if uniform, else default_size."""
    all_src = [s for split in layout.values() for members in split.values() for s in members]
    arrays = decode_all(all_src, size, default_size, spec, fit, progress=not quiet)
    skipped = sum(a is None for a in arrays)
    if skipped == len(arrays):
        raise DataError(f"{spec}: none of the {len(all_src)} image files could be decoded")
    if skipped and not quiet:
        warn(f"{spec}: skipped {skipped} of {len(all_src)} image file(s) that could not be decoded")
    train_classes = sorted(layout.get("train", layout.get("test", {})))
    parts, i = {}, 0
    for split, by_class in layout.items():
        xs, ys = [], []
        for c in sorted(by_class):
            got = [a for a in arrays[i:i + len(by_class[c])] if a is not None]
            i += len(by_class[c])
            if not got:
                raise DataError(f"{spec}: no image of class '{split}/{c}' could be decoded")
            xs.extend(got)
            ys.extend([c] * len(got))
        classes = sorted(by_class) if split != "train" else train_classes
        if split != "train" and "train" in layout:
            extra = set(classes) - set(train_classes)
            if extra:
                raise DataError(f"{spec}: {split}/ has classes that train/ lacks: {', '.join(sorted(extra))}")
            classes = train_classes
        labels = np.array([classes.index(c) for c in ys], dtype=np.int64)
        parts[split] = ImageSet(np.stack(xs), labels, classes)
    return parts


# --- cache -----------------------------------------------------------------------------------------------

def write_cache(path: Path, parts: dict[str, ImageSet]) -> None:
    arrays = {}
    for split, data in parts.items():
        arrays[f"{split}_x"], arrays[f"{split}_y"] = data.images, data.labels
        arrays[f"{split}_classes"] = np.array(data.classes)
    with atomic_open(path) as f:
        np.savez(f, **arrays)


def read_cache(path: Path) -> dict[str, ImageSet]:
    with np.load(path, allow_pickle=False) as z:
        splits = {k[:-2] for k in z.files if k.endswith("_x")}
        return {s: ImageSet(z[f"{s}_x"], z[f"{s}_y"], [str(c) for c in z[f"{s}_classes"]]) for s in splits}
