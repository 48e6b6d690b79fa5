"""One image file -> uint8 (H, W, 3) RGB pixels as a photo viewer shows them. Training, evaluate, predict and the
report all decode through `decode`, so a model sees the same pixels everywhere.

- Orientation: the EXIF Orientation tag is applied (phone photos are often stored sideways).
- Transparency (RGBA, LA, PA, palette or RGB/L with a transparent colour): composited on white, as on a web page.
- Bit depth: 16- and 32-bit integer greyscale is scaled to 8 bits (Pillow's own conversion clips it to white);
  float images in [0, 1] are scaled by 255.
- Formats: whatever Pillow opens, judged by content, not by the file name; HEIC/HEIF as well where the
  `pillow-heif` plugin is installed.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

BACKGROUND = (255, 255, 255)  # under transparent pixels
ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
WIDE_INT_MODES = {"I", "I;16", "I;16L", "I;16B", "I;16N"}
ROTATED = {5, 6, 7, 8}        # EXIF orientations that swap width and height


class Skip(str):
    """Why a file was not used (a str: 'truncated', 'not an image', ...)."""


def register_plugins() -> None:
    """Formats Pillow reads only through a plugin, when the plugin is installed (HEIC/HEIF: pillow-heif)."""
    try:
        from pillow_heif import register_heif_opener
    except ImportError:
        return
    register_heif_opener()


register_plugins()


def read(src) -> bytes | Skip:
    """The bytes of `src` (bytes already, or a path), or why they cannot be had."""
    if isinstance(src, (bytes, Skip)):
        return src
    path = Path(src)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return Skip("broken link" if path.is_symlink() else "no such file")
    except IsADirectoryError:
        return Skip("a folder")
    except OSError as e:
        return Skip(f"unreadable ({e.strerror or e.__class__.__name__})")


def why_not(data: bytes, error: Exception) -> Skip:
    if not data:
        return Skip("empty file")
    head = data[:512].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head")):
        return Skip("an HTML or XML page, not an image")
    if data[4:8] == b"ftyp" and data[8:12] in (b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1"):
        return Skip("a HEIC/HEIF photo: pip install pillow-heif to read it")
    from PIL import Image
    if isinstance(error, Image.DecompressionBombError):
        return Skip("too large to decode safely (over Pillow's pixel limit)")
    text = str(error).lower()
    if "truncated" in text or isinstance(error, (EOFError, SyntaxError)) or "broken" in text:
        return Skip("truncated or damaged")
    if "cannot identify" in text:
        return Skip("not an image Pillow can read")
    return Skip(f"cannot be decoded ({error.__class__.__name__})")


def orientation(im) -> int:
    try:
        return int(im.getexif().get(0x0112, 1))
    except Exception:  # a damaged EXIF block: show the pixels as stored
        return 1


def to_rgb(im):
    """A Pillow image in any mode -> RGB as a viewer shows it (orientation applied, transparency on white,
    wide integer and float greyscale scaled to 8 bits)."""
    from PIL import Image, ImageOps
    if orientation(im) != 1:
        im = ImageOps.exif_transpose(im)
    if im.mode in WIDE_INT_MODES:
        a = np.asarray(im).astype(np.int64)
        peak = int(a.max(initial=0))
        # 16-bit images are 16-bit data; a 32-bit 'I' image may hold 8- or 16-bit values (TIFF, PGM): its range
        top = 65535 if im.mode != "I" else 255 if peak <= 255 else 65535 if peak <= 65535 else peak
        im = Image.fromarray(((a.clip(0, top) * 255 + top // 2) // top).astype(np.uint8), "L")
    elif im.mode == "F":
        a = np.nan_to_num(np.asarray(im, dtype=np.float64))
        scale = 255.0 if a.max(initial=0) <= 1.0 else 1.0  # [0, 1] floats, else already on the 0-255 scale
        im = Image.fromarray((a * scale).clip(0, 255).round().astype(np.uint8), "L")
    if im.mode in ALPHA_MODES or "transparency" in im.info:
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")


def shown_size(src) -> tuple[int, int] | None:
    """(H, W) of image `src` as a viewer shows it (EXIF orientation applied), from its header; None if not an image."""
    from PIL import Image
    data = read(src)
    if isinstance(data, Skip):
        return None
    try:
        with Image.open(io.BytesIO(data)) as im:
            return (im.width, im.height) if orientation(im) in ROTATED else (im.height, im.width)
    except Exception:
        return None


def decode(src, size: tuple[int, int] | None = None, only: tuple[int, int] | None = None, fit: str = "stretch"):
    """uint8 (H, W, 3) RGB of image `src` (bytes or a path) as a viewer shows it; at `size` (H, W) if given:
    `fit="stretch"` resizes to it, `fit="crop"` resizes the shorter side and keeps the centre (aspect kept).
    A Skip (why) for a file that is not a usable image. With `only`, an image whose shown size is another comes
    back as that (H, W) instead, undecoded."""
    from PIL import Image, ImageOps
    data = read(src)
    if isinstance(data, Skip):
        return data
    try:
        with Image.open(io.BytesIO(data)) as im:
            turned = orientation(im) in ROTATED
            own = (im.width, im.height) if turned else (im.height, im.width)  # (H, W) as shown
            if only is not None and own != only:
                return own
            if size is not None and own != size and im.format == "JPEG":  # decode at a reduced scale first
                scale = max(size[0] / own[0], size[1] / own[1]) if fit == "crop" else None
                want = (own[1] * scale, own[0] * scale) if scale else (size[1], size[0])  # (W, H) as shown
                im.draft("RGB", (int(want[1]), int(want[0])) if turned else (int(want[0]), int(want[1])))
            im = to_rgb(im)
            if size is not None and (im.height, im.width) != size:
                if fit == "crop":
                    im = ImageOps.fit(im, (size[1], size[0]), Image.Resampling.BILINEAR, centering=(0.5, 0.5))
                else:
                    im = im.resize((size[1], size[0]), Image.Resampling.BILINEAR, reducing_gap=3.0)
            return np.asarray(im, dtype=np.uint8)
    except Exception as e:  # Pillow raises many kinds for bad files; each just means "skip this one"
        return why_not(data, e)


def from_array(a, size: tuple[int, int], fit: str = "stretch") -> np.ndarray:
    """An image given as an array (H, W), (H, W, 1|3|4), uint8 or floats in [0, 1] -> uint8 RGB at `size`, as a
    file with those pixels would be decoded. ValueError (one line) for anything else."""
    from PIL import Image
    a = np.asarray(a)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] not in (3, 4)) or min(a.shape[:2]) < 1:
        raise ValueError(f"an image array must be (H, W), (H, W, 3) or (H, W, 4), got shape {a.shape}")
    if a.dtype.kind == "f":
        if not np.isfinite(a).all() or a.min() < 0 or a.max() > 1:
            raise ValueError("a float image array must hold values in [0, 1] (or pass uint8 in 0-255)")
        a = (a * 255).round()
    elif a.dtype.kind in "iu":
        if a.min() < 0 or a.max() > 255:
            raise ValueError("an integer image array must hold values in 0-255 (uint8)")
    else:
        raise ValueError(f"an image array must be uint8 or float in [0, 1], got {a.dtype}")
    mode = "L" if a.ndim == 2 else "RGB" if a.shape[-1] == 3 else "RGBA"
    im = Image.fromarray(a.astype(np.uint8), mode)
    buf = io.BytesIO()
    im.save(buf, "PNG")  # lossless: the same decode path as a file
    return decode(buf.getvalue(), tuple(size), fit=fit)
