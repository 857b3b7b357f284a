"""Identity autoencoder: latents are the frames themselves ([B, T, H, W, 3] in [-1, 1])."""

from __future__ import annotations

import jax

from stiv_jax.autoencoders.geometry import LatentGeometry


class PixelAutoencoder:
    GEOMETRY = LatentGeometry(temporal_factor=1, spatial_factor=1, channels=3)
    geometry = GEOMETRY
    latent_channels = GEOMETRY.channels
    temporal_factor = GEOMETRY.temporal_factor
    spatial_factor = GEOMETRY.spatial_factor

    @classmethod
    def geometry_of(cls, config: dict | None = None) -> LatentGeometry:
        return cls.GEOMETRY

    def latent_shape(self, t: int, h: int, w: int) -> tuple[int, int, int, int]:
        return self.geometry.latent_shape(t, h, w)

    def encode(self, video: jax.Array) -> jax.Array:
        return video

    def decode(self, latents: jax.Array) -> jax.Array:
        return latents
