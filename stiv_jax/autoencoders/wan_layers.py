"""Wan-2.1 VAE building blocks, ported from diffusers' `autoencoder_kl_wan.py`, channels-last.

Shapes: B batch, F frames of the current chunk, H/W height/width, D channels.
Every block maps a chunk `[B, F, H, W, D] -> [B, F', H', W', D']`.

Causality in time: a temporal kernel of 3 sees its chunk's frames plus the `CACHE_T` = 2 input
frames before them. `ChunkCache` carries those frames from chunk to chunk (zeros before the
first chunk), which reproduces diffusers' `feat_cache`/`feat_idx` exactly: diffusers pads the
missing past with zeros and stores `x[-2:]`, topped up with the previous cached frame when a
chunk has a single frame — i.e. always the last two frames of `concat(cache, x)`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

CACHE_T = 2  # past frames a temporal kernel of 3 needs


class ChunkCache:
    """Per-conv caches of one chunk, consumed in call order (diffusers' feat_idx).

    `old` is None for the first chunk (every causal conv then sees zeros as its past); `new`
    collects the caches for the next chunk in the same order.
    """

    def __init__(self, old: list[jax.Array] | None):
        self.old = old
        self.new: list[jax.Array] = []

    @property
    def first(self) -> bool:
        return self.old is None

    def take(self) -> jax.Array | None:
        return None if self.old is None else self.old[len(self.new)]

    def put(self, x: jax.Array) -> None:
        self.new.append(x)


def _mk(kw: dict) -> dict:
    return {"dtype": kw["dtype"], "param_dtype": kw["param_dtype"], "rngs": kw["rngs"]}


class CausalConv3d(nnx.Conv):
    """3D conv, zero/cache padding in time on the past side only; `[B, F, H, W, D]` in and out.

    Kernel (kt, kh, kw): spatial padding kh//2, kw//2 both sides; temporal past 2·(kt//2).
    """

    def __init__(self, cin: int, cout: int, kernel, stride=(1, 1, 1), **kw):
        kt, kh, kw_ = (kernel,) * 3 if isinstance(kernel, int) else tuple(kernel)
        super().__init__(
            cin,
            cout,
            (kt, kh, kw_),
            strides=stride,
            padding=((0, 0), (kh // 2, kh // 2), (kw_ // 2, kw_ // 2)),
            **_mk(kw),
        )
        self.time_pad = 2 * (kt // 2)

    def __call__(self, x: jax.Array, cache: ChunkCache | None = None) -> jax.Array:
        if self.time_pad == 0:
            return super().__call__(x)
        assert self.time_pad == CACHE_T
        past = None if cache is None else cache.take()
        if past is None:
            past = jnp.zeros((x.shape[0], CACHE_T, *x.shape[2:]), x.dtype)
        x = jnp.concatenate([past.astype(x.dtype), x], axis=1)
        if cache is not None:
            cache.put(x[:, -CACHE_T:])
        return super().__call__(x)


class RMSNorm(nnx.Module):
    """diffusers `WanRMS_norm`: x / max(‖x‖₂, 1e-12) · √D · γ over channels, in float32."""

    def __init__(self, dim: int):
        self.dim = dim
        self.gamma = nnx.Param(jnp.ones((dim,), jnp.float32))

    def __call__(self, x: jax.Array) -> jax.Array:
        xf = x.astype(jnp.float32)
        norm = jnp.sqrt(jnp.sum(xf * xf, axis=-1, keepdims=True))
        y = xf / jnp.maximum(norm, 1e-12) * (self.dim**0.5) * self.gamma[...]
        return y.astype(x.dtype)


class ResidualBlock(nnx.Module):
    """RMSNorm → SiLU → causal conv (×2) plus a 1×1×1 shortcut when D changes."""

    def __init__(self, in_dim: int, out_dim: int, **kw):
        self.norm1 = RMSNorm(in_dim)
        self.conv1 = CausalConv3d(in_dim, out_dim, 3, **kw)
        self.norm2 = RMSNorm(out_dim)
        self.conv2 = CausalConv3d(out_dim, out_dim, 3, **kw)
        self.conv_shortcut = CausalConv3d(in_dim, out_dim, 1, **kw) if in_dim != out_dim else None

    def __call__(self, x: jax.Array, cache: ChunkCache | None = None) -> jax.Array:
        h = x if self.conv_shortcut is None else self.conv_shortcut(x)
        x = self.conv1(nnx.silu(self.norm1(x)), cache)
        x = self.conv2(nnx.silu(self.norm2(x)), cache)
        return x + h


class AttentionBlock(nnx.Module):
    """Single-head spatial self-attention per frame (S = H·W tokens), residual."""

    def __init__(self, dim: int, **kw):
        self.norm = RMSNorm(dim)
        self.to_qkv = nnx.Linear(dim, 3 * dim, **_mk(kw))
        self.proj = nnx.Linear(dim, dim, **_mk(kw))

    def __call__(self, x: jax.Array, cache: ChunkCache | None = None) -> jax.Array:
        b, f, h, w, d = x.shape
        qkv = self.to_qkv(self.norm(x).reshape(b * f, h * w, d))
        q, k, v = jnp.split(qkv, 3, axis=-1)
        logits = jnp.einsum("bsd,btd->bst", q, k).astype(jnp.float32) / (d**0.5)
        probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
        out = self.proj(jnp.einsum("bst,btd->bsd", probs, v))
        return x + out.reshape(b, f, h, w, d)


class Resample(nnx.Module):
    """diffusers `WanResample`: 2× spatial up/down, optionally 2× temporal up/down.

    upsample3d: a causal (3,1,1) conv doubles the channels, which become two frames per input
    frame; on the first chunk it is skipped (diffusers' "Rep") and its cache starts at zeros.
    downsample3d: a stride-2 (3,1,1) conv over [last frame of previous chunk, chunk]; on the
    first chunk it is skipped and only the last frame is cached.
    """

    MODES = ("upsample2d", "upsample3d", "downsample2d", "downsample3d")

    def __init__(self, dim: int, mode: str, upsample_out_dim: int | None = None, **kw):
        if mode not in self.MODES:
            raise ValueError(f"Resample mode={mode!r}; expected one of {self.MODES}")
        self.mode = mode
        if mode.startswith("up"):
            out = dim // 2 if upsample_out_dim is None else upsample_out_dim
            self.resample_conv = nnx.Conv(dim, out, (3, 3), padding=((1, 1), (1, 1)), **_mk(kw))
        else:
            # diffusers pads right/bottom by one, then a VALID stride-2 conv.
            self.resample_conv = nnx.Conv(
                dim, dim, (3, 3), strides=(2, 2), padding=((0, 1), (0, 1)), **_mk(kw)
            )
        if mode == "upsample3d":
            self.time_conv = CausalConv3d(dim, 2 * dim, (3, 1, 1), **kw)
        elif mode == "downsample3d":
            self.time_conv = nnx.Conv(
                dim, dim, (3, 1, 1), strides=(2, 1, 1), padding="VALID", **_mk(kw)
            )
        else:
            self.time_conv = None

    def __call__(self, x: jax.Array, cache: ChunkCache) -> jax.Array:
        b, f, h, w, d = x.shape
        if self.mode == "upsample3d":
            if cache.first:
                cache.put(jnp.zeros((b, CACHE_T, h, w, d), x.dtype))
            else:
                x = self.time_conv(x, cache)  # [B, F, H, W, 2D]
                x = x.reshape(b, f, h, w, 2, d).transpose(0, 1, 4, 2, 3, 5)
                x = x.reshape(b, 2 * f, h, w, d)
        f = x.shape[1]
        y = x.reshape(b * f, h, w, d)
        if self.mode.startswith("up"):
            # nearest(-exact) ×2, identical for an integer factor
            y = jnp.repeat(jnp.repeat(y, 2, axis=1), 2, axis=2)
        y = self.resample_conv(y)
        x = y.reshape(b, f, *y.shape[1:])
        if self.mode == "downsample3d":
            past = cache.take()
            cache.put(x[:, -1:])
            if past is not None:
                x = self.time_conv(jnp.concatenate([past, x], axis=1))
        return x


class MidBlock(nnx.Module):
    """Residual → attention → residual, at the lowest resolution."""

    def __init__(self, dim: int, **kw):
        self.resnets = nnx.List([ResidualBlock(dim, dim, **kw), ResidualBlock(dim, dim, **kw)])
        self.attentions = nnx.List([AttentionBlock(dim, **kw)])

    def __call__(self, x: jax.Array, cache: ChunkCache) -> jax.Array:
        x = self.resnets[0](x, cache)
        x = self.attentions[0](x)
        return self.resnets[1](x, cache)
