"""Flax NNX modules of STIV, reusable on their own.

Parameters carry *logical* axis names (embed, mlp, heads) via `nnx.with_partitioning`;
`stiv_jax.parallel` maps them to mesh axes with one rules table. Flax 0.12 would otherwise
try to shard each variable eagerly on the logical names as if they were mesh axes, so
eager sharding is off for our modules.
"""

from flax import nnx

nnx.use_eager_sharding(False)
