"""Autoencoders: `get_autoencoder(config.autoencoder)`; all share one interface.

Shapes: B batch, T pixel frames, F latent frames, H/W pixels, h/w latent size, C channels.
  encode(video [B, T, H, W, 3] in [-1, 1]) -> latents [B, F, h, w, C]
  decode(latents [B, F, h, w, C]) -> video [B, T, H, W, 3]
  latent_shape(T, H, W) -> (F, h, w, C)
  latent_channels, temporal_factor, spatial_factor

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

from stiv_jax.autoencoders.pixel import PixelAutoencoder

NAMES = ("pixel", "sd_vae", "wan")


def _dtype(cfg, key: str):
    name = cfg.get(key, "float32")
    try:
        return jnp.dtype(name)
    except TypeError:
        raise ValueError(f"autoencoder.{key}={name!r} is not a dtype name") from None


def get_autoencoder(cfg):
    if cfg.name == "pixel":
        return PixelAutoencoder()
    if cfg.name == "sd_vae":
        from stiv_jax.autoencoders.sd_vae import SDAutoencoder

        return SDAutoencoder.from_pretrained(
            cfg.get("path", ""),
            chunk=int(cfg.get("chunk", 8)),
            dtype=_dtype(cfg, "dtype"),
            param_dtype=_dtype(cfg, "param_dtype"),
        )
    if cfg.name == "wan":
        from stiv_jax.autoencoders.wan_vae import WanAutoencoder

        return WanAutoencoder.from_pretrained(
            cfg.get("path", ""), dtype=_dtype(cfg, "dtype"), param_dtype=_dtype(cfg, "param_dtype")
        )
    raise ValueError(f"autoencoder.name={cfg.name!r} is unknown; expected one of {NAMES}")
