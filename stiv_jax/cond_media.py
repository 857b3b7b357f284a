"""Condition media at any frame: images and clips placed at pixel frames -> given latents.

Shapes: T pixel frames, H/W pixels, F latent frames, h/w latent size, C latent channels.

A `Condition` puts known pixel frames into the video: an image at one pixel frame, or a clip
whose frames fill pixel frames `frame .. last`. `place` lays every condition of a request
onto a pixel canvas [T, H, W, 3] and decides which latent frames are given (`cond_mask [F]`)
through the autoencoder's `LatentGeometry` (the one place that maps pixel to latent frames):

  per-frame VAE (pixel, SD-VAE)  latent j = pixel frame j: every position is honoured.
  causal Wan VAE (factor 4)      latent 0 = pixel frame 0, latent j = pixel frames
                                 4j-3 .. 4j. A clip must cover whole latents; an image at
                                 pixel frame t > 0 is held still over its latent's 4 frames.

A latent frame only partly covered by known frames cannot be given honestly (its latent
would encode frames nobody supplied), so `place` refuses it with one line naming the frames
to give instead. `encode_given` encodes the canvas once, up to the last given frame, so every
given latent is encoded in its temporal context (the causal VAE's latent j depends on the
frames before it; unknown frames in between hold the nearest known frame).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np

from stiv_jax.autoencoders.geometry import LatentGeometry
from stiv_jax.data.schema import normalize_uint8
from stiv_jax.video import fit_image, load_image, read_mp4

_VIDEO_EXT = (".mp4", ".mov", ".webm", ".avi", ".mkv", ".gif")


@dataclass
class Condition:
    """Known pixel frames of one request, from pixel frame `frame` on.

    media: an image (path, or array [H, W, 3] uint8 or float in [-1, 1]) given at `frame`,
    or a clip (video path, or array [n, H, W, 3]) whose frames fill `frame .. last`
    (default: the whole clip). Frames are resized + center-cropped to the video size.
    """

    frame: int
    media: str | np.ndarray
    last: int | None = None


@dataclass
class Placed:
    """A loaded condition: float [-1, 1] frames [n, H, W, 3] starting at pixel `frame`."""

    frame: int
    frames: np.ndarray
    still: bool  # an image (may be held over its latent's pixel frames)


def as_condition(item) -> Condition:
    """A `Condition`, or a (frame, media) / (frame, media, last) tuple, as a `Condition`."""
    if isinstance(item, Condition):
        return item
    if isinstance(item, (tuple, list)) and len(item) in (2, 3):
        return Condition(*item)
    raise ValueError(f"condition {item!r} must be a Condition or a (frame, media[, last]) tuple")


def _is_video(media) -> bool:
    if isinstance(media, str):
        return media.lower().endswith(_VIDEO_EXT)
    return np.asarray(media).ndim == 4


def fit_frame(frame, size: tuple[int, int], name: str) -> np.ndarray:
    """One frame -> float [-1, 1] [H, W, 3]; an array already of `size` is kept as it is
    (float frames from a previous chunk are not re-quantised to uint8)."""
    if isinstance(frame, np.ndarray) and frame.shape == (*size, 3):
        if frame.dtype == np.uint8:
            return normalize_uint8(frame)
        return np.clip(frame.astype(np.float32), -1.0, 1.0)
    return fit_image(frame, size, name=name)


def load_condition(cond: Condition, size: tuple[int, int], base_dir: str = "") -> Placed:
    """Read and fit a condition's media to size (H, W). Paths are relative to `base_dir`."""
    media = cond.media
    if isinstance(media, str) and base_dir and not os.path.isabs(media):
        media = os.path.join(base_dir, media)
    if not isinstance(cond.frame, (int, np.integer)) or isinstance(cond.frame, bool):
        raise ValueError(f"condition frame {cond.frame!r} must be an integer pixel frame")
    if not _is_video(media):
        if cond.last not in (None, cond.frame):
            raise ValueError(
                f"an image condition covers one pixel frame; got frame={cond.frame}, "
                f"last={cond.last} (use a video clip for a span)"
            )
        image = fit_frame(media, size, "condition image") if isinstance(media, np.ndarray) else None
        return Placed(
            int(cond.frame), (load_image(media, size) if image is None else image)[None], True
        )
    if isinstance(media, str):
        if not os.path.isfile(media):
            raise FileNotFoundError(f"condition video {media!r} does not exist")
        try:
            clip = read_mp4(media)
        except (OSError, RuntimeError, ValueError) as e:
            raise ValueError(f"condition video {media!r} cannot be read: {e}") from None
        name = f"condition video {media}"
    else:
        clip, name = np.asarray(media), "condition clip"
    n = len(clip) if cond.last is None else int(cond.last) - int(cond.frame) + 1
    if n < 1 or n > len(clip):
        raise ValueError(
            f"{name} has {len(clip)} frames; frames [{cond.frame}, {cond.last}] need "
            f"1..{len(clip)} of them"
        )
    frames = np.stack([fit_frame(f, size, name) for f in clip[:n]])
    return Placed(int(cond.frame), frames, False)


def place(
    placed: list[Placed], geometry: LatentGeometry, frames: int
) -> tuple[np.ndarray | None, np.ndarray, int]:
    """-> (canvas float [T, H, W, 3] or None, cond_mask bool [F], encode_len).

    encode_len: pixel frames to encode (through the last given latent's frames); 0 if none.
    Raises ValueError (one line) for positions outside the video, frames given twice, or a
    latent frame only partly covered.
    """
    f = geometry.latent_frames(frames)
    mask = np.zeros(f, bool)
    if not placed:
        return None, mask, 0
    h, w = placed[0].frames.shape[1:3]
    canvas = np.zeros((frames, h, w, 3), np.float32)
    known = np.zeros(frames, bool)
    for p in placed:
        first, last = p.frame, p.frame + len(p.frames) - 1
        if first < 0 or last >= frames:
            raise ValueError(
                f"condition at pixel frames {first}..{last} is outside the video's "
                f"{frames} frames [0, {frames - 1}]"
            )
        content = p.frames
        if p.still and geometry.temporal_factor > 1:
            lo, hi = geometry.pixel_span(geometry.latent_of(first))
            if lo != hi:
                logging.info(
                    "image at pixel frame %d is held over pixel frames %d..%d (one latent frame)",
                    first, lo, hi,
                )  # fmt: skip
            first, last, content = lo, hi, np.repeat(p.frames, hi - lo + 1, axis=0)
        taken = np.flatnonzero(known[first : last + 1])
        if taken.size:
            raise ValueError(f"pixel frame {first + int(taken[0])} is given by two conditions")
        canvas[first : last + 1], known[first : last + 1] = content, True
    for j in range(f):
        lo, hi = geometry.pixel_span(j)
        got = known[lo : hi + 1]
        if got.all():
            mask[j] = True
        elif got.any():
            part = np.flatnonzero(got) + lo
            raise ValueError(
                f"conditions cover pixel frames {part.min()}..{part.max()} of latent frame {j} "
                f"(pixel frames {lo}..{hi}) only partly; this autoencoder encodes "
                f"{hi - lo + 1} frames per latent there, so give all of {lo}..{hi}"
            )
    # Unknown frames before the last given one hold the nearest earlier known frame (the
    # first known frame before any), so the causal encoder sees plausible context.
    idx = np.where(known, np.arange(frames), -1)
    idx = np.maximum.accumulate(idx)
    idx = np.where(idx < 0, int(np.flatnonzero(known)[0]), idx)
    canvas = canvas[idx]
    encode_len = geometry.pixel_span(int(np.flatnonzero(mask)[-1]))[1] + 1
    return canvas, mask, encode_len


def encode_given(autoencoder, canvas: np.ndarray | None, mask: np.ndarray, encode_len: int):
    """Given latents float [F, h, w, C] (zeros where not given) of a `place` result."""
    import jax.numpy as jnp

    if canvas is None or not mask.any():
        return None
    lat = np.asarray(autoencoder.encode(jnp.asarray(canvas[None, :encode_len])))[0]
    out = np.zeros((len(mask),) + lat.shape[1:], np.float32)
    out[: len(lat)] = lat
    out[~mask] = 0.0
    return out
