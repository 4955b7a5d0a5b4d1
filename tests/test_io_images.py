"""PNG and JPEG reading and preview writing (deepsky.io.images)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from deepsky.errors import OutputError
from deepsky.io import read, read_meta, write
from deepsky.io.images import read_image, read_image_meta, write_preview


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(31)


def test_8_bit_png_mono_rgb_rgba_palette(tmp_path, rng):
    grey = rng.integers(0, 256, size=(6, 9)).astype(np.uint8)
    rgb = rng.integers(0, 256, size=(6, 9, 3)).astype(np.uint8)
    Image.fromarray(grey).save(tmp_path / "g.png")
    Image.fromarray(rgb).save(tmp_path / "c.png")
    Image.fromarray(np.dstack([rgb, grey])).save(tmp_path / "a.png")
    Image.fromarray(rgb).quantize(8).save(tmp_path / "p.png")
    g = read_image(tmp_path / "g.png")
    np.testing.assert_array_equal(g.data, grey)
    assert g.data.dtype == np.float32 and g.data.flags.owndata
    assert (g.meta.shape, g.meta.bit_depth, g.meta.white_level) == ((6, 9), 8, 255.0)
    for name in ("c.png", "a.png"):
        c = read_image(tmp_path / name)
        np.testing.assert_array_equal(c.data, np.moveaxis(rgb, -1, 0))
        assert c.meta.shape == (3, 6, 9)
    with Image.open(tmp_path / "p.png") as im:
        expanded = np.moveaxis(np.asarray(im.convert("RGB")), -1, 0)
    np.testing.assert_array_equal(read_image(tmp_path / "p.png").data, expanded)


def test_16_bit_png_mono_and_rgb(tmp_path, rng):
    grey = rng.integers(0, 65536, size=(5, 7)).astype(np.uint16)
    rgb = rng.integers(0, 65536, size=(5, 7, 3)).astype(np.uint16)
    Image.fromarray(grey).save(tmp_path / "g16.png")
    assert cv2.imwrite(str(tmp_path / "c16.png"), rgb[..., ::-1])  # OpenCV writes BGR
    rgba = np.dstack([rgb, grey])
    assert cv2.imwrite(str(tmp_path / "a16.png"), rgba[..., [2, 1, 0, 3]])
    g = read(tmp_path / "g16.png")
    np.testing.assert_array_equal(g.data, grey)
    assert (g.meta.bit_depth, g.meta.white_level) == (16, 65535.0)
    for name in ("c16.png", "a16.png"):
        c = read(tmp_path / name)
        np.testing.assert_array_equal(c.data, np.moveaxis(rgb, -1, 0))
        assert c.meta.shape == (3, 5, 7) and c.meta.bit_depth == 16
        assert read_meta(tmp_path / name) == c.meta


def test_jpeg_mono_and_rgb(tmp_path):
    yy, xx = np.mgrid[0:16, 0:24]
    smooth = (40 + 4 * xx + 3 * yy).astype(np.uint8)
    rgb = np.dstack([smooth, smooth[::-1], 255 - smooth])
    Image.fromarray(smooth).save(tmp_path / "g.jpg", quality=100)
    Image.fromarray(rgb).save(tmp_path / "c.jpeg", quality=100, subsampling=0)
    g = read_image(tmp_path / "g.jpg")
    assert g.meta.shape == (16, 24) and g.meta.format == "jpeg"
    np.testing.assert_allclose(g.data, smooth, atol=2)
    c = read_image(tmp_path / "c.jpeg")
    assert c.meta.shape == (3, 16, 24)
    np.testing.assert_allclose(c.data, np.moveaxis(rgb, -1, 0), atol=3)
    assert read_image_meta(tmp_path / "c.jpeg") == c.meta


def test_preview_png_is_exact_8_bit(tmp_path, rng):
    data = rng.uniform(-0.3, 1.3, size=(3, 6, 8)).astype(np.float32)
    data[0, 0, 0] = np.nan
    path = write_preview(tmp_path / "p.png", data)
    with Image.open(path) as im:
        assert (im.format, im.mode) == ("PNG", "RGB")
    expected = np.rint(np.clip(np.nan_to_num(data, nan=0.0), 0, 1) * 255)
    np.testing.assert_array_equal(read(path).data, expected)
    mono = write(tmp_path / "m.png", data[1])
    np.testing.assert_array_equal(read(mono).data, expected[1])


def test_preview_jpeg_quality_92(tmp_path):
    yy, xx = np.mgrid[0:32, 0:32]
    data = (xx + yy) / 62.0
    path = write_preview(tmp_path / "p.jpg", data)
    with Image.open(path) as im:
        assert (im.format, im.mode) == ("JPEG", "L")
        q = im.quantization[0]
    # Quality 92 scales the standard luminance table's first entry (16) to 3.
    assert q[0] == 3
    np.testing.assert_allclose(read(path).data, np.rint(data * 255), atol=3)
    colour = write_preview(tmp_path / "c.jpeg", np.stack([data, data, data]))
    assert read(colour).meta.shape == (3, 32, 32)


def test_preview_refuses_other_extensions_and_shapes(tmp_path):
    with pytest.raises(OutputError, match=r"p\.gif: a preview must be \.png, \.jpg or \.jpeg"):
        write_preview(tmp_path / "p.gif", np.zeros((2, 2)))
    with pytest.raises(OutputError, match=r"p\.png: cannot write an array of shape \(2, 2, 2\)"):
        write_preview(tmp_path / "p.png", np.zeros((2, 2, 2)))
    assert list(tmp_path.iterdir()) == []
