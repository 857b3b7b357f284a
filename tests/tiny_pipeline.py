"""A tiny STIVPipeline with random non-zero weights (tests of the applications)."""

from __future__ import annotations

import jax
import numpy as np

from stiv_jax.optim import make_optimizer
from stiv_jax.pipeline import STIVPipeline
from stiv_jax.runtime import Components, fill_train_grid
from stiv_jax.train import init_state


def make_pipeline(config, seed: int = 5) -> STIVPipeline:
    config.sample.steps = 2
    fill_train_grid(config)
    comps = Components(config)
    graphdef, state = init_state(comps.model(0), make_optimizer(config.optim))
    # non-zero weights everywhere so the velocity is not trivially zero
    leaves, tree = jax.tree.flatten(state["params"])
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    params = jax.tree.unflatten(
        tree, [x + 0.05 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]
    )
    return STIVPipeline(config, comps, graphdef, params)


def image(seed: int, res: int = 16) -> np.ndarray:
    """A random uint8 image [res, res, 3]."""
    return np.random.RandomState(seed).randint(0, 256, (res, res, 3)).astype(np.uint8)
