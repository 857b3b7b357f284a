"""Run a Mosaic attention kernel per shard: XLA cannot partition a Pallas TPU call.

Shapes: B batch, L query length, M key length, N heads, H head dim.
  q [B, L, N, H], k/v [B, M, N, H]; B splits over the mesh axes of the logical batch,
  frames and tokens (spatial attention folds frames, temporal attention folds tokens into
  B), N over those of the logical heads (`stiv_jax.parallel.rules.RULES`); attention is
  independent per (sequence, head), so no collective is needed.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
from jax.sharding import PartitionSpec as P

from stiv_jax.parallel.rules import mesh_axes

BATCH_AXES = mesh_axes("batch", "frames", "tokens")
HEAD_AXES = mesh_axes("heads")


def _usable_axes(mesh, names, dim: int) -> tuple[str, ...]:
    """Leading mesh axes among `names` whose product divides `dim` (size-1 axes dropped)."""
    manual = set(getattr(mesh, "manual_axes", ()))
    sizes = dict(zip(mesh.axis_names, mesh.axis_sizes))
    chosen: list[str] = []
    for name in names:
        if name not in sizes or name in manual or sizes[name] == 1:
            continue
        if dim % (math.prod(sizes[a] for a in chosen) * sizes[name]) == 0:
            chosen.append(name)
    return tuple(chosen)


def shard_over_batch(
    fn: Callable[..., jax.Array],
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    mesh=None,
    q_norm_scale=None,
    k_norm_scale=None,
    rope=None,
    mask=None,
    **static,
) -> jax.Array:
    """fn(q, k, v, **kw) under `jax.shard_map` when a mesh with batch/head axes is active."""
    mesh = mesh if mesh is not None else jax.sharding.get_abstract_mesh()
    kwargs = dict(q_norm_scale=q_norm_scale, k_norm_scale=k_norm_scale, rope=rope, mask=mask)
    batch = _usable_axes(mesh, BATCH_AXES, q.shape[0]) if not mesh.empty else ()
    heads = _usable_axes(mesh, HEAD_AXES, q.shape[2])[:1] if not mesh.empty else ()
    if not batch and not heads:
        return fn(q, k, v, **kwargs, **static)
    b_spec = batch or None
    h_spec = heads[0] if heads else None
    qkv_spec = P(b_spec, None, h_spec, None)
    rope_spec = None
    if rope is not None:
        per_batch = rope[0].ndim == 3 and rope[0].shape[0] == q.shape[0] and q.shape[0] > 1
        rope_spec = (P(b_spec), P(b_spec)) if per_batch else (P(), P())
    in_specs = (
        qkv_spec,
        qkv_spec,
        qkv_spec,
        None if q_norm_scale is None else P(),
        None if k_norm_scale is None else P(),
        rope_spec,
        None if mask is None else P(b_spec, None),
    )

    def per_shard(q, k, v, q_norm_scale, k_norm_scale, rope, mask):
        return fn(
            q,
            k,
            v,
            q_norm_scale=q_norm_scale,
            k_norm_scale=k_norm_scale,
            rope=rope,
            mask=mask,
            **static,
        )

    # check_vma=False: pallas_call outputs carry no varying-axes annotation; the
    # transpose then sums the replicated norm scales' cotangents over the shards.
    mapped = jax.shard_map(
        per_shard, mesh=mesh, in_specs=in_specs, out_specs=qkv_spec, check_vma=False
    )
    return mapped(q, k, v, q_norm_scale, k_norm_scale, rope, mask)
