"""Self- and cross-attention: projections → QK-RMSNorm → RoPE → kernel → output.

Shapes: B batch (frames or tokens folded in by the block), L query tokens, M key tokens,
D width, N heads, H = D / N head dim. The norm, rotation and softmax run inside
`stiv_jax.kernels.attention` so a fused kernel can do them without extra memory passes.
"""

from __future__ import annotations

import jax
from flax import nnx
from jax.ad_checkpoint import checkpoint_name

from stiv_jax.kernels import attention
from stiv_jax.model.layers import EMBED, HEADS, RMSNorm, dense

# Name the remat policy saves (see stiv.py: remat="attention").
ATTN_OUT = "attn_out"


class SelfAttention(nnx.Module):
    """x [B, L, D], rope (cos, sin) broadcastable to [B, L, H/2], optional key mask [B, L]
    -> [B, L, D]."""

    def __init__(self, dim: int, heads: int, *, impl: str, rngs: nnx.Rngs, dtype, param_dtype):
        if dim % heads:
            raise ValueError(f"width {dim} is not divisible by heads {heads}")
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.heads, self.impl = heads, impl
        self.qkv = dense(dim, 3 * dim, (EMBED, HEADS), **kw)
        self.q_norm = RMSNorm(dim // heads, param_dtype=param_dtype)
        self.k_norm = RMSNorm(dim // heads, param_dtype=param_dtype)
        self.out = dense(dim, dim, (HEADS, EMBED), **kw)

    def __call__(self, x: jax.Array, rope=None, causal: bool = False, mask=None) -> jax.Array:
        b, l, d = x.shape
        qkv = self.qkv(x).reshape(b, l, 3, self.heads, d // self.heads)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        o = attention(
            q,
            k,
            v,
            q_norm_scale=self.q_norm.scale[...],
            k_norm_scale=self.k_norm.scale[...],
            rope=rope,
            mask=mask,
            causal=causal,
            impl=self.impl,
        )
        o = checkpoint_name(o, ATTN_OUT)
        return self.out(o.reshape(b, l, d))


class CrossAttention(nnx.Module):
    """x [B, L, D] attends to context [B, M, D] with key mask [B, M] -> [B, L, D]."""

    def __init__(self, dim: int, heads: int, *, impl: str, rngs: nnx.Rngs, dtype, param_dtype):
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.heads, self.impl = heads, impl
        self.q = dense(dim, dim, (EMBED, HEADS), **kw)
        self.kv = dense(dim, 2 * dim, (EMBED, HEADS), **kw)
        self.q_norm = RMSNorm(dim // heads, param_dtype=param_dtype)
        self.k_norm = RMSNorm(dim // heads, param_dtype=param_dtype)
        self.out = dense(dim, dim, (HEADS, EMBED), **kw)

    def __call__(self, x: jax.Array, context: jax.Array, mask: jax.Array) -> jax.Array:
        b, l, d = x.shape
        m, n = context.shape[1], self.heads
        q = self.q(x).reshape(b, l, n, d // n)
        k, v = jax.numpy.split(self.kv(context).reshape(b, m, 2 * n, d // n), 2, axis=2)
        o = attention(
            q,
            k,
            v,
            q_norm_scale=self.q_norm.scale[...],
            k_norm_scale=self.k_norm.scale[...],
            mask=mask,
            impl=self.impl,
        )
        o = checkpoint_name(o, ATTN_OUT)
        return self.out(o.reshape(b, l, d))
