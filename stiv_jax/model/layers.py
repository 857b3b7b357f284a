"""Small layers shared by the STIV blocks.

Shapes: B batch, D width. Norms and sinusoidal embeddings compute in float32 and return the
input's dtype (norms) or float32 (embeddings).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from flax import nnx

from stiv_jax.kernels.prologue import rms_norm

# Logical axis names: stiv_jax.parallel.rules maps them to mesh axes.
EMBED, MLP_AXIS, HEADS = "embed", "mlp", "heads"


def partitioned(init, axes: tuple[str | None, ...]):
    """`init` with logical axis names; never sharded eagerly at creation (the names are
    logical, not mesh axes: `stiv_jax.parallel` places the parameters)."""
    return nnx.with_partitioning(init, axes, eager_sharding=False)


class Dense(nnx.Linear):
    """nnx.Linear on [..., Din] computed as one 2-D GEMM [N, Din] @ [Din, Dout].

    XLA:CPU lowers the weight gradient of a matmul over a 3-D/4-D input (contracting the
    leading dims) to a slow non-GEMM loop: the S train step spent 2.5 s of its 2.8 s there
    (docs/quality.md). Flattening the leading dims first makes both passes plain GEMMs;
    the parameters and the result are the same.
    """

    def __call__(self, x: jax.Array) -> jax.Array:
        lead = x.shape[:-1]
        y = super().__call__(x.reshape(-1, x.shape[-1]))
        return y.reshape(*lead, y.shape[-1])


def dense(
    din: int,
    dout: int,
    axes: tuple[str | None, str | None],
    *,
    rngs: nnx.Rngs,
    dtype,
    param_dtype,
    kernel_init=None,
) -> nnx.Linear:
    """nnx.Linear with logical partitioning; xavier-uniform kernel unless `kernel_init`
    (special initialisation is `stiv.initialize_weights`'s job), zero bias."""
    init = kernel_init or nnx.initializers.xavier_uniform()
    return Dense(
        din,
        dout,
        kernel_init=partitioned(init, axes),
        bias_init=partitioned(nnx.initializers.zeros_init(), (axes[1],)),
        dtype=dtype,
        param_dtype=param_dtype,
        rngs=rngs,
    )


def layer_norm(x: jax.Array, eps: float = 1e-6) -> jax.Array:
    """Stateless LayerNorm (no scale, no bias), float32 statistics."""
    xf = x.astype(jnp.float32)
    mean = jnp.mean(xf, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(xf - mean), axis=-1, keepdims=True)
    return ((xf - mean) * jax.lax.rsqrt(var + eps)).astype(x.dtype)


def modulate(x: jax.Array, shift: jax.Array, scale: jax.Array) -> jax.Array:
    return x * (1 + scale) + shift


def _sum_to(x: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Sum x over the axes that `shape` broadcasts along (the reverse of broadcasting)."""
    full = (1,) * (x.ndim - len(shape)) + tuple(shape)
    axes = tuple(i for i, (a, b) in enumerate(zip(x.shape, full)) if b == 1 and a != 1)
    return jnp.sum(x, axis=axes, keepdims=True).reshape(shape)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def layer_norm_modulate(
    x: jax.Array, shift: jax.Array, scale: jax.Array, eps: float = 1e-6
) -> jax.Array:
    """`modulate(layer_norm(x), shift, scale)` with a hand-written backward.

    x [..., D]; shift/scale broadcastable to x (e.g. [B, 1, 1, D]).
    The backward reads x once more and makes two row reductions (mean of g and of g·x̂)
    instead of autodiff's chain through mean, variance and the broadcasts.
    """
    return _ln_mod_fwd(x, shift, scale, eps)[0]


def _ln_stats(x, eps):
    xf = x.astype(jnp.float32)
    mean = jnp.mean(xf, axis=-1, keepdims=True)
    inv = jax.lax.rsqrt(jnp.mean(jnp.square(xf - mean), axis=-1, keepdims=True) + eps)
    return xf, mean, inv


def _ln_mod_fwd(x, shift, scale, eps):
    xf, mean, inv = _ln_stats(x, eps)
    y = (xf - mean) * inv * (1 + scale.astype(jnp.float32)) + shift.astype(jnp.float32)
    return y.astype(x.dtype), (x, mean, inv, shift, scale)


def _ln_input_grad(g, xhat, inv):
    """d/dx of a stateless LayerNorm whose output x̂ gets the cotangent g (float32 rows)."""
    return inv * (g - jnp.mean(g, -1, keepdims=True) - xhat * jnp.mean(g * xhat, -1, keepdims=True))


def _ln_mod_bwd(eps, res, dy):
    x, mean, inv, shift, scale = res
    dy = dy.astype(jnp.float32)
    xhat = (x.astype(jnp.float32) - mean) * inv
    g = dy * (1 + scale.astype(jnp.float32))
    dx = _ln_input_grad(g, xhat, inv)
    dscale = _sum_to(dy * xhat, scale.shape).astype(scale.dtype)
    dshift = _sum_to(dy, shift.shape).astype(shift.dtype)
    return dx.astype(x.dtype), dshift, dscale


layer_norm_modulate.defvjp(_ln_mod_fwd, _ln_mod_bwd)


def layer_norm_modulate_reference(x, shift, scale, eps: float = 1e-6) -> jax.Array:
    """The plain composition `layer_norm_modulate` computes (autodiff backward)."""
    return modulate(layer_norm(x, eps), shift, scale)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def add_gated_layer_norm(
    x: jax.Array, y: jax.Array, gate: jax.Array, eps: float = 1e-6
) -> jax.Array:
    """`x + gate · layer_norm(y)`: a sandwich sub-layer's output half with a hand-written
    backward (the same two row reductions as `layer_norm_modulate`'s).

    x, y [..., D] (the residual stream and the sub-layer's output); gate broadcastable to
    them (e.g. [B, 1, 1, D]; ones of shape [1, ..., 1] for an ungated sub-layer).
    """
    return _add_gated_fwd(x, y, gate, eps)[0]


def _add_gated_fwd(x, y, gate, eps):
    yf, mean, inv = _ln_stats(y, eps)
    out = x.astype(jnp.float32) + gate.astype(jnp.float32) * ((yf - mean) * inv)
    return out.astype(x.dtype), (y, mean, inv, gate)


def _add_gated_bwd(eps, res, dout):
    y, mean, inv, gate = res  # dout has x's dtype (the output's), so it is x's gradient as is
    d = dout.astype(jnp.float32)
    yhat = (y.astype(jnp.float32) - mean) * inv
    dy = _ln_input_grad(d * gate.astype(jnp.float32), yhat, inv)
    dgate = _sum_to(d * yhat, gate.shape).astype(gate.dtype)
    return dout, dy.astype(y.dtype), dgate


add_gated_layer_norm.defvjp(_add_gated_fwd, _add_gated_bwd)


def add_gated_layer_norm_reference(x, y, gate, eps: float = 1e-6) -> jax.Array:
    """The plain composition `add_gated_layer_norm` computes (autodiff backward)."""
    return x + gate * layer_norm(y, eps)


class RMSNorm(nnx.Module):
    """RMSNorm over the last axis with a learned scale [dim] (QK-norm uses dim = H).

    The maths is `stiv_jax.kernels.prologue.rms_norm`, the one formula every attention
    kernel fuses."""

    def __init__(self, dim: int, *, param_dtype=jnp.float32, eps: float = 1e-6, init: float = 1.0):
        self.scale = nnx.Param(jnp.full((dim,), init, param_dtype))
        self.eps = eps

    def __call__(self, x: jax.Array) -> jax.Array:
        return rms_norm(x, self.scale[...], self.eps).astype(x.dtype)


class MLP(nnx.Module):
    """x [..., D] -> [..., D] with hidden width `hidden`, tanh-GELU."""

    def __init__(self, dim: int, hidden: int, *, rngs: nnx.Rngs, dtype, param_dtype, dout=None):
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.fc1 = dense(dim, hidden, (EMBED, MLP_AXIS), **kw)
        self.fc2 = dense(hidden, dout or dim, (MLP_AXIS, EMBED), **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fc2(jax.nn.gelu(self.fc1(x), approximate=True))


def sinusoidal(x: jax.Array, dim: int, max_period: float = 10000.0) -> jax.Array:
    """x [...] -> [..., dim] float32 (cos, sin) features, as in DiT's timestep embedder."""
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    args = x.astype(jnp.float32)[..., None] * freqs
    return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


class ScalarEmbedder(nnx.Module):
    """k scalars per sample [B, k] -> [B, D]: sinusoidal features of each, concat, MLP.

    `scale` maps the scalar's natural range onto the sinusoid's (t in [0,1] -> ×1000).
    """

    def __init__(
        self, k: int, dim: int, *, freq_dim: int, scale: float, rngs, dtype, param_dtype,
        kernel_init=None,
    ):  # fmt: skip
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype, kernel_init=kernel_init)
        self.freq_dim, self.scale = freq_dim, scale
        self.fc1 = dense(k * freq_dim, dim, (None, EMBED), **kw)
        self.fc2 = dense(dim, dim, (EMBED, None), **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        f = sinusoidal(x * self.scale, self.freq_dim)  # [B, k, freq]
        f = f.reshape(*f.shape[:-2], -1)
        return self.fc2(jax.nn.silu(self.fc1(f)))
