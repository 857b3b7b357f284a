"""ODE samplers for rectified flow: Euler and Heun on a (shifted) time grid.

Shapes: B batch; x [B, ...] (a video latent is [B, F, H, W, C], F latent frames); t [B]
float32. Time runs from t = 0 (noise) to t = 1 (data), the STIV convention of `flow.py`.

`velocity_fn(x [B, ...] float32, t [B] float32) -> v [B, ...]` is the (guided) model;
`post_step(x, t) -> x` runs after every step with the time just reached (the caller uses it for
STIV frame replacement: given latent frames are re-imposed clean). The loop is a
`jax.lax.fori_loop`, so a jitted sampler traces `velocity_fn` once (twice for Heun) whatever the
step count.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from stiv_jax.diffusion.flow import shift_time

SOLVERS = ("euler", "heun")

VelocityFn = Callable[[jax.Array, jax.Array], jax.Array]
PostStepFn = Callable[[jax.Array, jax.Array], jax.Array]


def time_grid(steps: int, shift: float = 1.0) -> jax.Array:
    """Increasing grid [steps + 1] float32 from exactly 0 (noise) to exactly 1 (data).

    Uniform in t, then `shift_time(·, shift)`: shift > 1 packs the steps near noise, as SD3's
    scheduler does with its sigmas.
    """
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"time_grid: steps={steps!r} must be an integer >= 1")
    if isinstance(shift, (int, float)) and shift <= 0:  # a traced shift cannot be checked
        raise ValueError(f"time_grid: shift={shift!r} must be positive")
    grid = shift_time(jnp.linspace(0.0, 1.0, steps + 1, dtype=jnp.float32), shift)
    # Pin the ends: the formula fixes them mathematically but float32 may round them.
    return grid.at[0].set(0.0).at[-1].set(1.0)


def sample_ode(
    velocity_fn: VelocityFn,
    x0: jax.Array,
    *,
    steps: int,
    solver: str = "euler",
    shift: float = 1.0,
    post_step: PostStepFn | None = None,
    t_start: jax.Array | None = None,
    state: Any = None,
) -> jax.Array | tuple[jax.Array, Any]:
    """Integrate dx/dt = velocity_fn(x, t) from t = 0 (x = x0, noise) to t = 1; returns x1.

    `t_start [B]` (SDEdit / video-to-video): sample b starts at t_start[b] instead of 0, x0
    being its partly noised state there; its grid is the same `steps` points squeezed into
    [t_start[b], 1] (t_start = 1: no step moves it, x0 is returned unchanged).

    x0 [B, ...] -> x1 [B, ...] in x0's dtype; the state is carried in float32.
    `euler`: x ← x + Δt·v(x, t0). One model call per step.
    `heun`: predictor x̃ = x + Δt·v(x, t0); corrector x ← x + Δt·(v(x, t0) + v(x̃, t1))/2, the
      trapezoid rule, second order; two model calls per step. The corrector is used on the
      last step as well, where t1 = 1: unlike EDM's denoiser, whose σ = 0 evaluation is
      undefined and is therefore skipped, the flow velocity at the data end is a regular value
      the model is trained on (t is sampled in (0, 1) arbitrarily close to 1), so keeping it
      keeps the method second order over the whole grid.
    `post_step(x, t)` is applied after every step, to x0 at t = 0 before the first step, and for
    Heun also to the predictor x̃ before it is evaluated, so the model always sees given frames
    as the caller imposes them.

    `state` (any pytree, e.g. the step cache of `stiv_jax.step_cache`): when given, the model
    is stateful, `velocity_fn(x, t, state) -> (v, state)`, the state is carried through every
    model call of the loop, and `(x1, final state)` is returned.
    """
    if solver not in SOLVERS:
        raise ValueError(f"sample_ode: solver={solver!r} is unknown; expected one of {SOLVERS}")
    grid = time_grid(steps, shift)
    batch = x0.shape[0]
    post = post_step if post_step is not None else (lambda x, t: x)

    if t_start is not None:  # per-sample grids [steps + 1, B]
        ts = jnp.asarray(t_start, jnp.float32).reshape(1, batch)
        grid = ts + (1.0 - ts) * grid[:, None]
    bshape = (batch,) + (1,) * (x0.ndim - 1)

    def velocity(x: jax.Array, t: jax.Array, st: Any) -> tuple[jax.Array, Any]:
        tb = jnp.broadcast_to(t, (batch,)).astype(jnp.float32)
        v, st = (velocity_fn(x, tb), st) if state is None else velocity_fn(x, tb, st)
        if v.shape != x.shape:
            raise ValueError(
                f"sample_ode: velocity_fn returned shape {v.shape}, expected {x.shape}"
            )
        return v.astype(jnp.float32), st

    def post_fn(x: jax.Array, t: jax.Array) -> jax.Array:
        return post(x, jnp.broadcast_to(t, (batch,)).astype(jnp.float32)).astype(jnp.float32)

    def body(i: jax.Array, carry: tuple[jax.Array, Any]) -> tuple[jax.Array, Any]:
        x, st = carry
        t0, t1 = grid[i], grid[i + 1]
        dt = jnp.reshape(t1 - t0, bshape) if t_start is not None else t1 - t0
        v0, st = velocity(x, t0, st)
        if solver == "euler":
            return post_fn(x + dt * v0, t1), st
        x_pred = post_fn(x + dt * v0, t1)
        v1, st = velocity(x_pred, t1, st)
        return post_fn(x + 0.5 * dt * (v0 + v1), t1), st

    x = post_fn(x0.astype(jnp.float32), grid[0])
    x, state_out = jax.lax.fori_loop(0, steps, body, (x, state))
    return x.astype(x0.dtype) if state is None else (x.astype(x0.dtype), state_out)
