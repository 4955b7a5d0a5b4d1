"""Post-processing of real one-shot-colour data (Seestar S50, M 94): no green cast, no
clipped galaxy core. A quick stack of 10 frames (superpixel debayer, translation by phase
correlation, median) stands in for the pipeline's stack."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from deepsky.postprocess import process_image
from deepsky.postprocess._common import luminance, sky_model

M94 = Path(__file__).resolve().parents[2] / "shared" / "data" / "seestar-m94" / "lights"

pytestmark = [
    pytest.mark.realdata,
    pytest.mark.skipif(not M94.is_dir(), reason=f"real data not found at {M94}"),
]


def _quick_stack(n: int = 10) -> np.ndarray:
    from deepsky.calibrate.debayer import debayer
    from deepsky.io import read

    frames, ref = [], None
    for f in sorted(M94.glob("*.fit"))[:n]:
        fr = read(f)
        rgb = debayer(fr.data, fr.meta.bayer, method="superpixel")
        lum = rgb.mean(axis=0)
        lum = cv2.GaussianBlur(lum - np.median(lum), (0, 0), 1.5).astype(np.float64)
        if ref is None:
            ref = lum
            frames.append(rgb)
            continue
        (dx, dy), _ = cv2.phaseCorrelate(ref, lum)
        m = np.float32([[1, 0, dx], [0, 1, dy]])
        frames.append(np.stack([cv2.warpAffine(c, m, c.shape[::-1],
                                               flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                               borderMode=cv2.BORDER_REPLICATE) for c in rgb]))
    return np.median(np.stack(frames), axis=0).astype(np.float32)


def test_m94_has_no_green_cast_and_an_unclipped_core():
    res = process_image(_quick_stack())
    sky = ~sky_model(luminance(res.linear)).sources
    bg = np.array([np.median(res.display[c][sky]) for c in range(3)])
    np.testing.assert_allclose(bg / bg.mean(), 1.0, atol=0.01)  # neutral background
    sm = cv2.GaussianBlur(luminance(res.linear), (0, 0), 6)
    y, x = np.unravel_index(np.argmax(sm), sm.shape)  # the galaxy's core
    core = luminance(res.display)[y - 3:y + 4, x - 3:x + 4]
    assert core.max() < 0.97 and np.ptp(core) > 0.1  # bright, not burnt flat
    sky_level = np.median(res.linear, axis=(1, 2))
    light = (res.linear[:, y - 15:y + 16, x - 15:x + 16]
             - sky_level[:, None, None]).reshape(3, -1).sum(axis=1)
    assert light[1] <= 1.02 * max(light[0], light[2])  # the galaxy is not green
