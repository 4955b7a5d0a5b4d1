"""Post-processing: from the linear stack to the image a person wants to look at.

Pure functions over arrays (``(H, W)`` mono or ``(3, H, W)`` colour, float32), one module per
step, and one runner:

* :mod:`~deepsky.postprocess.background` -- gradient extraction (automatic or given samples,
  polynomial or RBF surface, subtraction or division);
* :mod:`~deepsky.postprocess.color` -- background neutralisation, white balance (stars or
  G2V), SCNR, linear channel matching, the photometric-calibration placeholder;
* :mod:`~deepsky.postprocess.deconvolve` -- PSF measurement and deringed Richardson-Lucy;
* :mod:`~deepsky.postprocess.denoise` -- starlet noise reduction, luminance and chrominance;
* :mod:`~deepsky.postprocess.stretch` -- normalisation, STF, GHS, arcsinh, levels, curves,
  saturation;
* :mod:`~deepsky.postprocess.stars` -- star mask and star reduction;
* :mod:`~deepsky.postprocess.export` -- JPEG/TIFF writers with the recipe, ``preview_png``;
* :mod:`~deepsky.postprocess.process` -- :func:`process_image` and :func:`process_file`.

See ``docs/postprocess.md``.
"""

from deepsky.postprocess.background import (
    BackgroundResult, apply_background, background_samples, extract_background,
    fit_background, sample_values,
)
from deepsky.postprocess.color import (
    ColorResult, apply_white_balance, background_levels, calibrate_color, g2v_white_balance,
    linear_fit, measure_star_colors, neutralize_background, photometric_color_calibration,
    scnr, star_white_balance,
)
from deepsky.postprocess.deconvolve import (
    DeconvolutionResult, PSFModel, deconvolve, measure_psf, moffat_kernel, richardson_lucy,
)
from deepsky.postprocess.denoise import DenoiseResult, denoise, starlet
from deepsky.postprocess.export import preview_png, write_jpeg
from deepsky.postprocess.process import (
    OUTPUT_NAMES, ProcessFileResult, ProcessResult, process_file, process_image,
)
from deepsky.postprocess.stars import reduce_stars, star_weight
from deepsky.postprocess.stretch import (
    Stretched, asinh_stretch, auto_ghs, curves, ghs_curve, ghs_stretch, levels, mtf,
    normalize, saturation, stf_stretch,
)

__all__ = [
    "OUTPUT_NAMES",
    "BackgroundResult",
    "ColorResult",
    "DeconvolutionResult",
    "DenoiseResult",
    "PSFModel",
    "ProcessFileResult",
    "ProcessResult",
    "Stretched",
    "apply_background",
    "apply_white_balance",
    "asinh_stretch",
    "auto_ghs",
    "background_levels",
    "background_samples",
    "calibrate_color",
    "curves",
    "deconvolve",
    "denoise",
    "extract_background",
    "fit_background",
    "g2v_white_balance",
    "ghs_curve",
    "ghs_stretch",
    "levels",
    "linear_fit",
    "measure_psf",
    "measure_star_colors",
    "moffat_kernel",
    "mtf",
    "neutralize_background",
    "normalize",
    "photometric_color_calibration",
    "preview_png",
    "process_file",
    "process_image",
    "reduce_stars",
    "richardson_lucy",
    "sample_values",
    "saturation",
    "scnr",
    "star_weight",
    "starlet",
    "star_white_balance",
    "stf_stretch",
    "write_jpeg",
]
