"""Pallas TPU (Mosaic) flash attention with the QK-RMSNorm + RoPE prologue fused in.

Shapes: B batch (sequences), N heads, L query length, M key length, H head dim.
  q [B, N, L, H], k/v [B, N, M, H] raw (head-major, padded) -> out [B, N, L, H] in q.dtype.
  q_scale / k_scale [H]; cos2 / sin2 [Bc, L|M, H] float32, Bc in {1, B} (see `rope_tables`);
  key_bias [B, 1, M] float32 additive (0 valid, MASK_VALUE padded);
  q_segments [L, 1] / kv_segments [1, M] int32 shared by all rows (packed mode).

Forward: `key_prologue` (one Pallas pass: k' = rope(rmsnorm(k)·k_scale)), then the flash
kernel, which normalises/rotates/scales each query tile in VMEM and runs an online softmax
over key tiles with fp32 accumulators; the logsumexp is saved only for the backward.
Backward (`jax.custom_vjp`): q' and k' are recomputed by the jnp twin `query_prologue`
(O(B·N·(L+M)·H) memory), two Pallas kernels compute dq' and dk', dv tile by tile from the
saved logsumexp (FlashAttention-2 recipe), and `jax.vjp` of the prologue gives dq, dk and
both norm-scale gradients. Nothing of size L·M is ever materialised, forward or backward.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from stiv_jax.kernels.prologue import rms_norm

MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)
_TRANS_B = (((1,), (1,)), ((), ()))  # contract the last dims: [a, h] x [b, h] -> [a, b]
_TRANS_A = (((0,), (0,)), ((), ()))  # contract the first dims: [a, b] x [a, h] -> [b, h]


@dataclasses.dataclass(frozen=True)
class BlockSizes:
    """Tile sizes of the kernels; they change speed and VMEM use, never the result."""

    block_q: int = 512
    """Query rows per program (forward and dq kernels); a multiple of 128 (the saved
    logsumexp is stored lane-dense, query positions on lanes)."""
    block_k: int = 512
    """Key rows per program (forward and dq kernels); a multiple of 128."""
    block_q_dkv: int = 512
    """Query rows per step of the dk/dv kernel; a multiple of 128."""
    block_k_dkv: int = 512
    """Key rows per program of the dk/dv kernel; a multiple of 128."""
    packed_len: int = 128
    """Target tokens per packed row in packed (temporal) mode: short sequences are laid
    side by side up to this length so one MXU tile serves many of them."""

    def __post_init__(self):
        for name in ("block_q", "block_k", "block_q_dkv", "block_k_dkv", "packed_len"):
            value = getattr(self, name)
            if value <= 0 or value % 128:
                raise ValueError(f"BlockSizes.{name}={value} must be a positive multiple of 128")


@dataclasses.dataclass(frozen=True)
class _Config:
    """Static (hashable) settings of one kernel call."""

    block_q: int
    block_k: int
    block_q_dkv: int
    block_k_dkv: int
    sm_scale: float
    eps: float
    causal: bool
    interpret: bool


def round_up(x: int, multiple: int) -> int:
    return -(-x // multiple) * multiple


def rope_tables(cos: jax.Array, sin: jax.Array) -> tuple[jax.Array, jax.Array]:
    """cos/sin [Bc, L, H/2] -> full-width cos2 = [cos, cos], sin2 = [-sin, sin] (float32).

    With them rotate-half RoPE is `x * cos2 + swap_halves(x) * sin2`, a form without lane
    slicing at H/2 (H/2 = 32 is a quarter of a TPU vreg row).
    """
    # Rope tables are constants of the layer: no gradient flows to them.
    cos, sin = (lax.stop_gradient(t.astype(jnp.float32)) for t in (cos, sin))
    return jnp.concatenate([cos, cos], -1), jnp.concatenate([-sin, sin], -1)


def _swap_halves(x: jax.Array) -> jax.Array:
    """[T, H] -> [T, H] with halves swapped, as an exact matmul with a permutation.

    A [H, H] MXU product per query tile is cheap next to the [L, M] score products and
    avoids lane rotations that Mosaic lowers poorly for H < 128.
    """
    h = x.shape[-1]
    row = lax.broadcasted_iota(jnp.int32, (h, h), 0)
    col = lax.broadcasted_iota(jnp.int32, (h, h), 1)
    perm = jnp.logical_or(col == row + h // 2, col + h // 2 == row).astype(x.dtype)
    return jnp.dot(x, perm, precision=lax.Precision.HIGHEST, preferred_element_type=jnp.float32)


def query_prologue(q, q_scale, cos2, sin2, *, eps: float, sm_scale: float):
    """Plain-jnp twin of the Pallas prologues (`_tile_prologue`): the backward pass
    differentiates it to get dq, dk and the norm-scale gradients, for queries and (with
    sm_scale=1) for keys; the forward runs the Pallas versions (in-kernel for queries,
    `key_prologue` for keys).

    q [B, N, L, H] -> q' = rope(rmsnorm(q) * q_scale) * sm_scale, float32.
    """
    x = q.astype(jnp.float32)
    if q_scale is not None:
        x = rms_norm(x, q_scale, eps)
    if cos2 is not None:
        c, s = cos2[:, None], sin2[:, None]  # [Bc, 1, L, H]: broadcast over heads
        # Swap halves by an exact permutation matmul, as in the kernel: XLA on TPU would
        # materialise each [.., H/2] slice of a concat padded to 128 lanes (4x).
        h = x.shape[-1]
        perm = np.roll(np.eye(h, dtype=np.float32), h // 2, axis=1)
        swapped = jnp.einsum("bnlh,hg->bnlg", x, perm, precision=lax.Precision.HIGHEST)
        x = x * c + swapped * s
    return x * sm_scale


def _scores(q, k, bias_ref, qseg_ref, kvseg_ref, *, causal, q_start, k_start):
    """Masked logits of one [block_q, block_k] tile, float32."""
    s = lax.dot_general(q, k, _TRANS_B, preferred_element_type=jnp.float32)
    if bias_ref is not None:
        s = s + bias_ref[0]  # [1, block_k] broadcast over query rows
    if qseg_ref is not None:
        s = jnp.where(qseg_ref[...] == kvseg_ref[...], s, MASK_VALUE)
    if causal:
        row = lax.broadcasted_iota(jnp.int32, s.shape, 0) + q_start
        col = lax.broadcasted_iota(jnp.int32, s.shape, 1) + k_start
        s = jnp.where(col <= row, s, MASK_VALUE)
    return s


def _column_to_row(x: jax.Array) -> jax.Array:
    """[T, 1] -> [1, T] exactly, by a masked sublane reduction (no Mosaic transpose).

    Per-row statistics are stored lane-dense ([.., 1, L]): a [.., L, 1] float32 array
    would occupy 128 lanes per value in HBM, 128x the bytes.
    """
    t = x.shape[0]
    eye = lax.broadcasted_iota(jnp.int32, (t, t), 0) == lax.broadcasted_iota(jnp.int32, (t, t), 1)
    return jnp.sum(jnp.where(eye, x, 0.0), axis=0, keepdims=True)


def _row_to_column(x: jax.Array) -> jax.Array:
    """[1, T] -> [T, 1] exactly (inverse of `_column_to_row`)."""
    t = x.shape[1]
    eye = lax.broadcasted_iota(jnp.int32, (t, t), 0) == lax.broadcasted_iota(jnp.int32, (t, t), 1)
    return jnp.sum(jnp.where(eye, x, 0.0), axis=1, keepdims=True)


def _unpack(refs, flags):
    """Split a flat ref list into named optional groups following `flags`."""
    out, i = {}, 0
    for name, count, present in flags:
        out[name] = tuple(refs[i : i + count]) if present else (None,) * count
        i += count if present else 0
    return out, refs[i:]


def _tile_prologue(x, scale_ref, cos_ref, sin_ref, eps: float) -> jax.Array:
    """[T, H] tile -> RMSNorm (if scale_ref) then RoPE (if cos_ref), float32."""
    x = x.astype(jnp.float32)
    if scale_ref is not None:
        x = rms_norm(x, scale_ref[...], eps)
    if cos_ref is not None:
        x = x * cos_ref[0] + _swap_halves(x) * sin_ref[0]
    return x


def _key_prologue_kernel(*refs, eps: float, flags):
    groups, (out_ref,) = _unpack(refs, flags)
    (k_ref,) = groups["k"]
    (scale_ref,) = groups["scale"]
    cos_ref, sin_ref = groups["rope"]
    out_ref[0, 0] = _tile_prologue(k_ref[0, 0], scale_ref, cos_ref, sin_ref, eps).astype(
        out_ref.dtype
    )


def key_prologue(k, k_scale, cos2, sin2, cfg: _Config) -> jax.Array:
    """k [B, N, M, H] -> k' = rope(rmsnorm(k) * k_scale) in k.dtype, one HBM pass.

    A Pallas kernel rather than XLA: XLA on TPU splits the rotate-half concat into
    separate float32 [.., H/2] fusions, each padded to 128 lanes (4x) in HBM.
    """
    if k_scale is None and cos2 is None:
        return k
    b, n, m, h = k.shape
    bk = cfg.block_k
    spec = pl.BlockSpec((1, 1, bk, h), lambda b, n, j: (b, n, j, 0))
    in_specs, args = [spec], [k]
    if k_scale is not None:
        in_specs.append(pl.BlockSpec((1, h), lambda b, n, j: (0, 0)))
        args.append(k_scale.reshape(1, h))
    if cos2 is not None:
        per_batch = cos2.shape[0] != 1
        table = pl.BlockSpec((1, bk, h), lambda b, n, j: (b if per_batch else 0, j, 0))
        in_specs += [table, table]
        args += [cos2, sin2]
    flags = (("k", 1, True), ("scale", 1, k_scale is not None), ("rope", 2, cos2 is not None))
    out_shape = jax.ShapeDtypeStruct(k.shape, k.dtype)
    return pl.pallas_call(
        functools.partial(_key_prologue_kernel, eps=cfg.eps, flags=flags),
        grid=(b, n, m // bk),
        in_specs=in_specs,
        out_specs=spec,
        out_shape=out_shape,
        compiler_params=pltpu.CompilerParams(
            dimension_semantics=("parallel", "parallel", "parallel")
        ),
        cost_estimate=pl.CostEstimate(
            flops=2 * b * n * m * h * h,
            transcendentals=b * n * m,
            bytes_accessed=_bytes(*args) + _bytes(out_shape),
        ),
        interpret=cfg.interpret,
        name="stiv_key_prologue",
    )(*args)


def _fwd_kernel(*refs, cfg: _Config, flags, save_lse: bool):
    groups, rest = _unpack(refs, flags)
    q_ref, k_ref, v_ref = groups["qkv"]
    (scale_ref,) = groups["scale"]
    cos_ref, sin_ref = groups["rope"]
    (bias_ref,) = groups["bias"]
    qseg_ref, kvseg_ref = groups["seg"]
    if save_lse:
        o_ref, lse_ref, qs_ref, m_ref, l_ref, acc_ref = rest
    else:
        (o_ref, qs_ref, m_ref, l_ref, acc_ref), lse_ref = rest, None
    qi, ki = pl.program_id(2), pl.program_id(3)

    @pl.when(ki == 0)
    def _prologue():
        # Query RMSNorm + RoPE + softmax scale once per query tile, kept in VMEM for all
        # key tiles: q' never travels to HBM.
        x = _tile_prologue(q_ref[0, 0], scale_ref, cos_ref, sin_ref, cfg.eps)
        qs_ref[...] = (x * cfg.sm_scale).astype(qs_ref.dtype)
        m_ref[...] = jnp.full(m_ref.shape, -jnp.inf, jnp.float32)
        l_ref[...] = jnp.zeros(l_ref.shape, jnp.float32)
        acc_ref[...] = jnp.zeros(acc_ref.shape, jnp.float32)

    s = _scores(
        qs_ref[...],
        k_ref[0, 0],
        bias_ref,
        qseg_ref,
        kvseg_ref,
        causal=cfg.causal,
        q_start=qi * cfg.block_q,
        k_start=ki * cfg.block_k,
    )
    m_prev = m_ref[...]
    m_next = jnp.maximum(m_prev, jnp.max(s, axis=1, keepdims=True))
    alpha = jnp.exp(m_prev - m_next)
    p = jnp.exp(s - m_next)
    l_ref[...] = alpha * l_ref[...] + jnp.sum(p, axis=1, keepdims=True)
    v = v_ref[0, 0]
    acc_ref[...] = alpha * acc_ref[...] + jnp.dot(
        p.astype(v.dtype), v, preferred_element_type=jnp.float32
    )
    m_ref[...] = m_next

    @pl.when(ki == pl.num_programs(3) - 1)
    def _store():
        denom = l_ref[...]
        o_ref[0, 0] = (acc_ref[...] / denom).astype(o_ref.dtype)
        if lse_ref is not None:
            lse_ref[0, 0] = _column_to_row(m_ref[...] + jnp.log(denom))


def _dkv_kernel(*refs, cfg: _Config, flags):
    groups, rest = _unpack(refs, flags)
    q_ref, k_ref, v_ref = groups["qkv"]
    (bias_ref,) = groups["bias"]
    qseg_ref, kvseg_ref = groups["seg"]
    lse_ref, delta_ref, do_ref, dk_ref, dv_ref, dk_acc, dv_acc = rest
    ki, qi = pl.program_id(2), pl.program_id(3)

    @pl.when(qi == 0)
    def _init():
        dk_acc[...] = jnp.zeros(dk_acc.shape, jnp.float32)
        dv_acc[...] = jnp.zeros(dv_acc.shape, jnp.float32)

    q, k, v, do = q_ref[0, 0], k_ref[0, 0], v_ref[0, 0], do_ref[0, 0]
    s = _scores(
        q,
        k,
        bias_ref,
        qseg_ref,
        kvseg_ref,
        causal=cfg.causal,
        q_start=qi * cfg.block_q_dkv,
        k_start=ki * cfg.block_k_dkv,
    )
    p = jnp.exp(s - _row_to_column(lse_ref[0, 0]))  # [block_q, block_k]
    dv_acc[...] += lax.dot_general(
        p.astype(do.dtype), do, _TRANS_A, preferred_element_type=jnp.float32
    )
    dp = lax.dot_general(do, v, _TRANS_B, preferred_element_type=jnp.float32)
    ds = p * (dp - _row_to_column(delta_ref[0, 0]))
    dk_acc[...] += lax.dot_general(
        ds.astype(q.dtype), q, _TRANS_A, preferred_element_type=jnp.float32
    )

    @pl.when(qi == pl.num_programs(3) - 1)
    def _store():
        dk_ref[0, 0] = dk_acc[...].astype(dk_ref.dtype)
        dv_ref[0, 0] = dv_acc[...].astype(dv_ref.dtype)


def _dq_kernel(*refs, cfg: _Config, flags):
    groups, rest = _unpack(refs, flags)
    q_ref, k_ref, v_ref = groups["qkv"]
    (bias_ref,) = groups["bias"]
    qseg_ref, kvseg_ref = groups["seg"]
    lse_ref, delta_ref, do_ref, dq_ref, dq_acc = rest
    qi, ki = pl.program_id(2), pl.program_id(3)

    @pl.when(ki == 0)
    def _init():
        dq_acc[...] = jnp.zeros(dq_acc.shape, jnp.float32)

    k, v, do = k_ref[0, 0], v_ref[0, 0], do_ref[0, 0]
    s = _scores(
        q_ref[0, 0],
        k,
        bias_ref,
        qseg_ref,
        kvseg_ref,
        causal=cfg.causal,
        q_start=qi * cfg.block_q,
        k_start=ki * cfg.block_k,
    )
    p = jnp.exp(s - _row_to_column(lse_ref[0, 0]))
    dp = lax.dot_general(do, v, _TRANS_B, preferred_element_type=jnp.float32)
    ds = p * (dp - _row_to_column(delta_ref[0, 0]))
    dq_acc[...] += jnp.dot(ds.astype(k.dtype), k, preferred_element_type=jnp.float32)

    @pl.when(ki == pl.num_programs(3) - 1)
    def _store():
        dq_ref[0, 0] = dq_acc[...]


def _bytes(*arrays) -> int:
    return sum(math.prod(a.shape) * jnp.dtype(a.dtype).itemsize for a in arrays if a is not None)


def _cost(q, k, extra_inputs, outputs, *, passes: int) -> pl.CostEstimate:
    """Matmul flops (`passes` [L, M, H] products) and the exp count of the score tiles."""
    b, n, q_len, h = q.shape
    m = k.shape[2]
    return pl.CostEstimate(
        flops=2 * passes * b * n * q_len * m * h,
        transcendentals=b * n * q_len * m,
        bytes_accessed=_bytes(q, k, *extra_inputs, *outputs),
    )


def _mask_specs(bias, qseg, kvseg, block_q, block_k, *, kv_major: bool):
    """BlockSpecs of the optional masks for grids (b, n, i, j) with j or i the key tile."""

    def kv_index(i, j):
        return i if kv_major else j

    def q_index(i, j):
        return j if kv_major else i

    specs, args = [], []
    if bias is not None:
        specs.append(pl.BlockSpec((1, 1, block_k), lambda b, n, i, j: (b, 0, kv_index(i, j))))
        args.append(bias)
    if qseg is not None:
        specs.append(pl.BlockSpec((block_q, 1), lambda b, n, i, j: (q_index(i, j), 0)))
        specs.append(pl.BlockSpec((1, block_k), lambda b, n, i, j: (0, kv_index(i, j))))
        args += [qseg, kvseg]
    return specs, args


def _flags(q_scale=None, cos2=None, bias=None, qseg=None, *, with_prologue: bool):
    flags = [("qkv", 3, True)]
    if with_prologue:
        flags += [("scale", 1, q_scale is not None), ("rope", 2, cos2 is not None)]
    else:
        flags += [("scale", 1, False), ("rope", 2, False)]
    return tuple(flags + [("bias", 1, bias is not None), ("seg", 2, qseg is not None)])


def _forward(q, k, v, q_scale, cos2, sin2, bias, qseg, kvseg, cfg: _Config, save_lse: bool):
    b, n, q_len, h = q.shape
    m = k.shape[2]
    bq, bk = cfg.block_q, cfg.block_k
    grid = (b, n, q_len // bq, m // bk)
    q_spec = pl.BlockSpec((1, 1, bq, h), lambda b, n, i, j: (b, n, i, 0))
    kv_spec = pl.BlockSpec((1, 1, bk, h), lambda b, n, i, j: (b, n, j, 0))
    in_specs, args = [q_spec, kv_spec, kv_spec], [q, k, v]
    if q_scale is not None:
        in_specs.append(pl.BlockSpec((1, h), lambda b, n, i, j: (0, 0)))
        args.append(q_scale.reshape(1, h))
    if cos2 is not None:
        per_batch = cos2.shape[0] != 1
        rope_spec = pl.BlockSpec((1, bq, h), lambda b, n, i, j: (b if per_batch else 0, i, 0))
        in_specs += [rope_spec, rope_spec]
        args += [cos2, sin2]
    mask_specs, mask_args = _mask_specs(bias, qseg, kvseg, bq, bk, kv_major=False)
    in_specs += mask_specs
    args += mask_args
    out_shape = [jax.ShapeDtypeStruct(q.shape, q.dtype)]
    out_specs = [q_spec]
    if save_lse:
        out_shape.append(jax.ShapeDtypeStruct((b, n, 1, q_len), jnp.float32))
        out_specs.append(pl.BlockSpec((1, 1, 1, bq), lambda b, n, i, j: (b, n, 0, i)))
    kernel = functools.partial(
        _fwd_kernel,
        cfg=cfg,
        flags=_flags(q_scale, cos2, bias, qseg, with_prologue=True),
        save_lse=save_lse,
    )
    outs = pl.pallas_call(
        kernel,
        grid_spec=pltpu.PrefetchScalarGridSpec(
            num_scalar_prefetch=0,
            grid=grid,
            in_specs=in_specs,
            out_specs=out_specs,
            scratch_shapes=[
                pltpu.VMEM((bq, h), k.dtype),  # q' of this query tile
                pltpu.VMEM((bq, 1), jnp.float32),  # running max
                pltpu.VMEM((bq, 1), jnp.float32),  # running denominator
                pltpu.VMEM((bq, h), jnp.float32),  # output accumulator
            ],
        ),
        out_shape=out_shape,
        compiler_params=pltpu.CompilerParams(
            dimension_semantics=("parallel", "parallel", "parallel", "arbitrary")
        ),
        cost_estimate=_cost(q, k, args[2:], out_shape, passes=2),
        interpret=cfg.interpret,
        name="stiv_flash_fwd",
    )(*args)
    return outs[0], (outs[1] if save_lse else None)


def _backward(qp, k, v, bias, qseg, kvseg, lse, delta, do, cfg: _Config):
    """Gradients w.r.t. q' (float32), k and v from the saved logsumexp."""
    b, n, q_len, h = qp.shape
    m = k.shape[2]
    flags = _flags(bias=bias, qseg=qseg, with_prologue=False)

    # dk, dv: key tiles are the parallel axis, query tiles the reduction axis.
    bq, bk = cfg.block_q_dkv, cfg.block_k_dkv
    q_spec = pl.BlockSpec((1, 1, bq, h), lambda b, n, j, i: (b, n, i, 0))
    row_spec = pl.BlockSpec((1, 1, 1, bq), lambda b, n, j, i: (b, n, 0, i))
    kv_spec = pl.BlockSpec((1, 1, bk, h), lambda b, n, j, i: (b, n, j, 0))
    mask_specs, mask_args = _mask_specs(bias, qseg, kvseg, bq, bk, kv_major=True)
    out_shape = [
        jax.ShapeDtypeStruct(k.shape, jnp.float32),  # w.r.t. k', pulled back by XLA
        jax.ShapeDtypeStruct(v.shape, v.dtype),
    ]
    dk, dv = pl.pallas_call(
        functools.partial(_dkv_kernel, cfg=cfg, flags=flags),
        grid_spec=pltpu.PrefetchScalarGridSpec(
            num_scalar_prefetch=0,
            grid=(b, n, m // bk, q_len // bq),
            in_specs=[q_spec, kv_spec, kv_spec, *mask_specs, row_spec, row_spec, q_spec],
            out_specs=[kv_spec, kv_spec],
            scratch_shapes=[pltpu.VMEM((bk, h), jnp.float32), pltpu.VMEM((bk, h), jnp.float32)],
        ),
        out_shape=out_shape,
        compiler_params=pltpu.CompilerParams(
            dimension_semantics=("parallel", "parallel", "parallel", "arbitrary")
        ),
        cost_estimate=_cost(qp, k, [v, *mask_args, lse, delta, do], out_shape, passes=4),
        interpret=cfg.interpret,
        name="stiv_flash_dkv",
    )(qp, k, v, *mask_args, lse, delta, do)

    # dq: query tiles parallel, key tiles the reduction axis.
    bq, bk = cfg.block_q, cfg.block_k
    q_spec = pl.BlockSpec((1, 1, bq, h), lambda b, n, i, j: (b, n, i, 0))
    row_spec = pl.BlockSpec((1, 1, 1, bq), lambda b, n, i, j: (b, n, 0, i))
    kv_spec = pl.BlockSpec((1, 1, bk, h), lambda b, n, i, j: (b, n, j, 0))
    mask_specs, mask_args = _mask_specs(bias, qseg, kvseg, bq, bk, kv_major=False)
    out_shape = jax.ShapeDtypeStruct(qp.shape, jnp.float32)
    dq = pl.pallas_call(
        functools.partial(_dq_kernel, cfg=cfg, flags=flags),
        grid_spec=pltpu.PrefetchScalarGridSpec(
            num_scalar_prefetch=0,
            grid=(b, n, q_len // bq, m // bk),
            in_specs=[q_spec, kv_spec, kv_spec, *mask_specs, row_spec, row_spec, q_spec],
            out_specs=q_spec,
            scratch_shapes=[pltpu.VMEM((bq, h), jnp.float32)],
        ),
        out_shape=out_shape,
        compiler_params=pltpu.CompilerParams(
            dimension_semantics=("parallel", "parallel", "parallel", "arbitrary")
        ),
        cost_estimate=_cost(qp, k, [v, *mask_args, lse, delta, do], [out_shape], passes=3),
        interpret=cfg.interpret,
        name="stiv_flash_dq",
    )(qp, k, v, *mask_args, lse, delta, do)
    return dq, dk, dv


@functools.partial(jax.custom_vjp, nondiff_argnums=(11,))
def flash_core(q, k, v, q_scale, k_scale, q_cos, q_sin, k_cos, k_sin, masks, kvseg, cfg: _Config):
    """Padded, head-major raw q, k, v (see module docstring) -> out [B, N, L, H].

    masks = (key bias or None, query segment ids or None); tables are [Bc, L|M, H].
    """
    kp = key_prologue(k, k_scale, k_cos, k_sin, cfg)
    bias, qseg = masks
    out, _ = _forward(q, kp, v, q_scale, q_cos, q_sin, bias, qseg, kvseg, cfg, save_lse=False)
    return out


def _flash_core_fwd(q, k, v, q_scale, k_scale, q_cos, q_sin, k_cos, k_sin, masks, kvseg, cfg):
    kp = key_prologue(k, k_scale, k_cos, k_sin, cfg)
    bias, qseg = masks
    out, lse = _forward(q, kp, v, q_scale, q_cos, q_sin, bias, qseg, kvseg, cfg, save_lse=True)
    # k' is not saved: the backward recomputes it in XLA, where it is differentiated.
    return out, (q, k, v, q_scale, k_scale, q_cos, q_sin, k_cos, k_sin, masks, kvseg, out, lse)


def _flash_core_bwd(cfg, residuals, do):
    q, k, v, q_scale, k_scale, q_cos, q_sin, k_cos, k_sin, masks, kvseg, out, lse = residuals
    bias, qseg = masks
    q_fn = functools.partial(query_prologue, eps=cfg.eps, sm_scale=cfg.sm_scale)
    k_fn = functools.partial(query_prologue, eps=cfg.eps, sm_scale=1.0)
    qp, q_pullback = jax.vjp(lambda x, s: q_fn(x, s, q_cos, q_sin), q, q_scale)
    kp, k_pullback = jax.vjp(lambda x, s: k_fn(x, s, k_cos, k_sin), k, k_scale)
    delta = jnp.sum(do.astype(jnp.float32) * out.astype(jnp.float32), -1)[:, :, None]
    dqp, dkp, dv = _backward(
        qp.astype(k.dtype),
        kp.astype(k.dtype),
        v,
        bias,
        qseg,
        kvseg,
        lse,
        delta,
        do.astype(v.dtype),
        cfg,
    )
    dq, dq_scale = q_pullback(dqp)
    dk, dk_scale = k_pullback(dkp)
    # Rope tables, key bias and segment ids are constants: no gradient flows to them.
    none = (None,) * 4
    return dq.astype(q.dtype), dk.astype(k.dtype), dv, dq_scale, dk_scale, *none, (None, None), None


flash_core.defvjp(_flash_core_fwd, _flash_core_bwd)
