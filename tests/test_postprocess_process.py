"""The post-processing runner and its files: process_image, process_file, preview_png."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest
import tifffile
from astropy.io import fits
from PIL import Image

from deepsky.config import load_config
from deepsky.errors import OutputError, ProcessingError
from deepsky.io import read, write
from deepsky.pipeline.progress import Reporter
from deepsky.postprocess import OUTPUT_NAMES, preview_png, process_file, process_image
from deepsky.simulate import SessionSpec, build_model


def _stack(color: bool, size: int = 256, seed: int = 11) -> np.ndarray:
    """A small simulated linear stack in ADU-like units with a gradient and noise."""
    spec = SessionSpec(width=size, height=size, bayer="RGGB" if color else None, seed=seed,
                       n_lights=1, star_density=1500.0)
    sky = build_model(spec).truth_sky().astype(np.float64) * 60.0 + 500.0
    rng = np.random.default_rng(seed)
    data = sky + np.sqrt(sky / 20.0) * rng.standard_normal(sky.shape)
    if color:
        data *= np.array([0.8, 1.0, 0.7])[:, None, None]
    return data.astype(np.float32)


@pytest.fixture(scope="module")
def colour_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("pp")
    stack = root / "stack.fits"
    write(stack, _stack(True), cards={"OBJECT": "SIM GALAXY"},
          history=("integrate v1: simulated",))
    past = 1_600_000_000
    os.utime(stack, (past, past))
    before = (hashlib.sha256(stack.read_bytes()).hexdigest(), stack.stat().st_mtime_ns)
    out = root / "out"
    res = process_file(stack, out, load_config(), reporter=Reporter(quiet=True))
    return stack, out, res, before


def test_process_file_writes_every_output_with_the_recipe(colour_run):
    stack, out, res, before = colour_run
    assert set(res.paths) == {"linear", "tiff", "jpeg", "background", "samples"}
    for kind, name in OUTPUT_NAMES.items():
        assert res.paths[kind] == out / name and (out / name).is_file()
    assert not any(p.name.startswith(".") for p in out.iterdir())  # no temporary left over

    # final_linear.fits: float32, colour, linear (input units), the linear steps' recipe.
    with fits.open(out / "final_linear.fits") as hdul:
        hdr, data = hdul[0].header, hdul[0].data
        assert hdr["BITPIX"] == -32 and data.shape == (3, 256, 256)
        hist = " ".join(str(h) for h in hdr["HISTORY"])
        assert "integrate v1: simulated" in hist
        assert "postprocess.background" in hist and "postprocess.color" in hist
        assert "postprocess.stretch" not in hist
        assert hdr["OBJECT"] == "SIM GALAXY" and hdr["DSKYPP"] == "final_linear"
        assert np.nanmedian(data) > 100  # still in the stack's units, not 0..1
    # final.tif: 16-bit RGB with the full recipe in its metadata.
    with tifffile.TiffFile(out / "final.tif") as tif:
        page = tif.pages[0]
        assert page.dtype == np.uint16 and page.shape == (256, 256, 3)
    tif_hist = " ".join(read(out / "final.tif").history)
    assert "postprocess.stretch" in tif_hist and "postprocess.color" in tif_hist
    # final.jpg: 8-bit sRGB, recipe in the comment and EXIF, software tag.
    with Image.open(out / "final.jpg") as im:
        assert im.mode == "RGB" and im.size == (256, 256)
        assert b"postprocess.stretch" in im.info["comment"]
        assert im.info.get("icc_profile")
        exif = im.getexif()
        assert "postprocess.background" in exif[0x010E]
        assert exif[0x0131].startswith("deepsky")
    # background_model.fits and the sample list.
    model = read(out / "background_model.fits")
    assert model.data.shape == (3, 256, 256) and model.data.dtype == np.float32
    assert any("postprocess.background" in h for h in model.history)
    lines = (out / "background_samples.csv").read_text().splitlines()
    assert lines[0] == "x,y" and len(lines) > 20
    # The input was only read.
    assert (hashlib.sha256(stack.read_bytes()).hexdigest(), stack.stat().st_mtime_ns) == before
    text = str(res)
    assert "final.jpg" in text and "postprocess.stretch" in text
    assert res.info["white_balance_stars"] >= 5


def test_edited_samples_are_read_back(colour_run, tmp_path):
    _, out, _, _ = colour_run
    samples = tmp_path / "mine.csv"
    rows = (out / "background_samples.csv").read_text().splitlines()
    samples.write_text("\n".join(rows[:1] + rows[1::2]) + "\n")  # keep every other sample
    cfg = load_config(overrides=[f"postprocess.gradient.samples_file={samples}",
                                 "postprocess.deconvolution.enabled=false",
                                 "postprocess.denoise.enabled=false"])
    res = process_file(colour_run[0], tmp_path / "again", cfg, reporter=Reporter(quiet=True))
    assert f"{len(rows[1::2])} given samples" in res.recipe[0]


def test_mono_stack_gives_mono_outputs(tmp_path):
    stack = tmp_path / "mono.fits"
    write(stack, _stack(False))
    res = process_file(stack, tmp_path / "out", load_config(), reporter=Reporter(quiet=True))
    assert read(res.paths["linear"]).data.shape == (256, 256)
    with tifffile.TiffFile(res.paths["tiff"]) as tif:
        assert tif.pages[0].shape == (256, 256) and tif.pages[0].dtype == np.uint16
    with Image.open(res.paths["jpeg"]) as im:
        assert im.mode == "L"
    assert not any("postprocess.color" in r for r in res.recipe)


def test_output_never_overwrites_the_input(tmp_path):
    stack = tmp_path / "final_linear.fits"
    write(stack, _stack(False, size=64))
    with pytest.raises(OutputError, match="overwrite the input"):
        process_file(stack, tmp_path, load_config(), reporter=Reporter(quiet=True))


def test_process_image_handles_missing_pixels_and_settings():
    data = _stack(True, size=192)
    data[:, :, :12] = np.nan  # a border without coverage, as registration leaves
    cfg = load_config(overrides=["postprocess.stretch.saturation=1.3",
                                 "postprocess.stretch.curve=0.5:0.55",
                                 "postprocess.stars.reduction=0.3",
                                 "postprocess.color.scnr=0.5"])
    res = process_image(data, config=cfg)
    assert np.all(np.isnan(res.linear[:, :, :12])) and np.all(res.display[:, :, :12] == 0)
    assert np.isfinite(res.linear[:, :, 12:]).all()
    assert res.display.dtype == np.float32 and 0 <= res.display.min() <= res.display.max() <= 1
    steps = " ".join(res.recipe)
    for s in ("fill", "saturation", "curve", "scnr", "stars"):
        assert f"postprocess.{s}" in steps
    for method in ("stf", "asinh", "ghs", "none"):
        r = process_image(data, config=load_config(overrides=[
            f"postprocess.stretch.method={method}", "postprocess.denoise.enabled=false",
            "postprocess.deconvolution.enabled=false"]))
        assert r.display.shape == data.shape
    with pytest.raises(ProcessingError, match="not available yet"):
        process_image(data, config=load_config(
            overrides=["postprocess.color.white_balance=photometric"]))
    with pytest.raises(ProcessingError, match="shape"):
        process_image(np.zeros((2, 64, 64), np.float32))


def test_units_do_not_matter():
    """ADU, electrons or a 0..1 stack give the same picture."""
    data = _stack(True, size=192)
    a = process_image(data).display
    b = process_image(data / np.float32(65535.0)).display
    diff = np.abs(a - b)
    assert np.median(diff) < 5e-4 and np.percentile(diff, 99.9) < 0.03  # float32 rounding


def test_preview_png(tmp_path):
    path = preview_png(_stack(True, size=192), tmp_path / "p.png", max_size=100)
    with Image.open(path) as im:
        assert im.mode == "RGB" and max(im.size) == 100
    with pytest.raises(OutputError, match="png"):
        preview_png(_stack(False, size=64), tmp_path / "p.jpg")
