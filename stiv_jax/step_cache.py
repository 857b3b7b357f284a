"""First-block step cache for the sampler (FBCache / TeaCache style), inside the jitted ODE loop.

Shapes: B model batch (k·prompts with CFG), F' latent frames after temporal patching, S
spatial tokens, D width; x [B, F, H, W, C] latents, t [B].

Every model call runs the embedding and the FIRST main block, h1 = block0(h0), and measures
how much the first block's residual r = h1 − h0 moved since the call at which the whole
network last ran:

    change = max over rows b of  mean|r_b − r_ref,b| / mean|r_ref,b|        (float32)

If change < threshold, the later blocks (main blocks 1.., the MaskDiT decoder blocks) are
skipped and their residual from that call is reused, h = h1 + R_ref; otherwise they run,
h = blocks(h1), and the references are renewed (r_ref = r, R_ref = h − h1). The decision is
one scalar for the whole batch (`lax.cond`; the max over rows keeps every prompt's and
every CFG branch's change below the threshold), the first call always computes, and the
final layer always runs. This is FBCache's rule (ParaAttention / diffusers
`apply_first_block_cache`: relative mean-absolute change of the first block's residual
against the one of the last full computation), with a per-row max in place of the batch
mean. The state lives in the loop carry (`CacheState`), and it counts block evaluations.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx


class CacheState(NamedTuple):
    """The carry of the cached model. first_ref / rest_ref [B, F', S, D] (model dtype)."""

    first_ref: jax.Array  # first block's residual at the last full computation
    rest_ref: jax.Array  # residual of the later blocks at the last full computation
    valid: jax.Array  # bool: the references hold a computation (False before the first call)
    calls: jax.Array  # int32: model calls so far
    blocks: jax.Array  # int32: block evaluations so far (one batch through one block = 1)


def token_shape(cfg, x_shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """[B, F, H, W, C] latents -> the block activations' shape [B, F', S, D]."""
    b, f, h, w = x_shape[:4]
    p = cfg.patch_size
    return b, f // cfg.temporal_patch, (h // p) * (w // p), cfg.width


def init_state(cfg, x_shape: tuple[int, ...]) -> CacheState:
    """Empty cache for model calls on latents of `x_shape` (the model batch, CFG included)."""
    shape, dtype = token_shape(cfg, x_shape), jnp.dtype(cfg.dtype)
    zero = jnp.zeros((), jnp.int32)
    return CacheState(
        jnp.zeros(shape, dtype), jnp.zeros(shape, dtype), jnp.zeros((), bool), zero, zero
    )


def total_blocks(cfg) -> int:
    """Blocks an uncached model call evaluates (main + MaskDiT decoder)."""
    return int(cfg.depth) + int(cfg.decoder_depth)


def relative_change(r: jax.Array, ref: jax.Array) -> jax.Array:
    """max over rows of mean|r − ref| / mean|ref| (float32 scalar; rows [B, ...])."""
    axes = tuple(range(1, r.ndim))
    r, ref = r.astype(jnp.float32), ref.astype(jnp.float32)
    num = jnp.mean(jnp.abs(r - ref), axis=axes)
    den = jnp.mean(jnp.abs(ref), axis=axes)
    return jnp.max(num / jnp.maximum(den, 1e-12))


def cached_call(model, x, t, cond, state: CacheState, threshold: float):
    """(velocity [B, F, H, W, C] float32, new state): the model's unmasked forward with the
    later blocks reused when the first block's residual changed < `threshold` (see module
    docstring). threshold <= 0 always computes (the output equals the model's)."""
    cond = model.noised_reference(cond, t, x.shape)
    h0, args, cvec = model.embed(x, t, cond)
    h1 = model.run_blocks(h0, *args, stop=1)
    r = h1 - h0
    reuse = state.valid & (relative_change(r, state.first_ref) < threshold)
    # The branches get the model as a pytree operand and rebuild it: nnx modules (and the
    # nnx.scan of stacked blocks) must not cross into the cond's trace as Python objects.
    graph, weights = nnx.split(model)

    def compute(weights):
        m = nnx.merge(graph, weights)
        h = m.run_blocks(h1, *args, start=1)
        for block in m.decoder:
            h = block(h, *args)
        return h, r, h - h1

    def skip(weights):
        return h1 + state.rest_ref, state.first_ref, state.rest_ref

    h, first_ref, rest_ref = jax.lax.cond(reuse, skip, compute, weights)
    later = total_blocks(model.cfg) - 1
    new = CacheState(
        first_ref=first_ref,
        rest_ref=rest_ref,
        valid=jnp.ones((), bool),
        calls=state.calls + 1,
        blocks=state.blocks + 1 + jnp.where(reuse, 0, later).astype(jnp.int32),
    )
    return model.finish(model.head(h, cvec, x.shape), x, cond), new


def stats(cfg, state: CacheState) -> dict[str, Any]:
    """Block evaluations of a finished sampling: done, what the uncached model does, ratio."""
    full = int(state.calls) * total_blocks(cfg)
    done = int(state.blocks)
    return {"calls": int(state.calls), "blocks": done, "uncached_blocks": full,
            "fraction": done / max(full, 1)}  # fmt: skip
