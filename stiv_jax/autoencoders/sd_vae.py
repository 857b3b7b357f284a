"""SD `AutoencoderKL` (diffusers layout) applied frame by frame, behind the autoencoder interface.

Shapes: B batch, T frames (= F latent frames), H/W pixels, h/w = H/s, W/s with
s = 2**(len(block_out_channels) - 1) (8 for SD), C latent channels (4 for SD).
  encode(video [B, T, H, W, 3] in [-1, 1]) -> latents [B, T, h, w, C]
      latents = (posterior mean - shift) · scaling_factor / std   (a sample instead if `rng`)
      shift = config latents_mean (per channel) if set, else shift_factor, else 0;
      std = config latents_std if set, else 1 — the diffusers pipelines' conventions.
  decode(latents [B, T, h, w, C]) -> video [B, T, H, W, 3] clipped to [-1, 1]
Frames fold into the batch and run `chunk` images per jitted call (the last chunk is padded to
the same shape), so memory is bounded by one chunk and each shape compiles once.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from stiv_jax.autoencoders import diffusers_dir
from stiv_jax.autoencoders.geometry import LatentGeometry
from stiv_jax.autoencoders.kl_layers import Decoder, Encoder
from stiv_jax.weights import Rule, load_into

DEFAULTS = {
    "in_channels": 3,
    "out_channels": 3,
    "block_out_channels": [64],
    "layers_per_block": 1,
    "latent_channels": 4,
    "norm_num_groups": 32,
    "act_fn": "silu",
    "scaling_factor": 0.18215,
    "shift_factor": None,
    "use_quant_conv": True,
    "use_post_quant_conv": True,
    "mid_block_add_attention": True,
}


class KLModel(nnx.Module):
    """encoder, quant_conv, post_quant_conv, decoder: the checkpoint's parameter tree."""

    def __init__(self, c: dict, *, dtype, param_dtype, rngs: nnx.Rngs):
        kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
        args = (
            list(c["block_out_channels"]),
            c["layers_per_block"],
            c["norm_num_groups"],
            c["latent_channels"],
            c["mid_block_add_attention"],
        )
        lat = c["latent_channels"]
        self.encoder = Encoder(*args, **kw)
        self.decoder = Decoder(*args, **kw)
        self.quant_conv = nnx.Conv(2 * lat, 2 * lat, (1, 1), **kw) if c["use_quant_conv"] else None
        self.post_quant_conv = (
            nnx.Conv(lat, lat, (1, 1), **kw) if c["use_post_quant_conv"] else None
        )


NAME_MAP = [
    Rule(r"(.*)\.to_out\.kernel", r"\1.to_out.0.weight", "linear"),
    Rule(r"(.*)\.to_out\.bias", r"\1.to_out.0.bias"),
    Rule(r"(.*)\.(to_q|to_k|to_v)\.kernel", r"\1.\2.weight", "linear"),
    Rule(r"(.*)\.scale", r"\1.weight"),
    Rule(r"(.*)\.kernel", r"\1.weight", "conv2d"),
    Rule(r"(.*)\.bias", r"\1.bias"),
]

# Checkpoints saved before diffusers 0.14 (e.g. the original sd-vae-ft-mse upload) name the
# mid-block attention like the old AttentionBlock, sometimes with 1×1-conv weight shapes.
_LEGACY = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def rename_legacy(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {}
    for key, w in tensors.items():
        parts = key.split(".")
        if len(parts) >= 2 and "attentions" in parts and parts[-2] in _LEGACY:
            key = ".".join([*parts[:-2], _LEGACY[parts[-2]], parts[-1]])
            w = w.reshape(w.shape[:2]) if w.ndim == 4 else w
        out[key] = w
    return out


def check_config(config: dict) -> dict:
    """Refuses configs this port does not cover with one line naming the value."""
    c = {**DEFAULTS, **config}
    n = len(c["block_out_channels"])
    for key, want in (
        ("down_block_types", "DownEncoderBlock2D"),
        ("up_block_types", "UpDecoderBlock2D"),
    ):
        got = list(c.get(key, [want] * n))
        if got != [want] * n:
            raise ValueError(f"AutoencoderKL {key}={got}; expected {n} x {want!r}")
    if c["act_fn"] != "silu" or c["in_channels"] != 3 or c["out_channels"] != 3:
        raise ValueError(
            f"AutoencoderKL act_fn={c['act_fn']!r}, in/out_channels={c['in_channels']}/"
            f"{c['out_channels']}; expected 'silu', 3/3"
        )
    return c


class SDAutoencoder:
    """The stiv_jax autoencoder interface over `KLModel` (see the module docstring)."""

    # SD 1.x/2.x/XL: 4 block levels (8x down), 4 channels; a directory's config.json rules.
    GEOMETRY = LatentGeometry(temporal_factor=1, spatial_factor=8, channels=4)
    temporal_factor = 1

    @classmethod
    def geometry_of(cls, config: dict | None = None) -> LatentGeometry:
        """Geometry of a diffusers AutoencoderKL config.json (the class default for None)."""
        if config is None:
            return cls.GEOMETRY
        c = {**DEFAULTS, **config}
        return LatentGeometry(1, 2 ** (len(c["block_out_channels"]) - 1), int(c["latent_channels"]))

    def __init__(
        self,
        config: dict,
        *,
        chunk: int = 8,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        seed: int | None = 0,
    ):
        """Random weights from `seed` (benchmarks); seed=None leaves them for the loader."""
        if chunk < 1:
            raise ValueError(f"autoencoder.chunk={chunk}; expected a positive frame count")
        self.config = c = check_config(config)
        self.chunk = chunk
        self.geometry = self.geometry_of(c)
        self.latent_channels = self.geometry.channels
        self.spatial_factor = self.geometry.spatial_factor
        self.scaling = float(c["scaling_factor"])
        lat = self.latent_channels
        mean, std = c.get("latents_mean"), c.get("latents_std")
        if (mean is None) != (std is None) or (
            mean is not None and (len(mean), len(std)) != (lat, lat)
        ):
            raise ValueError(
                f"AutoencoderKL latents_mean={mean}, latents_std={std}: expected both null or "
                f"both {lat} values"
            )
        self.shift = jnp.asarray(
            mean if mean is not None else c["shift_factor"] or 0.0, jnp.float32
        )
        self.std = jnp.asarray(std if std is not None else 1.0, jnp.float32)
        self.dtype = jnp.dtype(dtype)
        self.model = diffusers_dir.build_abstract(
            lambda: KLModel(c, dtype=dtype, param_dtype=param_dtype, rngs=nnx.Rngs(0))
        )
        if seed is not None:
            diffusers_dir.random_fill(self.model, seed, param_dtype)
        self._split()

    def _split(self) -> None:
        graphdef, self.state = nnx.split(self.model)

        def enc(state, x):
            model = nnx.merge(graphdef, state)
            h = model.encoder(x)
            return h if model.quant_conv is None else model.quant_conv(h)

        def dec(state, z):
            model = nnx.merge(graphdef, state)
            z = z if model.post_quant_conv is None else model.post_quant_conv(z)
            return model.decoder(z)

        self.encode_step = jax.jit(enc)  # [N, H, W, 3] -> [N, h, w, 2C] moments
        self.decode_step = jax.jit(dec)  # [N, h, w, C] -> [N, H, W, 3], unclipped

    @classmethod
    def from_pretrained(
        cls, path: str, *, chunk: int = 8, dtype=jnp.float32, param_dtype=jnp.float32
    ):
        """Loads a diffusers `AutoencoderKL` directory (config.json + safetensors)."""
        path = diffusers_dir.resolve_dir(path)
        config = diffusers_dir.read_config(path, "AutoencoderKL")
        ae = cls(config, chunk=chunk, dtype=dtype, param_dtype=param_dtype, seed=None)
        load_into(ae.model, rename_legacy(diffusers_dir.read_weights(path)), NAME_MAP)
        ae._split()
        return ae

    def latent_shape(self, t: int, h: int, w: int) -> tuple[int, int, int, int]:
        return self.geometry.latent_shape(t, h, w)

    def _chunked(self, step, x: jax.Array) -> jax.Array:
        """Runs `step` over [N, ...] in chunks of `self.chunk` (last one padded)."""
        n = x.shape[0]
        size = min(self.chunk, n)
        pad = -n % size
        if pad:
            x = jnp.concatenate([x, jnp.zeros((pad, *x.shape[1:]), x.dtype)])
        outs = [step(self.state, x[i : i + size]) for i in range(0, n + pad, size)]
        return jnp.concatenate(outs)[:n].astype(jnp.float32)

    def encode_frames(self, frames: jax.Array, rng: jax.Array | None = None) -> jax.Array:
        """Unscaled posterior mean (or sample) of images [N, H, W, 3] -> [N, h, w, C]."""
        moments = self._chunked(self.encode_step, jnp.asarray(frames, self.dtype))
        return diffusers_dir.posterior(moments, rng)

    def decode_frames(self, z: jax.Array) -> jax.Array:
        """Unscaled latents [N, h, w, C] -> unclipped images [N, H, W, 3]."""
        return self._chunked(self.decode_step, jnp.asarray(z, self.dtype))

    def encode(self, video: jax.Array, rng: jax.Array | None = None) -> jax.Array:
        diffusers_dir.check_video(video, self.spatial_factor, "SDAutoencoder")
        b, t = video.shape[:2]
        z = self.encode_frames(video.reshape(b * t, *video.shape[2:]), rng)
        return ((z - self.shift) * (self.scaling / self.std)).reshape(b, t, *z.shape[1:])

    def decode(self, latents: jax.Array) -> jax.Array:
        if latents.ndim != 5 or latents.shape[-1] != self.latent_channels:
            raise ValueError(
                f"SDAutoencoder.decode: latents shape {latents.shape}, expected "
                f"[B, T, h, w, {self.latent_channels}]"
            )
        b, t = latents.shape[:2]
        z = jnp.asarray(latents, jnp.float32) * (self.std / self.scaling) + self.shift
        x = self.decode_frames(z.reshape(b * t, *latents.shape[2:]))
        return jnp.clip(x, -1.0, 1.0).reshape(b, t, *x.shape[1:])
