"""Parity of the SD AutoencoderKL port with diffusers' AutoencoderKL on a random tiny config.

Shapes: B = 2 videos × T = 3 frames folded into N = 6 images (chunk 4: two calls, the last
padded), H = W = 16 pixels, h = w = 8, C = 4 latent channels.
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

from stiv_jax.autoencoders.sd_vae import SDAutoencoder, check_config, rename_legacy  # noqa: E402
from stiv_jax.weights import load_safetensors, save_safetensors  # noqa: E402

TOL = 1e-4  # fp32 CPU; measured ~3e-6
SCALE, SHIFT = 0.5, 0.1


def _nchw(x: np.ndarray):
    return torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2)


def _nhwc(x) -> np.ndarray:
    return x.permute(0, 2, 3, 1).numpy()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.manual_seed(0)
    ref = diffusers.AutoencoderKL(
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        layers_per_block=1,
        norm_num_groups=4,
        latent_channels=4,
        scaling_factor=SCALE,
        shift_factor=SHIFT,
    ).eval()
    with torch.no_grad():
        for name, p in ref.named_parameters():
            # norms start at 1/0 in diffusers: perturb so a wrong mapping shows
            if "norm" in name:
                p.add_(0.2 * torch.randn_like(p))
    path = str(tmp_path_factory.mktemp("sd_tiny"))
    ref.save_pretrained(path, safe_serialization=True)
    return ref, path, SDAutoencoder.from_pretrained(path, chunk=4)


def _video():
    return np.random.RandomState(0).uniform(-1, 1, (2, 3, 16, 16, 3)).astype(np.float32)


def test_encode_matches_diffusers(tiny):
    ref, _, ae = tiny
    x = _video()
    z = np.asarray(ae.encode(jnp.asarray(x)))
    with torch.no_grad():
        mu = _nhwc(ref.encode(_nchw(x.reshape(6, 16, 16, 3))).latent_dist.mode())
    assert z.shape == (2, 3, 8, 8, 4) == (2, *ae.latent_shape(3, 16, 16))
    np.testing.assert_allclose(z, ((mu - SHIFT) * SCALE).reshape(z.shape), atol=TOL, rtol=0)


def test_decode_matches_diffusers(tiny):
    ref, _, ae = tiny
    lat = np.random.RandomState(1).standard_normal((2, 3, 8, 8, 4)).astype(np.float32)
    raw = lat.reshape(6, 8, 8, 4) / SCALE + SHIFT
    with torch.no_grad():
        want = _nhwc(ref.decode(_nchw(raw)).sample)
    # unclipped images first (diffusers' decode does not clamp), then the interface's clip
    np.testing.assert_allclose(ae.decode_frames(jnp.asarray(raw)), want, atol=TOL, rtol=0)
    y = np.asarray(ae.decode(jnp.asarray(lat)))
    want = np.clip(want, -1, 1).reshape(y.shape)
    np.testing.assert_allclose(y, want, atol=TOL, rtol=0)


def test_posterior_sample(tiny):
    ref, _, ae = tiny
    x = _video()
    key = jax.random.key(3)
    z = np.asarray(ae.encode(jnp.asarray(x), rng=key))
    with torch.no_grad():
        dist = ref.encode(_nchw(x.reshape(6, 16, 16, 3))).latent_dist
    mean, std = _nhwc(dist.mean), _nhwc(dist.std)
    eps = np.asarray(jax.random.normal(key, mean.shape))
    want = ((mean + std * eps - SHIFT) * SCALE).reshape(z.shape)
    np.testing.assert_allclose(z, want, atol=TOL, rtol=0)


def test_legacy_attention_keys(tiny, tmp_path):
    # pre-0.14 checkpoints: query/key/value/proj_attn with [C, C, 1, 1] weights
    _, path, ae = tiny
    legacy = {}
    for k, w in load_safetensors(path).items():
        for new, old in (("to_q", "query"), ("to_k", "key"), ("to_v", "value")):
            k = k.replace(f".{new}.", f".{old}.")
        k = k.replace(".to_out.0.", ".proj_attn.")
        legacy[k] = w[:, :, None, None] if w.ndim == 2 else w
    assert any(".proj_attn." in k for k in legacy)
    assert sorted(rename_legacy(legacy)) == sorted(load_safetensors(path))
    for f in ("config.json",):
        (tmp_path / f).write_text(open(os.path.join(path, f)).read())
    save_safetensors(legacy, str(tmp_path / "diffusion_pytorch_model.safetensors"))
    old = SDAutoencoder.from_pretrained(str(tmp_path))
    for a, b in zip(jax.tree.leaves(old.state), jax.tree.leaves(ae.state)):
        np.testing.assert_array_equal(a, b)


def test_bad_inputs(tiny):
    _, _, ae = tiny
    with pytest.raises(ValueError, match="multiple of 2"):
        ae.encode(jnp.zeros((1, 2, 15, 16, 3)))
    with pytest.raises(ValueError, match=r"\[B, T, H, W, 3\]"):
        ae.encode(jnp.zeros((1, 16, 16, 3)))
    with pytest.raises(ValueError, match="up_block_types"):
        check_config({"block_out_channels": [8], "up_block_types": ["UpBlock2D"]})
    with pytest.raises(ValueError, match="chunk=0"):
        SDAutoencoder({"block_out_channels": [8], "norm_num_groups": 4}, chunk=0)


def test_latents_mean_std(tiny):
    # SDXL-style configs carry per-channel latents_mean/std: (mu - mean) · scaling / std
    _, path, ae = tiny
    with open(os.path.join(path, "config.json")) as f:
        cfg = json.load(f)
    mean, std = [0.1, -0.2, 0.3, 0.4], [2.0, 1.0, 0.5, 4.0]
    ae2 = SDAutoencoder({**cfg, "latents_mean": mean, "latents_std": std}, chunk=4, seed=None)
    # same weights and graph: reuse the compiled steps instead of compiling again
    ae2.state, ae2.encode_step, ae2.decode_step = ae.state, ae.encode_step, ae.decode_step
    x = jnp.asarray(_video())
    mu = np.asarray(ae.encode_frames(x.reshape(6, 16, 16, 3))).reshape(2, 3, 8, 8, 4)
    z = np.asarray(ae2.encode(x))
    np.testing.assert_allclose(z, (mu - mean) * SCALE / np.array(std), atol=1e-5, rtol=0)
    y = ae2.decode(jnp.asarray(z))
    want = np.clip(ae.decode_frames(jnp.asarray(mu.reshape(6, 8, 8, 4))), -1, 1)
    np.testing.assert_allclose(y, np.asarray(want).reshape(y.shape), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="latents_mean"):
        SDAutoencoder({**cfg, "latents_mean": mean}, seed=None)
