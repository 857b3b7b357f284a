"""QK-RMSNorm and rotate-half RoPE shared by every attention implementation.

Shapes: B batch, L sequence length, N heads, H head dim.
  x [B, L, N, H]; scale [H]; cos / sin broadcastable to [B, L, H/2] (float32).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def rms_norm(x: jax.Array, scale: jax.Array | None, eps: float) -> jax.Array:
    """RMSNorm over H in float32; `scale=None` normalises without a learned scale."""
    x = x.astype(jnp.float32)
    x = x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + eps)
    return x if scale is None else x * scale.astype(jnp.float32)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """x [B, L, N, H] float32, cos/sin broadcastable to [B, L, H/2] -> rotated x."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    cos, sin = cos[..., None, :], sin[..., None, :]  # broadcast over heads
    return jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)


def qk_prologue(
    x: jax.Array,
    scale: jax.Array | None,
    rope: tuple[jax.Array, jax.Array] | None,
    eps: float,
) -> jax.Array:
    """RMSNorm with `scale` (skipped when None) then RoPE (skipped when None), float32."""
    x = rms_norm(x, scale, eps) if scale is not None else x.astype(jnp.float32)
    if rope is not None:
        cos, sin = rope
        x = apply_rope(x, jax.lax.stop_gradient(cos), jax.lax.stop_gradient(sin))
    return x
