"""Model-layout entry point of the Pallas kernel: layout, padding, packing, masks.

Shapes: B batch (sequences), L query length, M key length, N heads, H head dim,
P sequences per packed row, T packed row length.
  q [B, L, N, H], k/v [B, M, N, H] -> out [B, L, N, H] in q.dtype.

Where the norms and rotations run:
  * query: inside the forward kernel, once per query tile, held in VMEM for every key tile.
    Doing it in XLA instead would write and re-read q' (2·|q| extra HBM bytes).
  * key: once before the flash kernel, in its own Pallas pass (`flash_tpu.key_prologue`:
    one read of k and the tables, one write of k'; a Pallas pass because XLA would split
    the rotate-half into 4x lane-padded fusions).
    Fusing it into the flash kernel would redo the key RMSNorm + RoPE for every query
    tile, and each key tile would drag its cos/sin tiles along: 2 · block_k · H · 4 B of
    float32 tables against block_k · H · 2 B of bf16 keys, i.e. 4x the key traffic,
    L / block_q times over (8x at S = 4096, block_q = 512), versus 2x once in the key pass.

Packed mode (temporal attention, L = M = F' of 5…51 frames): P = packed_len // L
sequences are laid side by side in one row of T = round_up(P·L, 8) tokens with a
block-diagonal segment mask, so one [T, T] MXU tile serves P sequences instead of P
padded [L, L] tiles, and the grid has B / P instead of B steps per head.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from stiv_jax.kernels import flash_tpu
from stiv_jax.kernels.flash_tpu import MASK_VALUE, BlockSizes, round_up


def _pad_axis(x: jax.Array, axis: int, size: int, value=0) -> jax.Array:
    if x.shape[axis] == size:
        return x
    pad = [(0, 0)] * x.ndim
    pad[axis] = (0, size - x.shape[axis])
    return jnp.pad(x, pad, constant_values=value)


def _tiles(length: int, blocks: tuple[int, ...]) -> tuple[int, tuple[int, ...]]:
    """Padded length and one tile per requested block: a single full tile when short."""
    if length <= min(blocks):
        padded = round_up(length, 8)
    else:
        padded = round_up(length, math.lcm(*blocks))
    return padded, tuple(min(block, padded) for block in blocks)


def _rope_3d(rope, batch: int, length: int):
    """cos/sin broadcastable to [B, L, H/2] -> [Bc, L, H/2] with Bc in {1, B}."""
    cos, sin = (jnp.asarray(t, jnp.float32) for t in rope)
    if cos.ndim == 2:
        cos, sin = cos[None], sin[None]
    if cos.shape[0] not in (1, batch):
        cos, sin = (jnp.broadcast_to(t, (batch, *t.shape[1:])) for t in (cos, sin))
    shape = (cos.shape[0], length, cos.shape[-1])
    return jnp.broadcast_to(cos, shape), jnp.broadcast_to(sin, shape)


def _pack(x: jax.Array, per_row: int, row_len: int, value=0) -> jax.Array:
    """[B, L, ...] -> [ceil(B / P), T, ...]: P sequences per row, padded to T tokens."""
    b, length = x.shape[:2]
    x = _pad_axis(x, 0, round_up(b, per_row), value)
    x = x.reshape(x.shape[0] // per_row, per_row * length, *x.shape[2:])
    return _pad_axis(x, 1, row_len, value)


def _unpack(x: jax.Array, batch: int, length: int, per_row: int) -> jax.Array:
    """Inverse of `_pack` for [B/P, T, ...] outputs."""
    x = x[:, : per_row * length]
    x = x.reshape(x.shape[0] * per_row, length, *x.shape[2:])
    return x[:batch]


def pallas_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    q_norm_scale: jax.Array | None = None,
    k_norm_scale: jax.Array | None = None,
    rope: tuple[jax.Array, jax.Array] | None = None,
    mask: jax.Array | None = None,
    causal: bool = False,
    eps: float = 1e-6,
    block_sizes: BlockSizes | None = None,
    packed: bool | None = None,
    interpret: bool = False,
) -> jax.Array:
    """Fused QK-RMSNorm + RoPE + flash attention; inputs already validated.

    `packed=None` packs when L = M <= packed_len / 2. Causal masking stays exact when
    packed: sequences are contiguous in a row, so `col <= row` within a segment is causal.
    """
    bs = block_sizes or BlockSizes()
    b, length, n, h = q.shape
    m = k.shape[1]
    dtype = q.dtype
    if packed is None:
        packed = length == m and 2 * length <= bs.packed_len
    if packed and length != m:
        raise ValueError(f"packed attention needs L == M (self-attention); got L={length}, M={m}")

    rope3 = None if rope is None else _rope_3d(rope, b, length)
    v = v.astype(dtype)
    qseg = kvseg = None
    if packed:
        per_row = max(1, bs.packed_len // length)
        row_len = round_up(per_row * length, 8)
        q, k, v = (_pack(x, per_row, row_len) for x in (q, k, v))
        if mask is not None:
            mask = _pack(mask, per_row, row_len, value=True)
        if rope3 is not None:
            if rope3[0].shape[0] == 1:
                rope3 = tuple(_pad_axis(jnp.tile(t, (1, per_row, 1)), 1, row_len) for t in rope3)
            else:
                rope3 = tuple(_pack(t, per_row, row_len) for t in rope3)
        # Token t of a row belongs to sequence t // L; the padding tail is one more segment
        # (it attends to itself, so no row is fully masked).
        seg = np.minimum(np.arange(row_len, dtype=np.int32) // length, per_row)
    q_len, m_len = q.shape[1], k.shape[1]

    l_pad, (bq, bq_dkv) = _tiles(q_len, (bs.block_q, bs.block_q_dkv))
    m_pad, (bk, bk_dkv) = _tiles(m_len, (bs.block_k, bs.block_k_dkv))
    if packed:
        # Padded rows and keys take the padding tail's segment id.
        qseg = jnp.asarray(np.pad(seg, (0, l_pad - row_len), constant_values=seg[-1]))[:, None]
        kvseg = jnp.asarray(np.pad(seg, (0, m_pad - row_len), constant_values=seg[-1]))[None, :]
    bias = None
    if mask is not None or m_pad != m_len:
        valid = jnp.ones((q.shape[0], m_len), bool) if mask is None else mask.astype(bool)
        valid = _pad_axis(valid, 1, m_pad, value=False)
        bias = jnp.where(valid, 0.0, MASK_VALUE).astype(jnp.float32)[:, None, :]
    tables = None if rope3 is None else flash_tpu.rope_tables(*rope3)

    # Head-major layout: each grid step reads contiguous [tile, H] slabs of one head.
    q = _pad_axis(q, 1, l_pad).transpose(0, 2, 1, 3)
    k = _pad_axis(k, 1, m_pad).transpose(0, 2, 1, 3)
    v = _pad_axis(v, 1, m_pad).transpose(0, 2, 1, 3)
    k_cos = k_sin = cos2 = sin2 = None
    if tables is not None:
        k_cos, k_sin = (_pad_axis(t, 1, m_pad) for t in tables)
        cos2, sin2 = (_pad_axis(t, 1, l_pad) for t in tables)

    cfg = flash_tpu._Config(
        block_q=bq,
        block_k=bk,
        block_q_dkv=bq_dkv,
        block_k_dkv=bk_dkv,
        sm_scale=1.0 / math.sqrt(h),
        eps=eps,
        causal=causal,
        interpret=interpret,
    )
    out = flash_tpu.flash_core(
        q, k, v, q_norm_scale, k_norm_scale, cos2, sin2, k_cos, k_sin, (bias, qseg), kvseg, cfg
    )
    out = out.transpose(0, 2, 1, 3)[:, :q_len]
    if packed:
        out = _unpack(out, b, length, max(1, bs.packed_len // length))
    return out.astype(dtype)
