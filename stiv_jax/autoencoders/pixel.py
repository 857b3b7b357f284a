"""Identity autoencoder: latents are the frames themselves ([B, T, H, W, 3] in [-1, 1])."""

from __future__ import annotations

import jax


class PixelAutoencoder:
    latent_channels = 3
    temporal_factor = 1
    spatial_factor = 1

    def latent_shape(self, t: int, h: int, w: int) -> tuple[int, int, int, int]:
        return (t, h, w, 3)

    def encode(self, video: jax.Array) -> jax.Array:
        return video

    def decode(self, latents: jax.Array) -> jax.Array:
        return latents
