"""PNG and JPEG: reading 8/16-bit images (Pillow) and writing 8-bit previews.

Reading returns values as stored: 0..255 for 8-bit, 0..65535 for 16-bit PNG; mono ``(H, W)``
or colour ``(3, H, W)`` (alpha dropped, palette images expanded to RGB). Pillow reduces
16-bit *colour* PNG to 8 bits, so those are decoded with OpenCV instead. These formats carry
no exposure metadata: ``meta.kind`` is ``"unknown"`` and only the size and bit depth are set.

:func:`write_preview` writes an 8-bit PNG or JPEG (quality 92) from data in 0..1 (clipped).
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
from PIL import Image

from deepsky.errors import InputError, OutputError
from deepsky.io._common import check_image_array, check_input_file, owned_float32, read_head
from deepsky.io._common import no_warnings, short
from deepsky.io.atomic import atomic_path
from deepsky.types import Frame, FrameMeta

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"
JPEG_QUALITY = 92

_PIL_MODES = {  # mode -> (channels, bit depth, mode to convert to before reading)
    "1": (1, 8, "L"), "L": (1, 8, None), "LA": (1, 8, None), "P": (3, 8, "RGB"),
    "PA": (3, 8, "RGBA"), "I;16": (1, 16, None), "I;16B": (1, 16, None),
    "I;16L": (1, 16, None), "I": (1, 32, None), "F": (1, None, None),
    "RGB": (3, 8, None), "RGBA": (3, 8, None), "RGBX": (3, 8, None), "CMYK": (3, 8, "RGB"),
    "YCbCr": (3, 8, "RGB"),
}


def read_image(path: str | os.PathLike) -> Frame:
    """Read a PNG or JPEG as an owned float32 :class:`Frame`, values as stored."""
    p = Path(path)
    kind = _sniff(p)
    if kind == "png" and _png_is_16bit_colour(p):
        data = _read_png16_colour(p)
        return Frame(data, _meta(p, data.shape[-2], data.shape[-1], 3, 16, "png"))
    with _open(p) as im:
        channels, bit_depth, convert = _mode_info(im, p)
        try:
            with no_warnings():
                im.load()
                src = im.convert(convert) if convert else im
                arr = np.asarray(src)
        except Exception as err:  # Pillow raises OSError, SyntaxError, ValueError, ...
            raise InputError(p, f"cannot decode the {kind.upper()} image, the file is corrupt "
                                f"or truncated ({short(err)})") from err
        width, height = im.size
    if arr.ndim == 3:
        arr = np.moveaxis(arr, -1, 0)
        arr = arr[0] if channels == 1 else arr[:3]
    return Frame(owned_float32(arr), _meta(p, height, width, channels, bit_depth, kind))


def read_image_meta(path: str | os.PathLike) -> FrameMeta:
    """Size, channels and bit depth of a PNG or JPEG (the pixels are not decoded)."""
    p = Path(path)
    kind = _sniff(p)
    if kind == "png" and _png_is_16bit_colour(p):
        width, height = _png_size(p)
        return _meta(p, height, width, 3, 16, "png")
    with _open(p) as im:
        channels, bit_depth, _ = _mode_info(im, p)
        width, height = im.size
    return _meta(p, height, width, channels, bit_depth, kind)


def write_preview(path: str | os.PathLike, data: np.ndarray) -> Path:
    """Write data in 0..1 (clipped; NaN as 0) as an 8-bit PNG or JPEG, atomically.

    ``data`` is ``(H, W)`` mono or ``(3, H, W)`` RGB; the format follows the extension
    (``.png``, ``.jpg``/``.jpeg``; JPEG at quality 92).
    """
    final = Path(path)
    suffix = final.suffix.lower()
    if suffix not in (".png", ".jpg", ".jpeg"):
        raise OutputError(f"{final}: a preview must be .png, .jpg or .jpeg, not "
                          f"{final.suffix!r}")
    arr = check_image_array(data, final).astype(np.float32, copy=False)
    arr = np.nan_to_num(arr, nan=0.0, posinf=1.0, neginf=0.0)
    img8 = np.rint(np.clip(arr, 0.0, 1.0) * 255.0).astype(np.uint8)
    if img8.ndim == 3:
        img = Image.fromarray(np.ascontiguousarray(np.moveaxis(img8, 0, -1)))
    else:
        img = Image.fromarray(img8)
    with atomic_path(final) as tmp:
        if suffix == ".png":
            img.save(tmp, format="PNG")
        else:
            img.save(tmp, format="JPEG", quality=JPEG_QUALITY)
    return final


# ----------------------------------------------------------------------------------------------
def _sniff(path: Path) -> str:
    check_input_file(path, "PNG/JPEG")
    head = read_head(path, 8)
    if head.startswith(PNG_SIGNATURE):
        return "png"
    if head.startswith(JPEG_SIGNATURE):
        return "jpeg"
    raise InputError(path, f"not a PNG or JPEG image (starts with {head!r})")


def _open(path: Path) -> Image.Image:
    try:
        with no_warnings():
            return Image.open(path, formats=("PNG", "JPEG"))
    except Image.DecompressionBombError as err:
        raise InputError(path, f"image too large to decode safely ({short(err)})") from err
    except Exception as err:  # UnidentifiedImageError, SyntaxError, struct.error, ...
        raise InputError(path, f"not a readable PNG/JPEG image ({short(err)})") from err


def _mode_info(im: Image.Image, path: Path) -> tuple[int, int | None, str | None]:
    info = _PIL_MODES.get(im.mode)
    if info is None:
        raise InputError(path, f"unsupported image mode {im.mode!r}")
    channels, bits, convert = info
    if im.mode == "I" and im.format == "PNG":
        bits = 16  # Pillow opens some 16-bit greyscale PNGs as 32-bit "I"
    return channels, bits, convert


def _meta(path: Path, height: int, width: int, channels: int, bit_depth: int | None,
          kind: str) -> FrameMeta:
    white = None if bit_depth is None else float(2**bit_depth - 1)
    return FrameMeta(path=path, width=int(width), height=int(height), channels=channels,
                     bit_depth=bit_depth, white_level=white, format=kind)


def _png_ihdr(path: Path) -> tuple[int, int, int, int]:
    head = read_head(path, 29)
    if len(head) < 29 or head[12:16] != b"IHDR":
        raise InputError(path, "not a readable PNG image (no IHDR chunk)")
    width, height, depth, colour = struct.unpack(">IIBB", head[16:26])
    return width, height, depth, colour


def _png_size(path: Path) -> tuple[int, int]:
    width, height, _, _ = _png_ihdr(path)
    return width, height


def _png_is_16bit_colour(path: Path) -> bool:
    _, _, depth, colour = _png_ihdr(path)
    return depth == 16 and colour in (2, 6)  # truecolour, truecolour + alpha


def _read_png16_colour(path: Path) -> np.ndarray:
    import cv2

    try:
        buf = np.fromfile(path, dtype=np.uint8)
        arr = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    except (OSError, cv2.error) as err:
        raise InputError(path, f"cannot decode the PNG image ({short(err)})") from err
    if arr is None or arr.ndim != 3 or arr.shape[2] < 3 or arr.dtype != np.uint16:
        raise InputError(path, "cannot decode the PNG image, the file is corrupt or truncated")
    return owned_float32(arr[:, :, 2::-1].transpose(2, 0, 1))  # BGR(A) -> R, G, B planes
