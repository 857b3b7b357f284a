"""The STIV block: spatial attention → temporal attention → cross-attention → MLP.

Shapes: B batch, F frames (after temporal patching), S spatial tokens, L text tokens,
D width, N heads, H head dim.
  x [B, F, S, D], mod [B, 12, D] (shared AdaLN-single output), context [B, L, D],
  context_mask [B, L], rope_s (cos, sin) [S, H/2] or [B, S, H/2], rope_t [F, H/2]
  -> [B, F, S, D]

Every sub-layer uses the sandwich norm of STIV with stateless LayerNorms. Modulated
sub-layers (spatial attention and MLP always; temporal and cross-attention only with
`temporal_adaln=True`) compute
  x + gate · LN(f(modulate(LN(x), shift, scale))),
with (shift, scale, gate) = shared AdaLN-single projection + this block's learned table;
the others compute x + LN(f(LN(x))) (STIV, Table 19: AdaLN on temporal attention hurts).
`stiv.initialize_weights` zeroes the table and the shared projection, so every gate starts
at 0.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from stiv_jax.model.attention import CrossAttention, SelfAttention
from stiv_jax.model.layers import MLP, add_gated_layer_norm, layer_norm, layer_norm_modulate
from stiv_jax.parallel.rules import SPATIAL_LAYOUT, TEMPORAL_LAYOUT, constrain

MOD_ROWS = 12  # (shift, scale, gate) × (spatial, temporal, cross, mlp)


def _fold_rope(rope, frames: int):
    """Per-sample spatial tables [B, S, H/2] -> [B·F, S, H/2] (frames folded into batch)."""
    if rope is None or rope[0].ndim == 2:
        return rope
    return tuple(jnp.repeat(r, frames, axis=0) for r in rope)


class STIVBlock(nnx.Module):
    """One factorized spatial → temporal → cross → MLP block (see module docstring)."""

    def __init__(
        self,
        dim,
        heads,
        mlp_ratio,
        *,
        impl,
        causal_temporal=False,
        temporal_adaln=True,
        key_shift=False,
        theta=10000.0,
        qk_norm_init=1.0,
        rngs,
        dtype,
        param_dtype,
    ):
        kw = dict(
            impl=impl, rngs=rngs, dtype=dtype, param_dtype=param_dtype, qk_norm_init=qk_norm_init
        )
        self.causal_temporal = causal_temporal
        self.temporal_adaln = temporal_adaln
        self.spatial = SelfAttention(dim, heads, **kw, key_shift=key_shift, theta=theta)
        self.temporal = SelfAttention(dim, heads, **kw)
        self.cross = CrossAttention(dim, heads, **kw)
        self.mlp = MLP(dim, int(dim * mlp_ratio), rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.table = nnx.Param(jnp.zeros((MOD_ROWS, dim), param_dtype))

    def __call__(self, x, mod, context, context_mask, rope_s, rope_t):
        b, f, s, d = x.shape
        m = (mod + self.table[...][None]).astype(x.dtype)[:, :, None, None, :]  # [B,12,1,1,D]

        def sandwich(x, i, fn):
            shift, scale, gate = m[:, 3 * i], m[:, 3 * i + 1], m[:, 3 * i + 2]
            return add_gated_layer_norm(x, fn(layer_norm_modulate(x, shift, scale)), gate)

        def plain(x, i, fn):  # unmodulated sub-layer (i: its rows stay unused)
            one = jnp.ones((1,) * x.ndim, x.dtype)
            return add_gated_layer_norm(x, fn(layer_norm(x)), one)

        mid = sandwich if self.temporal_adaln else plain

        def spatial(h):  # frames folded into batch; `time`: each row's frame index
            time = jnp.tile(jnp.arange(f), b) if self.spatial.key_shift is not None else None
            out = self.spatial(h.reshape(b * f, s, d), rope=_fold_rope(rope_s, f), time=time)
            return out.reshape(b, f, s, d)

        def temporal(h):  # tokens folded into batch
            h = h.swapaxes(1, 2).reshape(b * s, f, d)
            out = self.temporal(h, rope=rope_t, causal=self.causal_temporal)
            return out.reshape(b, s, f, d).swapaxes(1, 2)

        def cross(h):
            return self.cross(h.reshape(b, f * s, d), context, context_mask).reshape(b, f, s, d)

        # Context parallelism (no-op without a mesh): frames on `context` for spatial
        # attention, tokens on `context` for temporal; XLA all-to-alls between them.
        x = sandwich(constrain(x, SPATIAL_LAYOUT), 0, spatial)
        x = mid(constrain(x, TEMPORAL_LAYOUT), 1, temporal)
        x = mid(x, 2, cross)
        return sandwich(x, 3, self.mlp)


def remat_block(policy: str):
    """Block call wrapped for rematerialisation: none | attention (save attn outputs) | full."""
    from stiv_jax.model.attention import ATTN_OUT

    def call(block, *args):
        return block(*args)

    if policy == "none":
        return call
    if policy == "attention":
        return nnx.remat(call, policy=jax.checkpoint_policies.save_only_these_names(ATTN_OUT))
    if policy == "full":
        return nnx.remat(call)
    raise ValueError(f"model.remat={policy!r} is unknown; expected none | attention | full")
