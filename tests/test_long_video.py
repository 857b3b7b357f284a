"""Long video: autoregressive extension (overlap honoured) and hierarchical keyframes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tiny_pipeline import image, make_pipeline

from stiv_jax import long_video
from stiv_jax.pipeline import Request
from stiv_jax.video import to_uint8


@pytest.fixture
def spied(tiny_config):
    """A tiny pipeline that records every chunk request and its output."""
    pipe = make_pipeline(tiny_config)
    calls = []
    inner = pipe.generate

    def generate(reqs, frames=None):
        out = inner(reqs, frames)
        calls.extend((r, v) for r, v in zip(reqs, out) if not r.long_mode)
        return out

    pipe.generate = generate
    return pipe, calls


def test_extension_gives_n_chunks_with_the_overlap_honoured(spied, tiny_config):
    pipe, calls = spied
    tc, k = 4, long_video.overlap_frames(tiny_config)
    assert k == 2  # the training predict task's 2 latent frames = 2 pixel frames here
    n = 3
    total = tc + (n - 1) * (tc - k)
    first = image(1)
    out = pipe("a red circle moves left", frames=total, long_mode="extend", image=first)
    assert out.shape == (total, 16, 16, 3) and len(calls) == n
    chunks = [to_uint8(v) for _, v in calls]
    np.testing.assert_array_equal(chunks[0][0], first)  # the request's image is chunk 0's
    for i in range(1, n):  # each chunk starts with the previous chunk's last k frames
        np.testing.assert_array_equal(chunks[i][:k], chunks[i - 1][-k:])
        assert calls[i][0].seed == calls[0][0].seed + i
    stitched = np.concatenate([chunks[0]] + [c[k:] for c in chunks[1:]])
    np.testing.assert_array_equal(out, stitched)
    assert long_video.chunk_bounds(
        tiny_config, Request("x", "x", frames=total, long_mode="extend")
    ) == [4, 6]


def test_hierarchical_keyframes_then_interpolation(spied, tiny_config):
    pipe, calls = spied
    total = 10  # 4-frame chunks: keyframes at stride 3 (0, 3, 6, 9), three 4-frame clips
    out = pipe("a red circle moves left", frames=total, long_mode="hierarchical")
    assert out.shape == (total, 16, 16, 3)
    keys_req, keys = calls[0]
    assert keys_req.frame_stride == 3  # the micro-condition says the keyframes are strided
    keys = to_uint8(keys)
    np.testing.assert_array_equal(out[0::3], keys)  # every keyframe is kept exactly
    assert [r.frames for r, _ in calls[1:]] == [4, 4, 4]
    assert long_video.chunk_bounds(
        tiny_config, Request("x", "x", frames=10, long_mode="hierarchical")
    ) == [3, 6]


def test_long_requests_from_a_prompt_line_and_their_errors(tmp_path, tiny_config):
    from stiv_jax.sample import parse_prompts

    lines = [
        {"id": "ext", "prompt": "a red circle", "frames": 8, "long_mode": "extend"},
        {"id": "short", "prompt": "x", "frames": 4, "long_mode": "extend"},
        {"id": "mode", "prompt": "x", "frames": 8, "long_mode": "loop"},
        {"id": "key", "prompt": "x", "frames": 10, "long_mode": "hierarchical",
         "conditions": [{"image": "a.png", "frame": 4}]},
    ]  # fmt: skip
    from PIL import Image

    Image.fromarray(image(3)).save(tmp_path / "a.png")
    (tmp_path / "p.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    reqs, errors = parse_prompts(str(tmp_path / "p.jsonl"), tiny_config)
    assert [r.id for r in reqs] == ["ext"]
    assert "needs frames > the chunk's 4 frames" in errors[0]
    assert "long_mode 'loop' is unknown" in errors[1]
    assert "multiples of the stride 3" in errors[2]
    out = make_pipeline(tiny_config).generate(reqs)
    assert out[0].shape == (8, 16, 16, 3)
