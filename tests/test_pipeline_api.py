"""STIVPipeline inference features: negative prompt, video-to-video strength, per-request
shapes (one compiled sampler per shape), prompt-line application fields."""

from __future__ import annotations

import numpy as np
import pytest
from tiny_pipeline import image, make_pipeline

from stiv_jax.pipeline import Request, request_fields


@pytest.fixture
def pipe(tiny_config):
    return make_pipeline(tiny_config)


def test_negative_prompt_changes_the_output(pipe):
    plain = pipe("a red circle moves left", seed=1)
    empty = pipe("a red circle moves left", seed=1, negative_prompt="")
    neg = pipe("a red circle moves left", seed=1, negative_prompt="a blue square moves up")
    np.testing.assert_array_equal(empty, plain)  # "" is the null prompt
    assert np.abs(neg.astype(int) - plain).max() > 5


def test_v2v_strength_zero_returns_the_input_and_one_ignores_it(pipe):
    src = np.stack([image(i) for i in range(4)])
    kept = pipe("a red circle moves left", video=src, strength=0.0, seed=2)
    np.testing.assert_array_equal(kept, src)
    fresh = pipe("a red circle moves left", seed=2)
    np.testing.assert_array_equal(
        pipe("a red circle moves left", video=src, strength=1.0, seed=2), fresh
    )
    half = pipe("a red circle moves left", video=src, strength=0.5, seed=2)
    d_src, d_fresh = np.abs(half.astype(int) - src).mean(), np.abs(half.astype(int) - fresh).mean()
    assert d_src > 1.0 and d_fresh > 1.0  # between the two
    assert d_src < np.abs(fresh.astype(int) - src).mean()  # closer to the input than noise is


def test_per_request_shapes_one_compiled_sampler_each(pipe):
    reqs = [
        Request(id="a", prompt="a red circle", seed=0),
        Request(id="b", prompt="a red circle", seed=0, frames=8, height=8, width=24),
        Request(id="c", prompt="a blue square", seed=1),
        # an image loaded at data.res is refitted to this request's size
        Request(
            id="e",
            prompt="x",
            height=8,
            width=8,
            first_frame=np.zeros((16, 16, 3)),
            cond_frames=[0],
        ),  # fmt: skip
    ]
    out = pipe.generate(reqs)
    assert [v.shape for v in out] == [(4, 16, 16, 3), (8, 8, 24, 3), (4, 16, 16, 3), (4, 8, 8, 3)]
    assert pipe.sample_fn._cache_size() == 3  # 16x16x4 (a and c batched), 8x24x8, 8x8x4
    with pytest.raises(ValueError, match="height and width multiples of 2"):
        pipe.generate([Request(id="d", prompt="x", height=15)])


def text_and_image_requests() -> list[Request]:
    """A text-only request (seed 3) and one that gives frame 0 (seed 4), the same prompt."""
    prompt, frame = "a red circle moves left", image(7).astype(np.float32) / 127.5 - 1.0
    return [
        Request(id="t", prompt=prompt, seed=3),
        Request(id="i", prompt=prompt, seed=4, first_frame=frame, cond_frames=[0]),
    ]


def test_t2v_image_first_gives_the_first_pass_frame_0_to_a_second_pass(pipe):
    reqs = text_and_image_requests()
    off = pipe.generate(reqs)
    pipe.config.sample.t2v_image_first = True
    on = pipe.generate(reqs)
    np.testing.assert_array_equal(on[1], off[1])  # a request that gives a frame: one pass
    np.testing.assert_array_equal(on[0][0], off[0][0])  # frame 0 is the first pass's
    assert np.abs(on[0][1:] - off[0][1:]).max() > 0.05  # the rest is sampled again
    # The second pass: the same noise, latent frame 0 of the first pass's output given in
    # the text-only row (the row that gave a frame keeps its inputs), at the guidance of
    # requests that give frames.
    calls, sample_fn = [], pipe.sample_fn

    def spy(params, x0, cond, null, scale, t_start):
        out = sample_fn(params, x0, cond, null, scale, t_start)
        calls.append(
            [np.asarray(a) for a in (x0, cond["cond_mask"], cond["cond_latents"], scale, out)]
        )
        return out

    pipe._sample_fn = spy
    pipe.config.sample.cfg_scale, pipe.config.sample.cfg_scale_given = 3.0, 1.0
    pipe.generate(reqs)
    (x0, mask0, given0, scale0, out0), (x1, mask1, given1, scale1, _) = calls
    np.testing.assert_array_equal(x1, x0)
    assert mask0[0].tolist() == [False] * len(mask0[0]) and mask1[0, 0] and not mask1[0, 1:].any()
    np.testing.assert_array_equal(given1[0, 0], out0[0, 0])
    np.testing.assert_array_equal(mask1[1], mask0[1])
    np.testing.assert_array_equal(given1[1], given0[1])
    assert scale0.tolist() == [3.0, 1.0] and scale1.tolist() == [1.0, 1.0]


def test_request_fields_parse_and_refuse():
    f = request_fields({
        "conditions": [{"image": "a.png", "frame": 0}, {"video": "c.mp4", "frames": [2, 3]}],
        "negative_prompt": "blur", "video": "in.mp4", "strength": 0.3, "frames": 8,
    })  # fmt: skip
    assert [(c.frame, c.media, c.last) for c in f["conditions"]] == [
        (0, "a.png", None),
        (2, "c.mp4", 3),
    ]
    assert f["strength"] == 0.3 and f["frames"] == 8 and f["negative_prompt"] == "blur"
    for bad, msg in (
        ({"conditions": [{"image": "a.png"}]}, "needs one integer pixel frame"),
        ({"conditions": [{"video": "c.mp4", "frames": [3, 1]}]}, r"must be \[first, last\]"),
        ({"conditions": [{"image": "a.png", "frame": 0, "fps": 3}]}, "unknown keys"),
        ({"strength": 0.5}, "without a video"),
        ({"video": "v.mp4", "strength": 2}, r"must be a number in \[0, 1\]"),
        ({"frames": 0}, "frames 0 must be an integer >= 1"),
    ):
        with pytest.raises(ValueError, match=msg):
            request_fields(bad)


def spy_on(pipe):
    """Installs spies on `pipe`'s sampler and caption score (built fresh for the config):
    (calls: [x0, cond_mask, cond_latents, out] per sampler call, scores: (x, cond, null,
    noise, out) per score call, the real score function)."""
    calls, scores, sample_fn = [], [], pipe.sample_fn
    pipe._score_fn = None
    score_fn = pipe.score_fn
    assert score_fn is not None

    def spy(params, x0, cond, null, scale, t_start):
        out = sample_fn(params, x0, cond, null, scale, t_start)
        calls.append([np.asarray(a) for a in (x0, cond["cond_mask"], cond["cond_latents"], out)])
        return out

    def spy_score(params, x, cond, null, noise):
        out = score_fn(params, x, cond, null, noise)
        scores.append((x, cond, null, noise, np.asarray(out)))
        return out

    pipe._sample_fn, pipe._score_fn = spy, spy_score
    return calls, scores, score_fn


def test_t2v_candidates_keep_each_text_rows_best_scoring_first_pass(pipe):
    import jax

    from stiv_jax import candidates

    reqs = [*text_and_image_requests(), Request(id="u", prompt="a blue square grows", seed=5)]
    pipe.config.sample.t2v_image_first = True
    one = pipe.generate(reqs)
    pipe.config.sample.t2v_candidates = 3
    calls, scores, score_fn = spy_on(pipe)
    three = pipe.generate(reqs)
    assert len(calls) == 4 and len(scores) == 3  # 3 first passes (each scored), 1 second
    # candidate 0 is the request's own noise (t2v_candidates=1's first pass); the others
    # are new draws in the text-only rows only
    for m in (1, 2):
        np.testing.assert_array_equal(calls[m][0][1], calls[0][0][1])
        assert np.abs(calls[m][0][[0, 2]] - calls[0][0][[0, 2]]).min() > 0
    s = np.stack([out for *_, out in scores])  # [candidate, row]
    for row in (0, 2):
        best = int(np.argmax(s[:, row]))
        np.testing.assert_array_equal(calls[3][2][row, 0], calls[best][3][row, 0])
        if best == 0:  # the first pass kept: the same video as with one candidate
            np.testing.assert_allclose(three[row], one[row], atol=1e-6)
    np.testing.assert_array_equal(three[1], one[1])  # a request that gives a frame: untouched
    # a row's score depends on its own request only (its noise comes from its seed)
    x, cond, null, noise, out = scores[0]
    np.testing.assert_array_equal(
        np.asarray(noise[:1]), np.asarray(candidates.score_noise([3], x.shape[1:], 3))
    )
    alone = score_fn(pipe.params, x[:1], jax.tree.map(lambda a: a[:1], cond), null, noise[:1])
    np.testing.assert_allclose(np.asarray(alone)[0], out[0], rtol=1e-4, atol=1e-6)


def test_ti2v_candidates_keep_each_frame_giving_rows_best_by_the_score_of_its_other_frames(pipe):
    import jax
    from flax import nnx

    from stiv_jax import candidates
    from stiv_jax.conditioning import drop_text
    from stiv_jax.diffusion import to_velocity

    assert pipe.config.model.get("prediction", "velocity") == "velocity"

    reqs = [*text_and_image_requests(), Request(id="j", prompt="a blue square", seed=6,
                                                first_frame=image(9).astype(np.float32) / 127.5 - 1.0,
                                                cond_frames=[0])]  # fmt: skip
    one = pipe.generate(reqs)
    pipe.config.sample.ti2v_candidates = 3
    calls, scores, _ = spy_on(pipe)
    three = pipe.generate(reqs)
    assert len(calls) == 3 and len(scores) == 3  # the sample and 2 candidates, each scored
    for m in (1, 2):  # new draws in the frame-giving rows only
        np.testing.assert_array_equal(calls[m][0][0], calls[0][0][0])
        assert np.abs(calls[m][0][[1, 2]] - calls[0][0][[1, 2]]).min() > 0  # x0
    s = np.stack([out for *_, out in scores])  # [candidate, row]
    for row in (1, 2):
        best = int(np.argmax(s[:, row]))
        np.testing.assert_allclose(three[row], np.clip(calls[best][3][row], -1, 1), atol=1e-6)
        if best == 0:
            np.testing.assert_allclose(three[row], one[row], atol=1e-6)
    np.testing.assert_array_equal(three[0], one[0])  # the text-only request: untouched
    # the score of a frame-giving row: the caption against the null text with the frame
    # kept, on the frames not given (frame 0's error plays no part)
    x, cond, null, noise, out = scores[0]
    model = nnx.merge(pipe.graphdef, pipe.params)
    row = jax.tree.map(lambda a: a[1:2], cond)
    ref = 0.0
    for k, t in enumerate(pipe.config.sample.t2v_score_levels):
        xt, tt = t * x[1:2] + (1 - t) * noise[1:2, k], np.full((1,), t, np.float32)
        err = []
        for c in (row, drop_text(row, np.ones((1,), bool), null)):
            x1 = xt + (1 - t) * to_velocity(model(xt, tt, c), xt, tt, "velocity")
            err.append(float(np.mean((np.asarray(x1)[:, 1:] - np.asarray(x)[1:2, 1:]) ** 2)))
        ref += err[1] - err[0]
    np.testing.assert_allclose(out[1], ref, rtol=1e-3, atol=1e-6)
    np.testing.assert_array_equal(
        np.asarray(noise[1:2]), np.asarray(candidates.score_noise([4], x.shape[1:], 3))
    )


@pytest.mark.parametrize("value", [0, -1, True])
def test_ti2v_candidates_bad_values_are_one_line_errors(pipe, value):
    pipe.config.sample.ti2v_candidates = value
    with pytest.raises(ValueError, match="expected an integer >= 1") as e:
        pipe.generate(text_and_image_requests())
    assert "\n" not in str(e.value) and "sample.ti2v_candidates" in str(e.value)


@pytest.mark.parametrize(
    "value,msg",
    [(0, "expected an integer >= 1"), (-2, "expected an integer >= 1"),
     (True, "expected an integer >= 1"), (3, "expected sample.t2v_image_first=True")],
)  # fmt: skip
def test_t2v_candidates_bad_values_are_one_line_errors(pipe, value, msg):
    pipe.config.sample.t2v_image_first = value != 3
    pipe.config.sample.t2v_candidates = value
    with pytest.raises(ValueError, match=msg) as e:
        pipe.generate([Request(id="t", prompt="a red circle", seed=0)])
    assert "\n" not in str(e.value) and "sample.t2v_candidates" in str(e.value)
