"""Long video from a chunk-sized model: autoregressive extension and hierarchical keyframes.

Shapes: T pixel frames of the long video, Tc = data.frames pixel frames per chunk (what the
model was trained on), k overlap frames, s keyframe stride; videos are float [-1, 1]
[T, H, W, 3].

  extend        chunk 0 is the request itself (its conditions inside the first chunk);
                chunk i is conditioned on the last k frames generated so far, placed at its
                frames 0..k-1 (the training `predict` task), and adds Tc − k new frames.
                N chunks give Tc + (N − 1)(Tc − k) frames; the result is cut to T.
  hierarchical  (STIV §5) keyframes first: one chunk sampled at frame stride s (the micro
                condition says so) gives keyframes at 0, s, 2s, ...; then every consecutive
                pair is interpolated by an (s + 1)-frame clip with both ends given (the
                training `interp` task; s + 1 ≠ Tc uses RoPE position interpolation).
                s is the smallest stride with (T − 1)/s + 1 <= Tc keyframes whose clips the
                autoencoder and temporal patch accept.

Both are reached from a prompt line (`"frames": 64, "long_mode": "extend"`) or from Python
(`STIVPipeline(...)(prompt, frames=64, long_mode="hierarchical")`). With frame replacement
the given frames come back exactly, so a chunk's first k frames equal the previous chunk's
last k and a keyframe equals its interpolation clip's ends (`chunk_bounds` records where
chunks meet; `stiv_jax.metrics.seam_scores` measures what happens there).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from stiv_jax.autoencoders import latent_geometry
from stiv_jax.cond_media import Condition, place


def overlap_frames(config) -> int:
    """k: `sample.long_overlap`, or (0) the pixel frames of the training `predict` task's
    given latent frames."""
    k = int(config.sample.get("long_overlap", 0))
    if k > 0:
        return k
    geo = latent_geometry(config.autoencoder)
    return geo.pixel_span(int(config.data.predict_frames) - 1)[1] + 1


def num_chunks(total: int, chunk: int, overlap: int) -> int:
    """N chunks of `chunk` frames overlapping by `overlap` that reach `total` frames."""
    return 1 + max(0, math.ceil((total - chunk) / (chunk - overlap)))


def _shape_ok(config, t: int) -> bool:
    from stiv_jax.runtime import video_latent_shape

    res = int(config.data.res)
    try:
        video_latent_shape(config, t, res, res)
    except ValueError:
        return False
    return True


def keyframe_stride(config, total: int) -> int:
    """s of hierarchical mode (see the module docstring); one line when none fits."""
    tc = int(config.data.frames)
    for s in range(max(1, math.ceil((total - 1) / (tc - 1))), total):
        if _shape_ok(config, s + 1):
            return s
    raise ValueError(
        f"hierarchical long video: no keyframe stride gives interpolation clips this "
        f"autoencoder/model accepts for frames={total} with {tc}-frame chunks"
    )


def check_request(config, r) -> None:
    """One clear line for a long-video request that cannot be honoured."""
    tc = int(config.data.frames)
    if r.frames is None or r.frames <= tc:
        raise ValueError(
            f"long_mode {r.long_mode!r} needs frames > the chunk's {tc} frames, got {r.frames}"
        )
    if r.video is not None and r.strength < 1.0:
        raise ValueError("long_mode does not take a V2V input video")
    if r.height or r.width:
        raise ValueError("long_mode samples at data.res; height/width are not supported there")
    if r.long_mode == "extend":
        k = overlap_frames(config)
        if not 1 <= k < tc:
            raise ValueError(f"sample.long_overlap={k} must be in [1, {tc - 1}] frames")
        geo = latent_geometry(config.autoencoder)
        ctx = [_Ctx(0, np.zeros((k, 1, 1, 3), np.float32))]
        place(ctx, geo, tc)  # k frames at 0..k-1 must cover whole latent frames
        for c in r.conditions:
            _chunk_of(c, tc, k, int(r.frames))
    else:
        s = keyframe_stride(config, int(r.frames))
        for c in r.conditions:
            if np.asarray(c.media).ndim == 4 or c.frame % s:
                raise ValueError(
                    f"hierarchical long video takes images at keyframes (multiples of the "
                    f"stride {s}); got a condition at pixel frame {c.frame}"
                )


@dataclasses.dataclass
class _Ctx:  # a `Placed`-like clip of context frames (only what `place` reads)
    frame: int
    frames: np.ndarray
    still: bool = False


def _chunk_of(c: Condition, tc: int, k: int, total: int) -> int:
    """The extension chunk whose frames hold condition `c` entirely (one line if none)."""
    n = 1 if np.asarray(c.media).ndim == 3 else len(c.media)
    first, last = int(c.frame), int(c.frame) + n - 1
    if last >= total:
        raise ValueError(f"condition at pixel frames {first}..{last} is outside the {total} frames")
    step = tc - k
    i = 0 if first < tc else 1 + (first - tc) // step
    start = i * step
    if last >= start + tc:
        raise ValueError(
            f"condition at pixel frames {first}..{last} crosses the extension chunk "
            f"{start}..{start + tc - 1}; give it inside one chunk"
        )
    return i


def chunk_bounds(config, r) -> list[int]:
    """The seams of the stitched long video: pixel frames where a chunk's new frames start
    (extend) or where an interpolation clip starts (hierarchical: the inner keyframes)."""
    t = int(r.frames)
    if r.long_mode == "extend":
        tc, k = int(config.data.frames), overlap_frames(config)
        return [i * (tc - k) + k for i in range(1, num_chunks(t, tc, k)) if i * (tc - k) + k < t]
    s = keyframe_stride(config, t)
    return list(range(s, t - 1, s))  # inner keyframes (the last frame ends the last clip)


def generate_long(pipe, r) -> np.ndarray:
    """A loaded long-video request -> float video [-1, 1] [T, H, W, 3] (T = r.frames)."""
    if r.long_mode == "extend":
        return _extend(pipe, r)
    return _hierarchical(pipe, r)


def _sub(r, suffix: str, **kw):
    base = dict(frames=None, long_mode=None, image=None, first_frame=None, cond_frames=[])
    return dataclasses.replace(r, id=f"{r.id}-{suffix}", **{**base, **kw})


def _shorthand(pipe, r) -> list[Condition]:
    """The request's `image` + `cond_frames` shorthand as pixel-frame conditions."""
    if r.first_frame is None:
        return []
    geo = latent_geometry(pipe.config.autoencoder)
    return [Condition(geo.pixel_span(int(k))[0], np.asarray(r.first_frame)) for k in r.cond_frames]


def _extend(pipe, r) -> np.ndarray:
    config = pipe.config
    tc, k, t = int(config.data.frames), overlap_frames(config), int(r.frames)
    conds = _shorthand(pipe, r) + list(r.conditions)
    chunk_conds: dict[int, list[Condition]] = {}
    for c in conds:
        i = _chunk_of(c, tc, k, t)
        start = i * (tc - k)
        chunk_conds.setdefault(i, []).append(dataclasses.replace(c, frame=c.frame - start))
    video = None
    for i in range(num_chunks(t, tc, k)):
        given = list(chunk_conds.get(i, []))
        if video is not None:
            given.insert(0, Condition(0, video[-k:]))
        sub = _sub(r, f"c{i}", conditions=given, seed=r.seed + i)
        chunk = pipe.generate([sub])[0]
        video = chunk if video is None else np.concatenate([video, chunk[k:]])
    return video[:t]


def _hierarchical(pipe, r) -> np.ndarray:
    config = pipe.config
    t = int(r.frames)
    s = keyframe_stride(config, t)
    n_key = (t - 1 + s - 1) // s + 1  # keyframes 0, s, ..., reaching frame t - 1
    key_conds = [dataclasses.replace(c, frame=c.frame // s) for c in _shorthand(pipe, r)]
    key_conds += [dataclasses.replace(c, frame=c.frame // s) for c in r.conditions]
    keys = pipe.generate([_sub(r, "keys", conditions=key_conds, frame_stride=s)])[0][:n_key]
    clips = [
        _sub(
            r,
            f"i{j}",
            conditions=[Condition(0, keys[j]), Condition(s, keys[j + 1])],
            frames=s + 1,
            seed=r.seed + 1 + j,
        )  # fmt: skip
        for j in range(n_key - 1)
    ]
    parts = []
    bs = int(config.sample.batch_size)
    for i in range(0, len(clips), bs):
        parts += pipe.generate(clips[i : i + bs])
    video = np.concatenate([parts[0]] + [p[1:] for p in parts[1:]])
    return video[:t]
