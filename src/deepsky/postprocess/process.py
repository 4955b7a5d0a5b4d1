"""The post-processing runner: linear stack in, finished image out.

Order of the steps (each optional through ``[postprocess.*]`` settings)::

    background extraction  -> colour calibration            (linear: final_linear.fits)
    -> deconvolution -> noise reduction                     (linear, for display only)
    -> normalise by the white level -> stretch -> levels, curve, saturation -> SCNR
    -> star reduction                                       (display: final.tif, final.jpg)

:func:`process_image` is pure (arrays in, arrays out). :func:`process_file` reads a stack
(any format :func:`deepsky.io.read` knows), runs it and writes ``final_linear.fits``,
``final.tif``, ``final.jpg``, ``background_model.fits`` and ``background_samples.csv`` in
``out_dir``; the input file is only read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from deepsky.config import Config, PostprocessConfig
from deepsky.errors import ConfigError, InputError, OutputError, ProcessingError
from deepsky.postprocess import background as bgm
from deepsky.postprocess import color as colm
from deepsky.postprocess import stars as stm
from deepsky.postprocess import stretch as stf
from deepsky.postprocess._common import (
    as_image, fill_masked, luminance, planes, sky_model, step,
)
from deepsky.postprocess.deconvolve import PSFModel, deconvolve, moffat_kernel
from deepsky.postprocess.denoise import denoise

__all__ = ["ProcessResult", "ProcessFileResult", "process_image", "process_file",
           "OUTPUT_NAMES"]

OUTPUT_NAMES = {
    "linear": "final_linear.fits",
    "tiff": "final.tif",
    "jpeg": "final.jpg",
    "background": "background_model.fits",
    "samples": "background_samples.csv",
}


@dataclass(frozen=True, eq=False)
class ProcessResult:
    """What :func:`process_image` made.

    ``linear``: the stack after background extraction and colour calibration, still linear,
    in the input's units (NaN where the input was NaN). ``display``: the finished image,
    float32 0..1, display-referred (sRGB values). ``background_model``: the removed
    background (input units) or ``None`` when extraction is off. ``samples``: the ``(n, 2)``
    background sample positions ``(x, y)``. ``recipe``: one line per step, in order;
    ``linear_recipe`` the lines of the steps ``linear`` has been through. ``info``: numbers
    worth reporting (white balance gains, PSF FWHM, white level, ...). ``header``: the
    input's header, passed through for the writers.
    """

    linear: np.ndarray
    display: np.ndarray
    background_model: np.ndarray | None
    samples: np.ndarray
    recipe: tuple[str, ...]
    linear_recipe: tuple[str, ...]
    info: dict[str, Any] = field(default_factory=dict)
    header: Any = None


@dataclass(frozen=True)
class ProcessFileResult:
    """What :func:`process_file` wrote: ``paths`` by kind (linear, tiff, jpeg, background,
    samples), the ``recipe`` and the ``info`` numbers. ``lines()`` is a printable summary."""

    paths: dict[str, Path]
    recipe: tuple[str, ...]
    info: dict[str, Any]

    def lines(self) -> list[str]:
        out = [f"wrote {kind}: {path}" for kind, path in self.paths.items()]
        out.append("recipe:")
        out += [f"  {r}" for r in self.recipe]
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())


def _section(config: Any) -> PostprocessConfig:
    if config is None:
        return PostprocessConfig()
    if isinstance(config, PostprocessConfig):
        return config
    if isinstance(config, Config):
        return config.postprocess
    raise ConfigError(f"config must be a deepsky Config or PostprocessConfig, got "
                      f"{type(config).__name__}")


def process_image(data: Any, *, config: Config | PostprocessConfig | None = None,
                  header: Any = None, samples: Any = None, reporter: Any = None
                  ) -> ProcessResult:
    """Turn a linear stack into a finished image (see the module notes).

    Parameters
    ----------
    data : array_like, (H, W) or (3, H, W)
        The linear stack, any units (ADU, electrons, 0..1). NaN pixels (no coverage) are
        filled for processing and come out NaN in ``linear``, black in ``display``.
    config : Config or PostprocessConfig
        The settings (``config.postprocess``); defaults when omitted.
    header : optional
        The input's header, carried into the result for the writers.
    samples : array_like (n, 2), optional
        Background sample positions to fit instead of the automatic ones.
    reporter : optional
        A :class:`deepsky.pipeline.progress.Reporter` for progress details.
    """
    cfg = _section(config)
    img = as_image(data, finite=False)
    say = (lambda msg: reporter.detail(msg)) if reporter is not None else (lambda msg: None)
    recipe: list[str] = []
    info: dict[str, Any] = {"shape": list(img.shape)}
    bad = ~np.all(np.isfinite(planes(img)), axis=0)
    if bad.all():
        raise ProcessingError("the image holds no finite pixel")
    work = img
    if bad.any():
        work = fill_masked(np.nan_to_num(img), bad)
        recipe.append(step("fill", f"{int(bad.sum())} pixels without data filled from their "
                                   "neighbours for processing (NaN in final_linear, black "
                                   "in the display)"))
    mask = bad if bad.any() else None

    # 1. background
    model = None
    pts = np.zeros((0, 2))
    g = cfg.gradient
    if g.enabled:
        res = bgm.extract_background(work, samples=samples, mode=g.mode, method=g.method,
                                     degree=g.degree, smoothing=g.smoothing, grid=g.grid,
                                     tolerance=g.tolerance, mask=mask)
        work, model, pts = res.data, res.model, res.samples
        recipe += res.history
        say(res.history[0])
        info["background_samples"] = int(len(pts))

    # 2. colour
    c = cfg.color
    if work.ndim == 3 and (c.neutralize_background or c.white_balance != "none"
                           or c.match_channels):
        cres = colm.calibrate_color(work, neutralize=c.neutralize_background,
                                    white_balance=c.white_balance,
                                    g2v_ratios=(c.g2v_red, c.g2v_blue),
                                    match_channels=c.match_channels, mask=mask)
        work = cres.data
        recipe += cres.history
        say(cres.history[0])
        info["white_balance_gains"] = [float(v) for v in cres.gains]
        info["background_levels"] = [float(v) for v in cres.background]
        info["white_balance_stars"] = cres.n_stars
    linear = work.copy()
    linear_recipe = tuple(recipe)

    # 3. deconvolution
    d = cfg.deconvolution
    if d.enabled:
        try:
            psf = None
            if d.psf_fwhm > 0:
                k = moffat_kernel(d.psf_fwhm, beta=d.psf_beta)
                psf = PSFModel(d.psf_fwhm, d.psf_fwhm, d.psf_beta, 0.0, 0, k)
            dres = deconvolve(work, psf=psf, iterations=d.iterations, dering=d.dering)
            work = dres.data
            recipe += dres.history
            say(dres.history[0])
            info["psf_fwhm"] = float(dres.psf.fwhm)
        except ProcessingError as err:
            recipe.append(step("deconvolve", f"skipped: {err}"))
            say(f"deconvolution skipped: {err}")

    # 4. noise reduction (the stretch is set from the image before it, so that a cleaner
    # background does not make for a deeper stretch and blotches)
    before_nr = work
    n = cfg.denoise
    if n.enabled:
        nres = denoise(work, luminance_amount=n.luminance, chrominance_amount=n.chrominance,
                           threshold=n.threshold, chrominance_threshold=n.chrominance_threshold,
                           scales=n.scales, chrominance_scales=n.scales + 1)
        work = nres.data
        recipe += nres.history
        say(nres.history[0])

    # 5. stretch
    norm, white = stf.normalize(work)
    ref = before_nr / np.float32(white) if before_nr is not work else None
    recipe.append(step("normalize", f"divided by the white level {white:.6g} (brightest value "
                                    "after a 3x3 median)"))
    info["white_level"] = white
    sky_mask = sky_model(luminance(norm), mask=mask).sources
    if mask is not None:
        sky_mask |= mask
    s = cfg.stretch
    if s.method == "auto":
        st = stf.auto_ghs(norm, target_background=s.target_background, b=s.ghs.b,
                          shadows_clip=s.shadows_clip, SP=s.ghs.sp, LP=s.ghs.lp, HP=s.ghs.hp,
                          color=s.color, mask=sky_mask, reference=ref)
    elif s.method == "ghs":
        med, madn = stf.background_stats(norm if ref is None else ref, mask=sky_mask)
        black = float(np.clip(med[0] + s.shadows_clip * madn[0], 0.0, 0.99))
        sp = 0.0 if s.ghs.sp is None else s.ghs.sp
        st = stf.ghs_stretch(norm, D=s.ghs.d, b=s.ghs.b, SP=sp, LP=min(s.ghs.lp, sp),
                             HP=max(s.ghs.hp, sp), black=black, color=s.color)
    elif s.method == "stf":
        st = stf.stf_stretch(norm, target_background=s.target_background,
                             shadows_clip=s.shadows_clip, linked=s.linked, color="channels",
                             mask=sky_mask, reference=ref)
    elif s.method == "asinh":
        st = stf.asinh_stretch(norm, target_background=s.target_background,
                               shadows_clip=s.shadows_clip, mask=sky_mask, reference=ref)
    else:
        st = stf.Stretched(np.clip(norm, 0.0, 1.0), {"method": "none"},
                           (step("stretch", "none (linear, clipped to 0..1)"),))
    disp = st.data
    recipe += st.history
    say(st.history[0])
    info["stretch"] = {k: v for k, v in st.params.items()}

    # 6. levels, curve, saturation
    if s.black_point > 0 or s.white_point < 1:
        disp = stf.levels(disp, black=s.black_point, white=s.white_point)
        recipe.append(step("levels", f"black {s.black_point:g}, white {s.white_point:g}"))
    if s.curve.strip():
        pts_curve = stf.parse_curve(s.curve)
        disp = stf.curves(disp, pts_curve)
        recipe.append(step("curve", "monotone spline through " + ", ".join(
            f"{x:g}:{y:g}" for x, y in pts_curve)))
    if disp.ndim == 3 and s.saturation != 1.0:
        bg_disp = float(np.median(luminance(disp)[~sky_mask])) if (~sky_mask).any() else None
        disp = stf.saturation(disp, s.saturation, background=bg_disp)
        recipe.append(step("saturation", f"x{s.saturation:g} above the background"))

    # 7. SCNR
    if disp.ndim == 3 and c.scnr > 0:
        disp = colm.scnr(disp, amount=c.scnr, method=c.scnr_method)
        recipe.append(step("scnr", f"{c.scnr_method} neutral, amount {c.scnr:g}"))

    # 8. star reduction
    r = cfg.stars
    if r.reduction > 0:
        disp, hist = stm.reduce_stars(disp, amount=r.reduction, radius=r.radius, linear=work)
        recipe += hist
        say(hist[0])

    disp = np.clip(disp, 0.0, 1.0).astype(np.float32)
    if bad.any():
        planes(disp)[:, bad] = 0.0
        planes(linear)[:, bad] = np.nan
    return ProcessResult(linear=linear.astype(np.float32), display=disp,
                         background_model=model, samples=pts, recipe=tuple(recipe),
                         linear_recipe=linear_recipe, info=info, header=header)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def process_file(stack_path: str | os.PathLike, out_dir: str | os.PathLike,
                 config: Config | PostprocessConfig | None = None, reporter: Any = None,
                 *, key: str | None = None) -> ProcessFileResult:
    """Post-process a stack file and write the results into ``out_dir``.

    Writes (see :data:`OUTPUT_NAMES`): ``final_linear.fits`` (float32, linear after
    background and colour), ``final.tif`` (16-bit display), ``final.jpg`` (8-bit sRGB),
    ``background_model.fits`` (float32) and ``background_samples.csv`` (the sample list, to
    edit and feed back with ``gradient.samples_file``); which ones follows
    ``[postprocess.export]``. Every file carries the recipe. The input is only read; an
    output that would overwrite it is refused. Returns the paths and the recipe. ``key``
    (the pipeline's hash of the stack and settings) is recorded as DSKYPPK in
    ``final_linear.fits`` so an unchanged run can skip the work.
    """
    from deepsky import __version__
    from deepsky.io import read, write
    from deepsky.io.atomic import write_text
    from deepsky.pipeline.progress import Reporter
    from deepsky.postprocess.background import samples_from_text, samples_to_text
    from deepsky.postprocess.export import write_display_tiff, write_jpeg

    rep = reporter or Reporter()
    cfg = _section(config)
    src = Path(stack_path)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: exists and is not a folder")
    names = {k: out / v for k, v in OUTPUT_NAMES.items()}
    for kind, p in names.items():
        if _same_file(p, src) or p.resolve() == src.resolve():
            raise OutputError(f"{p}: the output would overwrite the input stack {src}; "
                              "choose another output folder")
    samples = None
    if cfg.gradient.samples_file:
        sp = Path(cfg.gradient.samples_file)
        try:
            text = sp.read_text(encoding="utf-8")
        except OSError as err:
            raise InputError(sp, f"cannot read the background samples file "
                                 f"({err.strerror or err})") from err
        samples = samples_from_text(text, str(sp))
        if len(samples) == 0:
            raise ConfigError(f"{sp}: the background samples file lists no x,y position")
    with rep.stage("read"):
        frame = read(src)
    with rep.stage("postprocess"):
        res = process_image(frame.data, config=cfg, header=frame.meta.header,
                            samples=samples, reporter=rep)
    software = f"deepsky {__version__}"
    old = tuple(frame.history)
    full = old + res.recipe
    paths: dict[str, Path] = {}
    ex = cfg.export
    with rep.stage("write"):
        paths["linear"] = write(names["linear"], res.linear, meta=frame.meta,
                                history=old + res.linear_recipe,
                                cards={"DSKYPP": ("final_linear", "deepsky post-processing "
                                                  "product"),
                                       "DSKYSW": (software, "software"),
                                       **({"DSKYPPK": (key, "deepsky post-processing key")}
                                          if key else {})})
        from deepsky.pipeline.progress import fault_point

        fault_point("postprocess", 1)
        if ex.tiff:
            paths["tiff"] = write_display_tiff(
                names["tiff"], res.display, meta=frame.meta, history=full,
                cards={"DSKYPP": ("final display", "stretched, display-referred sRGB"),
                       "DSKYSW": (software, "software")})
        if ex.jpeg:
            paths["jpeg"] = write_jpeg(names["jpeg"], res.display, recipe=full,
                                       quality=ex.jpeg_quality, software=software)
        if ex.background_model and res.background_model is not None:
            paths["background"] = write(
                names["background"], res.background_model, meta=frame.meta,
                history=old + tuple(r for r in res.recipe
                                    if r.startswith("postprocess.background")),
                cards={"DSKYPP": ("background_model", "removed background, input units"),
                       "DSKYSW": (software, "software")})
            write_text(names["samples"], samples_to_text(res.samples))
            paths["samples"] = names["samples"]
    for kind, p in paths.items():
        rep.detail(f"{kind}: {p}")
    info = dict(res.info)
    info["input"] = str(src)
    return ProcessFileResult(paths=paths, recipe=res.recipe, info=info)
