"""Previews people can look at: an animated GIF and a PNG frame strip beside each MP4, a
contact sheet for a whole sampling job, all nearest-upscaled so a 32×32 video is visible.

  write_previews("out/a.mp4", video, fps=8)   # -> out/a.gif, out/a.png (the frame strip)
  write_contact_sheet("out/contact_sheet.png", ["out/a.png", ...], ["a: a red circle", ...])

Shapes: T frames, H/W pixels; videos are uint8 [T, H, W, 3] or float in [-1, 1]. Writes are
atomic (stiv_jax.atomic).
"""

from __future__ import annotations

import io
import math
import os

import numpy as np

from stiv_jax.atomic import atomic_path
from stiv_jax.video import to_uint8

MIN_SIDE = 128  # previews are upscaled (nearest, integer factor) to at least this many pixels
GAP = 2  # pixels between frames in a strip and between rows of a contact sheet
BACKGROUND = 255  # white gaps and label bands
LABEL_HEIGHT = 14


def upscale(video: np.ndarray, min_side: int = MIN_SIDE) -> np.ndarray:
    """uint8 [..., H, W, 3] repeated (nearest) by the integer factor that brings the shorter
    side to at least `min_side` (factor 1 for videos that are already that large)."""
    video = to_uint8(video)
    k = max(1, math.ceil(min_side / min(video.shape[-3], video.shape[-2])))
    return video.repeat(k, axis=-3).repeat(k, axis=-2) if k > 1 else video


def frame_strip(video: np.ndarray, min_side: int = MIN_SIDE) -> np.ndarray:
    """[T, H, W, 3] -> uint8 [H·k, T·W·k + (T−1)·GAP, 3]: the frames left to right."""
    frames = upscale(video, min_side)
    t, h, w, _ = frames.shape
    strip = np.full((h, t * w + (t - 1) * GAP, 3), BACKGROUND, np.uint8)
    for i, f in enumerate(frames):
        strip[:, i * (w + GAP) : i * (w + GAP) + w] = f
    return strip


def video_grid(videos: np.ndarray, min_side: int = MIN_SIDE) -> np.ndarray:
    """[B, T, H, W, 3] -> uint8 [T, rows·H·k, cols·W·k, 3] (a near-square grid; GAP apart)."""
    videos = upscale(videos, min_side)
    b, t, h, w, _ = videos.shape
    cols = math.ceil(math.sqrt(b))
    rows = math.ceil(b / cols)
    grid = np.full((t, rows * (h + GAP) - GAP, cols * (w + GAP) - GAP, 3), BACKGROUND, np.uint8)
    for i, v in enumerate(videos):
        r, c = divmod(i, cols)
        grid[:, r * (h + GAP) : r * (h + GAP) + h, c * (w + GAP) : c * (w + GAP) + w] = v
    return grid


def gif_bytes(video: np.ndarray, fps: int = 8) -> bytes:
    """An endlessly looping animated GIF of uint8 [T, H, W, 3] (no further upscaling)."""
    from PIL import Image

    frames = [Image.fromarray(f) for f in to_uint8(video)]
    buf = io.BytesIO()
    frames[0].save(
        buf, format="GIF", save_all=True, append_images=frames[1:], loop=0,
        duration=max(20, round(1000 / fps)), optimize=False, disposal=1,
    )  # fmt: skip
    return buf.getvalue()


def png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(to_uint8(image)).save(buf, format="PNG")
    return buf.getvalue()


def _write_bytes(path: str, data: bytes) -> str:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
    return path


def write_previews(mp4_path: str, video: np.ndarray, fps: int = 8) -> dict[str, str]:
    """`<stem>.gif` (animated, upscaled) and `<stem>.png` (frame strip) beside `mp4_path`."""
    stem = os.path.splitext(mp4_path)[0]
    big = upscale(video)
    return {
        "gif": _write_bytes(stem + ".gif", gif_bytes(big, fps)),
        "strip": _write_bytes(stem + ".png", png_bytes(frame_strip(big))),
    }


def _label(text: str, width: int) -> np.ndarray:
    """A white band [LABEL_HEIGHT, width, 3] with `text` in black (PIL's built-in font)."""
    from PIL import Image, ImageDraw

    band = Image.new("RGB", (width, LABEL_HEIGHT), (BACKGROUND,) * 3)
    ImageDraw.Draw(band).text((2, 1), text, fill=(0, 0, 0))
    return np.asarray(band)


def contact_sheet(strips: list[np.ndarray], labels: list[str] | None = None) -> np.ndarray:
    """Frame strips stacked top to bottom, each under its label: uint8 [Σ rows, max width, 3]."""
    if not strips:
        raise ValueError("contact_sheet needs at least one frame strip")
    width = max(s.shape[1] for s in strips)
    rows = []
    for i, s in enumerate(strips):
        if labels is not None:
            rows.append(_label(labels[i], width))
        row = np.full((s.shape[0], width, 3), BACKGROUND, np.uint8)
        row[:, : s.shape[1]] = s
        rows += [row, np.full((GAP, width, 3), BACKGROUND, np.uint8)]
    return np.concatenate(rows[:-1])


def write_contact_sheet(path: str, strip_paths: list[str], labels: list[str]) -> str:
    """The frame-strip PNGs in `strip_paths` as one contact sheet PNG at `path`."""
    from PIL import Image

    strips = []
    for p in strip_paths:
        with Image.open(p) as im:
            strips.append(np.asarray(im.convert("RGB")))
    return _write_bytes(path, png_bytes(contact_sheet(strips, labels)))
