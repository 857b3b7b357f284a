"""Wan-2.1 causal 3D VAE (diffusers `AutoencoderKLWan` layout) behind the autoencoder interface.

Shapes: B batch, T video frames, F = 1 + (T-1)/4 latent frames, H/W pixels, h/w = H/8, W/8,
C = z_dim latent channels.
  encode(video [B, T, H, W, 3] in [-1, 1]) -> latents [B, F, h, w, C], (mu - mean) / std
  decode(latents [B, F, h, w, C]) -> video [B, T, H, W, 3] clipped to [-1, 1]
Chunked exactly as diffusers: encode sees frame 0 alone, then chunks of 4 frames; decode one
latent frame at a time; causal convs carry their past through `ChunkCache`. Each chunk shape
is jitted once, so memory is bounded by one chunk whatever T is.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from stiv_jax.autoencoders import diffusers_dir
from stiv_jax.autoencoders.geometry import LatentGeometry
from stiv_jax.autoencoders.wan_layers import (
    AttentionBlock,
    CausalConv3d,
    ChunkCache,
    MidBlock,
    Resample,
    ResidualBlock,
    RMSNorm,
)
from stiv_jax.weights import Rule, load_into

# diffusers' AutoencoderKLWan defaults, for keys a config.json leaves out.
DEFAULTS = {
    "base_dim": 96,
    "decoder_base_dim": None,
    "z_dim": 16,
    "dim_mult": [1, 2, 4, 4],
    "num_res_blocks": 2,
    "attn_scales": [],
    "temperal_downsample": [False, True, True],
    "is_residual": False,
    "in_channels": 3,
    "out_channels": 3,
    "patch_size": None,
}


class Encoder3d(nnx.Module):
    """[B, F, H, W, 3] chunk -> [B, F', H/s, W/s, 2C] (mean, logvar) moments before quant_conv."""

    def __init__(self, dim, z_dim, dim_mult, num_res_blocks, attn_scales, temperal_down, **kw):
        dims = [dim * u for u in [1, *dim_mult]]
        self.conv_in = CausalConv3d(3, dims[0], 3, **kw)
        blocks, scale = [], 1.0
        for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
            for _ in range(num_res_blocks):
                blocks.append(ResidualBlock(in_dim, out_dim, **kw))
                if scale in attn_scales:
                    blocks.append(AttentionBlock(out_dim, **kw))
                in_dim = out_dim
            if i != len(dim_mult) - 1:
                mode = "downsample3d" if temperal_down[i] else "downsample2d"
                blocks.append(Resample(out_dim, mode, **kw))
                scale /= 2.0
        self.down_blocks = nnx.List(blocks)
        self.mid_block = MidBlock(dims[-1], **kw)
        self.norm_out = RMSNorm(dims[-1])
        self.conv_out = CausalConv3d(dims[-1], z_dim, 3, **kw)

    def __call__(self, x: jax.Array, cache: ChunkCache) -> jax.Array:
        x = self.conv_in(x, cache)
        for layer in self.down_blocks:
            x = layer(x, cache)
        x = self.mid_block(x, cache)
        return self.conv_out(nnx.silu(self.norm_out(x)), cache)


class UpBlock(nnx.Module):
    """num_res_blocks + 1 residual blocks, then an optional `Resample` (diffusers WanUpBlock)."""

    def __init__(self, in_dim, out_dim, num_res_blocks, mode, **kw):
        dims = [in_dim] + [out_dim] * num_res_blocks
        self.resnets = nnx.List([ResidualBlock(d, out_dim, **kw) for d in dims])
        self.upsamplers = None if mode is None else nnx.List([Resample(out_dim, mode, **kw)])

    def __call__(self, x: jax.Array, cache: ChunkCache) -> jax.Array:
        for resnet in self.resnets:
            x = resnet(x, cache)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x, cache)
        return x


class Decoder3d(nnx.Module):
    """[B, 1, h, w, C] latent frame -> [B, 1 or 4, H, W, 3] (first frame -> 1 frame)."""

    def __init__(self, dim, z_dim, dim_mult, num_res_blocks, temperal_up, **kw):
        dims = [dim * u for u in [dim_mult[-1], *dim_mult[::-1]]]
        self.conv_in = CausalConv3d(z_dim, dims[0], 3, **kw)
        self.mid_block = MidBlock(dims[0], **kw)
        blocks = []
        for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
            if i > 0:
                in_dim //= 2  # Wan 2.1: each Resample upsampler halves the channels
            mode = None
            if i != len(dim_mult) - 1:
                mode = "upsample3d" if temperal_up[i] else "upsample2d"
            blocks.append(UpBlock(in_dim, out_dim, num_res_blocks, mode, **kw))
        self.up_blocks = nnx.List(blocks)
        self.norm_out = RMSNorm(dims[-1])
        self.conv_out = CausalConv3d(dims[-1], 3, 3, **kw)

    def __call__(self, x: jax.Array, cache: ChunkCache) -> jax.Array:
        x = self.conv_in(x, cache)
        x = self.mid_block(x, cache)
        for block in self.up_blocks:
            x = block(x, cache)
        return self.conv_out(nnx.silu(self.norm_out(x)), cache)


class WanVAEModel(nnx.Module):
    """encoder, quant_conv, post_quant_conv, decoder: the parameter tree of the checkpoint."""

    def __init__(self, config: dict, *, dtype, param_dtype, rngs: nnx.Rngs):
        c = {**DEFAULTS, **config}
        kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
        z = c["z_dim"]
        down = list(c["temperal_downsample"])
        self.encoder = Encoder3d(
            c["base_dim"], 2 * z, c["dim_mult"], c["num_res_blocks"], c["attn_scales"], down, **kw
        )
        self.quant_conv = CausalConv3d(2 * z, 2 * z, 1, **kw)
        self.post_quant_conv = CausalConv3d(z, z, 1, **kw)
        self.decoder = Decoder3d(
            c["decoder_base_dim"] or c["base_dim"],
            z,
            c["dim_mult"],
            c["num_res_blocks"],
            down[::-1],
            **kw,
        )


NAME_MAP = [
    Rule(r"(.*)\.resample_conv\.kernel", r"\1.resample.1.weight", "conv2d"),
    Rule(r"(.*)\.resample_conv\.bias", r"\1.resample.1.bias"),
    # 1×1 Conv2d [O, I, 1, 1] used as a Linear [I, O]
    Rule(r"(.*)\.(to_qkv|proj)\.kernel", r"\1.\2.weight", lambda w: w[:, :, 0, 0].T),
    Rule(r"(.*)\.gamma", r"\1.gamma", lambda w: w.reshape(-1)),
    Rule(r"(.*)\.kernel", r"\1.weight", "conv3d"),
    Rule(r"(.*)\.bias", r"\1.bias"),
]


def check_config(config: dict) -> dict:
    """Refuses configs outside Wan 2.1 with one line naming the value; returns merged config."""
    c = {**DEFAULTS, **config}
    if c["is_residual"]:
        raise ValueError("Wan VAE is_residual=True (Wan 2.2 layout) is unsupported; expected False")
    if c["patch_size"] not in (None, 1):
        raise ValueError(f"Wan VAE patch_size={c['patch_size']} is unsupported; expected None")
    if c["in_channels"] != 3 or c["out_channels"] != 3:
        raise ValueError(
            f"Wan VAE in/out_channels={c['in_channels']}/{c['out_channels']}; expected 3/3"
        )
    down = list(c["temperal_downsample"])
    if len(down) != len(c["dim_mult"]) - 1 or sum(map(bool, down)) != 2:
        raise ValueError(
            f"Wan VAE temperal_downsample={down} with dim_mult={c['dim_mult']}: expected "
            "len(dim_mult)-1 entries with exactly two True (4x temporal; chunking assumes it)"
        )
    for key in ("latents_mean", "latents_std"):
        if key not in c or len(c[key]) != c["z_dim"]:
            raise ValueError(f"Wan VAE config needs {key} with z_dim={c['z_dim']} values")
    return c


class WanAutoencoder:
    """The stiv_jax autoencoder interface over `WanVAEModel` (see the module docstring)."""

    # Wan 2.1: causal 4x temporal, 8x spatial, 16 channels; a directory's config.json rules.
    GEOMETRY = LatentGeometry(temporal_factor=4, spatial_factor=8, channels=16, causal=True)
    temporal_factor = 4

    @classmethod
    def geometry_of(cls, config: dict | None = None) -> LatentGeometry:
        """Geometry of a diffusers AutoencoderKLWan config.json (the class default for None)."""
        if config is None:
            return cls.GEOMETRY
        c = {**DEFAULTS, **config}
        return LatentGeometry(4, 2 ** (len(c["dim_mult"]) - 1), int(c["z_dim"]), causal=True)

    def __init__(
        self,
        config: dict,
        *,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        seed: int | None = 0,
    ):
        """Random weights from `seed` (benchmarks); seed=None leaves them for the loader."""
        self.config = check_config(config)
        self.geometry = self.geometry_of(self.config)
        self.latent_channels = self.geometry.channels
        self.spatial_factor = self.geometry.spatial_factor
        self.model = diffusers_dir.build_abstract(
            lambda: WanVAEModel(self.config, dtype=dtype, param_dtype=param_dtype, rngs=nnx.Rngs(0))
        )
        if seed is not None:
            diffusers_dir.random_fill(self.model, seed, param_dtype)
        self.dtype = jnp.dtype(dtype)
        self.mean = jnp.asarray(self.config["latents_mean"], jnp.float32)
        self.std = jnp.asarray(self.config["latents_std"], jnp.float32)
        self._split()

    def _split(self) -> None:
        graphdef, self.state = nnx.split(self.model)

        def enc(state, x, cache):
            model = nnx.merge(graphdef, state)
            c = ChunkCache(cache)
            return model.quant_conv(model.encoder(x, c)), c.new

        def dec(state, z, cache):
            model = nnx.merge(graphdef, state)
            c = ChunkCache(cache)
            return model.decoder(model.post_quant_conv(z), c), c.new

        # One compile for the first chunk (cache None) and one for all later chunks.
        self.encode_step = jax.jit(enc)
        self.decode_step = jax.jit(dec)

    @classmethod
    def from_pretrained(cls, path: str, *, dtype=jnp.float32, param_dtype=jnp.float32):
        """Loads a diffusers `AutoencoderKLWan` directory (config.json + safetensors)."""
        path = diffusers_dir.resolve_dir(path)
        ae = cls(
            diffusers_dir.read_config(path, "AutoencoderKLWan"),
            dtype=dtype,
            param_dtype=param_dtype,
            seed=None,
        )
        load_into(ae.model, diffusers_dir.read_weights(path), NAME_MAP)
        ae._split()
        return ae

    def latent_shape(self, t: int, h: int, w: int) -> tuple[int, int, int, int]:
        return self.geometry.latent_shape(t, h, w)

    def encode(self, video: jax.Array, rng: jax.Array | None = None) -> jax.Array:
        """Normalised latents `(mu - mean) / std`; a posterior sample instead of mu if `rng`."""
        diffusers_dir.check_video(video, self.spatial_factor, "WanAutoencoder")
        t = video.shape[1]
        self.latent_shape(t, *video.shape[2:4])
        x = jnp.asarray(video, self.dtype)
        out, cache = self.encode_step(self.state, x[:, :1], None)
        outs = [out]
        for i in range(1, t, 4):
            out, cache = self.encode_step(self.state, x[:, i : i + 4], cache)
            outs.append(out)
        mu = diffusers_dir.posterior(jnp.concatenate(outs, axis=1).astype(jnp.float32), rng)
        return (mu - self.mean) / self.std

    def decode(self, latents: jax.Array) -> jax.Array:
        if latents.ndim != 5 or latents.shape[-1] != self.latent_channels:
            raise ValueError(
                f"WanAutoencoder.decode: latents shape {latents.shape}, expected "
                f"[B, F, h, w, {self.latent_channels}]"
            )
        z = (jnp.asarray(latents, jnp.float32) * self.std + self.mean).astype(self.dtype)
        cache, outs = None, []
        for i in range(z.shape[1]):
            out, cache = self.decode_step(self.state, z[:, i : i + 1], cache)
            outs.append(out)
        return jnp.clip(jnp.concatenate(outs, axis=1).astype(jnp.float32), -1.0, 1.0)


def param_count(ae: WanAutoencoder) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(nnx.state(ae.model, nnx.Param))))
