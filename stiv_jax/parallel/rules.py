"""Logical axis rules: the one table from logical names to mesh axes, and constraints.

Shapes: B batch, F frames (after temporal patching), S spatial tokens, D width.

Parameters carry logical names via `nnx.with_partitioning` (embed, mlp, heads);
activations are constrained with (batch, frames, tokens). `RULES` maps them to the mesh
axes `MESH_AXES`. Context parallelism is made for factorized attention: the block input
`x [B, F, S, D]` is constrained to frames-on-`context` before spatial attention (each
shard holds whole frames, attention over S is local) and to tokens-on-`context` before
temporal attention (each shard holds all frames of some tokens, attention over F is
local); XLA inserts the all-to-all between the two layouts.

The model and the kernels import only this module (no mesh, no data).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
from jax.sharding import PartitionSpec as P

MESH_AXES = ("data", "fsdp", "context", "tensor")

# Logical name -> mesh axis (or axes, major to minor). Names absent here are replicated.
RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ("batch", ("data", "fsdp")),  # activations and inputs: batch over data × fsdp
    ("embed", "fsdp"),  # parameters: ZeRO-3 style, gathered per layer by XLA
    ("mlp", "tensor"),  # MLP hidden (Megatron column / row split)
    ("heads", "tensor"),  # attention heads
    ("frames", "context"),  # spatial-attention layout: whole frames per context shard
    ("tokens", "context"),  # temporal-attention layout: whole token columns per shard
)

# Activation layouts of the block input x [B, F, S, D] (see module docstring).
SPATIAL_LAYOUT = ("batch", "frames", None, None)
TEMPORAL_LAYOUT = ("batch", None, "tokens", None)


def mesh_axes(*logical: str) -> tuple[str, ...]:
    """Mesh axes the logical names map to, in rule order, without repeats."""
    table = dict(RULES)
    out: list[str] = []
    for name in logical:
        target = table.get(name)
        for a in (target,) if isinstance(target, str) else tuple(target or ()):
            if a not in out:
                out.append(a)
    return tuple(out)


def _axis_sizes(mesh) -> dict[str, int]:
    return dict(zip(mesh.axis_names, mesh.axis_sizes))


def logical_to_spec(
    names: Sequence[str | None], shape: Sequence[int] | None = None, mesh=None, rules=RULES
) -> P:
    """Logical names per dim -> PartitionSpec. With `shape` and `mesh`, mesh axes of size 1,
    axes already used by an earlier dim and axes that do not divide the dim are dropped
    (uneven shards are not worth their padding at our sizes)."""
    table = dict(rules)
    sizes = _axis_sizes(mesh) if mesh is not None else None
    used: set[str] = set()
    out = []
    for i, name in enumerate(names):
        target = table.get(name) if name is not None else None
        axes = (target,) if isinstance(target, str) else tuple(target or ())
        chosen: list[str] = []
        for a in axes:
            if a in used:
                continue
            if sizes is not None:
                if sizes.get(a, 1) == 1:
                    continue
                if shape is not None and shape[i] % (
                    math.prod(sizes[c] for c in chosen) * sizes[a]
                ):
                    continue
            chosen.append(a)
        used.update(chosen)
        out.append(None if not chosen else chosen[0] if len(chosen) == 1 else tuple(chosen))
    while out and out[-1] is None:
        out.pop()
    return P(*out)


def constrain(x: jax.Array, names: Sequence[str | None]) -> jax.Array:
    """`with_sharding_constraint` by logical names; a no-op without an active mesh.

    The model calls this at block boundaries; tracing it under `jax.set_mesh(mesh)` (see
    `in_mesh`) turns the constraints on, everything else (tests, CPU runs) is unchanged.
    """
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or all(s == 1 for s in mesh.axis_sizes):
        return x
    if set(MESH_AXES) - set(mesh.axis_names):
        return x  # some other mesh (e.g. a user's), our rules do not apply
    spec = logical_to_spec(names, x.shape, mesh)
    return jax.lax.with_sharding_constraint(x, spec)


def in_mesh(fn, mesh):
    """fn called (and so traced, when jitted) under `jax.set_mesh(mesh)`."""

    def wrapped(*args, **kwargs):
        with jax.set_mesh(mesh):
            return fn(*args, **kwargs)

    return wrapped
