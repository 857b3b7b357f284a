"""`get_autoencoder(config.autoencoder)`: names, fields, errors (no encode runs here)."""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections
import pytest

from stiv_jax.autoencoders import get_autoencoder
from stiv_jax.autoencoders.pixel import PixelAutoencoder


def _cfg(**kw) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict({"name": "pixel", "path": "", **kw})


def test_pixel():
    assert isinstance(get_autoencoder(_cfg()), PixelAutoencoder)


def test_unknown_name_and_missing_path():
    with pytest.raises(ValueError, match="'vqgan' is unknown"):
        get_autoencoder(_cfg(name="vqgan"))
    with pytest.raises(ValueError, match="path is empty"):
        get_autoencoder(_cfg(name="sd_vae"))
    with pytest.raises(FileNotFoundError, match="no config.json"):
        get_autoencoder(_cfg(name="wan", path="/nonexistent/vae"))


def test_loads_diffusers_dirs(tmp_path):
    torch = pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    diffusers.AutoencoderKL(
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        norm_num_groups=4,
    ).save_pretrained(tmp_path / "sd", safe_serialization=True)
    # a pipeline directory: the VAE lives under vae/
    diffusers.AutoencoderKLWan(
        base_dim=8,
        z_dim=4,
        dim_mult=[1, 2, 2],
        num_res_blocks=1,
        temperal_downsample=[True, True],
        latents_mean=[0.0] * 4,
        latents_std=[1.0] * 4,
    ).save_pretrained(tmp_path / "pipe" / "vae", safe_serialization=True)

    sd = get_autoencoder(_cfg(name="sd_vae", path=str(tmp_path / "sd"), chunk=3))
    assert (sd.latent_channels, sd.temporal_factor, sd.spatial_factor, sd.chunk) == (4, 1, 2, 3)
    assert sd.latent_shape(5, 16, 16) == (5, 8, 8, 4)
    wan = get_autoencoder(_cfg(name="wan", path=str(tmp_path / "pipe"), dtype="bfloat16"))
    assert (wan.latent_channels, wan.temporal_factor, wan.spatial_factor) == (4, 4, 4)
    assert wan.latent_shape(9, 16, 16) == (3, 4, 4, 4)
    assert wan.dtype == jnp.bfloat16
    with pytest.raises(ValueError, match="_class_name='AutoencoderKL'"):
        get_autoencoder(_cfg(name="wan", path=str(tmp_path / "sd")))
    with pytest.raises(ValueError, match="'float77' is not a dtype"):
        get_autoencoder(_cfg(name="wan", path=str(tmp_path / "pipe"), dtype="float77"))
