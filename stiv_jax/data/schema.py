"""The batch schema, declared once: what the data pipelines yield and what the step reads.

Shapes: B batch, T pixel frames, H/W pixels, F latent frames, h/w latent size, C latent
channels, L text tokens, Dt token width, Dp pooled width.

Host batch (every data source's collate output; per host, numpy):
  video        float32 [B, T, H, W, 3] in [-1, 1]   or  latents float32 [B, F, h, w, C]
  caption      str     [B]                          or  text_tokens float32 [B, L, Dt],
                                                        text_mask bool [B, L],
                                                        text_pooled float32 [B, Dp]
  motion_score float32 [B]
  micro        float32 [B, 5]  (orig_h, orig_w, crop_top, crop_left, frame_stride)
  cond_mask    bool    [B, F]
  task         int32   [B]     index into `stiv_jax.data.tasks.TASKS`

Model batch (`stiv_jax.train.prepare_batch` output, the train step's and AOT compile's
input): `MODEL_BATCH` below.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

# name -> (dtype, shape without B); symbols: F h w C (latent), L Dt Dp (text).
MODEL_BATCH: dict[str, tuple[str, tuple[str, ...]]] = {
    "latents": ("float32", ("F", "h", "w", "C")),
    "text_tokens": ("float32", ("L", "Dt")),
    "text_mask": ("bool", ("L",)),
    "text_pooled": ("float32", ("Dp",)),
    "micro": ("float32", ("5",)),
    "motion": ("float32", ()),
    "cond_mask": ("bool", ("F",)),
}
# Host keys that map 1:1 onto model keys (the rest are encoded: video, caption).
HOST_TO_MODEL = {"motion_score": "motion"}
CACHED_TEXT = ("text_tokens", "text_mask", "text_pooled")


def model_batch_shapes(
    batch: int, latent: Sequence[int], *, text_len: int, text_dim: int, pooled_dim: int
) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """{key: (shape [B, ...], dtype)} of the model batch for a latent shape (F, h, w, C)."""
    f, h, w, c = latent
    sizes = dict(F=f, h=h, w=w, C=c, L=text_len, Dt=text_dim, Dp=pooled_dim)
    return {
        k: ((batch, *(sizes.get(s) or int(s) for s in dims)), np.dtype(dtype))
        for k, (dtype, dims) in MODEL_BATCH.items()
    }


def normalize_uint8(frames: np.ndarray) -> np.ndarray:
    """uint8 [0, 255] pixels -> float32 [-1, 1] (the one normalisation of this package)."""
    return np.asarray(frames).astype(np.float32) / 127.5 - 1.0


def collate(examples: Sequence[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Stacks examples into a host batch; captions become a str array [B]."""
    out = {k: np.stack([e[k] for e in examples]) for k in examples[0] if k != "caption"}
    if "caption" in examples[0]:
        out["caption"] = np.array([str(e["caption"]) for e in examples], dtype=np.str_)
    return out


def host_batch_size(batch_size: int, process_index: int, process_count: int) -> int:
    """data.batch_size / process_count, checked (one sentence naming the bad value)."""
    if process_count < 1 or not 0 <= process_index < process_count:
        raise ValueError(f"process_index={process_index} must be in [0, {process_count})")
    if batch_size < 1 or batch_size % process_count:
        raise ValueError(
            f"data.batch_size={batch_size} must be a positive multiple of "
            f"process_count={process_count}"
        )
    return batch_size // process_count
