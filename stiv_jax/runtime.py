"""Runtime components of a config: model, text encoder, autoencoder, null text, latent shape.

Shapes: T pixel frames, H = W = data.res, F latent frames, h/w latent size, C latent
channels, L text tokens, Dt/Dp text widths.

The one place that turns a config into the pieces that train, sample, evaluate and the AOT
compiler share. Geometry (`latent_shape`, `fill_train_grid`, `check_config`) never loads
weights: it reads the autoencoder's class-level facts (or its config.json).
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from stiv_jax.autoencoders import get_autoencoder, latent_geometry
from stiv_jax.encoders import get_text_encoder
from stiv_jax.model import STIV
from stiv_jax.model.stiv import token_width


def latent_shape(config, frames: int | None = None) -> tuple[int, int, int, int]:
    """(F, h, w, C) of `frames` (default data.frames) pixel frames at data.res, no weights."""
    t = int(config.data.frames if frames is None else frames)
    res = int(config.data.res)
    return latent_geometry(config.autoencoder).latent_shape(t, res, res)


def video_latent_shape(config, t: int, h: int, w: int) -> tuple[int, int, int, int]:
    """Latent (F, h, w, C) of pixels [t, h, w] (any size: RoPE interpolates), one line when
    the autoencoder or the model's patches cannot take it."""
    geo = latent_geometry(config.autoencoder)
    f, lh, lw, c = geo.latent_shape(t, h, w)
    m = config.model
    p, pt = int(m.patch_size), int(m.temporal_patch)
    if h % (geo.spatial_factor * p) or w % (geo.spatial_factor * p) or f % pt or h < 1 or w < 1:
        raise ValueError(
            f"video shape frames={t}, height={h}, width={w} gives latents {f}x{lh}x{lw}; the "
            f"model needs height and width multiples of {geo.spatial_factor * p} and latent "
            f"frames a multiple of {pt}"
        )
    return f, lh, lw, c


def check_config(config) -> None:
    """model.in_channels against the autoencoder's latent channels, one clear sentence."""
    channels = latent_geometry(config.autoencoder).channels
    if channels != config.model.in_channels:
        raise ValueError(
            f"model.in_channels={config.model.in_channels} but autoencoder "
            f"{config.autoencoder.name!r} gives {channels} latent channels"
        )


def fill_train_grid(config) -> None:
    """Record the token grid RoPE is trained on (for position interpolation at other sizes)."""
    m = config.model
    if tuple(m.train_grid) != (0, 0, 0):
        return
    f, h, w, _ = latent_shape(config)
    with config.unlocked():
        m.train_grid = (f // m.temporal_patch, h // m.patch_size, w // m.patch_size)


def build_model(config, seed: int = 0) -> STIV:
    """STIV of `config.model` with random weights from `seed` (use under nnx.eval_shape for
    shapes only)."""
    return STIV.from_config(config.model, rngs=nnx.Rngs(seed))


class Components:
    """Frozen encoders + the model's constructor, built once from a config."""

    def __init__(self, config, *, text_encoder=None, autoencoder=None):
        self.config = config
        check_config(config)
        self.autoencoder = autoencoder or get_autoencoder(config.autoencoder)
        self.text_encoder = text_encoder or get_text_encoder(config.text_encoder)
        m = config.model
        if self.autoencoder.latent_channels != m.in_channels:
            raise ValueError(
                f"model.in_channels={m.in_channels} but autoencoder {config.autoencoder.name!r} "
                f"gives {self.autoencoder.latent_channels} latent channels"
            )
        widths = (token_width(m), m.pooled_dim)  # token width: text_dim (+1 word-piece id)
        if (self.text_encoder.dim, self.text_encoder.pooled_dim) != widths:
            raise ValueError(
                f"model token width/pooled_dim={widths} (text_dim {m.text_dim}, word_pieces "
                f"{m.get('word_pieces', 0)}) but text encoder "
                f"{config.text_encoder.name!r} gives ({self.text_encoder.dim}, "
                f"{self.text_encoder.pooled_dim})"
            )
        res = config.data.res
        self.latent_shape = self.autoencoder.latent_shape(config.data.frames, res, res)
        null = self.text_encoder.encode([""])
        self.null_text = {
            "tokens": jnp.asarray(null.tokens[0]),
            "mask": jnp.asarray(null.mask[0]),
            "pooled": jnp.asarray(null.pooled[0]),
        }

    def model(self, seed: int) -> STIV:
        return build_model(self.config, seed)

    def latent_frames(self, frames: int) -> int:
        """F of `frames` pixel frames (buckets of several lengths)."""
        res = self.config.data.res
        return self.autoencoder.latent_shape(frames, res, res)[0]
