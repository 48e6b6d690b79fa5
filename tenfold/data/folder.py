"""Image folders (`train/<class>/*`, optional `val/`, `test/`) and .tar/.tar.gz/.zip archives of them.

Images are decoded once, in parallel, to uint8 RGB at one size and cached under $TENFOLD_HOME keyed by the
source's content, so a second run starts in well under a second.
"""
from __future__ import annotations

import functools
import hashlib
import os
import posixpath
import sys
import tarfile
import zipfile
import zlib
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path, PurePosixPath

import numpy as np

from tenfold.data.imageset import ImageSet
from tenfold.data.decode import Skip, decode, shown_size
from tenfold.errors import DataError
from tenfold.data.cache import cached_arrays, check_split
from tenfold.fileio import tenfold_home
from tenfold.log import warn

SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
CACHE_VERSION = 4  # 4: the arrays carry their SHA-256 (tenfold.data.cache)
Size = tuple[int, int]  # (height, width)


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
    build = functools.partial(decoded_arrays, path, spec, size, default_size, quiet, as_test, fit)
    parts, skipped, total = from_arrays(cached_arrays(cache, build, "the decoded-images cache", check_arrays))
    if skipped and not quiet:  # on every run, cached or not: the user should know what was left out
        warn(skipped_note(spec, skipped, total))
    return parts


def cache_key(path: Path, size: Size | None, default_size: int, as_test: bool, fit: str = "stretch") -> str:
    """A digest of the source's bytes (archives) or of every file's name, size and mtime (folders)."""
    h = hashlib.sha256(f"v{CACHE_VERSION} {size} {default_size} {as_test} {fit}".encode())
    if path.is_dir():
        for root, dirnames, filenames in sorted(walk(path)):
            for name in sorted(filenames) + [d + "/" for d in dirnames]:
                full = os.path.join(root, name)
                st = os.stat(full) if os.path.exists(full) else os.lstat(full)  # a dangling link: the link's own
                h.update(f"{os.path.relpath(full, path)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode(
                    "utf-8", "surrogateescape"))  # names that are not UTF-8 (old Windows zips) hash as their bytes
    else:
        with open(path, "rb") as f:
            h.update(hashlib.file_digest(f, "sha256").digest())
    return h.hexdigest()[:32]


# --- listing the source: {relative posix path: bytes or a path} and the set of folders -----------------

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
        raise DataError(f"{path}: corrupt or truncated archive ({e.__class__.__name__})")
    if name.endswith((".tar", ".tar.gz", ".tgz", ".zip")):
        raise DataError(f"{path}: corrupt or truncated archive")
    raise DataError(f"{path}: not a folder, .tar, .tar.gz or .zip of images")


def member_name(raw: str) -> str | None:
    """An archive member's path as a posix path relative to the archive's root: Windows backslashes become
    slashes, './' and '/' prefixes and 'a/./b' spellings go; None for the root itself and for '..' escapes."""
    name = posixpath.normpath(raw.replace("\\", "/")).lstrip("/")
    if name in ("", ".") or name.split("/")[0] == "..":
        return None
    return name


def keep(rel: str) -> bool:
    parts = PurePosixPath(rel).parts
    return not any(p.startswith(".") or p == "__MACOSX" for p in parts)


def walk(path: Path, ancestors: frozenset = frozenset()):
    """(folder, sub-folders, files) top-down in sorted order, through symbolic links to folders; a link back to
    one of its own ancestors (a loop) is not entered. Two links to one folder are both walked: `test -> val` is
    a split of its own."""
    real = os.path.realpath(path)
    try:
        entries = sorted(os.scandir(path), key=lambda e: e.name)
    except OSError:
        return
    ancestors = ancestors | {real}
    dirnames = [e.name for e in entries if e.is_dir() and os.path.realpath(e.path) not in ancestors]
    filenames = [e.name for e in entries if not e.is_dir()]  # dangling links too: named as skipped later
    yield str(path), dirnames, filenames
    for d in dirnames:
        yield from walk(Path(path) / d, ancestors)


def list_folder(path: Path) -> tuple[dict[str, object], set[str]]:
    """Every file below `path`, through symbolic links to folders (see walk: no loops); a dangling link is listed
    too, to be named as skipped."""
    files, dirs = {}, set()
    for root, dirnames, filenames in walk(path):
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
                name = member_name(m.name)
                if name is None or not keep(name):
                    continue
                if m.isdir():
                    dirs.add(name)
                elif m.isfile():
                    files[name] = tar.extractfile(m).read()
                elif m.issym() or m.islnk():  # a link inside the archive: its target's bytes, once read
                    files[name] = ("link", m)
            for name, src in list(files.items()):
                if isinstance(src, tuple):
                    target = link_folder(name, src[1], files, dirs)
                    if target is None:
                        files[name] = link_target(tar, src[1])
                    elif target == "":
                        del files[name]
                    else:  # a link to a folder inside the archive: its files appear under the link's name too
                        del files[name]
                        dirs.add(name)
                        files.update({f"{name}/{f[len(target) + 1:]}": b for f, b in list(files.items())
                                      if f.startswith(target + "/") and not isinstance(b, tuple)})
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise DataError(f"{path}: corrupt or truncated archive ({e.__class__.__name__})")
    return files, dirs | parent_dirs(files)


def link_folder(name: str, member: tarfile.TarInfo, files: dict, dirs: set[str]) -> str | None:
    """The archive folder a symbolic-link member points at, or None when it points at a file or outside."""
    if not member.issym():
        return None
    target = member_name(posixpath.join(posixpath.dirname(name), member.linkname))
    if target is None or not (target in dirs or any(f.startswith(target + "/") for f in files)):
        return None
    if name == target or name.startswith(target + "/"):  # a link to itself or an ancestor: a loop, not entered
        return ""
    return target


def link_target(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes | Skip:
    """The bytes a link member points at inside the archive; a Skip when it points outside or at nothing."""
    try:
        f = tar.extractfile(member)
        if f is not None:
            return f.read()
    except (KeyError, tarfile.TarError, OSError):
        pass
    return Skip("broken link (its target is not in the archive)")


def list_zip(path: Path) -> tuple[dict[str, object], set[str]]:
    files, dirs = {}, set()
    try:
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                name = member_name(info.filename)
                if name is None or not keep(name):
                    continue
                if info.is_dir() or info.filename.endswith("\\"):
                    dirs.add(name)
                else:
                    files[name] = z.read(info)
    except (zipfile.BadZipFile, EOFError, OSError) as e:
        raise DataError(f"{path}: corrupt or truncated archive ({e.__class__.__name__})")
    return files, dirs | parent_dirs(files)


def parent_dirs(files) -> set[str]:
    return {str(p) for f in files for p in PurePosixPath(f).parents if str(p) != "."}


# --- layout: which files belong to which split and class ------------------------------------------------

Layout = dict[str, dict[str, list[tuple[str, object]]]]  # {split: {class: [(relative path, source), ...]}}


def find_layout(files: dict[str, object], dirs: set[str], spec: str, as_test: bool) -> Layout:
    """Every file in a class folder, judged later by its content, not its name. The root is the shallowest
    folder holding train/ (test/ for a test set; any capitalisation, val/valid/validation alike), else the folder
    whose sub-folders are the classes. Files in nested folders belong to their class folder."""
    root = split_root(dirs, "test" if as_test else "train", spec)
    if as_test and root is None and split_root(dirs, "train", spec) is not None:
        raise DataError(f"{spec}: has train/ but no test/ split; give a folder with test/<class>/* "
                        "or one of <class>/* folders")
    if root is not None:
        splits = split_dirs(dirs, root, spec)
    else:
        base = class_root(files, spec)
        splits = {"test" if as_test else "train": base}
    layout: Layout = {}
    for split, sdir in splits.items():
        prefix = f"{sdir}/" if sdir else ""
        classes = sorted({rel[len(prefix):].split("/")[0] for rel in list(files) + list(dirs)
                          if rel.startswith(prefix) and "/" in rel[len(prefix):]} |
                         {d[len(prefix):] for d in dirs if d.startswith(prefix) and "/" not in d[len(prefix):]})
        by_class = {c: sorted((f, files[f]) for f in files if f.startswith(f"{prefix}{c}/")) for c in classes}
        for c, members in by_class.items():
            if not members:
                raise DataError(f"{spec}: class folder '{prefix}{c}' holds no images")
        if by_class:
            layout[split] = by_class
    if not layout:
        raise DataError(f"{spec}: no class folders with images found")
    return layout


def split_root(dirs: set[str], split: str, spec: str) -> str | None:
    """'' or 'some/prefix' for the shallowest folder named `split` (any capitalisation), else None. Two at the
    same depth under different parents (a/train, b/train) are refused: which one is meant cannot be guessed."""
    hits = [d for d in dirs if SPLIT_NAMES.get(PurePosixPath(d).name.lower()) == split]
    if not hits:
        return None
    depth = min(d.count("/") for d in hits)
    parents = sorted({str(PurePosixPath(d).parent) for d in hits if d.count("/") == depth})
    if len(parents) > 1:
        raise DataError(f"{spec}: several dataset roots hold {split}/ ({', '.join(p + '/' for p in parents[:3])}); "
                        "point --data at one of them")
    return "" if parents[0] == "." else parents[0]


def split_dirs(dirs: set[str], root: str, spec: str) -> dict[str, str]:
    """{split: its folder} for the split folders directly under `root`."""
    found: dict[str, str] = {}
    for d in sorted(dirs):
        parent, name = posixpath.split(d)
        split = SPLIT_NAMES.get(name.lower())
        if parent == root and split:
            if split in found:
                raise DataError(f"{spec}: both {found[split]}/ and {d}/ look like the {split} split; keep one")
            found[split] = d
    return found


def class_root(files: dict[str, object], spec: str) -> str:
    """For `<root>/<class>/...` trees: the deepest folder that holds every file's folder; when every file sits
    directly in that folder, it is the only class (and its parent the root)."""
    parents = {posixpath.dirname(f) for f in files}
    if len(parents) > 1:
        parents.discard("")  # a README or labels.csv beside the class folders does not move the root
    if not files or parents == {""}:
        raise DataError(f"{spec}: no images in train/<class>/ or <class>/ folders "
                        "(put each class's images in a folder named after the class)")
    common = posixpath.commonpath(sorted(parents)) if "" not in parents else ""
    if parents == {common}:  # one folder of images: a single class
        return posixpath.dirname(common)
    return common


def photo_size(spec: str) -> Size | None:
    """(H, W), as shown, of the first image in folder `spec` (archives: None, they are not read twice)."""
    path = Path(spec)
    if not path.is_dir():
        return None
    for root, dirnames, filenames in walk(path):
        for f in sorted(filenames):
            shape = shown_size(Path(root) / f) if keep(f) else None
            if shape:
                return shape
    return None


# --- decoding --------------------------------------------------------------------------------------------

LARGE = 64        # photos larger than this (either side) default to LARGE x LARGE for a net trained from scratch
MAX_NAMED = 5     # skipped files named in the warning (then a count)


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


def sample_shapes(items: list, n: int = 64) -> list[Size]:
    """The shown (H, W) of up to `n` images spread over `items` (headers only)."""
    step = max(1, len(items) // n)
    return [shape for shape in map(shown_size, items[::step][:n]) if shape]


def decode_all(items: list, size: Size | None, default_size: int, spec: str, fit: str = "stretch",
               progress: bool = False) -> list:
    """At `size`; else the images' own size when they share one up to LARGE px (CIFAR-10, MNIST), LARGE x LARGE
    for larger photos, default_size for small ones of mixed sizes. One pass in the common cases."""
    shapes = sample_shapes(items) if size is None else []
    if size is None and sum(max(shape) > LARGE for shape in shapes) * 2 >= max(1, len(shapes)) and shapes:
        size = (LARGE, LARGE)  # mostly photos: a thumbnail among them does not make them small
    guess = shapes[0] if shapes else None
    if size is not None:
        return parallel_decode(items, size, fit=fit, progress=progress)
    guess = guess or (default_size, default_size)
    arrays = parallel_decode(items, None, only=guess, progress=progress)
    if not any(type(a) is tuple for a in arrays):
        return arrays  # uniform: every image kept its own size
    target = (default_size, default_size)
    redo = [i for i, a in enumerate(arrays) if type(a) is tuple or (isinstance(a, np.ndarray) and guess != target)]
    for i, a in zip(redo, parallel_decode([items[i] for i in redo], target)):
        arrays[i] = a
    return arrays


def printable(name: str) -> str:
    """A file name fit for one line of a terminal: control characters escaped, undecodable bytes replaced."""
    name = name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in name)


def skipped_note(spec: str, skipped: list[str], total: int) -> str:
    """'SPEC: skipped 3 of 23 files: a.jpg (empty file), ...' naming the first MAX_NAMED."""
    named = ", ".join(printable(x) for x in skipped[:MAX_NAMED]) + (f" and {len(skipped) - MAX_NAMED} more" if len(skipped) > MAX_NAMED else "")
    return f"{spec}: skipped {len(skipped)} of {total} file(s) that are not usable images: {named}"


def decode_splits(layout: Layout, size: Size | None, default_size: int, spec: str,
                  quiet: bool, fit: str = "stretch") -> tuple[dict[str, ImageSet], list[str], int]:
    """Decode every split at one size (see decode_all); (splits, skipped 'name (why)' entries, files seen)."""
    members = [m for split in layout.values() for c in sorted(split) for m in split[c]]
    arrays = decode_all([src for _, src in members], size, default_size, spec, fit, progress=not quiet)
    skipped = [f"{rel} ({why})" for (rel, _), why in zip(members, arrays) if isinstance(why, Skip)]
    if len(skipped) == len(arrays):
        raise DataError(f"{spec}: none of the {len(arrays)} files in class folders is an image tenfold can decode "
                        f"({', '.join(skipped[:3])})")
    train_classes = sorted(layout.get("train", layout.get("test", {})))
    parts, i = {}, 0
    for split, by_class in layout.items():
        xs, ys = [], []
        for c in sorted(by_class):
            got = [a for a in arrays[i:i + len(by_class[c])] if isinstance(a, np.ndarray)]
            i += len(by_class[c])
            if not got:
                why = [f"{rel} ({a})" for (rel, _), a in zip(by_class[c], arrays[i - len(by_class[c]):i])][:2]
                raise DataError(f"{spec}: no file of class '{c}' ({split}) is a usable image: {', '.join(why)}")
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
    return parts, skipped, len(arrays)


# --- cache -----------------------------------------------------------------------------------------------

def decoded_arrays(path: Path, spec: str, size: Size | None, default_size: int, quiet: bool, as_test: bool,
                   fit: str) -> dict[str, np.ndarray]:
    """The source decoded, as the cache's arrays: per split SPLIT_x (N, H, W, 3) uint8, SPLIT_y, SPLIT_classes;
    `skipped` (the files left out, with why) and `total` (the image files found)."""
    files, dirs = list_source(path)
    layout = find_layout(files, dirs, spec, as_test)
    parts, skipped, total = decode_splits(layout, size, default_size, spec, quiet, fit)
    arrays = {"skipped": np.array(skipped, dtype=str), "total": np.array(total)}
    for split, data in parts.items():
        arrays[f"{split}_x"], arrays[f"{split}_y"] = data.images, data.labels
        arrays[f"{split}_classes"] = np.array(data.classes)
    return arrays


def check_arrays(arrays: dict[str, np.ndarray]) -> None:
    """The cache holds a train split (or a test set alone), each split's images of one size, and what was skipped
    (see tenfold.data.cache)."""
    splits = sorted(k[:-2] for k in arrays if k.endswith("_x"))
    if not splits or not set(splits) <= {"train", "val", "test"}:
        raise ValueError(f"splits {splits}")
    for split in splits:
        check_split(arrays, split, f"{split}_classes")
    if len({arrays[f"{s}_x"].shape[1:] for s in splits}) != 1 or arrays["skipped"].ndim != 1 \
            or arrays["total"].ndim != 0:
        raise ValueError("splits of different image sizes, or no record of what was skipped")


def from_arrays(arrays: dict[str, np.ndarray]) -> tuple[dict[str, ImageSet], list[str], int]:
    """(splits, skipped files, image files found) from the cache's arrays."""
    splits = {k[:-2] for k in arrays if k.endswith("_x")}
    parts = {s: ImageSet(arrays[f"{s}_x"], arrays[f"{s}_y"], [str(c) for c in arrays[f"{s}_classes"]])
             for s in splits}
    return parts, [str(x) for x in arrays["skipped"]], int(arrays["total"])
