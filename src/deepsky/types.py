"""The values that travel through the pipeline.

Conventions, everywhere in deepsky:

* Pixel coordinates are 0-based coordinates of the data array as astropy returns it:
  ``x`` is the column, ``y`` the row, and the centre of pixel ``data[j, i]`` is ``(x=i, y=j)``.
* Image data are ``float32``. A mono image is ``(H, W)``; a colour image is ``(3, H, W)`` with
  planes R, G, B (the layout of a FITS cube with NAXIS3 = 3).
* Values are in the camera's ADU (not normalised to 0..1) until post-processing.
* A :class:`Transform` is a 3x3 matrix mapping *frame* pixels to *reference* pixels.
* Masks: ``True`` means excluded.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping

import numpy as np

FrameKind = Literal["light", "dark", "flat", "bias", "darkflat", "unknown"]
FRAME_KINDS: tuple[str, ...] = ("light", "dark", "flat", "bias", "darkflat", "unknown")

BAYER_PATTERNS: tuple[str, ...] = ("RGGB", "BGGR", "GRBG", "GBRG")


# ----------------------------------------------------------------------------------------------
# Bayer patterns
# ----------------------------------------------------------------------------------------------
def bayer_shift(pattern: str, dx: int = 0, dy: int = 0) -> str:
    """Return the 2x2 pattern seen from pixel ``(dx, dy)`` of an image with ``pattern``.

    The colour of pixel ``(x, y)`` is ``pattern[2 * ((y + dy) % 2) + (x + dx) % 2]``.

    >>> bayer_shift("RGGB", dx=1)
    'GRBG'
    >>> bayer_shift("RGGB", dy=1)
    'GBRG'
    """
    if pattern not in BAYER_PATTERNS:
        raise ValueError(f"unknown Bayer pattern {pattern!r}")
    return "".join(pattern[2 * ((j + dy) % 2) + (i + dx) % 2] for j in (0, 1) for i in (0, 1))


def bayer_flip_rows(pattern: str, height: int) -> str:
    """Pattern of an image of ``height`` rows after its row order is reversed."""
    return bayer_shift(pattern, 0, (height - 1) % 2)


def bayer_channel_masks(pattern: str, shape: tuple[int, int]) -> np.ndarray:
    """``(3, H, W)`` boolean masks: ``True`` where a pixel of ``shape`` sees R, G or B."""
    h, w = shape
    masks = np.zeros((3, h, w), dtype=bool)
    for k, c in enumerate(pattern):
        dy, dx = divmod(k, 2)
        masks["RGB".index(c), dy::2, dx::2] = True
    return masks


# ----------------------------------------------------------------------------------------------
# Frames
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FrameMeta:
    """Normalised metadata of one image file.

    Every field is ``None`` when the file does not say. ``bayer`` is the 2x2 CFA pattern as it
    applies to ``data[0:2, 0:2]`` of the array the reader returns (ROWORDER and the Bayer
    offsets already applied); ``None`` for mono or already-debayered data. ``header`` holds
    the original FITS-style cards (a copy; never written back to the input).
    """

    path: Path | None = None
    kind: str = "unknown"
    width: int = 0
    height: int = 0
    channels: int = 1
    exposure: float | None = None  # seconds
    gain: float | None = None  # camera gain setting (GAIN keyword)
    iso: int | None = None  # DSLR ISO speed
    egain: float | None = None  # electrons per ADU, when the file says
    temperature: float | None = None  # sensor temperature, deg C
    set_temperature: float | None = None
    filter: str | None = None
    binning: tuple[int, int] = (1, 1)
    bayer: str | None = None
    cfa: str | None = None  # "bayer", "xtrans" or None
    date: datetime | None = None  # UTC start of the exposure
    instrument: str | None = None
    telescope: str | None = None
    object: str | None = None
    black_level: float | None = None  # ADU already present at zero light (RAW)
    white_level: float | None = None  # saturation level in ADU
    bit_depth: int | None = None
    focal_length: float | None = None  # mm
    pixel_size: float | None = None  # microns
    format: str = ""
    header: Any = field(default=None, compare=False, repr=False)

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the data array: ``(H, W)`` or ``(C, H, W)``."""
        if self.channels == 1:
            return (self.height, self.width)
        return (self.channels, self.height, self.width)

    @property
    def gain_or_iso(self) -> float | None:
        """The camera's sensitivity setting, whichever the file records."""
        if self.gain is not None:
            return self.gain
        return None if self.iso is None else float(self.iso)

    def replace(self, **changes: Any) -> "FrameMeta":
        """A copy with some fields changed (the object itself is immutable)."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True, eq=False)
class Frame:
    """An image and its metadata. ``data`` is float32, owned, native-endian.

    ``history`` lists the processing steps applied, oldest first, each as
    ``"step-id vN: detail"``; writers copy it into FITS HISTORY cards.
    """

    data: np.ndarray
    meta: FrameMeta
    history: tuple[str, ...] = ()

    def with_data(self, data: np.ndarray, step: str | None = None, **meta_changes: Any) -> "Frame":
        """A new frame with other data (and optionally changed metadata and one more step)."""
        meta = self.meta.replace(**meta_changes) if meta_changes else self.meta
        hist = self.history + ((step,) if step else ())
        return Frame(np.asarray(data, dtype=np.float32), meta, hist)

    @property
    def is_color(self) -> bool:
        return self.data.ndim == 3


# ----------------------------------------------------------------------------------------------
# Geometry
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Transform:
    """A 3x3 projective matrix mapping frame pixel coordinates to reference pixel coordinates.

    >>> t = Transform.similarity(scale=1.0, angle_deg=90.0, dx=10.0, dy=0.0)
    >>> t.apply([[1.0, 0.0]]).round(6).tolist()
    [[10.0, 1.0]]
    >>> t.inverse().apply(t.apply([[3.0, 4.0]])).round(6).tolist()
    [[3.0, 4.0]]
    """

    matrix: np.ndarray

    def __post_init__(self) -> None:
        m = np.array(self.matrix, dtype=np.float64)
        if m.shape != (3, 3) or not np.all(np.isfinite(m)):
            raise ValueError(f"a transform needs a finite 3x3 matrix, got {m!r}")
        if m[2, 2] != 0 and m[2, 2] != 1.0:
            m = m / m[2, 2]
        m.setflags(write=False)
        object.__setattr__(self, "matrix", m)

    # constructors
    @classmethod
    def identity(cls) -> "Transform":
        return cls(np.eye(3))

    @classmethod
    def translation(cls, dx: float, dy: float) -> "Transform":
        m = np.eye(3)
        m[0, 2], m[1, 2] = dx, dy
        return cls(m)

    @classmethod
    def similarity(
        cls, *, scale: float = 1.0, angle_deg: float = 0.0, dx: float = 0.0, dy: float = 0.0
    ) -> "Transform":
        """Rotation by ``angle_deg`` (counter-clockwise in x-right, y-down array axes means
        clockwise on screen) about the origin, uniform scale, then translation."""
        a = math.radians(angle_deg)
        c, s = scale * math.cos(a), scale * math.sin(a)
        return cls(np.array([[c, -s, dx], [s, c, dy], [0.0, 0.0, 1.0]]))

    @classmethod
    def rotation_about(cls, angle_deg: float, cx: float, cy: float) -> "Transform":
        """Rotation by ``angle_deg`` about the point ``(cx, cy)``."""
        return (
            cls.translation(cx, cy)
            @ cls.similarity(angle_deg=angle_deg)
            @ cls.translation(-cx, -cy)
        )

    @classmethod
    def from_list(cls, values: Iterable[float]) -> "Transform":
        """From the 9 values h00 h01 h02 h10 ... h22, row by row."""
        return cls(np.asarray(list(values), dtype=np.float64).reshape(3, 3))

    # use
    def apply(self, xy: Any) -> np.ndarray:
        """Map an ``(N, 2)`` array of ``(x, y)`` frame coordinates to the reference."""
        pts = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        m = self.matrix
        w = pts[:, 0] * m[2, 0] + pts[:, 1] * m[2, 1] + m[2, 2]
        x = (pts[:, 0] * m[0, 0] + pts[:, 1] * m[0, 1] + m[0, 2]) / w
        y = (pts[:, 0] * m[1, 0] + pts[:, 1] * m[1, 1] + m[1, 2]) / w
        return np.stack([x, y], axis=1)

    def inverse(self) -> "Transform":
        """The inverse transform (computed once: every tile of every frame asks for it)."""
        inv = self.__dict__.get("_inverse")
        if inv is None:
            inv = Transform(np.linalg.inv(self.matrix))
            object.__setattr__(self, "_inverse", inv)
        return inv

    def __matmul__(self, other: "Transform") -> "Transform":
        """``a @ b`` applies ``b`` first, then ``a``."""
        if not isinstance(other, Transform):
            return NotImplemented
        return Transform(self.matrix @ other.matrix)

    def to_list(self) -> list[float]:
        return [float(v) for v in self.matrix.ravel()]

    @property
    def is_affine(self) -> bool:
        return bool(abs(self.matrix[2, 0]) < 1e-12 and abs(self.matrix[2, 1]) < 1e-12)

    @property
    def rotation_deg(self) -> float:
        """Rotation angle of the linear part, in degrees (-180, 180]."""
        m = self.matrix
        return math.degrees(math.atan2(m[1, 0] - m[0, 1], m[0, 0] + m[1, 1]))

    @property
    def scale(self) -> float:
        """Mean linear scale (square root of the determinant of the linear part)."""
        m = self.matrix
        return math.sqrt(abs(m[0, 0] * m[1, 1] - m[0, 1] * m[1, 0]))

    @property
    def is_mirrored(self) -> bool:
        m = self.matrix
        return bool(m[0, 0] * m[1, 1] - m[0, 1] * m[1, 0] < 0)

    def max_displacement(self, other: "Transform", width: int, height: int, n: int = 9) -> float:
        """Largest distance between where ``self`` and ``other`` send a grid over the frame."""
        gx, gy = np.meshgrid(np.linspace(0, width - 1, n), np.linspace(0, height - 1, n))
        pts = np.stack([gx.ravel(), gy.ravel()], axis=1)
        return float(np.max(np.hypot(*(self.apply(pts) - other.apply(pts)).T)))

    def __repr__(self) -> str:
        rows = "; ".join(" ".join(f"{v:.6g}" for v in r) for r in self.matrix)
        return f"Transform([{rows}])"


# ----------------------------------------------------------------------------------------------
# Stars
# ----------------------------------------------------------------------------------------------
_STAR_FIELDS = (
    "x", "y", "flux", "peak", "background", "fwhm", "hfr", "roundness",
    "eccentricity", "theta", "snr",
)


@dataclass(frozen=True, eq=False)
class StarList:
    """Stars found in one image: one entry per star in each array, brightest first.

    ``x, y`` are sub-pixel centroids (0-based array coordinates); ``flux`` is the
    background-subtracted flux in the image's units; ``fwhm`` and ``hfr`` in pixels;
    ``roundness`` is minor/major axis (1 = round); ``eccentricity`` is
    ``sqrt(1 - roundness**2)``; ``theta`` the major axis angle in radians; ``snr`` the flux
    signal-to-noise ratio; ``saturated`` flags stars whose peak reached the saturation level.
    """

    x: np.ndarray
    y: np.ndarray
    flux: np.ndarray
    peak: np.ndarray
    background: np.ndarray
    fwhm: np.ndarray
    hfr: np.ndarray
    roundness: np.ndarray
    eccentricity: np.ndarray
    theta: np.ndarray
    snr: np.ndarray
    saturated: np.ndarray

    def __post_init__(self) -> None:
        n = len(np.asarray(self.x))
        for name in _STAR_FIELDS:
            arr = np.asarray(getattr(self, name), dtype=np.float64).reshape(-1)
            if len(arr) != n:
                raise ValueError(f"StarList field {name} has {len(arr)} entries, x has {n}")
            object.__setattr__(self, name, arr)
        sat = np.asarray(self.saturated, dtype=bool).reshape(-1)
        if len(sat) != n:
            raise ValueError(f"StarList field saturated has {len(sat)} entries, x has {n}")
        object.__setattr__(self, "saturated", sat)

    @classmethod
    def empty(cls) -> "StarList":
        z = np.zeros(0)
        return cls(**{k: z for k in _STAR_FIELDS}, saturated=np.zeros(0, dtype=bool))

    @classmethod
    def from_columns(cls, **cols: Any) -> "StarList":
        """Build from named columns; missing ones are NaN (saturated: False)."""
        n = len(np.asarray(cols["x"]))
        full = {k: cols.get(k, np.full(n, np.nan)) for k in _STAR_FIELDS}
        full["saturated"] = cols.get("saturated", np.zeros(n, dtype=bool))
        return cls(**full)

    def __len__(self) -> int:
        return len(self.x)

    def select(self, index: Any) -> "StarList":
        """Subset by boolean mask or index array (order kept as given)."""
        return StarList(
            **{k: getattr(self, k)[index] for k in _STAR_FIELDS},
            saturated=self.saturated[index],
        )

    def brightest(self, n: int) -> "StarList":
        order = np.argsort(-np.nan_to_num(self.flux, nan=-np.inf), kind="stable")[:n]
        return self.select(order)

    @property
    def xy(self) -> np.ndarray:
        return np.stack([self.x, self.y], axis=1)

    def as_dict(self) -> dict[str, np.ndarray]:
        d = {k: getattr(self, k) for k in _STAR_FIELDS}
        d["saturated"] = self.saturated
        return d


# ----------------------------------------------------------------------------------------------
# Stage results
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Registration:
    """How one frame maps onto the reference, and how sure we are.

    ``ok`` is False when the frame could not be registered; ``reason`` then says why and
    ``transform`` is the identity.
    """

    transform: Transform
    ok: bool = True
    method: str = "stars"  # "stars", "phase", "reference", "none"
    model: str = "homography"
    n_matches: int = 0
    rms_px: float = float("nan")
    reason: str = ""


@dataclass(frozen=True)
class FrameQuality:
    """Per-frame measurements used for selection and weighting."""

    n_stars: int = 0
    fwhm: float = float("nan")
    hfr: float = float("nan")
    roundness: float = float("nan")
    background: float = float("nan")
    noise: float = float("nan")
    snr: float = float("nan")


@dataclass
class FrameRecord:
    """Everything the run knows about one light frame: one row of ``frames.csv``."""

    file: str
    status: str = "used"  # "used" or "rejected"
    reason: str = ""
    quality: FrameQuality = field(default_factory=FrameQuality)
    registration: Registration | None = None
    weight: float = float("nan")
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class StackResult:
    """The integrated image and its companions.

    ``data`` is ``(H, W)`` or ``(3, H, W)`` float32; ``coverage`` the summed weight (or frame
    count) per pixel; ``rejected_low`` / ``rejected_high`` the number of rejected samples per
    pixel; ``header`` the cards to write (NCOMBINE, EXPTIME, ...).
    """

    data: np.ndarray
    coverage: np.ndarray
    rejected_low: np.ndarray | None = None
    rejected_high: np.ndarray | None = None
    header: Mapping[str, Any] = field(default_factory=dict)
    history: tuple[str, ...] = ()
