"""Parity of the Wan-2.1 VAE port with diffusers' AutoencoderKLWan on a random tiny config.

Shapes: B batch, T frames (1 + 4·2 = 9, so the first-frame chunk and two 4-frame chunks run
with the causal cache), F = 3 latent frames, H = W = 16 pixels, h = w = 4, C = 4 channels.
"""

from __future__ import annotations

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

from stiv_jax.autoencoders.wan_vae import WanAutoencoder, check_config  # noqa: E402
from stiv_jax.weights import WeightLoadError  # noqa: E402

TOL = 1e-4  # fp32 CPU; measured ~1e-6
MEAN = [0.1, -0.2, 0.3, 0.0]
STD = [1.5, 0.7, 2.0, 1.0]


def _to_torch(x: np.ndarray):
    return torch.from_numpy(np.ascontiguousarray(x)).permute(0, 4, 1, 2, 3)


def _from_torch(x) -> np.ndarray:
    return x.permute(0, 2, 3, 4, 1).numpy()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.manual_seed(0)
    ref = diffusers.AutoencoderKLWan(
        base_dim=8,
        z_dim=4,
        dim_mult=[1, 2, 2],
        num_res_blocks=1,
        temperal_downsample=[True, True],
        latents_mean=MEAN,
        latents_std=STD,
    ).eval()
    with torch.no_grad():
        for name, p in ref.named_parameters():
            # norms/biases start at 1/0 in diffusers: perturb so a wrong mapping shows
            if name.endswith(("gamma", "bias")):
                p.add_(0.2 * torch.randn_like(p))
        # keep most decoded values inside (-1, 1) so diffusers' clamp hides no error
        ref.decoder.conv_out.weight.mul_(0.05)
    path = str(tmp_path_factory.mktemp("wan_tiny"))
    ref.save_pretrained(path, safe_serialization=True)
    return ref, path, WanAutoencoder.from_pretrained(path)


def _video(b=2, t=9):
    return np.random.RandomState(0).uniform(-1, 1, (b, t, 16, 16, 3)).astype(np.float32)


def test_encode_matches_diffusers(tiny):
    ref, _, ae = tiny
    x = _video()
    z = np.asarray(ae.encode(jnp.asarray(x)))
    with torch.no_grad():
        mu = ref.encode(_to_torch(x)).latent_dist.mode()
    want = (_from_torch(mu) - np.array(MEAN)) / np.array(STD)
    assert z.shape == (2, 3, 4, 4, 4) == (2, *ae.latent_shape(9, 16, 16))
    np.testing.assert_allclose(z, want, atol=TOL, rtol=0)


def test_decode_matches_diffusers(tiny):
    ref, _, ae = tiny
    z = np.random.RandomState(1).standard_normal((2, 3, 4, 4, 4)).astype(np.float32)
    y = np.asarray(ae.decode(jnp.asarray(z)))
    with torch.no_grad():
        raw = _to_torch(z * np.array(STD, np.float32) + np.array(MEAN, np.float32))
        want = _from_torch(ref.decode(raw).sample)
    assert y.shape == (2, 9, 16, 16, 3)
    assert np.mean(np.abs(want) >= 1.0) < 0.05, "reference mostly clamped: test would be weak"
    np.testing.assert_allclose(y, want, atol=TOL, rtol=0)


def test_causal_prefix(tiny):
    # The cache makes encode/decode causal: a prefix of the input gives a prefix of the output.
    _, _, ae = tiny
    x = jnp.asarray(_video())
    np.testing.assert_allclose(ae.encode(x[:, :5]), ae.encode(x)[:, :2], atol=1e-5, rtol=0)
    z = ae.encode(x)
    np.testing.assert_allclose(ae.decode(z[:, :2]), ae.decode(z)[:, :5], atol=1e-5, rtol=0)


def test_posterior_sample_differs_from_mean(tiny):
    import jax

    _, _, ae = tiny
    x = jnp.asarray(_video())
    mean = np.asarray(ae.encode(x))
    s1 = np.asarray(ae.encode(x, rng=jax.random.key(0)))
    s2 = np.asarray(ae.encode(x, rng=jax.random.key(0)))
    np.testing.assert_array_equal(s1, s2)
    assert np.abs(s1 - mean).max() > 1e-3


def test_bad_inputs(tiny, tmp_path):
    _, path, ae = tiny
    with pytest.raises(ValueError, match="T=8"):
        ae.encode(jnp.zeros((2, 8, 16, 16, 3)))
    with pytest.raises(ValueError, match="multiple of 4"):
        ae.encode(jnp.zeros((1, 9, 18, 16, 3)))
    with pytest.raises(ValueError, match="latents shape"):
        ae.decode(jnp.zeros((1, 3, 4, 4, 5)))
    with open(os.path.join(path, "config.json")) as f:
        cfg = json.load(f)
    with pytest.raises(ValueError, match="is_residual"):
        check_config({**cfg, "is_residual": True})
    with pytest.raises(ValueError, match="temperal_downsample"):
        check_config({**cfg, "temperal_downsample": [True, False]})
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(WeightLoadError):
        WanAutoencoder.from_pretrained(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="config.json"):
        WanAutoencoder.from_pretrained(str(tmp_path / "nowhere"))
