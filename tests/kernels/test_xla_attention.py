"""XLA attention path (`stiv_jax/kernels/xla_attention.py`) vs `attention_reference`.

Shapes: B batch, L query length, M key length, N heads, H head dim.
Forward and every gradient (q, k, v, both norm scales) within 2e-5 · max |reference|
(float32), on both score paths: multiply-reduce (short keys) and einsum (long keys).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from kernel_inputs import make_inputs, rope_1d, rope_2d

from stiv_jax.kernels import attention_reference
from stiv_jax.kernels.prologue import apply_rope
from stiv_jax.kernels.xla_attention import SHORT_KEYS, apply_rope_folded, fold_rope, xla_attention

TOL = 2e-5


def _assert_close(name, got, want, tol=TOL):
    got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
    err, scale = np.max(np.abs(got - want)), np.max(np.abs(want))
    assert err <= tol * scale, f"{name}: max error {err:.3g} > {tol} * max |ref| {scale:.3g}"


def _grads(fn, q, k, v, qs, ks, **kw):
    cot = jax.random.normal(jax.random.key(9), q.shape, jnp.float32)

    def loss(q, k, v, qs, ks):
        out = fn(q, k, v, q_norm_scale=qs, k_norm_scale=ks, **kw)
        return jnp.sum(out.astype(jnp.float32) * cot)

    return jax.jit(jax.grad(loss, argnums=range(5)))(q, k, v, qs, ks)  # one compile


def test_folded_rope_is_rotate_half():
    x = jax.random.normal(jax.random.key(0), (2, 12, 3, 8))
    cos, sin = rope_2d(3, 4, 8)
    c, s = fold_rope(cos, sin)
    _assert_close("rope", apply_rope_folded(x, c, s), apply_rope(x, cos, sin), tol=1e-6)
    per_sample = (cos[None].repeat(2, 0), sin[None].repeat(2, 0))  # [B, L, H/2] (MaskDiT)
    c, s = fold_rope(*per_sample)
    _assert_close("rope [B]", apply_rope_folded(x, c, s), apply_rope(x, *per_sample), tol=1e-6)


@pytest.mark.parametrize(
    "q_len, k_len, case",
    [
        (4, 4, "rope"),  # temporal: multiply-reduce scores
        (4, 4, "causal"),
        (SHORT_KEYS + 4, SHORT_KEYS + 4, "rope"),  # spatial: einsum scores
        (SHORT_KEYS + 4, SHORT_KEYS + 4, "causal"),
        (24, 6, "mask"),  # cross attention with a key mask, short keys
        (8, SHORT_KEYS + 2, "mask"),  # and long keys
    ],
)
def test_matches_reference_forward_and_gradients(q_len, k_len, case):
    q, k, v, qs, ks = make_inputs(1, 3, q_len, k_len, 2, 16, jnp.float32)
    kw = {}
    if case in ("rope", "causal"):
        kw["rope"] = rope_1d(q_len, 16)
    if case == "causal":
        kw["causal"] = True
    if case == "mask":
        kw["mask"] = jnp.arange(k_len)[None] < jnp.array([[1], [k_len], [k_len // 2]])
    args = dict(q_norm_scale=qs, k_norm_scale=ks, **kw)
    fwd = jax.jit(lambda fn, q, k, v: fn(q, k, v, **args), static_argnums=0)
    _assert_close("out", fwd(xla_attention, q, k, v), fwd(attention_reference, q, k, v))
    got = _grads(xla_attention, q, k, v, qs, ks, **kw)
    want = _grads(attention_reference, q, k, v, qs, ks, **kw)
    for name, g, w in zip(("dq", "dk", "dv", "dq_scale", "dk_scale"), got, want):
        _assert_close(name, g, w)


def test_bfloat16_inputs_and_no_norm_match_reference():
    q, k, v, *_ = make_inputs(2, 2, 6, 6, 2, 16, jnp.bfloat16)
    got = xla_attention(q, k, v, rope=rope_1d(6, 16))
    assert got.dtype == jnp.bfloat16
    _assert_close("bf16", got, attention_reference(q, k, v, rope=rope_1d(6, 16)), tol=1e-2)
