"""Condition media at pixel frames: placement, latent mapping (pixel and causal Wan VAE),
exact frame replacement of two different images, prediction from a real video."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tiny_pipeline import image, make_pipeline

from stiv_jax.autoencoders.geometry import LatentGeometry
from stiv_jax.cond_media import Placed, place

WAN = LatentGeometry(temporal_factor=4, spatial_factor=8, channels=16, causal=True)
PIXEL = LatentGeometry(temporal_factor=1, spatial_factor=1, channels=3)


def _clip(first, n, value=0.0):
    return Placed(first, np.full((n, 2, 2, 3), value, np.float32), False)


def _still(frame, value=0.5):
    return Placed(frame, np.full((1, 2, 2, 3), value, np.float32), True)


def test_geometry_pixel_spans():
    assert [WAN.pixel_span(j) for j in range(3)] == [(0, 0), (1, 4), (5, 8)]
    assert [WAN.latent_of(t) for t in range(9)] == [0, 1, 1, 1, 1, 2, 2, 2, 2]
    assert [PIXEL.pixel_span(j) for j in range(3)] == [(0, 0), (1, 1), (2, 2)]


def test_wan_latent_mapping_of_condition_frames():
    # a clip over pixel frames 0..4 gives latents 0 and 1 (frame 0 alone, then 1..4)
    _, mask, n = place([_clip(0, 5)], WAN, 9)
    assert mask.tolist() == [True, True, False] and n == 5
    # an image at the last pixel frame is held over its latent's 4 frames (5..8)
    canvas, mask, n = place([_still(0, -1.0), _still(8, 0.5)], WAN, 9)
    assert mask.tolist() == [True, False, True] and n == 9
    assert np.all(canvas[5:] == 0.5) and np.all(canvas[0] == -1.0)
    assert np.all(canvas[1:5] == -1.0)  # unknown context holds the last known frame
    # a clip that covers latent 1 only partly cannot be honoured: one line says what to give
    with pytest.raises(ValueError, match=r"latent frame 1 \(pixel frames 1\.\.4\) only partly"):
        place([_clip(0, 3)], WAN, 9)
    with pytest.raises(ValueError, match="outside the video's 9 frames"):
        place([_still(9)], WAN, 9)
    with pytest.raises(ValueError, match="given by two conditions"):
        place([_clip(0, 5), _still(3)], WAN, 9)
    # on a per-frame autoencoder every position is its own latent
    _, mask, n = place([_still(0), _still(3)], PIXEL, 4)
    assert mask.tolist() == [True, False, False, True] and n == 4


def test_wan_condition_latents_are_encoded_in_temporal_context(tmp_path):
    torch = pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    from stiv_jax.autoencoders.wan_vae import WanAutoencoder
    from stiv_jax.cond_media import encode_given

    torch.manual_seed(0)
    ref = diffusers.AutoencoderKLWan(
        base_dim=8, z_dim=4, dim_mult=[1, 2, 2], num_res_blocks=1,
        temperal_downsample=[True, True], latents_mean=[0.0] * 4, latents_std=[1.0] * 4,
    )  # fmt: skip
    ref.save_pretrained(str(tmp_path), safe_serialization=True)
    ae = WanAutoencoder.from_pretrained(str(tmp_path))
    video = np.random.RandomState(0).uniform(-1, 1, (9, 16, 16, 3)).astype(np.float32)
    canvas, mask, n = place([Placed(0, video[:5], False)], ae.geometry, 9)
    lat = encode_given(ae, canvas, mask, n)
    full = np.asarray(ae.encode(video[None]))[0]
    # latent 1 encodes frames 1..4 after frame 0, exactly as inside the whole video
    np.testing.assert_allclose(lat[:2], full[:2], atol=1e-5)
    assert np.all(lat[2] == 0)
    # the context matters: frames 1..4 after another frame 0 give another latent 1
    other = video[:5].copy()
    other[0] = 0.0
    alone = np.asarray(ae.encode(other[None]))[0]
    assert np.abs(alone[1] - full[1]).max() > 1e-3


def test_two_images_at_first_and_last_frame_come_back_exactly(tiny_config):
    pipe = make_pipeline(tiny_config)
    a, b = image(1), image(2)
    out = pipe("a red circle moves left", conditions=[(0, a), (3, b)])
    assert out.shape == (4, 16, 16, 3)
    np.testing.assert_array_equal(out[0], a)
    np.testing.assert_array_equal(out[3], b)
    assert np.abs(out[1].astype(int) - a).max() > 10  # the middle is generated, not copied
    # the old shorthand gives one image at every listed latent frame
    out = pipe("a red circle moves left", image=a, cond_frames=[0, 3])
    np.testing.assert_array_equal(out[0], a)
    np.testing.assert_array_equal(out[3], a)


def test_prediction_from_a_real_video_keeps_its_first_frames(tmp_path, tiny_config):
    from stiv_jax.data.shapes import config_kwargs, generate_clip
    from stiv_jax.sample import parse_prompts
    from stiv_jax.video import read_mp4, to_uint8, write_mp4

    c = tiny_config
    clip = generate_clip(3, split="heldout", seed=7, **config_kwargs(c))
    write_mp4(str(tmp_path / "ctx.mp4"), clip["video"])
    ctx = read_mp4(str(tmp_path / "ctx.mp4"))  # what the codec kept
    line = {"id": "pred", "prompt": clip["caption"],
            "conditions": [{"video": "ctx.mp4", "frames": [0, 1]}]}  # fmt: skip
    bad = {"id": "bad", "prompt": "x", "conditions": [{"video": "ctx.mp4", "frames": [2, 5]}]}
    (tmp_path / "p.jsonl").write_text(json.dumps(line) + "\n" + json.dumps(bad) + "\n")
    reqs, errors = parse_prompts(str(tmp_path / "p.jsonl"), c)
    assert [r.id for r in reqs] == ["pred"]
    assert len(errors) == 1 and "outside the video's 4 frames" in errors[0]
    pipe = make_pipeline(c)
    out = to_uint8(pipe.generate(reqs)[0])
    np.testing.assert_array_equal(out[:2], ctx[:2])
    assert np.abs(out[2:].astype(int) - ctx[2:]).mean() > 1.0  # the rest is predicted
