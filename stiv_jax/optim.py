"""Optimizer and EMA: AdaFactor (b1 0.9, b2 0.999), global-norm clip, warmup-then-constant LR
(optionally a linear cool-down to 0 over a run's last `optim.decay_steps`: warmup-stable-decay).

AdaFactor here is the big_vision / ViT-22B form, built from optax pieces: factored second
moments for matrices (row and column statistics, Shazeer & Stern 2018; optax factors the two
largest axes when the second largest is >= 128), full second moments for smaller tensors,
β2_t = min(1 − t^−0.8, b2) so early steps adapt fast and later ones decay at b2 (optax's
default schedule has no cap; `decay_rate_fn` adds it), update clipping at RMS 1 per tensor,
first-moment momentum b1, no weight decay and no parameter-scale multiplication. The
statistics are kept in the parameters' dtype (float32 with the default `param_dtype`).
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import optax


def scale_by_adafactor(
    b2: float = 0.999, decay_rate: float = 0.8, eps: float = 1e-30, min_dim_to_factor: int = 128
) -> optax.GradientTransformation:
    """Divide by the factored (or full) RMS of past gradients, then clip each tensor's RMS to 1."""

    def capped_decay(step, exponent):
        t = jnp.asarray(step, jnp.float32) + 1.0
        return jnp.minimum(1.0 - t ** (-exponent), b2)

    return optax.chain(
        optax.scale_by_factored_rms(
            decay_rate=decay_rate,
            epsilon=eps,
            min_dim_size_to_factor=min_dim_to_factor,
            decay_rate_fn=capped_decay,
        ),
        optax.clip_by_block_rms(1.0),
    )


def learning_rate(
    lr: float, warmup_steps: int, decay_steps: int = 0, total_steps: int = 0
) -> optax.Schedule:
    """Linear warmup from 0 to `lr` over `warmup_steps`, then constant; with `decay_steps`, a
    linear cool-down to 0 over the last `decay_steps` of `total_steps` (warmup-stable-decay,
    Hägele et al. 2024: matches cosine at any length without fixing the length up front)."""
    if decay_steps < 0 or (decay_steps and decay_steps + warmup_steps > total_steps):
        raise ValueError(
            f"optim.decay_steps={decay_steps}; expected 0 or 1..{total_steps - warmup_steps} "
            f"(train.steps={total_steps} minus optim.warmup_steps={warmup_steps})"
        )
    parts, bounds = [], []
    if warmup_steps > 0:
        parts.append(optax.linear_schedule(0.0, lr, warmup_steps))
        bounds.append(warmup_steps)
    parts.append(optax.constant_schedule(lr))
    if decay_steps:
        bounds.append(total_steps - decay_steps)
        parts.append(optax.linear_schedule(lr, 0.0, decay_steps))
    return optax.join_schedules(parts, bounds) if bounds else parts[0]


def lr_schedule(cfg, total_steps: int = 0) -> optax.Schedule:
    """The schedule of cfg = config.optim; `total_steps` (config.train.steps) places
    `cfg.decay_steps`. The one place the optimizer and the trainer's log read it from."""
    return learning_rate(cfg.lr, cfg.warmup_steps, cfg.get("decay_steps", 0), total_steps)


def param_path(path) -> str:
    """A pytree key path as "blocks/0/cross/q/kernel" (the names `optim.lr_groups` matches)."""
    return jax.tree_util.keystr(path, simple=True, separator="/")


def parse_lr_groups(spec: str) -> tuple[tuple[re.Pattern, float], ...]:
    """`optim.lr_groups` "REGEX:SCALE,REGEX:SCALE" -> ((pattern, scale), ...); "" -> ().
    One-line error naming the entry for a bad regex or scale."""
    groups = []
    for entry in (e.strip() for e in spec.split(",") if e.strip()):
        rx, sep, scale = entry.rpartition(":")
        try:
            value = float(scale)
            if not sep or not rx or not 0.0 <= value <= 10.0:
                raise ValueError
            groups.append((re.compile(rx), value))
        except (ValueError, re.error):
            raise ValueError(
                f"optim.lr_groups entry {entry!r}; expected REGEX:SCALE with 0 <= SCALE <= 10"
            ) from None
    return tuple(groups)


def scale_by_param_groups(spec: str) -> optax.GradientTransformation:
    """Multiply each parameter's update by the scale of the first `spec` group whose regex
    matches its path (`param_path`), 1 where none does: a learning rate per group
    (0 freezes a group). Static per path: no state, nothing traced."""
    groups = parse_lr_groups(spec)

    def scale_of(path) -> float:
        name = param_path(path)
        return next((s for rx, s in groups if rx.search(name)), 1.0)

    def update(updates, state, params=None):
        del params
        scaled = jax.tree_util.tree_map_with_path(lambda p, u: u * scale_of(p), updates)
        return scaled, state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def make_optimizer(cfg, total_steps: int = 0) -> optax.GradientTransformation:
    """cfg = config.optim; `total_steps` (config.train.steps) places `cfg.decay_steps`;
    `cfg.lr_groups` scales the learning rate of parameter groups (`scale_by_param_groups`)."""
    if cfg.weight_decay:
        raise ValueError(f"optim.weight_decay={cfg.weight_decay}; STIV trains with none (use 0.0)")
    groups = str(cfg.get("lr_groups", ""))
    return optax.chain(
        optax.clip_by_global_norm(cfg.clip_norm),
        scale_by_adafactor(b2=cfg.b2),
        optax.ema(decay=cfg.b1, debias=True),  # first moment, as Adam's b1
        optax.scale_by_learning_rate(lr_schedule(cfg, total_steps)),
        *((scale_by_param_groups(groups),) if groups else ()),
    )


def ema_decay(decay: float, step: jax.Array) -> jax.Array:
    """EMA warmup: min(decay, (1 + step) / (10 + step)), so short runs do not average in
    the random init (at decay 0.999 a 600-step run would still be 55% init)."""
    s = step.astype(jnp.float32)
    return jnp.minimum(decay, (1.0 + s) / (10.0 + s))


def ema_update(ema, params, decay):
    return jax.tree.map(lambda e, p: e + (1.0 - decay) * (p.astype(e.dtype) - e), ema, params)
