"""Shared inputs for kernel tests: random q/k/v, norm scales, 1D/2D RoPE tables."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def rope_1d(length: int, head_dim: int) -> tuple[jax.Array, jax.Array]:
    """[L, H/2] rotate-half tables for positions 0..L-1."""
    freqs = 1.0 / (10000.0 ** (np.arange(head_dim // 2) / (head_dim // 2)))
    angles = np.arange(length)[:, None] * freqs[None]
    return jnp.asarray(np.cos(angles), jnp.float32), jnp.asarray(np.sin(angles), jnp.float32)


def rope_2d(height: int, width: int, head_dim: int) -> tuple[jax.Array, jax.Array]:
    """[h·w, H/2] tables: first half of the pairs rotate with the row, second with the column."""
    quarter = head_dim // 4
    freqs = 1.0 / (10000.0 ** (np.arange(quarter) / quarter))
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    angles = np.concatenate(
        [rows.reshape(-1, 1) * freqs[None], cols.reshape(-1, 1) * freqs[None]], axis=-1
    )
    return jnp.asarray(np.cos(angles), jnp.float32), jnp.asarray(np.sin(angles), jnp.float32)


def make_inputs(seed: int, batch: int, q_len: int, k_len: int, heads: int, head_dim: int, dtype):
    """q, k, v in `dtype` and learned-looking norm scales (float32, around 1)."""
    keys = jax.random.split(jax.random.key(seed), 5)
    q = jax.random.normal(keys[0], (batch, q_len, heads, head_dim)).astype(dtype)
    k = jax.random.normal(keys[1], (batch, k_len, heads, head_dim)).astype(dtype)
    v = jax.random.normal(keys[2], (batch, k_len, heads, head_dim)).astype(dtype)
    q_scale = 1.0 + 0.2 * jax.random.normal(keys[3], (head_dim,))
    k_scale = 1.0 + 0.2 * jax.random.normal(keys[4], (head_dim,))
    return q, k, v, q_scale, k_scale
