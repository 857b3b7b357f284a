"""Pieces shared by the BERT, T5 and CLIP text encoders.

Shapes: B batch, L query tokens, M key tokens, N heads, H head dim, D width.
  attention(q [B,L,N,H], k [B,M,N,H], v [B,M,N,H], bias [B|1, N|1, L, M]) → [B, L, N, H]
  Norm(x [..., D]) → [..., D] (LayerNorm, or T5's RMS norm without mean and bias)
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

# HF's names (config `hidden_act` / `dense_act_fn`) → functions with the same numerics.
ACTIVATIONS = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_fast": lambda x: jax.nn.gelu(x, approximate=True),
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
}

NEG_INF = float(jnp.finfo(jnp.float32).min)  # what HF adds for masked keys


def activation(name: str):
    if name not in ACTIVATIONS:
        raise ValueError(
            f"activation {name!r} is not supported; expected one of {list(ACTIVATIONS)}"
        )
    return ACTIVATIONS[name]


def key_mask_bias(mask: jax.Array) -> jax.Array:
    """mask bool [B, M] (True = real token) → additive bias f32 [B, 1, 1, M]."""
    return jnp.where(mask, 0.0, NEG_INF)[:, None, None, :].astype(jnp.float32)


def causal_bias(length: int) -> jax.Array:
    """Additive bias f32 [1, 1, L, L] that hides later keys."""
    keep = jnp.tril(jnp.ones((length, length), bool))
    return jnp.where(keep, 0.0, NEG_INF)[None, None].astype(jnp.float32)


def attention(
    q: jax.Array, k: jax.Array, v: jax.Array, bias: jax.Array, scale: float | None = None
) -> jax.Array:
    """Softmax attention in float32 with an additive bias; `scale` defaults to 1/sqrt(H)."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    logits = jnp.einsum("blnh,bmnh->bnlm", q, k, preferred_element_type=jnp.float32) * scale
    # Two masks of NEG_INF can sum to -inf; clamp so a fully masked row stays finite.
    logits = jnp.maximum(logits + bias, NEG_INF)
    probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    return jnp.einsum("bnlm,bmnh->blnh", probs, v)


class Norm(nnx.Module):
    """LayerNorm (`rms=False`) or T5 RMS norm (`rms=True`: no mean, no bias), in float32."""

    def __init__(self, dim: int, eps: float, *, rms: bool = False, param_dtype=jnp.float32):
        self.eps, self.rms = eps, rms
        self.scale = nnx.Param(jnp.ones((dim,), param_dtype))
        self.bias = None if rms else nnx.Param(jnp.zeros((dim,), param_dtype))

    def __call__(self, x: jax.Array) -> jax.Array:
        h = x.astype(jnp.float32)
        if not self.rms:
            h = h - h.mean(-1, keepdims=True)
        h = h * jax.lax.rsqrt(jnp.mean(h * h, -1, keepdims=True) + self.eps)
        h = h * self.scale[...].astype(jnp.float32)
        if self.bias is not None:
            h = h + self.bias[...].astype(jnp.float32)
        return h.astype(x.dtype)


def linear(d_in: int, d_out: int, *, bias: bool, dtype, param_dtype, rngs: nnx.Rngs) -> nnx.Linear:
    return nnx.Linear(d_in, d_out, use_bias=bias, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
