"""Previews: nearest upscaling, frame strips, GIFs, contact sheets."""

import io
import os

import numpy as np
from PIL import Image

from stiv_jax import previews


def _video(t=8, h=32, w=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8)


def test_frame_strip_is_nearest_upscaled_frames_side_by_side():
    v = _video()
    strip = previews.frame_strip(v)
    k, gap = 4, previews.GAP  # 32 px -> 128 px
    assert strip.shape == (32 * k, 8 * 32 * k + 7 * gap, 3)
    third = strip[:, 2 * (32 * k + gap) : 2 * (32 * k + gap) + 32 * k]
    np.testing.assert_array_equal(third[::k, ::k], v[2])  # nearest: every pixel a k x k block
    np.testing.assert_array_equal(third[k - 1 :: k, k - 1 :: k], v[2])
    assert previews.frame_strip(_video(2, 256, 256)).shape == (256, 2 * 256 + gap, 3)


def test_write_previews_writes_an_animated_gif_and_a_strip(tmp_path):
    v = (_video(4, 16, 16).astype(np.float32) / 127.5) - 1.0  # float videos are accepted too
    paths = previews.write_previews(str(tmp_path / "a.mp4"), v, fps=8)
    assert paths == {"gif": str(tmp_path / "a.gif"), "strip": str(tmp_path / "a.png")}
    gif = Image.open(paths["gif"])
    assert gif.n_frames == 4 and gif.size == (128, 128)
    assert abs(gif.info["duration"] - 125) <= 10  # GIF delays are in 10 ms units
    assert Image.open(paths["strip"]).size == (4 * 128 + 3 * previews.GAP, 128)
    assert sorted(os.listdir(tmp_path)) == ["a.gif", "a.png"]  # no temp files left


def test_contact_sheet_stacks_labelled_strips(tmp_path):
    strips = []
    for i, t in enumerate((4, 2)):
        previews.write_previews(str(tmp_path / f"{i}.mp4"), _video(t, 16, 16, seed=i))
        strips.append(str(tmp_path / f"{i}.png"))
    path = previews.write_contact_sheet(str(tmp_path / "sheet.png"), strips, ["0: a", "1: b"])
    sheet = np.asarray(Image.open(path))
    row = previews.LABEL_HEIGHT + 128
    assert sheet.shape == (2 * row + previews.GAP, 4 * 128 + 3 * previews.GAP, 3)
    first = np.asarray(Image.open(strips[0]))
    np.testing.assert_array_equal(sheet[previews.LABEL_HEIGHT : row], first)
    assert (sheet[: previews.LABEL_HEIGHT] < 128).any()  # the label is drawn


def test_gif_bytes_loop_forever():
    gif = Image.open(io.BytesIO(previews.gif_bytes(_video(3, 8, 8), fps=4)))
    assert gif.info["loop"] == 0 and gif.n_frames == 3 and gif.info["duration"] == 250
