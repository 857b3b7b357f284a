"""The tiny STIV model with `attention_impl="pallas"` (interpret mode) gives the `xla` loss.

Shapes: B batch, F latent frames, H x W latent size, C channels. Every attention flavour
runs through the kernel: spatial (MaskDiT, per-sample RoPE), packed temporal and masked
cross attention. Tolerance: |loss_pallas - loss_xla| <= 1e-5 · loss, gradients of all
parameters within 1e-4 · max |grad| (float32).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from stiv_jax.diffusion.flow import flow_loss
from stiv_jax.model.stiv import STIV


def _batch(b, f, h, w, c, text_len=5, text_dim=384):
    keys = jax.random.split(jax.random.key(11), 6)
    cond = dict(
        text_tokens=jax.random.normal(keys[0], (b, text_len, text_dim)),
        text_mask=jnp.ones((b, text_len), bool).at[1, -3:].set(False),
        text_pooled=jax.random.normal(keys[1], (b, text_dim + 1024)),  # + word bag
        micro=jnp.tile(jnp.array([16.0, 16.0, 0.0, 0.0, 1.0]), (b, 1)),
        motion=jnp.ones((b,)),
        cond_mask=jnp.zeros((b, f), bool).at[:, 0].set(True),
        cond_latents=jax.random.normal(keys[2], (b, f, h, w, c)),
    )
    x = jax.random.normal(keys[3], (b, f, h, w, c))
    target = jax.random.normal(keys[4], (b, f, h, w, c))
    return x, jnp.array([0.3, 0.7]), cond, target


def _model(cfg, impl):
    cfg = cfg.copy_and_resolve_references()
    cfg.attention_impl = impl
    # One encoder and one decoder block keep every attention flavour at half the
    # interpret-mode compile time of the tiny variant's 2 + 2.
    cfg.depth, cfg.decoder_depth = 1, 1
    model = STIV(cfg, in_channels=3, rngs=nnx.Rngs(0))
    # Zero-initialised AdaLN / output layers would make every block the identity and the
    # output zero; random values make the loss depend on every attention call.
    graphdef, params = nnx.split(model, nnx.Param)
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(5), len(leaves))
    leaves = [p + 0.05 * jax.random.normal(k, p.shape, p.dtype) for p, k in zip(leaves, keys)]
    return graphdef, jax.tree.unflatten(tree, leaves)


def test_tiny_model_loss_and_grads_match_xla(tiny_config):
    x, t, cond, target = _batch(2, 4, 16, 16, 3)
    results = {}
    for impl in ("xla", "pallas"):
        graphdef, params = _model(tiny_config.model, impl)

        def loss_fn(params, graphdef=graphdef):
            model = nnx.merge(graphdef, params)
            v = model(x, t, cond, mask_key=jax.random.key(2))  # MaskDiT on
            return flow_loss(v, target, ~cond["cond_mask"])

        results[impl] = jax.jit(jax.value_and_grad(loss_fn))(params)
    (loss_x, grads_x), (loss_p, grads_p) = results["xla"], results["pallas"]
    assert abs(float(loss_p) - float(loss_x)) <= 1e-5 * float(loss_x), (loss_p, loss_x)
    flat_x, flat_p = jax.tree.leaves(grads_x), jax.tree.leaves(grads_p)
    scale = max(float(jnp.max(jnp.abs(g))) for g in flat_x)
    err = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(flat_p, flat_x))
    assert err <= 1e-4 * scale, (err, scale)
    assert np.isfinite(float(loss_p))
