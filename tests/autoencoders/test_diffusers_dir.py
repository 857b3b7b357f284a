"""diffusers directory reading, posterior, and random init helpers (no torch needed)."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from stiv_jax.autoencoders import diffusers_dir


def test_resolve_and_read_config(tmp_path):
    (tmp_path / "vae").mkdir()
    (tmp_path / "vae" / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL"}))
    assert diffusers_dir.resolve_dir(str(tmp_path)) == str(tmp_path / "vae")
    vae = str(tmp_path / "vae")
    assert diffusers_dir.read_config(vae, "AutoencoderKL")["_class_name"] == "AutoencoderKL"
    with pytest.raises(ValueError, match="expected 'AutoencoderKLWan'"):
        diffusers_dir.read_config(vae, "AutoencoderKLWan")
    (tmp_path / "vae" / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        diffusers_dir.read_config(vae, "AutoencoderKL")
    with pytest.raises(ValueError, match="path is empty"):
        diffusers_dir.resolve_dir("")


def test_posterior():
    mean = np.array([[0.5, -1.0]], np.float32)
    logvar = np.array([[-100.0, 2.0]], np.float32)  # clipped to -30 like diffusers
    moments = jnp.asarray(np.concatenate([mean, logvar], -1))
    np.testing.assert_array_equal(diffusers_dir.posterior(moments, None), mean)
    key = jax.random.key(0)
    eps = np.asarray(jax.random.normal(key, mean.shape))
    want = mean + np.exp(0.5 * np.clip(logvar, -30, 20)) * eps
    np.testing.assert_allclose(diffusers_dir.posterior(moments, key), want, rtol=1e-6)


def test_abstract_then_random_fill():
    model = diffusers_dir.build_abstract(
        lambda: nnx.Sequential(
            nnx.Conv(64, 32, (3, 3), rngs=nnx.Rngs(0)), nnx.LayerNorm(32, rngs=nnx.Rngs(0))
        )
    )
    leaves = jax.tree.leaves(nnx.state(model, nnx.Param))
    assert all(isinstance(x, jax.ShapeDtypeStruct) for x in leaves)
    diffusers_dir.random_fill(model, 0, jnp.bfloat16)
    conv, norm = model.layers
    assert conv.kernel[...].dtype == jnp.bfloat16
    std = float(jnp.std(conv.kernel[...].astype(jnp.float32)))
    assert abs(std * np.sqrt(3 * 3 * 64) - 1.0) < 0.05
    np.testing.assert_array_equal(norm.scale[...], 1.0)
    np.testing.assert_array_equal(conv.bias[...], 0.0)


def test_check_video():
    with pytest.raises(ValueError, match=r"\[B, T, H, W, 3\]"):
        diffusers_dir.check_video(jnp.zeros((1, 2, 8, 8, 4)), 8, "X")
    with pytest.raises(ValueError, match="12x8 must be a multiple of 8"):
        diffusers_dir.check_video(jnp.zeros((1, 2, 12, 8, 3)), 8, "X")
    diffusers_dir.check_video(jnp.zeros((1, 2, 16, 8, 3)), 8, "X")
