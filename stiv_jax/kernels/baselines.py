"""Comparison paths: jax's TPU splash-attention kernel and cuDNN flash attention.

Shapes: B batch, L query length, M key length, N heads, H head dim.
  q [B, L, N, H], k/v [B, M, N, H] -> out [B, L, N, H] (dtype of q).
Both run the QK-RMSNorm + RoPE prologue in XLA (fused into neighbouring ops) and hand
q', k' to the library kernel, which has no hook for a fused prologue.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from stiv_jax.kernels.flash_tpu import round_up
from stiv_jax.kernels.prologue import qk_prologue

_SPLASH_BLOCK = 128  # splash's default tile; sequences are padded to a multiple of it


def _pad_len(x: jax.Array, size: int) -> jax.Array:
    return jnp.pad(x, [(0, 0), (0, size - x.shape[1])] + [(0, 0)] * (x.ndim - 2))


def dot_product_attention(
    q, k, v, *, q_norm_scale, k_norm_scale, rope, mask, causal, eps, implementation
) -> jax.Array:
    """XLA prologue, then `jax.nn.dot_product_attention` (cuDNN flash kernel on GPU).

    cuDNN needs fp16/bf16 operands; float32 inputs are computed in bf16 there.
    """
    dtype = q.dtype
    compute = jnp.bfloat16 if implementation == "cudnn" and dtype == jnp.float32 else dtype
    qp = qk_prologue(q, q_norm_scale, rope, eps).astype(compute)
    kp = qk_prologue(k, k_norm_scale, rope, eps).astype(compute)
    key_mask = None if mask is None else mask[:, None, None, :]  # [B, 1, 1, M]
    out = jax.nn.dot_product_attention(
        qp,
        kp,
        v.astype(compute),
        mask=key_mask,
        is_causal=causal,
        implementation=implementation,
    )
    return out.astype(dtype)


@functools.lru_cache(maxsize=64)
def _splash_kernel(heads: int, q_len: int, kv_len: int, causal: bool, interpret: bool):
    from jax.experimental.pallas.ops.tpu.splash_attention import (
        splash_attention_kernel as splash,
    )
    from jax.experimental.pallas.ops.tpu.splash_attention import (
        splash_attention_mask as masks,
    )

    shape = (q_len, kv_len)
    one = masks.CausalMask(shape) if causal else masks.FullMask(shape)
    mha_mask = masks.MultiHeadMask([one] * heads)
    block = min(_SPLASH_BLOCK, q_len, kv_len)
    sizes = splash.BlockSizes(
        block_q=block,
        block_kv=block,
        block_kv_compute=block,
        block_q_dkv=block,
        block_kv_dkv=block,
        block_kv_dkv_compute=block,
        block_q_dq=block,
        block_kv_dq=block,
    )
    return splash.make_splash_mha(
        mha_mask, head_shards=1, q_seq_shards=1, block_sizes=sizes, interpret=interpret
    ), splash.SegmentIds


def splash_attention(
    q, k, v, *, q_norm_scale, k_norm_scale, rope, mask, causal, eps, interpret
) -> jax.Array:
    """XLA prologue + jax's splash kernel; padding and key masks become segment ids."""
    b, length, n, h = q.shape
    m = k.shape[1]
    dtype = q.dtype
    qp = qk_prologue(q, q_norm_scale, rope, eps) / math.sqrt(h)  # splash does not scale
    kp = qk_prologue(k, k_norm_scale, rope, eps)
    l_pad, m_pad = round_up(length, _SPLASH_BLOCK), round_up(m, _SPLASH_BLOCK)
    qp, kp, vp = _pad_len(qp, l_pad), _pad_len(kp, m_pad), _pad_len(v, m_pad)
    # Segment 1 = real tokens; padded keys get 0 so real queries never see them. Padded
    # queries also get 0 and see the padded keys (no fully masked row), then are dropped.
    q_seg = jnp.asarray(np.arange(l_pad) < length, jnp.int32)[None].repeat(b, 0)
    kv_valid = jnp.asarray(np.arange(m_pad) < m)[None].repeat(b, 0)
    if mask is not None:
        kv_valid = kv_valid & _pad_len(mask.astype(bool), m_pad)
    kernel, segment_ids = _splash_kernel(n, l_pad, m_pad, causal, interpret)
    seg = segment_ids(q=q_seg, kv=kv_valid.astype(jnp.int32))
    to_heads = lambda x: x.astype(dtype).transpose(0, 2, 1, 3)  # [B, N, T, H]
    out = jax.vmap(kernel)(to_heads(qp), to_heads(kp), to_heads(vp), segment_ids=seg)
    return out.transpose(0, 2, 1, 3)[:, :length].astype(dtype)
