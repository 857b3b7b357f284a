"""Flax NNX modules of STIV, reusable on their own.

  from stiv_jax.model import STIV, Conditions
  model = STIV.from_config(config.model, seed=0)
  v = model(x [B, F, H, W, C], t [B], cond)   # -> velocity [B, F, H, W, C]

Parameters carry *logical* axis names (embed, mlp, heads) via `nnx.with_partitioning`
(never sharded eagerly: see `layers.partitioned`); `stiv_jax.parallel.rules` maps them to
mesh axes with one rules table. Importing this package changes no global JAX/Flax setting.
"""

from stiv_jax.conditioning import Conditions
from stiv_jax.model.stiv import STIV, count_params

__all__ = ["STIV", "Conditions", "count_params"]
