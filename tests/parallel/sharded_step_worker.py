"""Subprocess body of test_parallel: one train step on several meshes vs one device.

Run with XLA_FLAGS=--xla_force_host_platform_device_count=8 (set before JAX starts).
Prints one JSON line per mesh: loss/grad-norm/param differences to the single-device step,
whether the state is sharded as the rules say, and the all-to-all count of the compiled HLO.
"""

from __future__ import annotations

import json
import math
import re
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from configs.stiv import get_config
from stiv_jax import parallel
from stiv_jax.data.pipeline import make_dataset
from stiv_jax.model.block import STIVBlock
from stiv_jax.model.rope import rope_1d, rope_2d
from stiv_jax.optim import make_optimizer
from stiv_jax.runtime import Components, fill_train_grid
from stiv_jax.train import init_state, make_train_step, prepare_batch

MESHES = ((8, 1, 1, 1), (2, 4, 1, 1), (2, 1, 2, 2), (1, 2, 4, 1))


def tiny_config() -> ml_collections.ConfigDict:
    c = get_config("variant=tiny,res=16,frames=8")
    c.model.depth, c.model.decoder_depth = 1, 1
    c.data.batch_size = 8
    c.optim.warmup_steps = 0  # a real update on step 1 (warmup would make it zero)
    fill_train_grid(c)
    return c


def _all_to_alls(hlo: str) -> list[str]:
    """Result shapes of the all-to-all instructions in compiled HLO text."""
    return re.findall(r"= (\(?[a-z0-9]+\[[^=]*?) all-to-all\(", hlo)


def block_all_to_all() -> None:
    """One STIV block forward: all-to-all only on a context mesh, output equal to unsharded."""
    b, f, s, d, n, L = 2, 4, 16, 64, 2, 8
    kw = dict(impl="xla", rngs=nnx.Rngs(0), dtype=jnp.float32, param_dtype=jnp.float32)
    graphdef, params = nnx.split(STIVBlock(d, n, 4.0, **kw))
    keys = jax.random.split(jax.random.key(1), 3)
    x = jax.random.normal(keys[0], (b, f, s, d))
    mod = 0.1 * jax.random.normal(keys[1], (b, 12, d))
    ctx, ctx_mask = jax.random.normal(keys[2], (b, L, d)), jnp.ones((b, L), bool)
    rope_s, rope_t = rope_2d(4, 4, d // n), rope_1d(f, d // n)

    def fwd(params, x):
        return nnx.merge(graphdef, params)(x, mod, ctx, ctx_mask, rope_s, rope_t)

    ref = np.asarray(jax.jit(fwd)(params, x))
    for shape in ((1, 1, 4, 1), (4, 1, 1, 1), (1, 2, 2, 2)):
        cfg = ml_collections.ConfigDict(dict(zip(parallel.MESH_AXES, shape)))
        mesh = parallel.make_mesh(cfg, jax.devices()[: math.prod(shape)])
        with jax.set_mesh(mesh):
            compiled = jax.jit(fwd).lower(params, x).compile()
        out = np.asarray(compiled(params, x))
        row = {
            "block_mesh": shape,
            "x_elems": b * f * s * d,
            "all_to_all": _all_to_alls(compiled.as_text()),
            "max_abs_diff": float(np.max(np.abs(out - ref))),
        }
        print(json.dumps(row), flush=True)


def main() -> None:
    assert jax.device_count() == 8, jax.devices()
    config = tiny_config()
    comps = Components(config)
    tx = make_optimizer(config.optim)
    data = iter(make_dataset(config, latent_frames=comps.latent_shape[0]))
    host = {k: np.asarray(v) for k, v in prepare_batch(next(data), comps).items()}
    key = jax.random.key(0)
    graphdef, state = init_state(comps.model(0), tx)
    state = jax.device_get(state)
    step = make_train_step(config, graphdef, tx, comps.null_text)
    dev0 = jax.devices()[0]
    ref_state, ref_m = jax.jit(step)(jax.device_put(state, dev0), jax.device_put(host, dev0), key)
    ref = jax.device_get((ref_state, ref_m))
    moved = jax.tree.map(
        lambda a, b: float(np.max(np.abs(a - b))), ref[0]["params"], state["params"]
    )
    update = max(jax.tree.leaves(moved))  # how far one step moves params (scale for the diffs)

    for shape in MESHES:
        cfg = ml_collections.ConfigDict(dict(zip(parallel.MESH_AXES, shape)))
        mesh = parallel.make_mesh(cfg)
        graphdef, abstract, shardings, init = parallel.sharded_init(
            lambda: comps.model(0), lambda m: init_state(m, tx), mesh
        )
        step = make_train_step(config, graphdef, tx, comps.null_text)
        jitted = jax.jit(
            step, out_shardings=(shardings, parallel.replicated(mesh)), donate_argnums=0
        )
        state = init()
        batch = parallel.global_batch(host, mesh, config.data.batch_size)
        with jax.set_mesh(mesh):
            compiled = jitted.lower(state, batch, key).compile()
        hlo = compiled.as_text()
        new, m = compiled(state, batch, key)
        new = jax.device_get(new)
        diff = jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), new, ref[0])
        qkv = shardings["params"]["blocks"][0]["spatial"]["qkv"]["kernel"].spec
        row = {
            "mesh": shape,
            "loss": float(m["loss"]),
            "ref_loss": float(ref[1]["loss"]),
            "grad_norm": float(m["grad_norm"]),
            "ref_grad_norm": float(ref[1]["grad_norm"]),
            "params_max_abs_diff": max(jax.tree.leaves(diff["params"])),
            "ema_max_abs_diff": max(jax.tree.leaves(diff["ema"])),
            "opt_max_abs_diff": max(jax.tree.leaves(diff["opt"])),
            "params_max_abs_update": update,
            "qkv_spec": [str(s) for s in qkv],
            "all_to_all": _all_to_alls(hlo),
            "batch_spec": str(batch["latents"].sharding.spec),
        }
        print(json.dumps(row), flush=True)
    block_all_to_all()


if __name__ == "__main__":
    sys.exit(main())
