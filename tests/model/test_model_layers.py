"""Model layers: the fused LayerNorms (custom VJPs) vs their plain compositions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stiv_jax.model.layers import (
    add_gated_layer_norm,
    add_gated_layer_norm_reference,
    layer_norm_modulate,
    layer_norm_modulate_reference,
)


def _assert_parity(fused, reference, args, names):
    """`fused(*args)` equals `reference(*args)`, and so do their gradients w.r.t. every arg."""
    cot = jax.random.normal(jax.random.key(9), args[0].shape)

    def loss(fn):
        return lambda *a: jnp.sum(fn(*a) * cot)

    np.testing.assert_allclose(fused(*args), reference(*args), rtol=1e-5, atol=1e-5)
    argnums = tuple(range(len(args)))
    g_got = jax.grad(loss(fused), argnums=argnums)(*args)
    g_want = jax.grad(loss(reference), argnums=argnums)(*args)
    for name, a, b in zip(names, g_got, g_want):
        assert a.shape == b.shape, name
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4, err_msg=name)


@pytest.mark.parametrize("param_shape", [(2, 1, 1, 16), (1, 5, 16), (16,)])
def test_layer_norm_modulate_matches_reference_with_gradients(param_shape):
    keys = jax.random.split(jax.random.key(0), 3)
    x = 3.0 + 2.0 * jax.random.normal(keys[0], (2, 3, 5, 16))  # a mean off zero
    shift = 0.3 * jax.random.normal(keys[1], param_shape)
    scale = 0.3 * jax.random.normal(keys[2], param_shape)
    _assert_parity(layer_norm_modulate, layer_norm_modulate_reference, (x, shift, scale),
                   ("dx", "dshift", "dscale"))  # fmt: skip


@pytest.mark.parametrize("gate_shape", [(2, 1, 1, 16), (1, 1, 1, 1), (16,)])
def test_add_gated_layer_norm_matches_reference_with_gradients(gate_shape):
    keys = jax.random.split(jax.random.key(2), 3)
    x = jax.random.normal(keys[0], (2, 3, 5, 16))
    y = -2.0 + 3.0 * jax.random.normal(keys[1], x.shape)  # a mean off zero
    gate = jax.random.normal(keys[2], gate_shape)
    _assert_parity(add_gated_layer_norm, add_gated_layer_norm_reference, (x, y, gate),
                   ("dx", "dy", "dgate"))  # fmt: skip


@pytest.mark.parametrize("fused", [layer_norm_modulate, add_gated_layer_norm])
def test_fused_norms_keep_bfloat16(fused):
    x = jax.random.normal(jax.random.key(1), (2, 4, 8)).astype(jnp.bfloat16)
    p = jnp.full((2, 1, 8), 0.5, jnp.bfloat16)  # shift and scale; or the gate (y = x)
    args = (x, p, p) if fused is layer_norm_modulate else (x, x, p)
    assert fused(*args).dtype == jnp.bfloat16
    grads = jax.grad(lambda *a: jnp.sum(fused(*a).astype(jnp.float32)), argnums=(0, 1, 2))(*args)
    assert all(g.dtype == jnp.bfloat16 for g in grads)


def test_add_gated_layer_norm_gradients_take_each_inputs_dtype():
    x = jnp.ones((2, 4, 8), jnp.float32)  # a float32 residual stream, a bfloat16 sub-layer
    y = jax.random.normal(jax.random.key(4), (2, 4, 8)).astype(jnp.bfloat16)
    g = jnp.ones((1, 1, 8), jnp.bfloat16)
    grads = jax.grad(lambda *a: jnp.sum(add_gated_layer_norm(*a)), argnums=(0, 1, 2))(x, y, g)
    assert [a.dtype for a in grads] == [jnp.float32, jnp.bfloat16, jnp.bfloat16]
