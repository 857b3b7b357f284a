"""Rotary position tables: 2D over the spatial token grid, 1D over (patched) frames.

Shapes: S spatial tokens (h·w), F frames, H head dim. Tables are float32 (cos, sin) pairs of
shape [S, H/2] or [F, H/2] in the rotate-half convention used by `stiv_jax.kernels`:
x1 = x[..., :H/2], x2 = x[..., H/2:] -> (x1·cos − x2·sin, x1·sin + x2·cos).

2D RoPE gives the first H/4 frequencies to the row index and the last H/4 to the column
index, so q·k depends only on (Δrow, Δcol). Position interpolation (STIV §3.1): a model
trained on a grid of n positions that runs on m positions scales positions by n/m, so
they span the range it was trained on instead of extrapolating.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np


def _freqs(n: int, theta: float) -> np.ndarray:
    return theta ** (-np.arange(n, dtype=np.float64) / n)


def _scaled_positions(n: int, train_n: int, interpolate: bool) -> np.ndarray:
    pos = np.arange(n, dtype=np.float64)
    if interpolate and train_n > 0 and train_n != n:
        pos = pos * (train_n / n)
    return pos


def rope_1d(
    n: int, head_dim: int, *, theta: float = 10000.0, train_n: int = 0, interpolate: bool = True
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Tables [n, head_dim/2] for positions 0..n-1 (scaled to `train_n` when interpolating)."""
    if head_dim % 2:
        raise ValueError(f"head_dim={head_dim} must be even for RoPE")
    angles = np.outer(_scaled_positions(n, train_n, interpolate), _freqs(head_dim // 2, theta))
    return jnp.asarray(np.cos(angles), jnp.float32), jnp.asarray(np.sin(angles), jnp.float32)


def rope_2d(
    h: int,
    w: int,
    head_dim: int,
    *,
    theta: float = 10000.0,
    train_hw: tuple[int, int] = (0, 0),
    interpolate: bool = True,
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Tables [h·w, head_dim/2] for a row-major h×w grid."""
    if head_dim % 4:
        raise ValueError(f"head_dim={head_dim} must be a multiple of 4 for 2D RoPE")
    quarter = _freqs(head_dim // 4, theta)
    rows = np.outer(_scaled_positions(h, train_hw[0], interpolate), quarter)  # [h, H/4]
    cols = np.outer(_scaled_positions(w, train_hw[1], interpolate), quarter)  # [w, H/4]
    angles = np.concatenate(
        [np.repeat(rows, w, axis=0), np.tile(cols, (h, 1))], axis=-1
    )  # [h·w, H/2]
    return jnp.asarray(np.cos(angles), jnp.float32), jnp.asarray(np.sin(angles), jnp.float32)


def rope_2d_offsets(
    offsets: jnp.ndarray, head_dim: int, *, theta: float = 10000.0
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Tables [..., head_dim/2] that move a 2D-RoPE'd vector by `offsets` [..., 2] (rows,
    cols; fractional grid units): `rope_2d`'s layout, so rotating a key at grid position p by
    these gives the key at p + offset (rotations add their angles)."""
    if head_dim % 4:
        raise ValueError(f"head_dim={head_dim} must be a multiple of 4 for 2D RoPE")
    quarter = jnp.asarray(_freqs(head_dim // 4, theta), jnp.float32)
    offsets = offsets.astype(jnp.float32)
    angles = jnp.concatenate(
        [offsets[..., :1] * quarter, offsets[..., 1:] * quarter], axis=-1
    )  # [..., H/2]
    return jnp.cos(angles), jnp.sin(angles)
