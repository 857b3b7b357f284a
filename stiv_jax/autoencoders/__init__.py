"""Autoencoders: `get_autoencoder(config.autoencoder)`; all share one interface.

  encode(video [B, T, H, W, 3] in [-1, 1]) -> latents [B, F, h, w, C]
  decode(latents [B, F, h, w, C]) -> video [B, T, H, W, 3]
  latent_shape(T, H, W) -> (F, h, w, C)
"""

from __future__ import annotations

from stiv_jax.autoencoders.pixel import PixelAutoencoder


def get_autoencoder(cfg):
    if cfg.name == "pixel":
        return PixelAutoencoder()
    raise ValueError(f"autoencoder.name={cfg.name!r} is unknown; expected one of ('pixel',)")
