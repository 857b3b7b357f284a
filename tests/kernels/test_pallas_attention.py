"""Pallas kernel (interpret mode) vs `attention_reference`: forward and every gradient.

Shapes: B batch, L query length, M key length, N heads, H head dim.
Tolerance: max |kernel - reference| <= tol · max |reference| per output, with
tol = 2e-5 in float32 and 4e-2 in bfloat16 (bf16 operands on the MXU, fp32 softmax).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from kernel_inputs import make_inputs, rope_1d, rope_2d

from stiv_jax.kernels import BlockSizes, attention, attention_reference, pallas_attention

TOL = {jnp.float32: 2e-5, jnp.bfloat16: 4e-2}
SMALL_TILES = BlockSizes(block_q=128, block_k=128, block_q_dkv=128, block_k_dkv=128)


def _forward_and_grads(fn, args, cotangent, **kw):
    """One jitted forward + VJP w.r.t. (q, k, v, q_scale, k_scale): one compile per check."""

    def run(q, k, v, q_scale, k_scale):
        f = lambda *a: fn(*a[:3], q_norm_scale=a[3], k_norm_scale=a[4], **kw)
        out, vjp = jax.vjp(f, q, k, v, q_scale, k_scale)
        return out, vjp(cotangent.astype(out.dtype))

    return jax.jit(run)(*args)


def _check(dtype, q, k, v, q_scale, k_scale, *, rope=None, mask=None, causal=False, **kernel_kw):
    """Forward and gradients w.r.t. (q, k, v, q_scale, k_scale) against the reference."""
    tol = TOL[dtype]
    # A fixed non-uniform cotangent, so that gradients are not trivially structured.
    cotangent = jnp.broadcast_to(
        jnp.cos(jnp.arange(q.shape[1] * q.shape[-1], dtype=jnp.float32)).reshape(
            1, q.shape[1], 1, q.shape[-1]
        ),
        q.shape,
    )
    kernel = lambda *a, **kw: pallas_attention(*a, interpret=True, **kernel_kw, **kw)
    args = (q, k, v, q_scale, k_scale)
    ref_out, ref_grads = _forward_and_grads(
        attention_reference, args, cotangent, rope=rope, mask=mask, causal=causal
    )
    out, grads = _forward_and_grads(kernel, args, cotangent, rope=rope, mask=mask, causal=causal)
    assert out.shape == q.shape and out.dtype == q.dtype
    _assert_close("out", out, ref_out, tol)
    for name, got, want in zip(("dq", "dk", "dv", "dq_scale", "dk_scale"), grads, ref_grads):
        assert got.dtype == want.dtype, name
        _assert_close(name, got, want, tol)


def _assert_close(name, got, want, tol):
    got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
    err, scale = np.max(np.abs(got - want)), np.max(np.abs(want))
    assert err <= tol * scale, f"{name}: max error {err:.3g} > {tol} * max |ref| {scale:.3g}"


@pytest.mark.parametrize(
    "hw, dtype", [((8, 8), jnp.float32), ((8, 8), jnp.bfloat16), ((16, 16), jnp.float32)]
)
def test_spatial_matches_reference(hw, dtype):
    """Spatial attention: S = h·w tokens, 2D RoPE, QK-norm; one tile per sequence."""
    s = hw[0] * hw[1]
    q, k, v, qs, ks = make_inputs(0, 2, s, s, 2, 32, dtype)
    _check(dtype, q, k, v, qs, ks, rope=rope_2d(*hw, 32))


def test_spatial_multi_tile_online_softmax():
    """S = 256 in 128-token tiles: the online softmax and the tiled backward accumulate."""
    q, k, v, qs, ks = make_inputs(1, 1, 256, 256, 2, 64, jnp.float32)
    _check(jnp.float32, q, k, v, qs, ks, rope=rope_2d(16, 16, 64), block_sizes=SMALL_TILES)


def test_spatial_per_batch_rope_and_bucket_padding():
    """MaskDiT keeps different tokens per sample ([B, K, H/2] tables); K = 100 is padded
    to the tile and a key mask hides bucket padding."""
    q, k, v, qs, ks = make_inputs(2, 2, 100, 100, 2, 32, jnp.float32)
    cos, sin = rope_2d(16, 16, 32)
    keep = np.stack([np.sort(np.random.default_rng(i).permutation(256)[:100]) for i in (0, 1)])
    rope = (cos[keep], sin[keep])
    mask = jnp.asarray(np.arange(100)[None] < np.array([[100], [77]]))
    _check(jnp.float32, q, k, v, qs, ks, rope=rope, mask=mask)


@pytest.mark.parametrize(
    "frames, dtype",
    [(5, jnp.bfloat16), (10, jnp.float32), (10, jnp.bfloat16), (13, jnp.float32)],
)
def test_temporal_packed_matches_reference(frames, dtype):
    """Temporal attention: many sequences of F' frames packed into 128-token rows."""
    q, k, v, qs, ks = make_inputs(3, 20, frames, frames, 2, 32, dtype)
    _check(dtype, q, k, v, qs, ks, rope=rope_1d(frames, 32), packed=True)


def test_temporal_packed_with_key_mask():
    """Packed mode keeps a key mask per sequence (e.g. padded frames)."""
    q, k, v, qs, ks = make_inputs(4, 12, 10, 10, 2, 32, jnp.float32)
    mask = jnp.asarray(np.arange(10)[None] < (3 + np.arange(12) % 8)[:, None])
    _check(jnp.float32, q, k, v, qs, ks, rope=rope_1d(10, 32), mask=mask, packed=True)


def test_temporal_packed_causal():
    """The causal temporal ablation stays packed: causal within each packed sequence."""
    q, k, v, qs, ks = make_inputs(8, 12, 5, 5, 1, 32, jnp.float32)
    _check(jnp.float32, q, k, v, qs, ks, rope=rope_1d(5, 32), causal=True, packed=True)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_cross_attention_with_padding_mask(dtype):
    """Cross attention: L != M, text keys padded (mask), both norm scales, no RoPE."""
    q, k, v, qs, ks = make_inputs(5, 2, 64, 77, 2, 32, dtype)
    mask = jnp.asarray(np.arange(77)[None] < np.array([[77], [20]]))
    _check(dtype, q, k, v, qs, ks, mask=mask)


def test_without_qk_norm_and_causal():
    """No QK-norm (scales None) and a causal mask across 128-token tiles."""
    q, k, v, _, _ = make_inputs(6, 1, 256, 256, 1, 32, jnp.float32)
    got = pallas_attention(q, k, v, causal=True, interpret=True, block_sizes=SMALL_TILES)
    want = attention_reference(q, k, v, causal=True)
    _assert_close("out", got, want, TOL[jnp.float32])
    f = lambda fn: lambda q, k, v: jnp.sum(fn(q, k, v) ** 2)
    kern = lambda q, k, v: pallas_attention(
        q, k, v, causal=True, interpret=True, block_sizes=SMALL_TILES
    )
    got = jax.grad(f(kern), range(3))(q, k, v)
    want = jax.grad(f(lambda q, k, v: attention_reference(q, k, v, causal=True)), range(3))(q, k, v)
    for name, a, b in zip(("dq", "dk", "dv"), got, want):
        _assert_close(name, a, b, TOL[jnp.float32])


def test_dispatch_pallas_on_cpu_runs_interpret_and_jits():
    q, k, v, qs, ks = make_inputs(7, 1, 64, 64, 2, 32, jnp.float32)
    rope = rope_2d(8, 8, 32)
    kw = dict(q_norm_scale=qs, k_norm_scale=ks, rope=rope)
    got = jax.jit(lambda q, k, v: attention(q, k, v, impl="pallas", **kw))(q, k, v)
    _assert_close("out", got, attention(q, k, v, impl="xla", **kw), TOL[jnp.float32])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(block_q=100), "block_q=100 must be a positive multiple of 128"),
        (dict(block_k=64), "block_k=64 must be a positive multiple of 128"),
        (dict(packed_len=0), "packed_len=0"),
    ],
)
def test_block_sizes_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BlockSizes(**kwargs)
