"""Tests for stiv_jax/diffusion/flow.py: noising, targets, time sampling, shift and loss.

Shapes: B batch, F latent frames; x [B, F, H, W, C]; t [B].
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stiv_jax.data.schema import normalize_uint8
from stiv_jax.data.shapes import generate_clip
from stiv_jax.diffusion import (
    flow,
    flow_loss,
    interpolate,
    perturbed_target,
    resolution_shift,
    sample_time,
    shift_time,
    to_velocity,
    velocity_target,
)

SHAPE = (3, 4, 2, 3, 2)  # [B, F, H, W, C]


def _pair(seed=0):
    k1, k2 = jax.random.split(jax.random.key(seed))
    return jax.random.normal(k1, SHAPE), jax.random.normal(k2, SHAPE)


def test_interpolate_endpoints_and_broadcast():
    x1, eps = _pair()
    t = jnp.array([0.0, 0.25, 1.0])
    xt = interpolate(x1, eps, t)
    np.testing.assert_array_equal(xt[0], eps[0])
    np.testing.assert_array_equal(xt[2], x1[2])
    np.testing.assert_allclose(xt[1], 0.25 * x1[1] + 0.75 * eps[1], rtol=1e-6, atol=1e-6)
    assert xt.dtype == jnp.float32


def test_velocity_target_is_time_derivative_of_interpolate():
    x1, eps = _pair(1)
    t = jnp.array([0.1, 0.5, 0.9])
    # Forward difference in t of the (affine) path equals the target exactly up to rounding.
    h = 1e-2
    fd = (interpolate(x1, eps, t + h) - interpolate(x1, eps, t)) / h
    np.testing.assert_allclose(fd, velocity_target(x1, eps), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(velocity_target(x1, eps), x1 - eps, rtol=0, atol=0)


def test_interpolate_shape_mismatch_errors():
    with pytest.raises(ValueError, match="x1 shape"):
        interpolate(jnp.zeros((2, 3)), jnp.zeros((2, 4)), jnp.zeros((2,)))


def test_shift_time_formula_and_fixed_points():
    t = jnp.linspace(0.0, 1.0, 11)
    np.testing.assert_allclose(shift_time(t, 1.0), t, atol=1e-7)
    out = shift_time(t, 3.0)
    sigma = 1.0 - np.linspace(0.0, 1.0, 11)
    ref = 1.0 - 3.0 * sigma / (1.0 + 2.0 * sigma)  # SD3 eq. on σ
    np.testing.assert_allclose(out, ref, atol=1e-6)
    assert float(out[0]) == 0.0 and float(out[-1]) == 1.0
    assert np.all(np.diff(np.asarray(out)) > 0)  # still increasing
    assert np.all(np.asarray(out)[1:-1] < np.asarray(t)[1:-1])  # shift > 1 moves toward noise
    # Hand value: t = 0.5, shift 3 -> σ' = 1.5 / 2 = 0.75 -> t' = 0.25.
    np.testing.assert_allclose(shift_time(0.5, 3.0), 0.25, atol=1e-7)


def test_shift_time_matches_diffusers_flow_scheduler():
    torch = pytest.importorskip("torch", reason="torch is the reference for diffusers")
    diffusers = pytest.importorskip("diffusers", reason="diffusers scheduler is the reference")
    del torch
    sched = diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0)
    sigmas = np.linspace(1.0, 0.1, 10)
    sched.set_timesteps(sigmas=list(sigmas))
    ref_sigma = sched.sigmas.numpy()[:10]
    ours = 1.0 - np.asarray(shift_time(jnp.asarray(1.0 - sigmas), 3.0))
    np.testing.assert_allclose(ours, ref_sigma, atol=1e-6)


def test_resolution_shift():
    assert resolution_shift(256) == pytest.approx(1.0)
    assert resolution_shift(1024) == pytest.approx(2.0)
    assert resolution_shift(64) == pytest.approx(0.5)
    assert resolution_shift(4096, max_shift=3.0) == pytest.approx(3.0)
    assert resolution_shift(1024, base_tokens=64) == pytest.approx(4.0)
    with pytest.raises(ValueError, match="num_tokens=0"):
        resolution_shift(0)


def test_sample_time_logit_normal_statistics():
    t = np.asarray(sample_time(jax.random.key(0), 20000))
    assert t.dtype == np.float32 and t.shape == (20000,)
    assert np.all((t > 0) & (t < 1))
    assert abs(t.mean() - 0.5) < 0.01  # symmetric around 0.5 for logit_mean = 0
    # logit(t) must be N(0, 1): compare std of the logits.
    logits = np.log(t) - np.log1p(-t)
    assert abs(logits.std() - 1.0) < 0.03
    # A positive logit_mean moves mass to the data end (t = 1).
    t_pos = np.asarray(sample_time(jax.random.key(0), 20000, logit_mean=1.0))
    assert t_pos.mean() > 0.6


def test_sample_time_uniform_and_shift():
    key = jax.random.key(1)
    t = np.asarray(sample_time(key, 20000, method="uniform"))
    assert np.all((t > 0) & (t < 1))
    assert abs(t.mean() - 0.5) < 0.01 and abs(t.var() - 1 / 12) < 0.005
    shifted = np.asarray(sample_time(key, 20000, method="uniform", shift=3.0))
    assert np.all((shifted > 0) & (shifted < 1))
    # Same draws, shifted: every sample moves toward noise; E[t'] for U(0,1) with shift 3 is
    # 1 − ∫ 3σ/(1 + 2σ) dσ = 1 − (3/2)(1 − ln(3)/2) ≈ 0.324.
    assert np.all(shifted <= t + 1e-6)
    assert abs(shifted.mean() - (1 - 1.5 * (1 - np.log(3) / 2))) < 0.01
    # Extreme logits still land strictly inside (0, 1).
    t_ext = np.asarray(sample_time(key, 1000, logit_std=100.0))
    assert np.all((t_ext > 0) & (t_ext < 1))


def test_sample_time_noisy_share_mixes_in_the_noisy_law():
    key, n = jax.random.key(3), 40000
    base = np.asarray(sample_time(key, n, logit_mean=-0.8, logit_std=0.8))
    # Share 0 draws exactly what the plain law draws (runs without the mixture are unchanged).
    same = sample_time(key, n, logit_mean=-0.8, logit_std=0.8, noisy_share=0.0)
    np.testing.assert_array_equal(np.asarray(same), base)
    mixed = np.asarray(
        sample_time(key, n, logit_mean=-0.8, logit_std=0.8, noisy_share=0.3, noisy_law=(-2.5, 0.5))
    )
    changed = mixed != base
    assert abs(changed.mean() - 0.3) < 0.01  # about 30% of the draws replaced
    logits = np.log(mixed[changed]) - np.log1p(-mixed[changed])
    assert abs(logits.mean() + 2.5) < 0.02 and abs(logits.std() - 0.5) < 0.02
    with pytest.raises(ValueError, match="noisy_share=1.5"):
        sample_time(key, 4, noisy_share=1.5, noisy_law=(-2.5, 0.5))
    with pytest.raises(ValueError, match="needs noisy_law"):
        sample_time(key, 4, noisy_share=0.3)
    with pytest.raises(ValueError, match="got \\(-2.5,\\)"):
        sample_time(key, 4, noisy_share=0.3, noisy_law=(-2.5,))


def test_sample_time_bad_method():
    with pytest.raises(ValueError, match="method='cosine'"):
        sample_time(jax.random.key(0), 4, method="cosine")


def test_sample_time_jits():
    f = jax.jit(sample_time, static_argnums=1, static_argnames=("method",))
    t = f(jax.random.key(0), 8, method="uniform", shift=2.0)
    assert t.shape == (8,)


def test_flow_loss_value_matches_numpy():
    v, tgt = _pair(2)
    mask = jnp.array([[True, False, True, True], [False] * 4, [True, True, True, False]])
    loss = flow_loss(v, tgt, mask)
    err = (np.asarray(v) - np.asarray(tgt)) ** 2
    m = np.asarray(mask)
    ref = err[m].sum() / (m.sum() * np.prod(SHAPE[2:]))
    np.testing.assert_allclose(loss, ref, rtol=1e-6)
    # Full mask is the plain MSE.
    full = flow_loss(v, tgt, jnp.ones(SHAPE[:2], bool))
    np.testing.assert_allclose(full, err.mean(), rtol=1e-6)


def test_flow_loss_ignores_given_frames():
    v, tgt = _pair(3)
    mask = jnp.ones(SHAPE[:2], bool).at[:, 0].set(False)  # frame 0 given (TI2V)
    base = flow_loss(v, tgt, mask)
    changed = v.at[:, 0].add(100.0)
    np.testing.assert_array_equal(flow_loss(changed, tgt, mask), base)
    # Even NaN on a given frame stays out.
    nan = v.at[:, 0].set(jnp.nan)
    np.testing.assert_array_equal(flow_loss(nan, tgt, mask), base)
    # ... but a counted frame does change it (the test can fail).
    assert float(flow_loss(v.at[:, 1].add(1.0), tgt, mask)) > float(base)
    # Gradients on given frames are zero.
    g = jax.grad(lambda p: flow_loss(p, tgt, mask))(v)
    assert float(jnp.abs(g[:, 0]).max()) == 0.0 and float(jnp.abs(g[:, 1:]).max()) > 0


def test_flow_loss_all_masked_is_zero_and_finite():
    v, tgt = _pair(4)
    mask = jnp.zeros(SHAPE[:2], bool)
    loss = flow_loss(v, tgt, mask)
    assert float(loss) == 0.0
    g = jax.grad(lambda p: flow_loss(p, tgt, mask))(v)
    assert bool(jnp.all(jnp.isfinite(g)))


def test_flow_loss_bf16_inputs_computed_in_float32():
    v, tgt = _pair(5)
    mask = jnp.ones(SHAPE[:2], bool)
    loss = flow_loss(v.astype(jnp.bfloat16), tgt.astype(jnp.bfloat16), mask)
    assert loss.dtype == jnp.float32
    ref = np.mean(
        (
            np.asarray(v.astype(jnp.bfloat16), np.float32)
            - np.asarray(tgt.astype(jnp.bfloat16), np.float32)
        )
        ** 2
    )
    np.testing.assert_allclose(loss, ref, rtol=1e-6)


def test_flow_loss_bad_mask_shape():
    v, tgt = _pair(6)
    with pytest.raises(ValueError, match="loss_mask shape"):
        flow_loss(v, tgt, jnp.ones((3, 5), bool))


def test_to_velocity_data_and_velocity_and_bad_name():
    x1, eps = _pair(5)
    t = jnp.asarray([0.0, 0.3, 0.8])
    x_t = interpolate(x1, eps, t)
    np.testing.assert_allclose(
        np.asarray(to_velocity(x1, x_t, t, "data")), np.asarray(x1 - eps), atol=1e-5
    )
    np.testing.assert_array_equal(np.asarray(to_velocity(eps, x_t, t, "velocity")), np.asarray(eps))
    with pytest.raises(ValueError, match="prediction='x0'"):
        to_velocity(x1, x_t, t, "x0")


def test_motion_weight_matches_its_formula_and_marks_only_what_moves():
    """1 + s·min(1, mean_C |x[f] − x[0]| / δ) (numpy loop); on a ShapesBench clip with still
    background the weighted pixels are the objects' places, frame 0 weighs 1."""
    x = np.random.default_rng(0).normal(size=(2, 3, 4, 4, 3)).astype(np.float32) * 0.1
    want = np.ones((2, 3, 4, 4), np.float32)
    for b, f, i, j in np.ndindex(2, 3, 4, 4):
        c = np.mean(np.abs(x[b, f, i, j] - x[b, 0, i, j]))
        want[b, f, i, j] = 1 + 3.0 * min(1.0, c / flow.MOTION_DELTA)
    np.testing.assert_allclose(flow.motion_weight(jnp.asarray(x), 3.0), want, rtol=1e-6)
    index = next(
        i
        for i in range(200)
        if (c := generate_clip(i, res=32, frames=8))["truth"]["background"]["kind"] == "plain"
        and c["truth"]["camera"]["pan"] == "none"
        and any(o["motion"] not in ("still", "grow", "shrink") for o in c["truth"]["objects"])
    )
    clip = generate_clip(index, res=32, frames=8)
    w = np.asarray(flow.motion_weight(jnp.asarray(normalize_uint8(clip["video"]))[None], 4.0))[0]
    assert w.shape == (8, 32, 32) and np.all(w[0] == 1.0) and w.max() == 5.0
    moved = w > 1.0
    background = np.all(clip["video"] == np.asarray(clip["truth"]["background"]["rgb"]), -1)
    assert not np.any(moved & background & background[:1])  # bg in both frames: weight 1
    assert 0.0 < moved.mean() < 0.2  # objects are a small share of the pixels
    with pytest.raises(ValueError, match="strength=-1"):
        flow.motion_weight(jnp.asarray(x), -1.0)


def test_perturbed_target_ignores_the_input_perturbation():
    """DDPM-IP (`diffusion.input_perturb`): the model's input holds ε + γ·ξ, the target does
    not. x-prediction: an exact x̂1 = x1 has zero loss whatever the perturbation, and without
    one the target is the plain v = x1 − ε; velocity prediction keeps v = x1 − ε."""
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    x1 = jax.random.normal(k1, (3, 2, 4, 4, 3))
    eps = jax.random.normal(k2, x1.shape)
    xi = jax.random.normal(k3, x1.shape)
    t = jnp.array([0.1, 0.5, 0.9])
    x_t = interpolate(x1, eps + 0.1 * xi, t)
    target = perturbed_target(x1, eps, x_t, t, "data")
    np.testing.assert_allclose(to_velocity(x1, x_t, t, "data"), target, atol=1e-6)
    assert float(jnp.abs(target - velocity_target(x1, eps)).max()) > 0.05  # it moved
    plain = interpolate(x1, eps, t)
    np.testing.assert_allclose(
        perturbed_target(x1, eps, plain, t, "data"), velocity_target(x1, eps), atol=1e-5
    )
    np.testing.assert_array_equal(
        perturbed_target(x1, eps, x_t, t, "velocity"), velocity_target(x1, eps)
    )
