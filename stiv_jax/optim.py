"""Optimizer and EMA: AdaFactor (b1 0.9, b2 0.999), global-norm clip, warmup-then-constant LR.

AdaFactor here is the big_vision / ViT-22B form: factored second moments for matrices
(row and column statistics, Shazeer & Stern 2018), full second moments for small tensors,
β2_t = min(1 − (t+1)^−0.8, b2) so early steps adapt fast and later ones decay at b2,
update clipping at RMS 1, first-moment momentum b1, no weight decay and no
parameter-scale multiplication.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax


class FactoredState(NamedTuple):
    count: jax.Array
    v_row: optax.Updates
    v_col: optax.Updates
    v: optax.Updates


def _factored(shape, min_dim: int) -> bool:
    return len(shape) >= 2 and sorted(shape)[-2] >= min_dim


def scale_by_factored_rms(
    b2: float = 0.999, decay_rate: float = 0.8, eps: float = 1e-30, min_dim_to_factor: int = 128
) -> optax.GradientTransformation:
    """Divide by factored (or full) RMS of past gradients; see module docstring."""

    def init(params):
        def row(p):
            return (
                jnp.zeros(p.shape[:-1], jnp.float32)
                if _factored(p.shape, min_dim_to_factor)
                else jnp.zeros((1,))
            )

        def col(p):
            if _factored(p.shape, min_dim_to_factor):
                return jnp.zeros(p.shape[:-2] + p.shape[-1:], jnp.float32)
            return jnp.zeros((1,))

        def full(p):
            return (
                jnp.zeros((1,))
                if _factored(p.shape, min_dim_to_factor)
                else jnp.zeros(p.shape, jnp.float32)
            )

        return FactoredState(
            jnp.zeros([], jnp.int32),
            jax.tree.map(row, params),
            jax.tree.map(col, params),
            jax.tree.map(full, params),
        )

    def update(grads, state, params=None):
        del params
        t = state.count + 1
        beta = jnp.minimum(1.0 - t.astype(jnp.float32) ** (-decay_rate), b2)

        def one(g, vr, vc, v):
            g = g.astype(jnp.float32)
            g2 = g * g + eps
            if _factored(g.shape, min_dim_to_factor):
                vr = beta * vr + (1 - beta) * jnp.mean(g2, axis=-1)
                vc = beta * vc + (1 - beta) * jnp.mean(g2, axis=-2)
                r = vr / jnp.mean(vr, axis=-1, keepdims=True)
                u = g * jax.lax.rsqrt(r[..., :, None] * vc[..., None, :])
            else:
                v = beta * v + (1 - beta) * g2
                u = g * jax.lax.rsqrt(v)
            # update clipping (Shazeer & Stern): RMS(u) <= 1
            u = u / jnp.maximum(1.0, jnp.sqrt(jnp.mean(u * u)))
            return u, vr, vc, v

        out = jax.tree.map(one, grads, state.v_row, state.v_col, state.v)
        pick = lambda i: jax.tree.map(lambda o: o[i], out, is_leaf=lambda o: isinstance(o, tuple))
        return pick(0), FactoredState(t, pick(1), pick(2), pick(3))

    return optax.GradientTransformation(init, update)


def learning_rate(lr: float, warmup_steps: int) -> optax.Schedule:
    """Linear warmup from 0 to `lr` over `warmup_steps`, then constant."""
    if warmup_steps <= 0:
        return optax.constant_schedule(lr)
    return optax.join_schedules(
        [optax.linear_schedule(0.0, lr, warmup_steps), optax.constant_schedule(lr)], [warmup_steps]
    )


def make_optimizer(cfg) -> optax.GradientTransformation:
    """cfg = config.optim."""
    if cfg.weight_decay:
        raise ValueError(f"optim.weight_decay={cfg.weight_decay}; STIV trains with none (use 0.0)")
    return optax.chain(
        optax.clip_by_global_norm(cfg.clip_norm),
        scale_by_factored_rms(b2=cfg.b2),
        optax.ema(decay=cfg.b1, debias=True),  # first moment, as Adam's b1
        optax.scale_by_learning_rate(learning_rate(cfg.lr, cfg.warmup_steps)),
    )


def ema_decay(decay: float, step: jax.Array) -> jax.Array:
    """EMA warmup: min(decay, (1 + step) / (10 + step)), so short runs do not average in
    the random init (at decay 0.999 a 600-step run would still be 55% init)."""
    s = step.astype(jnp.float32)
    return jnp.minimum(decay, (1.0 + s) / (10.0 + s))


def ema_update(ema, params, decay):
    return jax.tree.map(lambda e, p: e + (1.0 - decay) * (p.astype(e.dtype) - e), ema, params)
