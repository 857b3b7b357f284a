"""Fused QK-RMSNorm + RoPE + attention: reference, validation and backend dispatch.

Shapes: B batch, L query length, M key length, N heads, H head dim.
  q [B, L, N, H], k/v [B, M, N, H] -> out [B, L, N, H] (dtype of q).
  q_norm_scale / k_norm_scale [H] (None: no QK-norm), rope (cos, sin) broadcastable to
  [B, L, H/2] in rotate-half convention, mask [B, M] bool (True = valid key), causal.

Implementations (`impl`):
  xla     `attention_reference` (XLA fuses it; O(L·M) scores in memory).
  pallas  our Mosaic flash kernel (`pallas_attention`), interpret mode off TPU.
  splash  jax's TPU splash-attention kernel after an XLA prologue (comparison baseline).
  cudnn   `jax.nn.dot_product_attention(implementation="cudnn")` after an XLA prologue.
  auto    xla on CPU, pallas on TPU, cudnn on GPU.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from stiv_jax.kernels import baselines
from stiv_jax.kernels.flash_tpu import BlockSizes
from stiv_jax.kernels.pallas_attention import pallas_attention
from stiv_jax.kernels.prologue import apply_rope, qk_prologue, rms_norm
from stiv_jax.kernels.sharding import shard_over_batch

IMPLS = ("auto", "xla", "pallas", "splash", "cudnn")
__all__ = ["IMPLS", "BlockSizes", "apply_rope", "attention", "attention_reference", "rms_norm"]


def attention_reference(
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
) -> jax.Array:
    """Plain-jnp fused attention; fp32 norm, rotation and softmax."""
    dtype = q.dtype
    qf = qk_prologue(q, q_norm_scale, rope, eps)
    kf = qk_prologue(k, k_norm_scale, rope, eps)
    logits = jnp.einsum("blnh,bmnh->bnlm", qf, kf) / jnp.sqrt(q.shape[-1]).astype(jnp.float32)
    if mask is not None:
        logits = jnp.where(mask[:, None, None, :], logits, -1e30)
    if causal:
        q_len, k_len = logits.shape[-2:]
        logits = jnp.where(jnp.tril(jnp.ones((q_len, k_len), bool)), logits, -1e30)
    probs = jax.nn.softmax(logits, axis=-1)
    out = jnp.einsum("bnlm,bmnh->blnh", probs, v.astype(jnp.float32))
    return out.astype(dtype)


def validate(q, k, v, *, q_norm_scale, k_norm_scale, rope, mask) -> None:
    """One clear sentence per malformed argument (shapes are static, so this is free)."""
    if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
        raise ValueError(
            f"attention expects q [B, L, N, H] and k/v [B, M, N, H]; got q{q.shape}, "
            f"k{k.shape}, v{v.shape}"
        )
    b, length, n, h = q.shape
    if k.shape != v.shape or k.shape[0] != b or k.shape[2:] != (n, h):
        raise ValueError(
            f"k{k.shape} and v{v.shape} must both be [B={b}, M, N={n}, H={h}] to match q{q.shape}"
        )
    for name, scale in (("q_norm_scale", q_norm_scale), ("k_norm_scale", k_norm_scale)):
        if scale is not None and tuple(scale.shape) != (h,):
            raise ValueError(f"{name} has shape {tuple(scale.shape)}; expected ({h},) = [H]")
    if rope is not None:
        cos, sin = rope
        if h % 2:
            raise ValueError(f"RoPE needs an even head dim; got H={h}")
        if k.shape[1] != length:
            raise ValueError(f"RoPE is for self-attention (L == M); got L={length}, M={k.shape[1]}")
        if cos.shape != sin.shape:
            raise ValueError(f"rope cos{cos.shape} and sin{sin.shape} must have the same shape")
        try:
            jnp.broadcast_shapes(cos.shape, (b, length, h // 2))
        except ValueError:
            raise ValueError(
                f"rope tables of shape {cos.shape} do not broadcast to [B, L, H/2] = "
                f"{(b, length, h // 2)}"
            ) from None
        if cos.ndim == 3 and cos.shape[0] not in (1, b):
            raise ValueError(f"rope tables {cos.shape} must have batch 1 or B={b}")
    if mask is not None and tuple(mask.shape) != (b, k.shape[1]):
        raise ValueError(f"mask has shape {tuple(mask.shape)}; expected [B, M] = {(b, k.shape[1])}")


def target_platform(mesh=None) -> str:
    """Platform the computation is compiled for: the mesh's devices when a mesh is given or
    ambient (AOT-compiling for a TPU topology on a CPU host), else the default backend."""
    mesh = mesh if mesh is not None else jax.sharding.get_abstract_mesh()
    if isinstance(mesh, jax.sharding.Mesh):
        return mesh.devices.flat[0].platform
    device = None if mesh.empty else getattr(mesh, "abstract_device", None)
    platform = getattr(device, "platform", None)
    return platform or jax.default_backend()


def resolve_impl(impl: str, backend: str | None = None) -> str:
    """`auto` -> the implementation for the default backend; others pass through."""
    if impl not in IMPLS:
        raise ValueError(f"attention impl={impl!r} is unknown; expected one of {'|'.join(IMPLS)}")
    if impl != "auto":
        return impl
    backend = backend or jax.default_backend()
    return {"tpu": "pallas", "gpu": "cudnn", "cuda": "cudnn", "rocm": "cudnn"}.get(backend, "xla")


def attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    q_norm_scale: jax.Array | None = None,
    k_norm_scale: jax.Array | None = None,
    rope: tuple[jax.Array, jax.Array] | None = None,
    mask: jax.Array | None = None,
    causal: bool = False,
    impl: str = "auto",
    eps: float = 1e-6,
    block_sizes: BlockSizes | None = None,
    packed: bool | None = None,
    interpret: bool | None = None,
    mesh: jax.sharding.Mesh | jax.sharding.AbstractMesh | None = None,
) -> jax.Array:
    """Attention by `impl`; differentiable for every impl (norm scales, q, k, v).

    The target platform is that of `mesh` (or the ambient mesh), else the default backend:
    `auto` and `interpret=None` (interpret mode off TPU) follow it, so AOT compilation for
    a TPU topology on a CPU host gets the real Mosaic kernels.
    `mesh` (default: the ambient mesh of `jax.set_mesh`) lets Mosaic kernels, which XLA
    cannot partition, run per shard under `shard_map` (batch over data/fsdp/context,
    heads over tensor).
    """
    platform = target_platform(mesh)
    impl = resolve_impl(impl, platform)
    validate(q, k, v, q_norm_scale=q_norm_scale, k_norm_scale=k_norm_scale, rope=rope, mask=mask)
    common = dict(
        q_norm_scale=q_norm_scale,
        k_norm_scale=k_norm_scale,
        rope=rope,
        mask=mask,
        causal=causal,
        eps=eps,
    )
    if impl == "xla":
        return attention_reference(q, k, v, **common)
    if impl == "cudnn":
        if platform not in ("gpu", "cuda", "rocm"):
            raise ValueError(
                f"attention impl='cudnn' needs a GPU backend; this computation targets "
                f"{platform!r} (use impl='auto' or 'xla')"
            )
        return baselines.dot_product_attention(q, k, v, implementation="cudnn", **common)
    if interpret is None:
        interpret = platform != "tpu"
    if impl == "pallas":
        fn = lambda q, k, v, **kw: pallas_attention(
            q, k, v, block_sizes=block_sizes, packed=packed, interpret=interpret, **kw
        )
    else:
        fn = lambda q, k, v, **kw: baselines.splash_attention(q, k, v, interpret=interpret, **kw)
    return shard_over_batch(fn, q, k, v, mesh=mesh, **common)
