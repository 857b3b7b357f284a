"""Self- and cross-attention: projections → QK-RMSNorm → RoPE → kernel → output.

Shapes: B batch (frames or tokens folded in by the block), L query tokens, M key tokens,
D width, N heads, H = D / N head dim. The norm, rotation and softmax run inside
`stiv_jax.kernels.attention` so a fused kernel can do them without extra memory passes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from jax.ad_checkpoint import checkpoint_name

from stiv_jax.kernels import attention
from stiv_jax.kernels.prologue import apply_rope, qk_prologue
from stiv_jax.model.layers import EMBED, HEADS, RMSNorm, dense
from stiv_jax.model.rope import rope_2d_offsets

# Name the remat policy saves (see stiv.py: remat="attention").
ATTN_OUT = "attn_out"


class SelfAttention(nnx.Module):
    """x [B, L, D], rope (cos, sin) broadcastable to [B, L, H/2], optional key mask [B, L]
    -> [B, L, D].

    `key_shift` (2D RoPE only): each token also predicts a velocity u [N, 2] per head (grid
    units per frame; a linear map of x, zero at init) and its key is rotated as if it stood
    at p + u · time (`time` [B]: the frame index of each row): a token that knows where its
    content goes can put its key there, so the token at the destination finds it by
    position without knowing the direction itself (docs/quality.md §21)."""

    def __init__(
        self,
        dim: int,
        heads: int,
        *,
        impl: str,
        rngs: nnx.Rngs,
        dtype,
        param_dtype,
        key_shift: bool = False,
        theta: float = 10000.0,
        qk_norm_init: float = 1.0,
    ):
        if dim % heads:
            raise ValueError(f"width {dim} is not divisible by heads {heads}")
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.heads, self.impl, self.theta = heads, impl, theta
        self.qkv = dense(dim, 3 * dim, (EMBED, HEADS), **kw)
        self.q_norm = RMSNorm(dim // heads, param_dtype=param_dtype, init=qk_norm_init)
        self.k_norm = RMSNorm(dim // heads, param_dtype=param_dtype, init=qk_norm_init)
        self.out = dense(dim, dim, (HEADS, EMBED), **kw)
        zeros = nnx.initializers.zeros_init()
        self.key_shift = (
            dense(dim, 2 * heads, (EMBED, None), **kw, kernel_init=zeros) if key_shift else None
        )

    def __call__(
        self, x: jax.Array, rope=None, causal: bool = False, mask=None, time=None
    ) -> jax.Array:
        b, l, d = x.shape
        n, hd = self.heads, d // self.heads
        qkv = self.qkv(x).reshape(b, l, 3, n, hd)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        if self.key_shift is not None and rope is not None and time is not None:
            eps = 1e-6  # `attention`'s
            q = qk_prologue(q, self.q_norm.scale[...], rope, eps)
            k = qk_prologue(k, self.k_norm.scale[...], rope, eps)
            u = self.key_shift(x).astype(jnp.float32).reshape(b, l, n, 2)
            cos, sin = rope_2d_offsets(u * time.astype(jnp.float32)[:, None, None, None], hd,
                                       theta=self.theta)  # fmt: skip
            # Per-head tables: heads folded into the sequence, so each is rotated by its own.
            fold = lambda a: a.reshape(b, l * n, -1)  # noqa: E731
            k = apply_rope(k.reshape(b, l * n, 1, hd), fold(cos), fold(sin)).reshape(b, l, n, hd)
            o = attention(q, k, v.astype(jnp.float32), mask=mask, causal=causal, impl=self.impl)
            o = checkpoint_name(o.astype(x.dtype), ATTN_OUT)
            return self.out(o.reshape(b, l, d))
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

    def __init__(
        self,
        dim: int,
        heads: int,
        *,
        impl: str,
        rngs: nnx.Rngs,
        dtype,
        param_dtype,
        qk_norm_init: float = 1.0,
    ):
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.heads, self.impl = heads, impl
        self.q = dense(dim, dim, (EMBED, HEADS), **kw)
        self.kv = dense(dim, 2 * dim, (EMBED, HEADS), **kw)
        self.q_norm = RMSNorm(dim // heads, param_dtype=param_dtype, init=qk_norm_init)
        self.k_norm = RMSNorm(dim // heads, param_dtype=param_dtype, init=qk_norm_init)
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
