"""Latent geometry of an autoencoder: pixel shape -> latent shape, without loading weights.

Shapes: T pixel frames, H/W pixels, F latent frames, h/w latent size, C latent channels.
  LatentGeometry.latent_shape(T, H, W) -> (F, h, w, C)
  LatentGeometry.pixel_span(j) -> (first, last) pixel frames of latent frame j
  LatentGeometry.latent_of(t) -> the latent frame that holds pixel frame t
A causal video VAE (Wan) encodes frame 0 alone and each later group of `temporal_factor`
frames into one latent: F = 1 + (T - 1) / temporal_factor, so T must be 1 + k·factor;
latent 0 is pixel frame 0, latent j >= 1 is pixel frames 1 + (j-1)·factor .. j·factor.
A per-frame VAE (pixel, SD) has factor 1: latent j is pixel frame j. This file is the one
place that says which pixel frames a latent frame stands for.
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

    def pixel_span(self, j: int) -> tuple[int, int]:
        """(first, last) pixel frames, inclusive, that latent frame j encodes."""
        tf = self.temporal_factor
        if j < 0:
            raise ValueError(f"latent frame {j} must be >= 0")
        if self.causal:
            return (0, 0) if j == 0 else (1 + (j - 1) * tf, j * tf)
        return (j * tf, (j + 1) * tf - 1)

    def latent_of(self, t: int) -> int:
        """The latent frame whose `pixel_span` holds pixel frame t."""
        if t < 0:
            raise ValueError(f"pixel frame {t} must be >= 0")
        tf = self.temporal_factor
        if self.causal:
            return 0 if t == 0 else 1 + (t - 1) // tf
        return t // tf
