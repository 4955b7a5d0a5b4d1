"""Writing the results: linear FITS, 16-bit TIFF, 8-bit JPEG, background model, preview.

Every file is written through :mod:`deepsky.io` (temporary name, then rename) and carries
the processing recipe: FITS ``HISTORY`` cards, the TIFF's deepsky metadata block (JSON in
ImageDescription, read back by :func:`deepsky.io.read`), the JPEG's comment segment and its
EXIF ``ImageDescription`` and ``Software`` tags.

Colour encoding of the display files: the stretch produces *display-referred* values (the
tone curve is the stretch itself); they are stored as they are and declared sRGB (the JPEG
embeds the sRGB ICC profile). No sRGB transfer curve is applied on top: that would lift the
background the stretch put at its target (0.15 would become 0.42).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import cv2
import numpy as np

from deepsky.errors import OutputError
from deepsky.io.atomic import atomic_path
from deepsky.postprocess._common import as_image, fill_masked, like, planes

__all__ = ["write_jpeg", "preview_png", "write_display_tiff", "srgb_icc_profile"]


def srgb_icc_profile() -> bytes | None:
    """The sRGB ICC profile (LittleCMS through Pillow), or ``None`` where unavailable."""
    try:
        from PIL import ImageCms

        return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    except Exception:  # Pillow built without LittleCMS: the JPEG is simply untagged
        return None


def _to_uint8(display: np.ndarray) -> np.ndarray:
    arr = np.nan_to_num(np.asarray(display, dtype=np.float32), nan=0.0, posinf=1.0,
                        neginf=0.0)
    return np.rint(np.clip(arr, 0.0, 1.0) * 255.0).astype(np.uint8)


def _ascii(text: str) -> str:
    return text.encode("ascii", "replace").decode("ascii")


def write_jpeg(path: str | os.PathLike, display: Any, *, recipe: Iterable[str] = (),
               quality: int = 92, software: str = "deepsky") -> Path:
    """Write display data (0..1, mono ``(H, W)`` or colour ``(3, H, W)``) as an 8-bit JPEG,
    atomically, with the recipe in the comment segment and EXIF ImageDescription, the
    software in EXIF Software, and (colour) the sRGB ICC profile."""
    from PIL import Image

    final = Path(path)
    if final.suffix.lower() not in (".jpg", ".jpeg"):
        raise OutputError(f"{final}: a JPEG file name must end in .jpg or .jpeg")
    img8 = _to_uint8(as_image(display, "display"))
    pil = Image.fromarray(np.ascontiguousarray(np.moveaxis(img8, 0, -1)) if img8.ndim == 3
                          else img8)
    lines = [_ascii(str(r)) for r in recipe]
    exif = Image.Exif()
    exif[0x010E] = " | ".join(lines)[:60000] or "deepsky"
    exif[0x0131] = _ascii(software)
    kwargs: dict[str, Any] = {"quality": int(quality), "exif": exif.tobytes(),
                              "comment": "\n".join(lines)[:60000].encode("ascii")}
    if img8.ndim == 3:
        icc = srgb_icc_profile()
        if icc:
            kwargs["icc_profile"] = icc
    with atomic_path(final) as tmp:
        pil.save(tmp, format="JPEG", **kwargs)
    return final


def write_display_tiff(path: str | os.PathLike, display: Any, *, meta: Any = None,
                       history: Iterable[str] = (), cards: Mapping[str, Any] | None = None
                       ) -> Path:
    """Write display data (0..1) as a 16-bit TIFF (0..65535), recipe in its metadata."""
    from deepsky.io import write

    arr = np.clip(as_image(display, "display"), 0.0, 1.0) * np.float32(65535.0)
    return write(path, arr, meta=meta, history=tuple(history), cards=dict(cards or {}),
                 bits=16)


def preview_png(data: Any, path: str | os.PathLike, *, max_size: int = 1024,
                target_background: float = 0.25) -> Path:
    """An auto-stretched 8-bit PNG preview of a *linear* image, at most ``max_size`` pixels
    on its long side (area-averaged), for reports.

    The stretch is PixInsight's linked screen transfer function (black point at
    median - 2.8 MADN, background at ``target_background``); NaN pixels show black.
    """
    from deepsky.io import write
    from deepsky.postprocess._common import check_number
    from deepsky.postprocess.stretch import normalize, stf_stretch

    final = Path(path)
    if final.suffix.lower() != ".png":
        raise OutputError(f"{final}: a preview must be a .png file")
    max_size = check_number("max_size", max_size, 16, 100000, integer=True)
    img = as_image(data, finite=False)
    bad = ~np.all(np.isfinite(planes(img)), axis=0)
    if bad.all():
        raise OutputError(f"{final}: the image holds no finite pixel to preview")
    work = fill_masked(np.nan_to_num(img), bad) if bad.any() else img
    norm, _ = normalize(work)
    disp = stf_stretch(norm, target_background=target_background, linked=True).data
    p = planes(disp)
    if bad.any():
        p[:, bad] = 0.0
    h, w = p.shape[-2:]
    f = max_size / max(h, w)
    if f < 1.0:
        size = (max(1, int(round(w * f))), max(1, int(round(h * f))))
        p = np.stack([cv2.resize(q, size, interpolation=cv2.INTER_AREA) for q in p])
    return write(final, like(disp, p))
