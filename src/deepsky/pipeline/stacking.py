"""The integration stage: per filter, normalise, weight, find trails, stack tile by tile and
write ``stack.fits`` with its weight, coverage and rejection maps."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np

from deepsky.config import Config
from deepsky.errors import StackingError
from deepsky.integrate import normalize, weights as weights_mod
from deepsky.integrate.drizzle import DrizzlePlan, drizzle_frames
from deepsky.integrate.reject import combine
from deepsky.integrate.stack import FrameInput, Integration, StackPlan, TileCheckpoint, integrate
from deepsky.integrate.stack import read_stack, stack_layout, tile_grid
from deepsky.integrate.trails import Trail, binned_transform, object_mask, trails_from_residual
from deepsky.io.atomic import output_error, write_text
from deepsky.io.fits import TiledFits, write_fits
from deepsky.parallel import map_threads, resolve_workers
from deepsky.pipeline.registration import LightRecord
from deepsky.types import Transform

STACK_VERSION = "integrate v1"


@dataclass
class StackGroup:
    """The lights of one filter (and camera geometry) integrated into one stack."""

    name: str  # filter name, or "" for a single unnamed group
    records: list[LightRecord]
    norm_ref: int  # index into records of the normalisation reference
    origin: tuple[int, int] = (0, 0)  # output grid origin in reference pixels (x, y)
    shape: tuple[int, int] = (0, 0)  # output (H, W)
    channels: int = 1
    bayer: str | None = None
    trails: dict[str, list[Trail]] = field(default_factory=dict)
    method: str = ""
    path: Path | None = None
    exposure: float = 0.0
    stats: dict[str, Any] = field(default_factory=dict)
    drizzle: float = 1.0
    key: str = ""
    reused: bool = False
    tiles_reused: int = 0  # integration tiles read back from a killed run's stack file

    @property
    def used(self) -> list[LightRecord]:
        return [r for r in self.records if r.used]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", text).strip("_") or "stack"


def choose_rejection(cfg: Config, n: int) -> tuple[str, float, float]:
    """The rejection method for ``n`` frames ("auto": winsorized sigma with 5 or more frames,
    MAD clipping with 3-4, plain mean below)."""
    ic = cfg.integration
    if ic.rejection != "auto":
        return ic.rejection, ic.low, ic.high
    if n >= 5:
        return "winsorized", ic.low, ic.high
    if n >= 3:
        return "mad", max(ic.low, 4.0), max(ic.high, 4.0)
    return "mean", ic.low, ic.high


def _footprint_corners(t: Transform, w: int, h: int) -> np.ndarray:
    return t.apply([[-0.5, -0.5], [w - 0.5, -0.5], [w - 0.5, h - 0.5], [-0.5, h - 0.5]])


def output_frame(records: list[LightRecord], ref_shape: tuple[int, int], framing: str,
                 autocrop: bool) -> tuple[tuple[int, int], tuple[int, int]]:
    """Origin (x, y) in reference pixels and shape (H, W) of the output grid."""
    rh, rw = ref_shape
    if framing == "reference" and not autocrop:
        return (0, 0), (rh, rw)
    if framing == "union":
        pts = np.concatenate([_footprint_corners(r.registration.transform, r.meta.width,
                                                 r.meta.height) for r in records])
        x0, y0 = np.floor(pts.min(axis=0) + 0.5).astype(int)
        x1, y1 = np.ceil(pts.max(axis=0) + 0.5).astype(int)
    else:
        x0, y0, x1, y1 = 0, 0, rw, rh
    # Coverage on a coarse grid to crop (intersection: all frames; autocrop: half of them).
    if framing == "intersection" or autocrop:
        need = len(records) if framing == "intersection" else math.ceil(len(records) / 2)
        f = 8
        gw, gh = max(1, (x1 - x0) // f), max(1, (y1 - y0) // f)
        gx, gy = np.meshgrid(x0 + (np.arange(gw) + 0.5) * f, y0 + (np.arange(gh) + 0.5) * f)
        pts = np.stack([gx.ravel(), gy.ravel()], axis=1)
        cov = np.zeros(len(pts), int)
        for r in records:
            p = r.registration.transform.inverse().apply(pts)
            cov += ((p[:, 0] >= 0) & (p[:, 0] <= r.meta.width - 1) & (p[:, 1] >= 0)
                    & (p[:, 1] <= r.meta.height - 1))
        full = (cov >= need).reshape(gh, gw)
        top, bottom, left, right = 0, gh, 0, gw
        # Shrink the box from its worst edge until it is fully covered.
        while top < bottom and left < right and not full[top:bottom, left:right].all():
            sub = full[top:bottom, left:right]
            edges = {"top": sub[0].mean(), "bottom": sub[-1].mean(), "left": sub[:, 0].mean(),
                     "right": sub[:, -1].mean()}
            worst = min(edges, key=edges.get)
            if worst == "top":
                top += 1
            elif worst == "bottom":
                bottom -= 1
            elif worst == "left":
                left += 1
            else:
                right -= 1
        if top >= bottom or left >= right:
            raise StackingError("the frames have no common area (intersection framing)")
        x0, x1 = x0 + left * f, x0 + right * f
        y0, y1 = y0 + top * f, y0 + bottom * f
    return (int(x0), int(y0)), (int(y1 - y0), int(x1 - x0))


@contextlib.contextmanager
def scratch_cube(path: Path, shape: tuple[int, ...]) -> Iterator[np.ndarray]:
    """A float32 ``.npy`` memory map at ``path``, its disk space reserved up front (a full
    disk fails here with an :class:`OutputError`, not with SIGBUS on a page write later);
    removed when the block ends, however it ends."""
    try:
        cube = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape)
        if hasattr(os, "posix_fallocate"):
            with open(path, "r+b") as fh:
                os.posix_fallocate(fh.fileno(), 0, os.fstat(fh.fileno()).st_size)
    except OSError as err:
        with contextlib.suppress(OSError):
            path.unlink()
        raise output_error(path, err) from err
    try:
        yield cube
    finally:
        del cube
        with contextlib.suppress(OSError):
            path.unlink()


_CROSS = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], np.uint8)


def _warp_nearest(image: np.ndarray, t: Transform, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resampling onto the reference grid (NaN where the frame has no
    pixel), with OpenCV: the values of ``warp_image(method="nearest")`` (a rounding tie
    at 1/1024 px may pick the other neighbour), ~7x faster."""
    inv = np.linalg.inv(t.matrix)  # reference -> frame, what OpenCV samples with
    flags = cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP
    size = (shape[1], shape[0])
    src = np.ascontiguousarray(image, np.float32)
    if np.allclose(inv[2], (0.0, 0.0, 1.0)):
        return cv2.warpAffine(src, inv[:2], size, flags=flags,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=float("nan"))
    return cv2.warpPerspective(src, inv, size, flags=flags, borderMode=cv2.BORDER_CONSTANT,
                               borderValue=float("nan"))


def find_trails(group: StackGroup, inputs: list[FrameInput], cfg: Config, cache_dir: Path,
                workers: int) -> dict[str, list[Trail]]:
    """Trails of each frame: lines in its binned residual against a median provisional stack
    (all on the binned output grid; the cube lives in a memory-mapped file)."""
    used = group.used
    n = len(used)
    if n < 3:
        return {}
    f = used[0].analysis.lowres_factor
    h, w = group.shape
    hl, wl = h // f, w // f
    shift = Transform.translation(-group.origin[0], -group.origin[1])
    cube_path = cache_dir / f"provisional_{_slug(group.name)}.npy"
    cache_dir.mkdir(parents=True, exist_ok=True)
    with scratch_cube(cube_path, (n, hl, wl)) as cube:
        edge = max(3, int(round(32 / f)))

        def put(i: int) -> None:
            r, fi = used[i], inputs[i]
            low = np.load(r.analysis.lowres)
            t = binned_transform(shift @ r.registration.transform, f)
            # Nearest neighbour: no interpolation to blur a thin trail or correlate the noise.
            warped = _warp_nearest(low, t, (hl, wl))
            mul = float(np.mean(fi.mul))
            add = float(np.mean(fi.add))
            # A frame's edges (bad first/last rows and columns, vignetted corners, the seam
            # between covered and uncovered) make straight residuals along the border that are
            # not trails: leave a margin of each frame's footprint out of the search
            # (``edge`` steps of the 4-neighbour erosion, outside counting as uncovered).
            covered = cv2.erode(np.isfinite(warped).view(np.uint8), _CROSS, iterations=edge,
                                borderType=cv2.BORDER_CONSTANT, borderValue=0).view(bool)
            cube[i] = np.where(covered, warped * mul + add, np.float32(np.nan))

        map_threads(put, range(n), workers=workers)  # numpy and OpenCV release the GIL
        cube.flush()
        provisional = np.empty((hl, wl), np.float32)
        step = max(8, int(64 * 1024 * 1024 / max(1, n * wl * 4)))
        for y0 in range(0, hl, step):
            y1 = min(hl, y0 + step)
            provisional[y0:y1] = combine(np.asarray(cube[:, y0:y1]), method="median",
                                         workers=workers)[0]
        mask = object_mask(provisional, grow=max(2, int(round(8 / f))))

        def search(i: int) -> list[Trail]:
            residual = np.asarray(cube[i]) - provisional
            return trails_from_residual(residual, factor=f, mask=mask,
                                        threshold=cfg.integration.trail_threshold)

        out: dict[str, list[Trail]] = {}
        for r, found in zip(used, map_threads(search, range(n), workers=workers)):
            if found:
                # The border margin hid the trail's last pixels: a trail seen reaching into the
                # margin goes on to the edge, so extend each end by the margin.
                out[r.name] = [t.extended(edge * f) for t in found]
    return out


def prepare_group(group: StackGroup, cfg: Config, plan_calibration: Any, *, remote: bool,
                  ref_shape: tuple[int, int]) -> tuple[list[FrameInput], StackPlan]:
    """Normalisation, weights, output frame and the per-frame inputs of a filter group."""
    used = group.used
    if not used:
        raise StackingError(f"no usable light for filter {group.name or '(none)'}")
    ic = cfg.integration
    first = used[0].meta
    if first.cfa == "xtrans":
        raise StackingError(f"{first.path}: X-Trans sensors cannot be debayered by deepsky; "
                            "convert the RAW files with a raw converter first")
    is_cfa = first.cfa == "bayer" and first.channels == 1
    group.channels = 3 if (is_cfa or first.channels == 3) else 1
    group.bayer = first.bayer if is_cfa else None
    group.origin, group.shape = output_frame(used, ref_shape, ic.framing, ic.autocrop)
    ref_i = group.norm_ref
    stats = [r.analysis.stats for r in used]
    fr_ref = used[ref_i].flux_ratio if math.isfinite(used[ref_i].flux_ratio) else 1.0
    ratios = [r.flux_ratio / fr_ref for r in used]
    mul, add = normalize.coefficients(stats, ref_i, method=ic.normalization, flux_ratios=ratios)
    noise_after = np.array([s.scale for s in stats]) * mul
    wts = weights_mod.frame_weights(
        method=ic.weighting, noise_after_norm=noise_after,
        n_stars=np.array([r.analysis.quality.n_stars for r in used], float),
        fwhm=np.array([r.analysis.quality.fwhm for r in used], float),
        exposure=np.array([r.meta.exposure or np.nan for r in used], float))
    shift = Transform.translation(-group.origin[0], -group.origin[1])
    inputs = []
    for r, m_, a_, w_ in zip(used, mul, add, wts):
        cal, _k = plan_calibration.for_light(r.meta)
        calibration: Any = cal
        if remote and cal.spec is not None:
            calibration = cal.spec
        r.weight = float(w_)
        inputs.append(FrameInput(
            name=r.name,
            source=r.source,
            calibration=None if cal.empty else calibration,
            transform=shift @ r.registration.transform,
            dark_scale=r.analysis.dark_scale,
            bayer=group.bayer,
            mul=np.asarray(m_, np.float32) if group.channels == len(m_) else
            np.full(group.channels, float(np.mean(m_)), np.float32),
            add=np.asarray(a_, np.float32) if group.channels == len(a_) else
            np.full(group.channels, float(np.mean(a_)), np.float32),
            weight=float(w_),
            cosmetic=cfg.calibration.cosmetic,
            value_range=r.analysis.value_range,
        ))
    method, low, high = choose_rejection(cfg, len(inputs))
    group.method = method
    debayer = cfg.calibration.debayer
    if debayer in ("none", "superpixel"):
        debayer = "rcd"  # integration needs full-resolution colour (Bayer drizzle aside)
    plan = StackPlan(out_shape=group.shape, channels=group.channels, method=method, low=low,
                     high=high, interpolation=cfg.registration.interpolation,
                     clamp=cfg.registration.clamp, debayer=debayer,
                     trail_margin=ic.trail_margin, memory_mb=cfg.run.memory_mb,
                     tile_threads=1 if remote else resolve_workers(cfg.run.workers))
    return inputs, plan


def stack_header(group: StackGroup, cfg: Config, plan: StackPlan, ref: LightRecord,
                 n_trails: int) -> tuple[dict[str, Any], list[str]]:
    used = group.used
    dates = [r.meta.date for r in used if r.meta.date is not None]
    exp = sum(r.meta.exposure or 0.0 for r in used)
    group.exposure = exp
    cards: dict[str, Any] = {
        "IMAGETYP": "Master Light",
        "NCOMBINE": len(used),
        "EXPTIME": exp,
        "EXPOSURE": exp,
        "STACKCNT": len(used),
        "REFFRAME": ref.name[:68],
        "XORIGIN": group.origin[0],
        "YORIGIN": group.origin[1],
        "NTRAILS": n_trails,
    }
    if group.name:
        cards["FILTER"] = group.name
    if dates:
        cards["DATE-BEG"] = min(dates).strftime("%Y-%m-%dT%H:%M:%S")
        cards["DATE-END"] = max(dates).strftime("%Y-%m-%dT%H:%M:%S")
        cards["DATE-OBS"] = cards["DATE-BEG"]
    m = ref.meta
    for key, val in (("INSTRUME", m.instrument), ("TELESCOP", m.telescope),
                     ("OBJECT", m.object), ("FOCALLEN", m.focal_length),
                     ("XPIXSZ", m.pixel_size)):
        if val is not None:
            cards[key] = val
    ic = cfg.integration
    hist = [
        f"{STACK_VERSION}: {len(used)} of {len(group.records)} lights, reference {ref.name}",
        f"{STACK_VERSION}: normalisation {ic.normalization}, weights {ic.weighting}",
        f"{STACK_VERSION}: rejection {plan.method} low {plan.low:g} high {plan.high:g}",
        f"{STACK_VERSION}: {plan.interpolation} interpolation"
        + (" (clamped)" if plan.clamp else ""),
        f"{STACK_VERSION}: {n_trails} trail(s) masked",
    ]
    if group.bayer:
        hist.append(f"{STACK_VERSION}: debayered with {plan.debayer} (pattern {group.bayer})")
    return cards, hist


def _inputs_key(inputs: list[FrameInput], plan: StackPlan, extra: Any) -> str:
    """Hash of what an integration depends on: frames (files), calibration, transforms,
    normalisation, weights, trails and the settings."""
    import hashlib
    import json

    h = hashlib.sha1()
    h.update(json.dumps({"v": STACK_VERSION, "plan": dataclasses.asdict(plan),
                         "extra": extra}, sort_keys=True, default=str).encode())
    for fi in inputs:
        cal = fi.calibration
        spec = getattr(cal, "spec", None) if cal is not None else None
        h.update(json.dumps({
            "file": str(fi.source.path), "size": fi.source.path.stat().st_size,
            "mtime": fi.source.path.stat().st_mtime_ns,
            "cal": repr(spec if spec is not None else (cal if cal is None or
                                                       not hasattr(cal, "bias") else "mem")),
            "k": fi.dark_scale, "t": fi.transform.to_list(), "bayer": fi.bayer,
            "mul": [float(v) for v in np.ravel(fi.mul)], "add": [float(v) for v in np.ravel(fi.add)],
            "w": fi.weight, "trails": [t.to_json() for t in fi.trails], "cos": fi.cosmetic,
            "range": fi.value_range,
        }, sort_keys=True).encode())
    return h.hexdigest()[:20]


def _cached_trails(group: StackGroup, inputs: list[FrameInput], plan: StackPlan, cfg: Config,
                   cache_dir: Path, workers: int) -> dict[str, list[Trail]]:
    import json

    key = _inputs_key(inputs, plan, {"trails": dataclasses.asdict(cfg.integration)})
    path = cache_dir / f"trails_{key}.json"
    if path.exists():
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
            return {k: [Trail.from_json(t) for t in v] for k, v in d.items()}
        except (OSError, ValueError, KeyError):
            pass
    found = find_trails(group, inputs, cfg, cache_dir, workers)
    write_text(path, json.dumps({k: [t.to_json() for t in v] for k, v in found.items()}))
    return found


def stack_group(group: StackGroup, cfg: Config, plan_cal: Any, *, out: Path, cache_dir: Path,
                backend: Any, reporter: Any, ref_shape: tuple[int, int], filename: str
                ) -> tuple[Path, Integration | None]:
    inputs, plan = prepare_group(group, cfg, plan_cal, remote=backend.remote,
                                 ref_shape=ref_shape)
    if cfg.integration.trails:
        with reporter.stage("trails"):
            group.trails = _cached_trails(group, inputs, plan, cfg, cache_dir, backend.workers)
        for r in group.used:
            r.extra["trails"] = group.trails.get(r.name, [])
        if group.trails:
            inputs = [dataclasses.replace(fi, trails=tuple(group.trails.get(fi.name, ())))
                      for fi in inputs]
        for name, ts in group.trails.items():
            for t in ts:
                reporter.detail(f"trail in {name}: ({t.x0:.0f},{t.y0:.0f})-({t.x1:.0f},{t.y1:.0f}) "
                                f"width {t.width:.1f} px, {t.significance:.0f} sigma")
    ic = cfg.integration
    key = _inputs_key(inputs, plan, {"drizzle": [ic.drizzle, ic.pixfrac, ic.kernel,
                                                 ic.bayer_drizzle, cfg.calibration.debayer],
                                     "group": group.name, "filename": filename})
    group.key = key
    target = out / filename
    if _stack_key(target) == key:
        reporter.info(f"{target.name} is up to date (same frames and settings): reused")
        group.path = target
        group.reused = True
        group.drizzle = ic.drizzle
        group.exposure = sum(r.meta.exposure or 0.0 for r in group.used)
        return target, None
    n_trails = sum(len(v) for v in group.trails.values())
    cards, hist = stack_header(group, cfg, plan, group.used[group.norm_ref], n_trails)
    cards["DSKYKEY"] = key
    bayer_drizzle = group.bayer is not None and (ic.bayer_drizzle
                                                 or cfg.calibration.debayer == "none")
    drizzled = ic.drizzle > 1.0 or bayer_drizzle
    # The plain stack is written tile by tile into its file as the integration goes (the
    # file is the integration's checkpoint), then renamed.
    plain_name = filename.replace(".fits", "_nodrizzle.fits") if drizzled else filename
    plain_hist = hist + ([f"{STACK_VERSION}: the plain stack; the drizzled one is {filename}"]
                         if drizzled else [])
    folder = cache_dir / f"tiles_{key}"
    layout = stack_layout(plan, cards, plain_hist)
    n_tiles = len(tile_grid(plan, len(inputs)))
    plain = out / plain_name
    # A run killed while drizzling left the plain stack complete: read it back.
    result = read_stack(TiledFits(plain, layout), plan) if drizzled else None
    if result is not None:
        reporter.info(f"{plain.name} is up to date (same frames and settings): reused")
        group.tiles_reused = n_tiles
    else:
        checkpoint = TileCheckpoint(TiledFits(folder / plain_name, layout))
        with reporter.stage(f"integrate {group.name}".strip(), total=n_tiles) as step:
            result = integrate(inputs, plan, backend, progress=step.advance,
                               checkpoint=checkpoint)
        group.tiles_reused = checkpoint.reused
        checkpoint.file.commit(plain)
    if drizzled:
        dplan = DrizzlePlan(scale=ic.drizzle, pixfrac=ic.pixfrac, kernel=ic.kernel,
                            bayer=bayer_drizzle, trail_margin=ic.trail_margin)
        with reporter.stage("drizzle", total=len(inputs)) as step:
            dr = drizzle_frames(inputs, dplan, out_shape=group.shape, channels=group.channels,
                                stack=result.data, progress=step.advance)
        cards = {**cards, "DRIZZLE": ic.drizzle, "PIXFRAC": ic.pixfrac, "DRZKERN": ic.kernel,
                 "BAYERDRZ": bayer_drizzle}
        hist = hist + [f"{STACK_VERSION}: drizzle x{ic.drizzle:g}, pixfrac {ic.pixfrac:g}, "
                       f"kernel {ic.kernel}" + (", Bayer drizzle (no debayering)"
                                                if bayer_drizzle else "")]
        data = dr.data if group.channels == 3 else dr.data[0]
        weight = dr.weight if group.channels == 3 else dr.weight[0]
        write_fits(target, data, cards=cards, history=hist,
                   extensions=[("WEIGHT", weight, {"COMMENT": "drizzle weight"})])
        group.path = target
        group.drizzle = ic.drizzle
    else:
        group.path = plain
    _clear_checkpoint(folder)
    return group.path, result


def _stack_key(path: Path) -> str | None:
    """The DSKYKEY of an existing stack file (None if absent or unreadable)."""
    if not path.exists():
        return None
    try:
        from astropy.io import fits

        return fits.getval(path, "DSKYKEY")
    except (OSError, KeyError, ValueError):
        return None


def _clear_checkpoint(folder: Path) -> None:
    import shutil

    shutil.rmtree(folder, ignore_errors=True)
