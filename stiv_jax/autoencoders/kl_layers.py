"""SD `AutoencoderKL` encoder/decoder (diffusers `vae.py` Encoder/Decoder), channels-last images.

Shapes: B images (video frames folded into batch), H/W height/width, D channels,
S = H·W attention tokens, C latent channels, s = 2**(len(block_out_channels) - 1).
  Encoder: [B, H, W, 3] -> [B, H/s, W/s, 2C] moments (mean, logvar)
  Decoder: [B, H/s, W/s, C] -> [B, H, W, 3]
Attribute names follow diffusers' so checkpoint keys map one to one.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

EPS = 1e-6  # diffusers builds every VAE norm with resnet_eps=1e-6


def _mk(kw: dict) -> dict:
    return {"dtype": kw["dtype"], "param_dtype": kw["param_dtype"], "rngs": kw["rngs"]}


def conv3x3(cin: int, cout: int, stride: int = 1, **kw) -> nnx.Conv:
    # stride 2 is diffusers' Downsample2D(padding=0): pad right/bottom by one, VALID conv
    pad = ((1, 1), (1, 1)) if stride == 1 else ((0, 1), (0, 1))
    return nnx.Conv(cin, cout, (3, 3), strides=(stride, stride), padding=pad, **_mk(kw))


class GroupNorm(nnx.Module):
    """torch.nn.GroupNorm over [..., D] in float32 (two-pass variance, as torch)."""

    def __init__(self, groups: int, dim: int):
        if dim % groups:
            raise ValueError(f"norm_num_groups={groups} must divide channel count {dim}")
        self.groups = groups
        self.scale = nnx.Param(jnp.ones((dim,), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((dim,), jnp.float32))

    def __call__(self, x: jax.Array) -> jax.Array:
        b, *space, d = x.shape
        xg = x.astype(jnp.float32).reshape(b, -1, self.groups, d // self.groups)
        mean = jnp.mean(xg, axis=(1, 3), keepdims=True)
        var = jnp.mean(jnp.square(xg - mean), axis=(1, 3), keepdims=True)
        y = ((xg - mean) * jax.lax.rsqrt(var + EPS)).reshape(b, *space, d)
        return (y * self.scale[...] + self.bias[...]).astype(x.dtype)


class ResnetBlock2D(nnx.Module):
    """GroupNorm → SiLU → conv3x3 (×2), 1×1 conv shortcut when D changes."""

    def __init__(self, cin: int, cout: int, groups: int, **kw):
        self.norm1 = GroupNorm(groups, cin)
        self.conv1 = conv3x3(cin, cout, **kw)
        self.norm2 = GroupNorm(groups, cout)
        self.conv2 = conv3x3(cout, cout, **kw)
        self.conv_shortcut = nnx.Conv(cin, cout, (1, 1), **_mk(kw)) if cin != cout else None

    def __call__(self, x: jax.Array) -> jax.Array:
        h = self.conv1(nnx.silu(self.norm1(x)))
        h = self.conv2(nnx.silu(self.norm2(h)))
        return (x if self.conv_shortcut is None else self.conv_shortcut(x)) + h


class Attention(nnx.Module):
    """Single-head self-attention over S = H·W tokens with a GroupNorm in front, residual."""

    def __init__(self, dim: int, groups: int, **kw):
        self.group_norm = GroupNorm(groups, dim)
        self.to_q = nnx.Linear(dim, dim, **_mk(kw))
        self.to_k = nnx.Linear(dim, dim, **_mk(kw))
        self.to_v = nnx.Linear(dim, dim, **_mk(kw))
        self.to_out = nnx.Linear(dim, dim, **_mk(kw))

    def __call__(self, x: jax.Array) -> jax.Array:
        b, h, w, d = x.shape
        y = self.group_norm(x).reshape(b, h * w, d)
        q, k, v = self.to_q(y), self.to_k(y), self.to_v(y)
        logits = jnp.einsum("bsd,btd->bst", q, k).astype(jnp.float32) / (d**0.5)
        probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)  # upcast_softmax=True
        out = self.to_out(jnp.einsum("bst,btd->bsd", probs, v))
        return x + out.reshape(b, h, w, d)


class MidBlock2D(nnx.Module):
    """resnet → attention (optional) → resnet (diffusers UNetMidBlock2D, temb=None)."""

    def __init__(self, dim: int, groups: int, add_attention: bool, **kw):
        self.resnets = nnx.List([ResnetBlock2D(dim, dim, groups, **kw) for _ in range(2)])
        self.attentions = nnx.List([Attention(dim, groups, **kw)]) if add_attention else None

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.resnets[0](x)
        if self.attentions is not None:
            x = self.attentions[0](x)
        return self.resnets[1](x)


class Sampler(nnx.Module):
    """diffusers Downsample2D / Upsample2D with use_conv=True: the conv is named `conv`."""

    def __init__(self, dim: int, up: bool, **kw):
        self.up = up
        self.conv = conv3x3(dim, dim, stride=1 if up else 2, **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.up:  # nearest ×2
            x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
        return self.conv(x)


class Block(nnx.Module):
    """DownEncoderBlock2D / UpDecoderBlock2D: resnets, then an optional sampler."""

    def __init__(self, cin: int, cout: int, layers: int, groups: int, sampler: str | None, **kw):
        dims = [cin] + [cout] * (layers - 1)
        self.resnets = nnx.List([ResnetBlock2D(d, cout, groups, **kw) for d in dims])
        s = None if sampler is None else nnx.List([Sampler(cout, sampler == "up", **kw)])
        # diffusers' attribute names differ between the two block kinds
        self.downsamplers = s if sampler == "down" else None
        self.upsamplers = s if sampler == "up" else None

    def __call__(self, x: jax.Array) -> jax.Array:
        for resnet in self.resnets:
            x = resnet(x)
        for sampler in (self.downsamplers, self.upsamplers):
            if sampler is not None:
                x = sampler[0](x)
        return x


class Encoder(nnx.Module):
    def __init__(self, block_out, layers, groups, latent_channels, mid_attention, **kw):
        self.conv_in = conv3x3(3, block_out[0], **kw)
        blocks, cout = [], block_out[0]
        for i, c in enumerate(block_out):
            last = i == len(block_out) - 1
            blocks.append(Block(cout, c, layers, groups, None if last else "down", **kw))
            cout = c
        self.down_blocks = nnx.List(blocks)
        self.mid_block = MidBlock2D(cout, groups, mid_attention, **kw)
        self.conv_norm_out = GroupNorm(groups, cout)
        self.conv_out = conv3x3(cout, 2 * latent_channels, **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.conv_in(x)
        for block in self.down_blocks:
            x = block(x)
        x = self.mid_block(x)
        return self.conv_out(nnx.silu(self.conv_norm_out(x)))


class Decoder(nnx.Module):
    def __init__(self, block_out, layers, groups, latent_channels, mid_attention, **kw):
        rev = list(block_out)[::-1]
        self.conv_in = conv3x3(latent_channels, rev[0], **kw)
        self.mid_block = MidBlock2D(rev[0], groups, mid_attention, **kw)
        blocks, cin = [], rev[0]
        for i, c in enumerate(rev):
            last = i == len(rev) - 1
            blocks.append(Block(cin, c, layers + 1, groups, None if last else "up", **kw))
            cin = c
        self.up_blocks = nnx.List(blocks)
        self.conv_norm_out = GroupNorm(groups, rev[-1])
        self.conv_out = conv3x3(rev[-1], 3, **kw)

    def __call__(self, z: jax.Array) -> jax.Array:
        x = self.mid_block(self.conv_in(z))
        for block in self.up_blocks:
            x = block(x)
        return self.conv_out(nnx.silu(self.conv_norm_out(x)))
