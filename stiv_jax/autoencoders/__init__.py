"""Autoencoders: `get_autoencoder(config.autoencoder)`; all share one interface.

Shapes: B batch, T pixel frames, F latent frames, H/W pixels, h/w latent size, C channels.
  encode(video [B, T, H, W, 3] in [-1, 1]) -> latents [B, F, h, w, C]
  decode(latents [B, F, h, w, C]) -> video [B, T, H, W, 3]
  latent_shape(T, H, W) -> (F, h, w, C)
  latent_channels, temporal_factor, spatial_factor, geometry (a `LatentGeometry`)
`latent_geometry(config.autoencoder)` gives the same geometry without loading weights (the
class default, or the directory's config.json when `path` is set).

config.autoencoder fields:
  name         pixel | sd_vae (diffusers AutoencoderKL) | wan (diffusers AutoencoderKLWan)
  path         diffusers VAE directory (config.json + diffusion_pytorch_model.safetensors),
               or a pipeline directory holding it under vae/
  dtype        compute dtype (default "float32"); norms and softmax stay float32
  param_dtype  parameter storage dtype (default "float32")
  chunk        sd_vae only: frames per jitted encode/decode call (default 8)
"""

from __future__ import annotations

import jax.numpy as jnp

from stiv_jax.autoencoders.geometry import LatentGeometry
from stiv_jax.autoencoders.pixel import PixelAutoencoder

NAMES = ("pixel", "sd_vae", "wan")
_CLASS_NAMES = {"sd_vae": "AutoencoderKL", "wan": "AutoencoderKLWan"}

__all__ = ["NAMES", "LatentGeometry", "PixelAutoencoder", "get_autoencoder", "latent_geometry"]


def _class(name: str):
    if name == "pixel":
        return PixelAutoencoder
    if name == "sd_vae":
        from stiv_jax.autoencoders.sd_vae import SDAutoencoder

        return SDAutoencoder
    if name == "wan":
        from stiv_jax.autoencoders.wan_vae import WanAutoencoder

        return WanAutoencoder
    raise ValueError(f"autoencoder.name={name!r} is unknown; expected one of {NAMES}")


def latent_geometry(cfg) -> LatentGeometry:
    """The geometry of `config.autoencoder`, reading at most its config.json (no weights)."""
    cls = _class(cfg.name)
    path = cfg.get("path", "") if cfg.name != "pixel" else ""
    if not path:
        return cls.geometry_of(None)
    from stiv_jax.autoencoders import diffusers_dir

    return cls.geometry_of(
        diffusers_dir.read_config(diffusers_dir.resolve_dir(path), _CLASS_NAMES[cfg.name])
    )


def _dtype(cfg, key: str):
    name = cfg.get(key, "float32")
    try:
        return jnp.dtype(name)
    except TypeError:
        raise ValueError(f"autoencoder.{key}={name!r} is not a dtype name") from None


def get_autoencoder(cfg):
    cls = _class(cfg.name)
    if cfg.name == "pixel":
        return cls()
    if cfg.name == "sd_vae":
        return cls.from_pretrained(
            cfg.get("path", ""),
            chunk=int(cfg.get("chunk", 8)),
            dtype=_dtype(cfg, "dtype"),
            param_dtype=_dtype(cfg, "param_dtype"),
        )
    return cls.from_pretrained(
        cfg.get("path", ""), dtype=_dtype(cfg, "dtype"), param_dtype=_dtype(cfg, "param_dtype")
    )
