"""Dispatch (`stiv_jax/kernels/attention.py`): impl choice, validation, splash and cuDNN paths.

Shapes: B batch, L query length, M key length, N heads, H head dim.
Tolerance as in test_pallas_attention: max error <= 2e-5 · max |reference| (float32).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from kernel_inputs import make_inputs, rope_1d

from stiv_jax.kernels import attention, attention_reference, baselines
from stiv_jax.kernels.attention import resolve_impl

TOL = 2e-5


def _assert_close(name, got, want, tol=TOL):
    got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
    err, scale = np.max(np.abs(got - want)), np.max(np.abs(want))
    assert err <= tol * scale, f"{name}: max error {err:.3g} > {tol} * max |ref| {scale:.3g}"


@pytest.mark.parametrize(
    "backend, expected", [("cpu", "xla"), ("tpu", "pallas"), ("gpu", "cudnn"), ("cuda", "cudnn")]
)
def test_auto_picks_backend_impl(backend, expected):
    assert resolve_impl("auto", backend) == expected
    assert resolve_impl("splash", backend) == "splash"


def test_auto_on_this_cpu_is_the_reference():
    q, k, v, qs, ks = make_inputs(0, 1, 16, 16, 2, 32, jnp.float32)
    kw = dict(q_norm_scale=qs, k_norm_scale=ks, rope=rope_1d(16, 32))
    np.testing.assert_array_equal(
        attention(q, k, v, impl="auto", **kw), attention_reference(q, k, v, **kw)
    )


def test_unknown_impl_is_named():
    q, k, v, *_ = make_inputs(0, 1, 8, 8, 1, 32, jnp.float32)
    with pytest.raises(ValueError, match="impl='flash' is unknown"):
        attention(q, k, v, impl="flash")


def test_cudnn_off_gpu_says_so():
    q, k, v, *_ = make_inputs(0, 1, 8, 8, 1, 32, jnp.float32)
    with pytest.raises(ValueError, match="impl='cudnn' needs a GPU backend"):
        attention(q, k, v, impl="cudnn")


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(k=jnp.zeros((1, 8, 2, 32))), r"k\(1, 8, 2, 32\) and v"),
        (dict(q=jnp.zeros((8, 1, 32))), "expects q \\[B, L, N, H\\]"),
        (dict(q_norm_scale=jnp.ones(16)), r"q_norm_scale has shape \(16,\); expected \(32,\)"),
        (dict(mask=jnp.ones((1, 9), bool)), r"mask has shape \(1, 9\); expected \[B, M\]"),
        (dict(rope=rope_1d(9, 32)), "do not broadcast to"),
        (dict(k=jnp.zeros((1, 4, 1, 32)), v=jnp.zeros((1, 4, 1, 32))), "self-attention"),
    ],
)
def test_bad_inputs_raise_one_clear_error(change, message):
    q, k, v, qs, ks = make_inputs(0, 1, 8, 8, 1, 32, jnp.float32)
    kw = dict(q=q, k=k, v=v, q_norm_scale=qs, k_norm_scale=ks, rope=rope_1d(8, 32))
    kw.update(change)
    with pytest.raises(ValueError, match=message):
        attention(kw.pop("q"), kw.pop("k"), kw.pop("v"), impl="xla", **kw)


def _grads(fn, q, k, v, qs, ks, **kw):
    def loss(q, k, v, qs, ks):
        out = fn(q, k, v, q_norm_scale=qs, k_norm_scale=ks, **kw)
        return jnp.sum(out * jnp.cos(jnp.arange(out.size).reshape(out.shape)))

    return jax.jit(jax.value_and_grad(loss, range(5)))(q, k, v, qs, ks)


def test_splash_baseline_matches_reference():
    """jax's splash kernel (interpret mode) behind our XLA prologue and key mask."""
    q, k, v, qs, ks = make_inputs(1, 1, 100, 100, 2, 64, jnp.float32)
    mask = jnp.asarray(np.arange(100)[None] < 90)
    kw = dict(rope=rope_1d(100, 64), mask=mask)
    want = _grads(attention_reference, q, k, v, qs, ks, **kw)
    got = _grads(lambda *a, **k_: attention(*a, impl="splash", **k_), q, k, v, qs, ks, **kw)
    _assert_close("loss", got[0], want[0], 1e-4)
    for name, a, b in zip(("dq", "dk", "dv", "dq_scale", "dk_scale"), got[1], want[1]):
        _assert_close(name, a, b, 1e-4)


def test_cudnn_path_prologue_and_mask_match_reference():
    """The cuDNN path's code around `jax.nn.dot_product_attention`, run by its XLA
    implementation (no GPU here): prologue, key mask and gradients."""
    q, k, v, qs, ks = make_inputs(2, 2, 24, 40, 2, 32, jnp.float32)
    mask = jnp.asarray(np.arange(40)[None] < np.array([[40], [13]]))

    def dpa(q, k, v, **kw):
        return baselines.dot_product_attention(
            q, k, v, rope=None, mask=mask, causal=False, eps=1e-6, implementation="xla", **kw
        )

    want = _grads(attention_reference, q, k, v, qs, ks, mask=mask)
    got = _grads(dpa, q, k, v, qs, ks)
    _assert_close("loss", got[0], want[0])
    for name, a, b in zip(("dq", "dk", "dv", "dq_scale", "dk_scale"), got[1], want[1]):
        _assert_close(name, a, b)
