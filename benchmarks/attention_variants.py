"""Attention variants measured against `attention_reference` on XLA:CPU (step_levers.py).

None of them beat the reference reliably on the 2-core CPU (docs/performance.md), so the
model keeps `attention_reference` for impl=xla; they stay here as the measured evidence.

Shapes: B batch, L query length, M key length, N heads, H head dim.
  q [B, L, N, H], k/v [B, M, N, H] -> out [B, L, N, H] (dtype of q); the arguments of
  `attention_reference` (the plain math these functions reproduce).

What differs from the reference:
- RoPE without slices or a concat: rotate-half is x·C + swap(x)·S with sign-folded tables
  C = [cos, cos], S = [−sin, sin] and swap(x) = [x2, x1], a reverse of a size-2 axis of a
  bitcast [.., 2, H/2] view that XLA fuses into the surrounding elementwise pass.
- short keys (M ≤ `SHORT_KEYS`: temporal attention over F' frames): scores and output as
  broadcast-multiply-reduce fusions instead of dot_generals, which XLA:CPU runs as one
  tiny GEMM call per (batch, head) (2,048 calls of 4×32×4 for S).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from stiv_jax.kernels.prologue import rms_norm

# Key length up to which scores are multiply-reduce fusions rather than dot_generals.
SHORT_KEYS = 16


def fold_rope(cos: jax.Array, sin: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Rotate-half tables [..., H/2] -> sign-folded (C, S) [..., 2, H/2] (see module doc)."""
    return jnp.stack([cos, cos], axis=-2), jnp.stack([-sin, sin], axis=-2)


def apply_rope_folded(x: jax.Array, c: jax.Array, s: jax.Array) -> jax.Array:
    """x [B, L, N, H] float32, (C, S) of `fold_rope` broadcastable to [B, L, 2, H/2]
    -> x rotated as `prologue.apply_rope` does, without slicing or concatenating x."""
    *lead, h = x.shape
    x2 = x.reshape(*lead, 2, h // 2)
    c, s = c[..., None, :, :], s[..., None, :, :]  # broadcast over heads
    return (x2 * c + x2[..., ::-1, :] * s).reshape(x.shape)


def _prologue(x, scale, rope, eps):
    x = rms_norm(x, scale, eps) if scale is not None else x.astype(jnp.float32)
    if rope is not None:
        c, s = fold_rope(*(jax.lax.stop_gradient(r) for r in rope))
        x = apply_rope_folded(x, c, s)
    return x


def xla_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    q_norm_scale: jax.Array | None = None,
    k_norm_scale: jax.Array | None = None,
    rope: tuple[jax.Array, jax.Array] | None = None,
    mask: jax.Array | None = None,
    causal: bool = False,
    eps: float = 1e-6,
    short_keys: int = SHORT_KEYS,
) -> jax.Array:
    """`attention_reference`'s result (fp32 norm, rotation and softmax), computed as above."""
    dtype = q.dtype
    qf = _prologue(q, q_norm_scale, rope, eps) / jnp.sqrt(q.shape[-1]).astype(jnp.float32)
    kf = _prologue(k, k_norm_scale, rope, eps)
    vf = v.astype(jnp.float32)
    short = k.shape[1] <= short_keys
    if short:  # [B, L, M, N]
        logits = jnp.sum(qf[:, :, None] * kf[:, None], axis=-1)
        key_axis, mask_b = 2, (lambda m: m[:, None, :, None])
    else:  # [B, N, L, M]
        logits = jnp.einsum("blnh,bmnh->bnlm", qf, kf)
        key_axis, mask_b = 3, (lambda m: m[:, None, None, :])
    if mask is not None:
        logits = jnp.where(mask_b(mask), logits, -1e30)
    if causal:
        q_len, k_len = q.shape[1], k.shape[1]
        tril = jnp.tril(jnp.ones((q_len, k_len), bool))
        logits = jnp.where(tril[:, :, None] if short else tril, logits, -1e30)
    probs = jax.nn.softmax(logits, axis=key_axis)
    if short:
        out = jnp.sum(probs[..., None] * vf[:, None], axis=2)
    else:
        out = jnp.einsum("bnlm,bmnh->blnh", probs, vf)
    return out.astype(dtype)
