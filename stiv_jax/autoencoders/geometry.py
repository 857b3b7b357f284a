"""Latent geometry of an autoencoder: pixel shape -> latent shape, without loading weights.

Shapes: T pixel frames, H/W pixels, F latent frames, h/w latent size, C latent channels.
  LatentGeometry.latent_shape(T, H, W) -> (F, h, w, C)
A causal video VAE (Wan) encodes frame 0 alone and each later group of `temporal_factor`
frames into one latent: F = 1 + (T - 1) / temporal_factor, so T must be 1 + k·factor.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class LatentGeometry:
    """Class-level facts of an autoencoder (or of one diffusers config.json)."""

    temporal_factor: int
    """Pixel frames per latent frame (after the first one when `causal`)."""
    spatial_factor: int
    """Pixels per latent position along H and W."""
    channels: int
    """Latent channels C (the model's `in_channels`)."""
    causal: bool = False
    """Frame 0 gets its own latent: F = 1 + (T - 1) / temporal_factor."""

    def latent_frames(self, t: int) -> int:
        tf = self.temporal_factor
        if self.causal:
            if t < 1 or (t - 1) % tf:
                raise ValueError(f"this VAE needs T = 1 + {tf}k frames, got T={t}")
            return 1 + (t - 1) // tf
        if t < 1 or t % tf:
            raise ValueError(f"this VAE needs T = {tf}k frames, got T={t}")
        return t // tf

    def latent_shape(self, t: int, h: int, w: int) -> tuple[int, int, int, int]:
        s = self.spatial_factor
        return (self.latent_frames(t), h // s, w // s, self.channels)
