"""Caption token refiner: trainable self-attention over the projected text tokens.

Shapes: B batch, L text tokens, D width, N heads, H = D / N.
  ctx [B, L, D], mask [B, L] bool (True = a real token) -> [B, L, D]

Why: cross-attention can only bind "this object moves left" to the object's own video
tokens if the word that says *left* also says *whose* motion it is. A frozen sentence
encoder's contextual tokens need not carry that (docs/quality.md §12); a few trainable
pre-LN transformer layers over the caption tokens, with 1-D RoPE for word order, can move
the colour and shape of a clause into its motion words (and back). This is the token
refiner of HunyuanVideo and the context refiner of Lumina-Image 2.0, without their
timestep modulation: the caption is refined once per sample, not once per noise level.

Every layer computes x + C(Attn(LN(x))) then x + C(MLP(LN(x))), where C removes the part of
an update shared by all the caption's real tokens: the refiner may move information between
words but not add a caption-wide vector (the pooled path does that). Without C, the S main
job grew one (800 steps: refined tokens at pairwise cosine 0.997, 99.4% of their energy in
the shared part), which QK-RMSNorm turned into identical keys and every block's
cross-attention into a flat 1 / L (docs/quality.md §12.4). The attention output projection
and the MLP's second linear start at zero, so a new refiner starts as the identity and
`train.init_from` a model without one changes nothing until it trains. Attention here
always runs the plain XLA path: L is tens of tokens, far below any fused kernel's block.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from stiv_jax.model.attention import SelfAttention
from stiv_jax.model.layers import MLP, layer_norm
from stiv_jax.model.rope import rope_1d


class RefinerLayer(nnx.Module):
    """x [B, L, D], mask [B, L], rope [L, H/2] -> [B, L, D] (pre-LN self-attention + MLP)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, *, rngs, dtype, param_dtype):
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.attn = SelfAttention(dim, heads, impl="xla", **kw)
        self.mlp = MLP(dim, int(dim * mlp_ratio), **kw)
        for linear in (self.attn.out, self.mlp.fc2):  # identity at start
            for v in (linear.kernel, linear.bias):
                v.set_value(jnp.zeros_like(v.get_value()))

    def __call__(self, x: jax.Array, mask: jax.Array, rope) -> jax.Array:
        x = x + centred(self.attn(layer_norm(x), rope=rope, mask=mask), mask)
        return x + centred(self.mlp(layer_norm(x)), mask)


def centred(u: jax.Array, mask: jax.Array) -> jax.Array:
    """u [B, L, D] less its mean over each caption's real tokens (mask [B, L])."""
    w = mask[..., None].astype(u.dtype)
    return u - (u * w).sum(1, keepdims=True) / jnp.maximum(w.sum(1, keepdims=True), 1)


class TextRefiner(nnx.Module):
    """`depth` refiner layers over the caption tokens (see module docstring)."""

    def __init__(
        self, dim: int, heads: int, depth: int, mlp_ratio: float, *, theta: float, rngs, **kw
    ):
        if depth < 1:
            raise ValueError(f"model.text_refiner={depth}; a refiner needs at least 1 layer")
        self.head_dim, self.theta = dim // heads, theta
        self.layers = nnx.List(
            [RefinerLayer(dim, heads, mlp_ratio, rngs=rngs, **kw) for _ in range(depth)]
        )

    def __call__(self, ctx: jax.Array, mask: jax.Array) -> jax.Array:
        rope = rope_1d(ctx.shape[1], self.head_dim, theta=self.theta, interpolate=False)
        for layer in self.layers:
            ctx = layer(ctx, mask, rope)
        return ctx
