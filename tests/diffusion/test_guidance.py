"""Tests for stiv_jax/diffusion/guidance.py: one-call joint / separate CFG and renormalisation.

Shapes: B batch, F latent frames, L text tokens, D width; x [B, F, H, W, C]; t [B].
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stiv_jax.diffusion import (
    check_interval,
    guided_velocity,
    make_guided_fn,
    renormalize,
    sample_ode,
)

B, F, H, W, C, L, D = 2, 3, 2, 2, 2, 4, 5


class CountingModel:
    """Nonlinear toy velocity model that mixes every condition leaf per sample.

    Records the batch size of each call on the Python side (outside jit this counts calls).
    """

    def __init__(self, seed=0):
        k = jax.random.split(jax.random.key(seed), 3)
        self.w_text = jax.random.normal(k[0], (D, C))
        self.w_img = jax.random.normal(k[1], (C, C))
        self.w_x = jax.random.normal(k[2], (C, C))
        self.batches = []

    def __call__(self, x, t, cond):
        self.batches.append(x.shape[0])
        text = jnp.einsum("bld,dc->bc", cond["text"] * cond["text_mask"][..., None], self.w_text)
        img = jnp.einsum("bfhwc,cd->bfhwd", cond["image"], self.w_img)
        h = jnp.einsum("bfhwc,cd->bfhwd", x, self.w_x) + text[:, None, None, None, :] + img
        return jnp.tanh(h) * (1.0 + t[:, None, None, None, None])


def _conds(seed=1):
    k = jax.random.split(jax.random.key(seed), 3)
    full = {
        "text": jax.random.normal(k[0], (B, L, D)),
        "text_mask": jnp.ones((B, L), bool),
        "image": jax.random.normal(k[1], (B, F, H, W, C)),
    }
    image_only = {**full, "text": jnp.zeros((B, L, D)), "text_mask": jnp.zeros((B, L), bool)}
    null = {**image_only, "image": jnp.zeros((B, F, H, W, C))}
    x = jax.random.normal(k[2], (B, F, H, W, C))
    t = jnp.array([0.3, 0.8], jnp.float32)
    return full, image_only, null, x, t


def test_joint_equals_two_pass_formula_in_one_call():
    model = CountingModel()
    full, _, null, x, t = _conds()
    v = guided_velocity(model, x, t, (full, null), mode="joint", scale=4.0)
    assert model.batches == [2 * B]  # exactly ONE call, batch 2B
    v_full, v_null = model(x, t, full), model(x, t, null)
    np.testing.assert_allclose(v, v_null + 4.0 * (v_full - v_null), rtol=1e-6, atol=1e-6)
    # scale = 1 is the conditional prediction, scale = 0 the unconditional one.
    np.testing.assert_allclose(
        guided_velocity(model, x, t, (full, null), scale=1.0), v_full, atol=1e-6
    )
    np.testing.assert_allclose(
        guided_velocity(model, x, t, (full, null), scale=0.0), v_null, atol=1e-6
    )
    # Guidance changes the result (the test can fail if branches were mixed up).
    assert float(jnp.abs(v - v_full).max()) > 1e-2


def test_separate_equals_three_pass_formula_in_one_call():
    model = CountingModel()
    full, img, null, x, t = _conds()
    v = guided_velocity(
        model, x, t, (full, img, null), mode="separate", text_scale=5.0, image_scale=1.5
    )
    assert model.batches == [3 * B]
    v_full, v_img, v_null = model(x, t, full), model(x, t, img), model(x, t, null)
    ref = v_null + 1.5 * (v_img - v_null) + 5.0 * (v_full - v_img)
    np.testing.assert_allclose(v, ref, rtol=1e-6, atol=1e-6)
    # Swapping the image and null branches must change the answer.
    swapped = guided_velocity(
        model, x, t, (full, null, img), mode="separate", text_scale=5.0, image_scale=1.5
    )
    assert float(jnp.abs(swapped - v).max()) > 1e-2


@pytest.mark.parametrize("mode", ["joint", "separate"])
def test_interval_guides_inside_and_is_conditional_outside(mode):
    model = CountingModel()
    full, img, null, x, t = _conds()  # t = (0.3, 0.8): sample 0 inside [0, 0.5), sample 1 not
    branches = (full, null) if mode == "joint" else (full, img, null)
    kw = dict(scale=4.0) if mode == "joint" else dict(text_scale=5.0, image_scale=1.5)
    v = guided_velocity(model, x, t, branches, mode=mode, interval=(0.0, 0.5), **kw)
    every = guided_velocity(model, x, t, branches, mode=mode, **kw)
    v_full = model(x, t, full)
    np.testing.assert_allclose(v[0], every[0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(v[1], v_full[1], rtol=1e-6, atol=1e-6)
    assert float(jnp.abs(every[1] - v_full[1]).max()) > 1e-2  # guidance did change sample 1
    # hi = 1 includes t = 1 (Heun's last corrector evaluates there): (0, 1) is every step.
    at_one = guided_velocity(model, x, 1.0, branches, mode=mode, interval=(0.0, 1.0), **kw)
    np.testing.assert_allclose(
        at_one, guided_velocity(model, x, 1.0, branches, mode=mode, **kw), rtol=1e-6, atol=1e-6
    )
    # Per-sample scales and a scalar t follow the same rule.
    both = guided_velocity(model, x, 0.6, branches, mode=mode, interval=(0.5, 1.0), **kw)
    np.testing.assert_allclose(
        both, guided_velocity(model, x, 0.6, branches, mode=mode, **kw), rtol=1e-6, atol=1e-6
    )
    scales = jnp.array([4.0, 2.0])
    per = guided_velocity(model, x, t, (full, null), scale=scales, interval=(0.5, 1.0))
    np.testing.assert_allclose(per[0], v_full[0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(
        per[1], guided_velocity(model, x, t, (full, null), scale=scales)[1], rtol=1e-6, atol=1e-6
    )


@pytest.mark.parametrize("bad", [(0.5, 0.5), (-0.1, 0.5), (0.2, 1.5), ("a", 1.0), (0.1,)])
def test_interval_rejects_bad_values_in_one_line(bad):
    with pytest.raises(ValueError, match="guidance interval") as e:
        check_interval(bad)
    assert "\n" not in str(e.value)


def test_jitted_guided_sampler_calls_model_once_per_step_trace():
    model = CountingModel()
    full, _, null, x, _ = _conds()
    fn = make_guided_fn(model, (full, null), scale=3.0)
    out = jax.jit(lambda e: sample_ode(fn, e, steps=6, solver="euler"))(x)
    assert model.batches == [2 * B]  # traced once in the fori_loop body, batch 2B
    # Same result as an eager Python loop over the two-pass formula.
    xs, grid = x, np.linspace(0, 1, 7)
    for t0, t1 in zip(grid[:-1], grid[1:], strict=True):
        tt = jnp.full((B,), t0, jnp.float32)
        v_full, v_null = model(xs, tt, full), model(xs, tt, null)
        xs = xs + (t1 - t0) * (v_null + 3.0 * (v_full - v_null))
    np.testing.assert_allclose(out, xs, rtol=1e-5, atol=1e-5)


def test_renorm_caps_norm_and_is_identity_below():
    model = CountingModel()
    full, _, null, x, t = _conds()
    v_full = model(x, t, full)
    for scale in (0.5, 1.0, 3.0, 10.0):
        plain = guided_velocity(model, x, t, (full, null), scale=scale)
        capped = guided_velocity(model, x, t, (full, null), scale=scale, renorm=True)
        n_plain = np.linalg.norm(np.asarray(plain).reshape(B, -1), axis=1)
        n_full = np.linalg.norm(np.asarray(v_full).reshape(B, -1), axis=1)
        n_capped = np.linalg.norm(np.asarray(capped).reshape(B, -1), axis=1)
        assert np.all(n_capped <= n_full * (1 + 1e-5))
        for b in range(B):
            if n_plain[b] <= n_full[b]:
                np.testing.assert_array_equal(capped[b], plain[b])
            else:  # scaled down onto the sphere of radius ‖v_full‖, same direction
                np.testing.assert_allclose(n_capped[b], n_full[b], rtol=1e-5)
                np.testing.assert_allclose(
                    capped[b] * n_plain[b], plain[b] * n_capped[b], rtol=1e-4
                )
    # At high scale at least one sample must actually be capped (the test can fail).
    big = guided_velocity(model, x, t, (full, null), scale=10.0)
    assert np.any(np.linalg.norm(np.asarray(big).reshape(B, -1), axis=1) > n_full)
    # Zero velocity stays zero without NaN.
    z = renormalize(jnp.zeros((B, 3)), jnp.zeros((B, 3)))
    assert bool(jnp.all(z == 0))


def test_renorm_per_sample():
    v = jnp.array([[3.0, 4.0], [0.3, 0.4]])  # norms 5, 0.5
    v_full = jnp.array([[1.0, 0.0], [1.0, 0.0]])  # norms 1, 1
    out = renormalize(v, v_full)
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.3, 0.4]], rtol=1e-6)


def test_scalar_t_broadcasts():
    model = CountingModel()
    full, _, null, x, _ = _conds()
    a = guided_velocity(model, x, 0.5, (full, null), scale=2.0)
    b = guided_velocity(model, x, jnp.full((B,), 0.5), (full, null), scale=2.0)
    np.testing.assert_array_equal(a, b)


def test_branch_validation_errors():
    model = CountingModel()
    full, img, null, x, t = _conds()
    with pytest.raises(ValueError, match="mode='joint' needs 2 condition branches, got 3"):
        guided_velocity(model, x, t, (full, img, null), mode="joint")
    with pytest.raises(ValueError, match="mode='separate' needs 3 condition branches, got 2"):
        guided_velocity(model, x, t, (full, null), mode="separate")
    with pytest.raises(ValueError, match="mode='triple'"):
        guided_velocity(model, x, t, (full, null), mode="triple")
    with pytest.raises(ValueError, match="pytree structure"):
        guided_velocity(model, x, t, (full, {"text": full["text"]}))
    bad = {**null, "text": jnp.zeros((B + 1, L, D))}
    with pytest.raises(ValueError, match="leading batch 2"):
        guided_velocity(model, x, t, (full, bad))
    assert model.batches == []  # validation happens before any model call


def test_per_sample_scales():
    model = CountingModel()
    full, img, null, x, t = _conds()
    scales = jnp.array([1.0, 6.0])
    v = guided_velocity(model, x, t, (full, null), scale=scales)
    for b in range(B):
        ref = guided_velocity(model, x, t, (full, null), scale=float(scales[b]))
        np.testing.assert_allclose(v[b], ref[b], rtol=1e-6, atol=1e-6)
    # The lead's broadcast form [B, 1, 1, 1, 1] gives the same.
    v5 = guided_velocity(model, x, t, (full, null), scale=scales[:, None, None, None, None])
    np.testing.assert_array_equal(v5, v)
    vs = guided_velocity(
        model, x, t, (full, img, null), mode="separate", text_scale=scales, image_scale=scales / 2
    )
    for b in range(B):
        ref = guided_velocity(
            model,
            x,
            t,
            (full, img, null),
            mode="separate",
            text_scale=float(scales[b]),
            image_scale=float(scales[b]) / 2,
        )
        np.testing.assert_allclose(vs[b], ref[b], rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="per-sample scale has shape"):
        guided_velocity(model, x, t, (full, null), scale=jnp.ones((3,)))


def test_renorm_rescale_mode_takes_the_conditional_norm_both_ways():
    v = jnp.array([[3.0, 4.0], [0.3, 0.4], [0.0, 0.0]])  # norms 5, 0.5, 0
    v_full = jnp.array([[1.0, 0.0], [1.0, 0.0], [2.0, 0.0]])  # norms 1, 1, 2
    out = renormalize(v, v_full, "rescale")
    # scaled down AND up onto ‖v_full‖ (scale_down would keep the second row), 0 stays 0
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.6, 0.8], [0.0, 0.0]], rtol=1e-6)
    with pytest.raises(ValueError, match="renorm mode 'nope' is unknown"):
        renormalize(v, v_full, "nope")


@pytest.mark.parametrize("prediction", ["data", "velocity"])
def test_self_conditioned_fn_feeds_every_branch_row_its_previous_estimate(prediction):
    """make_self_conditioned_fn: the first model call sees zeros, each later call the x̂1 its
    own branch row produced in the call before (to_data of that output), and the guided
    velocity equals guided_velocity's with the same estimates given."""
    from stiv_jax.diffusion import make_self_conditioned_fn, to_data

    x0 = jax.random.normal(jax.random.key(0), (B, F, H, W, C))
    text = jax.random.normal(jax.random.key(1), (B, L, D))
    branches = ({"text": text}, {"text": jnp.zeros_like(text)})
    seen, outs = [], []

    def model_fn(x, t, cond):  # output depends on x, t, the branch and the estimate
        seen.append(np.asarray(cond["self_cond"]))
        out = (
            0.5 * x
            + cond["text"].mean((1, 2))[:, None, None, None, None]
            + 0.3 * jnp.sin(cond["self_cond"])
            + t[:, None, None, None, None]
        )
        outs.append((np.asarray(x), np.asarray(t), np.asarray(out)))
        return out

    fn = make_self_conditioned_fn(model_fn, branches, prediction, scale=2.0)
    x, est = x0, jnp.zeros((2 * B, F, H, W, C))
    for t in (0.0, 1 / 3, 2 / 3):  # sample_ode's Euler loop, eagerly (the calls are recorded)
        v, est = fn(x, jnp.full((B,), t), est)
        x = x + v / 3
    assert len(seen) == 3
    np.testing.assert_array_equal(seen[0], 0.0)
    for i in (1, 2):
        x, t, out = outs[i - 1]
        np.testing.assert_allclose(seen[i], to_data(out, x, t, prediction), rtol=1e-6, atol=1e-6)
    x, t, out = outs[2]
    np.testing.assert_allclose(est, to_data(out, x, t, prediction), rtol=1e-6, atol=1e-6)
    assert np.abs(seen[1][:B] - seen[1][B:]).max() > 1e-3  # each branch row its own
    # The velocity is guided_velocity's with that estimate in every branch row.
    xa = jnp.asarray(outs[1][0][:B])
    ta = jnp.asarray(outs[1][1][:B])
    fixed = jnp.asarray(seen[1])
    want = guided_velocity(lambda x, t, c: (lambda o: (o - x) / (1 - t[:, None, None, None, None])
                                             if prediction == "data" else o)(
        model_fn(x, t, {**c, "self_cond": fixed})), xa, ta, branches, scale=2.0)  # fmt: skip
    got, _ = fn(xa, ta, fixed)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
