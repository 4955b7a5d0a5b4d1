"""Tile-by-tile integration with flat memory.

The output grid is cut into tiles sized so that the ``(N, C, th, tw)`` block of all frames'
samples fits the memory budget. For each tile, each frame contributes the source region that
tile needs (read from the raw file, calibrated, debayered, warped, normalised and masked on the
fly: registered frames are never written to disk), and :func:`deepsky.integrate.reject.combine`
turns the block into the tile's pixels. The same :func:`stack_tile` runs in local threads or
as a Dask task.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from deepsky.calibrate.apply import CalibrationSet, CalibrationSpec, calibrate_band
from deepsky.calibrate.debayer import debayer
from deepsky.integrate.reject import combine
from deepsky.integrate.trails import Trail, trail_mask
from deepsky.io.atomic import output_error
from deepsky.io.sources import FrameSource
from deepsky.parallel import BackgroundWriter
from deepsky.register.warp import source_bounds, warp_window
from deepsky.types import Transform

# Extra source pixels read around what the warp needs: cosmetic correction looks 2 pixels
# away, RCD's chained estimates 10; kept even so the CFA phase of a region is that of the
# frame. (8 was too few: the stack changed with the tile size, i.e. the memory budget.)
_MARGIN = 16
# Without a mosaic to debayer only the cosmetic correction looks beyond the warp's taps (its
# ring of neighbours, 1 pixel away): 15 % fewer pixels read and calibrated per 334 x 334
# tile than with RCD's margin, the same stack.
_MARGIN_PLAIN = 4


@dataclass(frozen=True, eq=False)
class FrameInput:
    """Everything needed to produce one frame's contribution to any tile (picklable)."""

    name: str
    source: FrameSource
    calibration: CalibrationSet | CalibrationSpec | None
    transform: Transform  # frame pixels -> output grid pixels
    dark_scale: float = 1.0
    bayer: str | None = None  # CFA pattern of a mosaic to debayer (None: mono or RGB)
    mul: np.ndarray = field(default_factory=lambda: np.ones(1))
    add: np.ndarray = field(default_factory=lambda: np.zeros(1))
    weight: float = 1.0
    trails: tuple[Trail, ...] = ()
    cosmetic: bool = True
    value_range: tuple[float, float] | None = None  # calibrated frame's (min, max), for RCD

    def cal(self) -> CalibrationSet | None:
        c = self.calibration
        return c.load() if isinstance(c, CalibrationSpec) else c


@dataclass(frozen=True)
class StackPlan:
    """How to integrate: output grid, channels and the combination settings."""

    out_shape: tuple[int, int]
    channels: int = 1
    method: str = "winsorized"
    low: float = 4.0
    high: float = 3.0
    interpolation: str = "lanczos3"
    clamp: bool = True
    debayer: str = "rcd"
    trail_margin: float = 3.0
    memory_mb: float = 64.0
    tile_threads: int = 1


@dataclass
class TileResult:
    y0: int
    y1: int
    x0: int
    x1: int
    data: np.ndarray  # (C, h, w)
    low: np.ndarray  # (C, h, w) uint16
    high: np.ndarray
    used: np.ndarray  # (h, w) uint16: samples kept (first channel)
    weight: np.ndarray  # (h, w) float32: sum of the weights of the frames with a sample there


def tile_grid(plan: StackPlan, n_frames: int, *, bytes_per_sample: int = 6
              ) -> list[tuple[int, int, int, int]]:
    """Tiles ``(y0, y1, x0, x1)`` whose sample block fits the budget, per colour channel
    (square-ish, so that a rotated frame's source region is not much larger than the tile).

    Per channel: a colour tile has 3x the samples of a mono one, but each frame's window is
    calibrated and debayered once for all three, and RCD needs a margin around it; with
    the mono tile's area the colour integration spent a quarter more time (50 frames,
    64 MiB: 24.4 s against 19.1 s with 3 x 64)."""
    h, w = plan.out_shape
    budget = plan.memory_mb * 1024 * 1024
    per_px = max(1, n_frames) * bytes_per_sample
    side = int(math.sqrt(max(budget / per_px, 64 * 64)))
    th = min(h, max(32, side))
    tw = min(w, max(32, side))
    if th == h:  # a band of full rows is better when it fits
        tw = min(w, max(32, int(budget / per_px / th)))
    if tw == w:
        th = min(h, max(32, int(budget / per_px / tw)))
    tiles = []
    for y0 in range(0, h, th):
        for x0 in range(0, w, tw):
            tiles.append((y0, min(h, y0 + th), x0, min(w, x0 + tw)))
    return tiles


def frame_window(fi: FrameInput, tile: tuple[int, int, int, int], plan: StackPlan,
                 out: np.ndarray | None = None) -> np.ndarray | None:
    """One frame's calibrated, debayered, warped, normalised and masked samples for a tile:
    ``(C, h, w)`` float32 with NaN where the frame has no data (written into ``out`` when
    given, a C-contiguous float32 array of that shape); None if it does not overlap."""
    y0, y1, x0, x1 = tile
    th, tw = y1 - y0, x1 - x0
    src_h, src_w = fi.source.height, fi.source.width
    sy0, sy1, sx0, sx1 = source_bounds(fi.transform, (x0, y0), (th, tw), (src_h, src_w))
    if sy1 <= sy0 or sx1 <= sx0:
        return None
    margin = _MARGIN if fi.bayer is not None else _MARGIN_PLAIN
    sy0 = max(0, (sy0 - margin) & ~1)
    sx0 = max(0, (sx0 - margin) & ~1)
    sy1 = min(src_h, sy1 + margin)
    sx1 = min(src_w, sx1 + margin)
    raw = fi.source.read_region(sy0, sy1, sx0, sx1)
    cal = fi.cal()
    data = raw if cal is None else calibrate_band(raw, cal, y0=sy0, x0=sx0,
                                                  dark_scale=fi.dark_scale, cosmetic=fi.cosmetic,
                                                  overwrite=True)
    if fi.bayer is not None:
        # Even origin: same CFA phase; the frame's range: the same pixels whatever the tile.
        # One thread when the tile's frames are already shared among threads.
        data = debayer(data, fi.bayer, method=plan.debayer, value_range=fi.value_range,
                       workers=1 if plan.tile_threads > 1 else None)
    c = data.shape[0] if data.ndim == 3 else 1
    if out is None:
        out = np.empty((c, th, tw), np.float32)
    # Warped and normalised in one pass, straight into the tile's block.
    warp_window(data, (sx0, sy0), fi.transform, (x0, y0), (th, tw), src_shape=(src_h, src_w),
                method=plan.interpolation, clamp=plan.clamp, fill=np.nan, parallel=False,
                out=out if data.ndim == 3 else out[0], footprint=False, gain=fi.mul,
                offset=fi.add)
    if fi.trails:
        m = trail_mask(list(fi.trails), (x0, y0), (th, tw), margin=plan.trail_margin)
        if m.any():
            out[:, m] = np.nan
    return out


def stack_tile(inputs: Sequence[FrameInput], tile: tuple[int, int, int, int],
               plan: StackPlan, buffer: np.ndarray | None = None) -> TileResult:
    """Integrate one tile from all frames (the unit of work of local and Dask runs).
    ``buffer``: a float32 array of at least N C h w elements to hold the samples (reused
    from tile to tile by a local integration: no fresh memory to fault in per tile)."""
    y0, y1, x0, x1 = tile
    th, tw = y1 - y0, x1 - x0
    n = len(inputs)
    c = plan.channels
    size = n * c * th * tw
    if buffer is None or buffer.size < size:
        buffer = np.empty(size, np.float32)
    block = buffer.ravel()[:size].reshape(n, c, th, tw)

    def fill(i: int) -> None:
        if frame_window(inputs[i], tile, plan, out=block[i]) is None:
            block[i] = np.nan

    if plan.tile_threads > 1 and n > 1:
        with ThreadPoolExecutor(max_workers=plan.tile_threads) as pool:
            list(pool.map(fill, range(n)))
    else:
        for i in range(n):
            fill(i)
    weights = np.array([fi.weight for fi in inputs], np.float64)
    data = np.empty((c, th, tw), np.float32)
    lo = np.empty((c, th, tw), np.uint16)
    hi = np.empty((c, th, tw), np.uint16)
    used = np.zeros((th, tw), np.uint16)
    # Weight map: sum of the weights of the frames with a sample at the pixel (before the
    # rejection, which shows in `used` and the rejection maps).
    wsum = np.zeros((th, tw), np.float32)
    for ch in range(c):
        res, nl, nh, nu = combine(block[:, ch], method=plan.method, low=plan.low,
                                  high=plan.high, weights=weights,
                                  workers=plan.tile_threads,
                                  valid_weight=wsum if ch == 0 else None)
        data[ch], lo[ch], hi[ch] = res, nl, nh
        if ch == 0:
            used = nu
    return TileResult(y0, y1, x0, x1, data, lo, hi, used, wsum)


def _tile_task(args: tuple[Any, ...]) -> TileResult:
    inputs, tile, plan = args
    return stack_tile(inputs, tile, plan)


@dataclass
class Integration:
    """The assembled result of all tiles."""

    data: np.ndarray  # (C, H, W) float32
    rejected_low: np.ndarray  # (C, H, W) uint16
    rejected_high: np.ndarray
    used: np.ndarray  # (H, W) uint16
    weight: np.ndarray  # (H, W) float32

    @classmethod
    def empty(cls, plan: StackPlan) -> "Integration":
        h, w = plan.out_shape
        c = plan.channels
        return cls(np.full((c, h, w), np.nan, np.float32), np.zeros((c, h, w), np.uint16),
                   np.zeros((c, h, w), np.uint16), np.zeros((h, w), np.uint16),
                   np.zeros((h, w), np.float32))

    def put(self, t: TileResult) -> None:
        sl = (slice(t.y0, t.y1), slice(t.x0, t.x1))
        self.data[(slice(None),) + sl] = t.data
        self.rejected_low[(slice(None),) + sl] = t.low
        self.rejected_high[(slice(None),) + sl] = t.high
        self.used[sl] = t.used
        self.weight[sl] = t.weight


# The HDUs of a stack file, in order: EXTNAME, the Integration array, its comment.
STACK_HDUS = (
    (None, "data", None),
    ("WEIGHT", "weight", "sum of the weights of the frames covering"),
    ("COVERAGE", "used", "samples kept per pixel"),
    ("REJ_LOW", "rejected_low", "samples rejected low per pixel"),
    ("REJ_HIGH", "rejected_high", "samples rejected high per pixel"),
)


def stack_layout(plan: StackPlan, cards: Any, history: Any) -> list[tuple[Any, ...]]:
    """The images of a stack file (:class:`~deepsky.io.fits.TiledFits`'s ``images``): the
    stack, its weight and coverage maps, the rejection maps; 2-D planes for a mono stack."""
    h, w = plan.out_shape
    img = (h, w) if plan.channels == 1 else (plan.channels, h, w)
    shapes = {"data": img, "weight": (h, w), "used": (h, w), "rejected_low": img,
              "rejected_high": img}
    return [(name, shapes[attr], np.float32 if attr in ("data", "weight") else np.uint16,
             cards if name is None else {"COMMENT": comment}, history if name is None else ())
            for name, attr, comment in STACK_HDUS]


class TileCheckpoint:
    """The stack file filled as the tiles finish, and the list of the tiles it holds.

    A background thread writes the finished tiles into ``file`` (a
    :class:`~deepsky.io.fits.TiledFits` laid out as :func:`stack_layout`) a band of tiles
    at a time: when the last tile of a row of tiles is in, the band's whole rows go out, one
    positioned write per HDU plane (a tile alone would take one write per row of it: 3,400
    system calls per tile of 683 x 683, each taking the interpreter lock back from the
    threads integrating the next tile). Then it appends the band's tiles to ``done.txt``
    beside it and counts them done; a restarted integration reads the listed tiles back
    instead of redoing them (a kill loses at most the tiles of the unfinished band). When
    all are in, the file is the stack: one rename. (Writing as the tiles finish overlaps the
    write with the next tiles' work, and the result is written once, not once as
    checkpoints and again as the stack.) A failing integration still writes the tiles it
    finished, tile by tile.
    """

    def __init__(self, file: Any) -> None:
        self.file = file
        self.done_path = file.path.with_name("done.txt")
        self.reused = 0
        self._writer = BackgroundWriter("stack-writer")
        self._out: Integration | None = None
        self._tiles: list[tuple[int, int, int, int]] = []
        # Per band of tiles (y0, y1): the tiles not finished yet, and those finished but
        # not written, with their progress callbacks (touched by the writer thread only).
        self._missing: dict[tuple[int, int], set[int]] = {}
        self._held: dict[tuple[int, int], list[tuple[int, Any]]] = {}

    def start(self, tiles: Sequence[tuple[int, int, int, int]], out: "Integration") -> list[int]:
        """Open the file an earlier run left (and read its finished tiles into ``out``) or
        create it; returns the indices of the tiles still to do."""
        done: set[int] = set()
        if self.file.open_existing():
            try:
                lines = self.done_path.read_text(encoding="ascii").splitlines()
            except (OSError, ValueError):
                lines = []
            for line in lines:  # "index y0 y1 x0 x1"; a line cut short by a kill is skipped
                parts = line.split()
                if len(parts) == 5 and all(p.isdigit() for p in parts):
                    i, *box = (int(p) for p in parts)
                    if i < len(tiles) and tuple(box) == tuple(tiles[i]):
                        done.add(i)
        else:
            self.done_path.unlink(missing_ok=True)
            self.file.create()
        for i in sorted(done):
            _read_region(self.file, out, tiles[i])
        self.reused = len(done)
        self._out, self._tiles = out, list(tiles)
        self._missing, self._held = {}, {}
        for i, (y0, y1, _x0, _x1) in enumerate(tiles):
            self._missing.setdefault((y0, y1), set())
            if i not in done:
                self._missing[(y0, y1)].add(i)
        return [i for i in range(len(tiles)) if i not in done]

    def save(self, i: int, tile: tuple[int, int, int, int], progress: Any = None) -> None:
        """Hand finished tile ``i`` of the integration :meth:`start` was given to the writer
        (``progress()`` once it is written)."""
        self._writer.submit(self._finished, i, tile, progress)

    def _finished(self, i: int, tile: tuple[int, int, int, int], progress: Any) -> None:
        band = (tile[0], tile[1])
        missing = self._missing[band]
        missing.discard(i)
        self._held.setdefault(band, []).append((i, progress))
        if not missing:
            self._write(band, whole=True)

    def _write(self, band: tuple[int, int], *, whole: bool) -> None:
        """Write the held tiles of ``band``: its whole rows at once when the band is
        complete (``whole``), else each tile's region; then list them in ``done.txt``."""
        held = self._held.pop(band, [])
        if not held:
            return
        out = self._out
        assert out is not None
        y0, y1 = band
        regions = ([(y0, y1, 0, out.data.shape[-1])] if whole
                   else [self._tiles[i] for i, _p in held])
        for ry0, ry1, x0, x1 in regions:
            for k, (_name, attr, _comment) in enumerate(STACK_HDUS):
                self.file.write(k, getattr(out, attr)[..., ry0:ry1, x0:x1], ry0, x0)
        lines = "".join("{} {} {} {} {}\n".format(i, *self._tiles[i]) for i, _p in held)
        try:
            with open(self.done_path, "a", encoding="ascii") as fh:
                fh.write(lines)
        except OSError as err:
            raise output_error(self.done_path, err) from err
        for _i, progress in held:
            if progress is not None:
                progress()

    def finish(self, *, quietly: bool = False) -> None:
        """Wait for the writes (the first failure is raised unless ``quietly``). After a
        failure (``quietly``), the finished tiles of incomplete bands are written too."""
        self._writer.finish(quietly=quietly)
        if quietly:
            for band in list(self._held):
                try:
                    self._write(band, whole=False)
                except Exception:  # noqa: BLE001 - already failing: keep what can be kept
                    break


def read_stack(file: Any, plan: StackPlan) -> Integration | None:
    """The Integration a finished stack file holds (a :class:`~deepsky.io.fits.TiledFits`
    laid out as :func:`stack_layout`), or None when the file is absent or differs."""
    if not file.open_existing():
        return None
    try:
        out = Integration.empty(plan)
        _read_region(file, out, (0, plan.out_shape[0], 0, plan.out_shape[1]))
        return out
    finally:
        file.close()


def _read_region(file: Any, out: Integration, box: tuple[int, int, int, int]) -> None:
    """Read the region ``(y0, y1, x0, x1)`` of every HDU of a stack file into ``out``."""
    y0, y1, x0, x1 = box
    for k, (_name, attr, _comment) in enumerate(STACK_HDUS):
        dest = getattr(out, attr)[..., y0:y1, x0:x1]
        dest[...] = file.read(k, y0, y1, x0, x1).reshape(dest.shape)


def integrate(inputs: Sequence[FrameInput], plan: StackPlan, backend: Any = None,
              progress: Any = None, checkpoint: TileCheckpoint | None = None) -> Integration:
    """Integrate all tiles. With ``checkpoint``, each finished tile is written into the
    stack file as it finishes (and counted by ``progress`` once written), and a restarted
    integration reads the tiles already there instead of redoing them."""
    out = Integration.empty(plan)
    tiles = tile_grid(plan, len(inputs))
    todo = list(range(len(tiles)))
    if checkpoint is not None:
        todo = checkpoint.start(tiles, out)
        if progress is not None and checkpoint.reused:
            progress(checkpoint.reused)
    remote = backend is not None and getattr(backend, "remote", False)
    if remote:
        results = backend.map(_tile_task, [(inputs, tiles[i], plan) for i in todo])
    else:
        largest = max(((t[1] - t[0]) * (t[3] - t[2]) for t in tiles), default=0)
        buffer = np.empty(len(inputs) * plan.channels * largest, np.float32) if todo else None
        results = (stack_tile(inputs, tiles[i], plan, buffer) for i in todo)
    try:
        for i, res in zip(todo, results):
            out.put(res)
            if checkpoint is not None:
                checkpoint.save(i, tiles[i], progress)
            elif progress is not None:
                progress()
    except BaseException:
        if checkpoint is not None:  # the tiles already handed to the writer still go in
            checkpoint.finish(quietly=True)
        raise
    if checkpoint is not None:
        checkpoint.finish()
    return out
