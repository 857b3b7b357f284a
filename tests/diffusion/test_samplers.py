"""Tests for stiv_jax/diffusion/samplers.py against the exact Gaussian-to-Gaussian flow.

Shapes: B batch, F latent frames; x [B, F, H, W, C]; t [B].

Analytic flow: x1 ~ N(μ, s²) and ε ~ N(0, 1) per element, independent; x_t = t·x1 + (1−t)·ε.
Then x_t ~ N(tμ, V_t) with V_t = t²s² + (1−t)², and u = x1 − ε is jointly Gaussian with x_t,
mean μ, Cov(u, x_t) = t·s² − (1−t). The marginal velocity is the conditional mean
  v(x, t) = E[u | x_t = x] = μ + (t·s² − (1−t)) / V_t · (x − tμ),
whose ODE flow is x_t = tμ + sqrt(V_t)·ε, so it maps ε (t = 0) to μ + s·ε (t = 1).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stiv_jax.diffusion import interpolate, sample_ode, shift_time, time_grid

SHAPE = (2, 3, 2, 2, 2)  # [B, F, H, W, C]


def _problem(seed=0):
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    mu = jax.random.normal(k1, SHAPE[1:])
    s = jnp.exp(jax.random.uniform(k2, SHAPE[1:], minval=np.log(0.5), maxval=np.log(2.0)))
    eps = jax.random.normal(k3, SHAPE)
    return mu, s, eps


def _analytic_velocity(mu, s):
    def v(x, t):
        tb = t.reshape((-1,) + (1,) * (x.ndim - 1))
        var = tb**2 * s**2 + (1 - tb) ** 2
        return mu + (tb * s**2 - (1 - tb)) / var * (x - tb * mu)

    return v


def _endpoint_error(steps, solver, shift=1.0, seed=0):
    mu, s, eps = _problem(seed)
    run = jax.jit(
        lambda e: sample_ode(_analytic_velocity(mu, s), e, steps=steps, solver=solver, shift=shift)
    )
    out = run(eps)
    return float(jnp.max(jnp.abs(out - (mu + s * eps))))


def test_analytic_velocity_is_exact_flow():
    # Sanity of the reference itself (in numpy, float64): along x_t = tμ + sqrt(V_t)·ε a central
    # difference of the path equals the velocity field; a wrong derivation would fail here.
    mu, s, eps = (np.asarray(a, np.float64) for a in _problem())
    v = _analytic_velocity(mu, s)

    def path(t):
        return t * mu + np.sqrt(t**2 * s**2 + (1 - t) ** 2) * eps

    for t in (0.1, 0.5, 0.9):
        fd = (path(t + 1e-4) - path(t - 1e-4)) / 2e-4
        np.testing.assert_allclose(fd, v(path(t), np.full((SHAPE[0],), t)), rtol=1e-5, atol=1e-5)
    # And it is the regression of the per-pair target x1 − ε on x_t (Monte Carlo, one element).
    rng = np.random.default_rng(7)
    n, m, sd, t = 200_000, float(mu[0, 0, 0, 0]), float(s[0, 0, 0, 0]), 0.3
    x1 = m + sd * rng.standard_normal(n)
    e = rng.standard_normal(n)
    xt = np.asarray(interpolate(x1, e, np.full((n,), t)), np.float64)
    u = x1 - e
    slope = np.cov(u, xt)[0, 1] / np.var(xt)
    intercept = u.mean() - slope * xt.mean()
    var = t**2 * sd**2 + (1 - t) ** 2
    np.testing.assert_allclose(slope, (t * sd**2 - (1 - t)) / var, atol=0.01)
    np.testing.assert_allclose(intercept, m - slope * t * m, atol=0.01)


def test_time_grid():
    g = np.asarray(time_grid(8))
    assert g.dtype == np.float32 and g.shape == (9,)
    np.testing.assert_allclose(g, np.linspace(0, 1, 9), atol=1e-7)
    gs = np.asarray(time_grid(8, shift=3.0))
    assert gs[0] == 0.0 and gs[-1] == 1.0 and np.all(np.diff(gs) > 0)
    np.testing.assert_allclose(gs, shift_time(jnp.linspace(0, 1, 9), 3.0), atol=1e-7)
    # Shift > 1: the first step (near noise) is smaller than uniform, the last one larger.
    assert gs[1] < 1 / 8 and gs[-1] - gs[-2] > 1 / 8
    with pytest.raises(ValueError, match="steps=0"):
        time_grid(0)


def test_euler_200_steps_reaches_endpoint():
    # Measured max-abs error ≈ 0.021 (endpoints are O(1)); Euler is first order.
    err = _endpoint_error(200, "euler")
    assert err < 4e-2, err


def test_heun_20_steps_reaches_endpoint():
    # Measured ≈ 0.0037: ten times fewer steps than Euler and still five times more accurate.
    err = _endpoint_error(20, "heun")
    assert err < 8e-3, err


def test_heun_far_more_accurate_than_euler_and_orders():
    e10, e20 = _endpoint_error(10, "euler"), _endpoint_error(20, "euler")
    h10, h20 = _endpoint_error(10, "heun"), _endpoint_error(20, "heun")
    assert h10 < e10 / 10, (h10, e10)
    # Empirical convergence order from doubling the steps: ≈1 for Euler, ≈2 for Heun.
    assert 1.6 < e10 / e20 < 2.5, (e10, e20)
    assert 3.0 < h10 / h20 < 5.5, (h10, h20)


@pytest.mark.parametrize("solver,steps,tol", [("euler", 200, 4e-2), ("heun", 30, 1e-2)])
def test_shifted_grid_reaches_endpoint(solver, steps, tol):
    # Measured ≈ 0.020 (Euler) and 0.0046 (Heun): shift 3 thins the steps near data, where this
    # flow bends most, so Heun needs a few more steps than on the uniform grid.
    err = _endpoint_error(steps, solver, shift=3.0)
    assert err < tol, err


def test_euler_matches_diffusers_scheduler():
    torch = pytest.importorskip("torch", reason="torch is the reference for diffusers")
    diffusers = pytest.importorskip("diffusers", reason="diffusers scheduler is the reference")
    mu, s, eps = _problem(3)
    v = _analytic_velocity(mu, s)
    steps, shift = 12, 2.5
    sched = diffusers.FlowMatchEulerDiscreteScheduler(shift=shift)
    # diffusers runs σ from 1 to 0 with x = (1 − σ)·x1 + σ·ε and predicts ε − x1 = −v.
    sched.set_timesteps(sigmas=list(np.linspace(1.0, 0.0, steps + 1)[:-1]))
    x = torch.from_numpy(np.array(eps, np.float32))
    for i, ts in enumerate(sched.timesteps):
        sigma = float(sched.sigmas[i])
        t = jnp.full((SHAPE[0],), 1.0 - sigma, jnp.float32)
        out = -np.asarray(v(jnp.asarray(x.numpy()), t))
        x = sched.step(torch.from_numpy(out), ts, x).prev_sample
    ours = sample_ode(v, eps, steps=steps, solver="euler", shift=shift)
    np.testing.assert_allclose(np.asarray(ours), x.numpy(), atol=2e-5)


def test_post_step_pins_frame_exactly():
    mu, s, eps = _problem(1)
    const = 0.123
    seen = []

    def post(x, t):
        seen.append(t.shape)
        return x.at[:, 0].set(const)

    for solver in ("euler", "heun"):
        out = jax.jit(
            lambda e, solver=solver: sample_ode(
                _analytic_velocity(mu, s), e, steps=5, solver=solver, post_step=post
            )
        )(eps)
        assert bool(jnp.all(out[:, 0] == const))
        assert not bool(jnp.all(out[:, 1] == const))
    assert all(shape == (SHAPE[0],) for shape in seen)


def test_post_step_sees_times_reached():
    # post_step receives the time just reached; collect them through a host callback.
    times = []

    def post(x, t):
        jax.debug.callback(lambda tt: times.append(float(tt[0])), t, ordered=True)
        return x

    x0 = jnp.zeros((2, 3))
    sample_ode(lambda x, t: jnp.ones_like(x), x0, steps=4, solver="euler", post_step=post)
    jax.effects_barrier()
    np.testing.assert_allclose(times, [0.0, 0.25, 0.5, 0.75, 1.0], atol=1e-7)


def test_sampler_traces_velocity_once_and_keeps_dtype():
    calls = {"n": 0}

    def v(x, t):
        calls["n"] += 1
        return -x * t[:, None]

    x0 = jnp.ones((2, 3), jnp.bfloat16)
    out = jax.jit(lambda x: sample_ode(v, x, steps=50, solver="heun"))(x0)
    assert out.dtype == jnp.bfloat16
    assert calls["n"] == 2  # predictor + corrector traced once inside fori_loop, not 100 times
    # dx/dt = −t·x -> x(1) = exp(−1/2)
    np.testing.assert_allclose(np.asarray(out, np.float32), np.exp(-0.5), rtol=1e-2)


def test_bad_solver_and_bad_velocity_shape():
    with pytest.raises(ValueError, match="solver='rk4'"):
        sample_ode(lambda x, t: x, jnp.zeros((1, 2)), steps=2, solver="rk4")
    with pytest.raises(ValueError, match="velocity_fn returned shape"):
        sample_ode(lambda x, t: x[:, :1], jnp.zeros((1, 2)), steps=2)


def test_t_start_squeezes_the_grid_per_sample():
    x0 = jax.random.normal(jax.random.key(0), (3, 4))

    def velocity(x, t):
        return jnp.ones_like(x) * (1.0 + t[:, None])

    plain = sample_ode(velocity, x0, steps=4)
    same = sample_ode(velocity, x0, steps=4, t_start=jnp.zeros(3))
    np.testing.assert_allclose(same, plain, rtol=1e-6)
    out = sample_ode(velocity, x0, steps=4, t_start=jnp.array([1.0, 0.5, 0.0]))
    np.testing.assert_array_equal(out[0], x0[0])  # t_start = 1: nothing to integrate
    # dx/dt = 1 + t from 0.5 to 1 moves by 0.5 + (1 - 0.25)/2 = 0.875 (Euler: a bit less)
    moved = np.asarray(out[1] - x0[1])
    assert np.all(moved > 0.8) and np.all(moved < 0.875)
    np.testing.assert_allclose(out[2], plain[2], rtol=1e-6)
