"""Motion score: known translations, static clips, sampling interval, input errors."""

import cv2
import numpy as np
import pytest

from stiv_jax.data.motion import motion_score


def _texture(size: int = 96, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    tex = cv2.GaussianBlur(rng.uniform(0, 255, (size, size)).astype(np.float32), (0, 0), 3)
    return (tex - tex.min()) / (tex.max() - tex.min()) * 255


def _panning(shift: int, frames: int = 5) -> np.ndarray:
    """A smooth texture moving `shift` px right per frame, cropped to 64x64 (gray)."""
    tex = _texture()
    return np.stack([np.roll(tex, shift * i, axis=1)[16:80, 16:80] for i in range(frames)]).astype(
        np.uint8
    )


@pytest.mark.parametrize("shift", [1, 2, 3])
def test_uniform_translation_scores_its_shift(shift):
    # Every pixel moves `shift` px per sampled pair, so the top-10% mean is the shift itself.
    assert motion_score(_panning(shift), interval=1) == pytest.approx(shift, abs=0.15)


def test_rgb_and_gray_agree_and_static_is_near_zero():
    gray = _panning(2)
    rgb = np.repeat(gray[..., None], 3, axis=-1)
    assert motion_score(rgb, interval=1) == pytest.approx(motion_score(gray, interval=1), abs=1e-6)
    static = np.repeat(gray[:1], 5, axis=0)
    assert motion_score(static, interval=1) < 0.1
    assert motion_score(gray[:1]) == 0.0


def test_interval_samples_every_kth_frame():
    clip = _panning(1, frames=13)
    # interval 4 samples frames 0, 4, 8, 12: each pair is 4 px apart.
    assert motion_score(clip, interval=4) == pytest.approx(4.0, abs=0.3)
    # A clip shorter than interval + 1 uses its first and last frame (here 4 px apart).
    assert motion_score(clip[:5], interval=12) == pytest.approx(4.0, abs=0.3)
    # Frames 0 and 12 are 12 px apart: larger than any 4-px pair.
    assert motion_score(clip, interval=12) > motion_score(clip, interval=4) + 2.0


def test_top_fraction_focuses_on_moving_pixels():
    clip = _panning(2).copy()
    clip[:, :, :40] = clip[0, :, :40]  # left part static, right part moving
    full = motion_score(clip, interval=1, top_fraction=1.0)
    top = motion_score(clip, interval=1, top_fraction=0.1)
    assert top > 1.5 > full


@pytest.mark.parametrize(
    "kwargs, frames, match",
    [
        ({}, np.zeros((4, 8, 8, 3), np.float32), "dtype"),
        ({}, np.zeros((4, 8), np.uint8), "shape"),
        ({"interval": 0}, np.zeros((4, 8, 8), np.uint8), "interval"),
        ({"top_fraction": 0.0}, np.zeros((4, 8, 8), np.uint8), "top_fraction"),
    ],
)
def test_bad_input_names_the_value(kwargs, frames, match):
    with pytest.raises(ValueError, match=match):
        motion_score(frames, **kwargs)
