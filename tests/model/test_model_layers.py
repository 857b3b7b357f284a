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


@pytest.mark.parametrize("param_shape", [(2, 1, 1, 16), (1, 5, 16), (16,)])
def test_layer_norm_modulate_matches_reference_with_gradients(param_shape):
    keys = jax.random.split(jax.random.key(0), 4)
    x = 3.0 + 2.0 * jax.random.normal(keys[0], (2, 3, 5, 16))  # a mean off zero
    shift = 0.3 * jax.random.normal(keys[1], param_shape)
    scale = 0.3 * jax.random.normal(keys[2], param_shape)
    cot = jax.random.normal(keys[3], x.shape)

    def loss(fn):
        return lambda x, sh, sc: jnp.sum(fn(x, sh, sc) * cot)

    got = layer_norm_modulate(x, shift, scale)
    want = layer_norm_modulate_reference(x, shift, scale)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    g_got = jax.grad(loss(layer_norm_modulate), argnums=(0, 1, 2))(x, shift, scale)
    g_want = jax.grad(loss(layer_norm_modulate_reference), argnums=(0, 1, 2))(x, shift, scale)
    for name, a, b in zip(("dx", "dshift", "dscale"), g_got, g_want):
        assert a.shape == b.shape, name
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4, err_msg=name)


def test_layer_norm_modulate_keeps_bfloat16():
    x = jax.random.normal(jax.random.key(1), (2, 4, 8)).astype(jnp.bfloat16)
    p = jnp.zeros((2, 1, 8), jnp.bfloat16)
    assert layer_norm_modulate(x, p, p).dtype == jnp.bfloat16
    g = jax.grad(lambda x: jnp.sum(layer_norm_modulate(x, p, p).astype(jnp.float32)))(x)
    assert g.dtype == jnp.bfloat16


@pytest.mark.parametrize("gate_shape", [(2, 1, 1, 16), (1, 1, 1, 1), (16,)])
def test_add_gated_layer_norm_matches_reference_with_gradients(gate_shape):
    keys = jax.random.split(jax.random.key(2), 4)
    x = jax.random.normal(keys[0], (2, 3, 5, 16))
    y = -2.0 + 3.0 * jax.random.normal(keys[1], x.shape)  # a mean off zero
    gate = jax.random.normal(keys[2], gate_shape)
    cot = jax.random.normal(keys[3], x.shape)

    def loss(fn):
        return lambda x, y, g: jnp.sum(fn(x, y, g) * cot)

    np.testing.assert_allclose(
        add_gated_layer_norm(x, y, gate),
        add_gated_layer_norm_reference(x, y, gate),
        rtol=1e-5,
        atol=1e-5,
    )
    g_got = jax.grad(loss(add_gated_layer_norm), argnums=(0, 1, 2))(x, y, gate)
    g_want = jax.grad(loss(add_gated_layer_norm_reference), argnums=(0, 1, 2))(x, y, gate)
    for name, a, b in zip(("dx", "dy", "dgate"), g_got, g_want):
        assert a.shape == b.shape, name
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4, err_msg=name)


def test_add_gated_layer_norm_keeps_bfloat16():
    x = jax.random.normal(jax.random.key(3), (2, 4, 8)).astype(jnp.bfloat16)
    g = jnp.ones((2, 1, 8), jnp.bfloat16)
    assert add_gated_layer_norm(x, x, g).dtype == jnp.bfloat16
    dx, dy = jax.grad(
        lambda x, y: jnp.sum(add_gated_layer_norm(x, y, g).astype(jnp.float32)), argnums=(0, 1)
    )(x, x)
    assert dx.dtype == dy.dtype == jnp.bfloat16
