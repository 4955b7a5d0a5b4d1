"""Write a whole simulated session to disk, with its truth.

Only :func:`simulate_session` touches files; everything else in ``deepsky.simulate`` is pure.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np

from deepsky.io.atomic import write_text
from deepsky.io.fits import write_fits
from deepsky.simulate.model import SessionModel, galaxy_aperture_fraction
from deepsky.simulate.scene import galaxy_aperture
from deepsky.simulate.spec import SessionSpec
from deepsky.simulate.truth import (
    CalibrationTruth, GalaxyTruth, LightTruth, NebulaTruth, SatelliteTruth, SensorTruth,
    SkyTruth, Truth, stars_csv,
)
from deepsky.types import bayer_flip_rows

SIMULATOR_ID = "deepsky.simulate v1"
_IMAGETYP = {"light": "Light Frame", "dark": "Dark Frame", "flat": "Flat Field",
             "bias": "Bias Frame", "darkflat": "Dark Flat"}
_PREFIX = {"light": "Light", "dark": "Dark", "flat": "Flat", "bias": "Bias",
           "darkflat": "DarkFlat"}
_FOLDER = {"light": "lights", "dark": "darks", "flat": "flats", "bias": "biases",
           "darkflat": "darkflats"}


@dataclass(frozen=True)
class _Job:
    kind: str
    index: int  # light: index over all filters; others: index within (kind, filter)
    filter_index: int
    file: str  # relative to the session folder
    date: datetime


def _exposure_text(t: float) -> str:
    return f"{t:g}s"


def _file_name(spec: SessionSpec, kind: str, number: int, exposure: float,
               filter_name: str | None) -> str:
    """``lights/Light_0001_60s.fits`` (folders) or ``Light_0001_60s.fits`` (flat layout);
    with several filters ``lights/R/...`` or ``Light_R_0001_60s.fits``."""
    several = spec.n_filters > 1 and kind in ("light", "flat")
    tag = f"{filter_name}_" if (several and spec.layout == "flat") else ""
    name = f"{_PREFIX[kind]}_{tag}{number:04d}_{_exposure_text(exposure)}.fits"
    if spec.layout == "flat":
        return name
    folder = _FOLDER[kind] + (f"/{filter_name}" if several else "")
    return f"{folder}/{name}"


def _plan(spec: SessionSpec, model: SessionModel) -> list[_Job]:
    """All frames with their files and start times: lights (per filter, in order), then
    flats at dawn, dark-flats, darks and biases."""
    start = datetime.fromisoformat(spec.start_time.rstrip("Z"))
    if start.tzinfo is None:
        start = start.replace(tzinfo=timezone.utc)
    jobs: list[_Job] = []
    now = start
    filters = spec.filters or ()
    for i in range(spec.total_lights):
        fi, li = spec.light_filter(i)
        t = spec.light_exposure(i)
        jobs.append(_Job("light", i, fi, _file_name(spec, "light", li + 1, t, filters[fi]), now))
        now += timedelta(seconds=t + spec.overhead)
    now += timedelta(minutes=20)
    for fi, f in enumerate(filters):
        for k in range(spec.n_flats):
            t = spec.flat_exposure
            jobs.append(_Job("flat", k, fi, _file_name(spec, "flat", k + 1, t, f), now))
            now += timedelta(seconds=t + spec.overhead)
        now += timedelta(seconds=30)
    for kind, n in (("darkflat", spec.n_darkflats), ("dark", spec.n_darks),
                    ("bias", spec.n_biases)):
        now += timedelta(minutes=2)
        for k in range(n):
            t = model.calibration_exposure(kind)
            jobs.append(_Job(kind, k, 0, _file_name(spec, kind, k + 1, t, None), now))
            now += timedelta(seconds=t + min(spec.overhead, 1.0))
    return jobs


def _date_text(d: datetime) -> str:
    return d.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]


def _cards(spec: SessionSpec, kind: str, exposure: float, temp: float,
           filter_name: str | None, date: datetime) -> dict[str, Any]:
    """Header cards like N.I.N.A. writes them."""
    cards: dict[str, Any] = {
        "IMAGETYP": _IMAGETYP[kind],
        "EXPOSURE": float(exposure),
        "EXPTIME": float(exposure),
        "DATE-OBS": _date_text(date),
        "XBINNING": 1,
        "YBINNING": 1,
        "GAIN": int(spec.gain_setting),
        "OFFSET": int(spec.offset),
        "EGAIN": float(spec.egain),
        "XPIXSZ": float(spec.pixel_size),
        "YPIXSZ": float(spec.pixel_size),
        "INSTRUME": spec.instrument_name,
        "SET-TEMP": float(spec.set_temperature),
        "CCD-TEMP": float(temp),
        "TELESCOP": spec.telescope,
        "FOCALLEN": float(spec.focal_length),
    }
    if filter_name is not None:
        cards["FILTER"] = filter_name
    if kind == "light":
        cards["OBJECT"] = spec.object_name
    if spec.bayer is not None:
        cards["BAYERPAT"] = spec.bayer
        cards["XBAYROFF"] = 0
        cards["YBAYROFF"] = 0
    cards["ROWORDER"] = spec.roworder
    cards["SWCREATE"] = "deepsky simulator"
    return cards


def _flip(spec: SessionSpec, a: np.ndarray) -> np.ndarray:
    return a[..., ::-1, :] if spec.roworder == "BOTTOM-UP" else a


def simulate_session(spec: SessionSpec, out_dir: str | os.PathLike, *,
                     workers: int = 1) -> Truth:
    """Simulate the session ``spec`` into ``out_dir`` and return its truth.

    Writes the raw frames (uint16 FITS with capture-program headers), ``truth.json``,
    ``truth_stars.csv``, ``truth_sky.fits``, ``truth_background.fits``, ``truth_flat.fits``,
    ``truth_dark_current.fits`` and ``truth_bias.fits`` (see ``docs/simulator.md``). Every
    frame is seeded from (seed, kind, filter, index), so the result does not depend on
    ``workers`` (threads) and earlier frames do not change when more are asked for.
    Files of the same names are replaced; other files already in ``out_dir`` are left alone
    (use an empty folder, or a pipeline may pick up frames of an earlier session).

    >>> # truth = simulate_session(SessionSpec(n_lights=4), "session")
    """
    if not isinstance(workers, int) or workers < 1:
        from deepsky.errors import ConfigError
        raise ConfigError(f"simulate_session: workers = {workers!r} must be an integer >= 1")
    out = Path(out_dir)
    model = SessionModel(spec)
    jobs = _plan(spec, model)
    filters = spec.filters or ()

    def run(job: _Job) -> tuple[_Job, dict[str, Any]]:
        path = out / job.file
        if job.kind == "light":
            lp = model._lights[job.index]
            adu, sat, cosmic = model._light_frame_td(job.index)
            cards = _cards(spec, "light", lp.exposure, lp.ccd_temp, lp.filter_name, job.date)
            write_fits(path, _flip(spec, adu), cards=cards, dtype=np.uint16,
                       history=[f"{SIMULATOR_ID}: seed {spec.seed}, light {job.index}"])
            return job, {"saturated": sat, "cosmic": cosmic}
        adu, info = model._calibration_frame_td(job.kind, job.filter_index, job.index)
        filt = filters[job.filter_index] if job.kind == "flat" else filters[0]
        cards = _cards(spec, job.kind, info["exposure"], info["ccd_temp"], filt, job.date)
        write_fits(path, _flip(spec, adu), cards=cards, dtype=np.uint16,
                   history=[f"{SIMULATOR_ID}: seed {spec.seed}, {job.kind} {job.index}"])
        return job, info

    results = _map(run, jobs, workers)
    return _finish(spec, model, out, results)


def _map(fn: Callable[[_Job], Any], jobs: list[_Job], workers: int) -> list[Any]:
    if workers == 1 or len(jobs) < 2:
        return [fn(j) for j in jobs]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(fn, jobs))


def _finish(spec: SessionSpec, model: SessionModel, out: Path,
            results: list[tuple[_Job, dict[str, Any]]]) -> Truth:
    filters = spec.filters or ()
    n_stars = len(model._stars)
    saturated = np.zeros(n_stars, dtype=bool)
    lights: list[LightTruth] = []
    calib: list[CalibrationTruth] = []
    h = spec.height
    for job, info in results:
        if job.kind == "light":
            saturated |= info["saturated"]
            lights.append(_light_truth(spec, model, job, info))
        else:
            calib.append(CalibrationTruth(
                kind=job.kind, index=job.index, file=job.file,
                filter=filters[job.filter_index] if job.kind == "flat" else filters[0],
                exposure=float(info["exposure"]), date_obs=_date_text(job.date),
                ccd_temp=float(info["ccd_temp"]), dark_scale=float(info["dark_scale"]),
                level=float(info["level"]), cosmic_rays=int(info["cosmic_rays"])))
    lights.sort(key=lambda lt: lt.index)

    # truth images
    files = {"stars": "truth_stars.csv", "sky": "truth_sky.fits",
             "background": "truth_background.fits", "flat": "truth_flat.fits",
             "dark_current": "truth_dark_current.fits", "bias": "truth_bias.fits"}
    common = {"SWCREATE": "deepsky simulator", "ROWORDER": spec.roworder}
    for k, f in enumerate(filters):
        sky = model.truth_sky(f)
        bg = model.truth_background(f)
        suffix = "" if k == 0 else f"_{f}"
        if k > 0:
            files[f"sky_{f}"] = f"truth_sky{suffix}.fits"
            files[f"background_{f}"] = f"truth_background{suffix}.fits"
        cards = dict(common, BUNIT="electron/s", FILTER=f, FWHM=model.reference_psf.fwhm)
        write_fits(out / f"truth_sky{suffix}.fits", sky, cards=cards,
                   history=[f"{SIMULATOR_ID}: noiseless reference sky, e-/s"])
        write_fits(out / f"truth_background{suffix}.fits", bg, cards=cards,
                   history=[f"{SIMULATOR_ID}: sky background (level and gradient), e-/s"])
    write_fits(out / files["flat"], model.flat_field(), cards=dict(common, BUNIT="relative"),
               history=[f"{SIMULATOR_ID}: true flat field, mean 1"])
    write_fits(out / files["dark_current"], model.dark_current(),
               cards=dict(common, BUNIT="electron/s", **{"SET-TEMP": spec.set_temperature}),
               history=[f"{SIMULATOR_ID}: dark current at the set temperature, e-/s"])
    write_fits(out / files["bias"], model.bias(), cards=dict(common, BUNIT="adu"),
               history=[f"{SIMULATOR_ID}: bias pattern, ADU"])

    # star table
    cat = model.stars()
    in_frames = np.zeros(n_stars, dtype=np.int64)
    for i in range(model.n_lights):
        in_frames += model._in_frame(i)
    cols: dict[str, np.ndarray] = {"id": np.arange(n_stars), "x": cat.x, "y": cat.y,
                                   "flux": cat.flux}
    for k, f in enumerate(filters):
        rates = model.star_rates(f)
        if spec.is_color:
            for c, name in enumerate("rgb"):
                if k == 0:
                    cols[f"flux_{name}"] = rates[:, c]
                if len(filters) > 1:
                    cols[f"flux_{f}_{name}"] = rates[:, c]
        else:
            if len(filters) > 1 or f != "L":
                cols[f"flux_{f}"] = rates
    cols["color_r"], cols["color_g"], cols["color_b"] = cat.color.T
    cols["temperature"] = cat.temperature
    cols["neutral"] = cat.neutral
    cols["saturated"] = saturated
    w = spec.width
    cols["in_reference"] = (cat.x >= -0.5) & (cat.x < w - 0.5) & (cat.y >= -0.5) & \
        (cat.y < h - 0.5)
    cols["n_frames"] = in_frames
    write_text(out / files["stars"], stars_csv(cols))

    truth = Truth(
        spec=spec, lights=tuple(lights), calibration=tuple(calib),
        sensor=_sensor_truth(spec, model), sky=_sky_truth(spec, model),
        galaxy=_galaxy_truth(spec, model),
        nebula=_nebula_truth(model), star_count=int(n_stars),
        n_saturated_stars=int(saturated.sum()),
        reference_fwhm=float(model.reference_psf.fwhm), files=files,
    )
    write_text(out / "truth.json", truth.to_json())
    return truth


def _light_truth(spec: SessionSpec, model: SessionModel, job: _Job,
                 info: dict[str, Any]) -> LightTruth:
    lp = model._lights[job.index]
    psf = lp.psf
    cx, cy = (spec.width - 1) / 2.0, (spec.height - 1) / 2.0
    (rx, ry), = lp.transform.apply([[cx, cy]])
    rates = model._background.rates(lp.filter_name, is_color=spec.is_color)
    shape = float(model._background.shape_at(np.array(rx), np.array(ry)))
    bg_rate = float(rates.mean()) * shape * lp.background_factor
    sat = None
    if lp.satellite is not None:
        s = lp.satellite
        sat = SatelliteTruth(x0=float(s.x0), y0=float(model._y(s.y0)), x1=float(s.x1),
                             y1=float(model._y(s.y1)), width=float(s.width), peak=float(s.peak))
    cosmic = info["cosmic"]
    hits = tuple((float(x), float(model._y(y)), float(e), float(n))
                 for x, y, e, n in cosmic.hits)
    return LightTruth(
        index=lp.index, file=job.file, filter=lp.filter_name, exposure=lp.exposure,
        date_obs=_date_text(job.date), transform=tuple(model.transform(lp.index).to_list()),
        fwhm=psf.fwhm, beta=psf.beta, elongation=psf.elongation,
        psf_angle=model._angle(math.degrees(psf.angle)), trail_length=psf.trail_length,
        trail_angle=model._angle(math.degrees(psf.trail_angle)), roundness=psf.roundness,
        transparency=lp.transparency, background_factor=lp.background_factor,
        background_rate=bg_rate, background=bg_rate * lp.exposure, ccd_temp=lp.ccd_temp,
        dark_scale=lp.dark_scale, meridian_flipped=lp.meridian_flipped, cloudy=lp.cloudy,
        trailed=lp.trailed, satellite=sat, cosmic_rays=len(cosmic), cosmic_ray_hits=hits,
        n_stars_in_frame=int(model._in_frame(lp.index).sum()),
        n_saturated_stars=int(info["saturated"].sum()),
        bad=bool(lp.cloudy or lp.trailed), bad_reason=lp.bad_reason,
    )


def _sensor_truth(spec: SessionSpec, model: SessionModel) -> SensorTruth:
    s = model._sensor
    hot = tuple((float(x), float(model._y(y)), float(r)) for x, y, r in s.hot_pixels)
    cold = tuple((float(x), float(model._y(y))) for x, y in s.cold_pixels)
    dust = tuple((float(x), float(model._y(y)), float(r), float(d)) for x, y, r, d in s.dust)
    gx, gy = s.amp_glow_xy
    sat_adu = min(65535.0, spec.full_well / spec.egain + spec.bias_level)
    return SensorTruth(
        egain=spec.egain, read_noise=spec.read_noise, bias_level=spec.bias_level,
        column_pattern_rms=float(np.std(s.column_offsets, dtype=np.float64)),
        full_well=spec.full_well, saturation_adu=float(sat_adu),
        saturation_electrons=spec.saturation_electrons, dark_current=spec.dark_current,
        dark_doubling=spec.dark_doubling, set_temperature=spec.set_temperature,
        temperature=spec.mean_temperature,
        amp_glow={"rate": float(spec.amp_glow), "x": float(gx), "y": float(model._y(gy)),
                  "scale": s.amp_glow_scale_px},
        hot_pixels=hot, cold_pixels=cold, dust=dust,
        vignetting={"strength": float(spec.vignetting), "x": s.vignetting_center[0],
                    "y": float(model._y(s.vignetting_center[1])),
                    "radius": s.vignetting_radius},
        prnu=spec.prnu, qe=tuple(spec.qe) if spec.is_color else None,  # type: ignore[arg-type]
        flat_normalization=s.flat_norm, bayer=spec.bayer,
        bayer_stored=(bayer_flip_rows(spec.bayer, spec.height)
                      if spec.bayer and spec.roworder == "BOTTOM-UP" else spec.bayer),
        roworder=spec.roworder,
    )


def _sky_truth(spec: SessionSpec, model: SessionModel) -> SkyTruth:
    b = model._background
    rates = {f: tuple(float(v) for v in b.rates(f, is_color=spec.is_color))
             for f in spec.filters or ()}
    return SkyTruth(level=b.level, color=b.color, gradient=b.gradient,
                    gradient_quadratic=b.gradient_quadratic, angle=model._angle(b.angle),
                    cx=b.cx, cy=float(model._y(b.cy)), scale=b.scale, rates=rates)


def _galaxy_truth(spec: SessionSpec, model: SessionModel) -> GalaxyTruth | None:
    g = model._galaxy
    if g is None:
        return None
    fluxes = {}
    for f in spec.filters or ():
        d, b = g.component_rates(f, is_color=spec.is_color)
        fluxes[f] = tuple(float(v) for v in (d + b))
    ap = galaxy_aperture(g, model.reference_psf)
    frac = galaxy_aperture_fraction(model, ap)
    return GalaxyTruth(
        x=g.x, y=float(model._y(g.y)), flux=g.flux, fluxes=fluxes, disk_scale=g.disk_scale,
        bulge_radius=g.bulge_radius, bulge_sersic=4.0, bulge_fraction=g.bulge_fraction,
        inclination=g.inclination, axis_ratio=g.axis_ratio,
        bulge_axis_ratio=g.bulge_axis_ratio, position_angle=model._angle(g.position_angle),
        truncation_radius=g.truncation, aperture_radius=ap, aperture_fraction=frac,
    )


def _nebula_truth(model: SessionModel) -> NebulaTruth | None:
    n = model._nebula
    if n is None:
        return None
    blobs = tuple((float(x), float(model._y(y)), float(s), float(w)) for x, y, s, w in n.blobs)
    return NebulaTruth(flux=n.flux, halpha_fraction=n.halpha, blobs=blobs)

