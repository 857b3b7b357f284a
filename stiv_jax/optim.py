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
from typing import NamedTuple

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


def parse_groups(
    spec: str, field: str, top: float, value_name: str = "VALUE"
) -> tuple[tuple[re.Pattern, float], ...]:
    """A per-group field "REGEX:VALUE,REGEX:VALUE" -> ((pattern, value), ...); "" -> ().
    One-line error naming `field` and the entry for a bad regex or a value outside [0, top]."""
    groups = []
    for entry in (e.strip() for e in spec.split(",") if e.strip()):
        rx, sep, value = entry.rpartition(":")
        try:
            number = float(value)
            if not sep or not rx or not 0.0 <= number <= top:
                raise ValueError
            groups.append((re.compile(rx), number))
        except (ValueError, re.error):
            raise ValueError(
                f"{field} entry {entry!r}; expected REGEX:{value_name} with "
                f"0 <= {value_name} <= {top:g}"
            ) from None
    return tuple(groups)


def parse_lr_groups(spec: str) -> tuple[tuple[re.Pattern, float], ...]:
    """`optim.lr_groups` "REGEX:SCALE,REGEX:SCALE" -> ((pattern, scale), ...); "" -> ()."""
    return parse_groups(spec, "optim.lr_groups", 10.0, "SCALE")


def _group_value(groups, path, default: float) -> float:
    name = param_path(path)
    return next((v for rx, v in groups if rx.search(name)), default)


def scale_by_param_groups(spec: str) -> optax.GradientTransformation:
    """Multiply each parameter's update by the scale of the first `spec` group whose regex
    matches its path (`param_path`), 1 where none does: a learning rate per group
    (0 freezes a group). Static per path: no state, nothing traced."""
    groups = parse_lr_groups(spec)

    def update(updates, state, params=None):
        del params
        scale = lambda path, u: u * _group_value(groups, path, 1.0)
        return jax.tree_util.tree_map_with_path(scale, updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


class AnchorState(NamedTuple):
    anchor: dict  # the weights at init of the parameters a group matches (the params' nesting)


def _matched_subtree(tree: dict, keep, path: tuple = ()) -> dict:
    """The nested-dict params `tree` with only the leaves whose key path `keep(path)` accepts
    (empty branches dropped). Keeping the params' nesting lets the anchor shard like them
    (`stiv_jax.parallel.mesh.state_specs` matches a leaf by its path's parameter suffix)."""
    out = {}
    for k, v in tree.items():
        p = path + (jax.tree_util.DictKey(k),)
        sub = _matched_subtree(v, keep, p) if isinstance(v, dict) else (v if keep(p) else None)
        if sub is not None and not (isinstance(sub, dict) and not sub):
            out[k] = sub
    return out


def decay_toward_anchor(spec: str) -> optax.GradientTransformation:
    """Add rate · (param − anchor) to the update of each parameter whose path matches a
    `spec` group ("REGEX:RATE,...", the first match wins; none: no pull), where the anchor
    is the parameter's value when the optimizer was initialised: decoupled weight decay
    toward the weights a stage started from instead of toward 0 (L2-SP, Li et al. 2018,
    in AdamW's decoupled form). Placed before the learning rate, so each step moves a
    parameter lr · rate of the way back. The anchor lives in the optimizer state: it is
    checkpointed with it and resumes exactly; only matched parameters are stored.
    Params are nested dicts (`nnx.to_pure_dict`)."""
    groups = parse_groups(spec, "optim.anchor_decay", 1e4, "RATE")
    rate_of = lambda path: _group_value(groups, path, 0.0)

    def init(params):
        kept = _matched_subtree(params, lambda p: rate_of(p) > 0)
        return AnchorState(jax.tree.map(jnp.copy, kept))

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("optim.anchor_decay needs the params: tx.update(grads, state, params)")

        def pull(path, u, p):
            rate = rate_of(path)
            if rate == 0.0:
                return u
            anchor = state.anchor
            for key in path:
                anchor = anchor[key.key]
            return u + rate * (p - anchor).astype(u.dtype)

        return jax.tree_util.tree_map_with_path(pull, updates, params), state

    return optax.GradientTransformation(init, update)


def state_layout_diff(saved, requested) -> list[str]:
    """`optim.<key>: checkpoint A, requested B` for each optimizer field whose change changes
    the optimizer state's layout (a resume could not restore it): `lr_groups` on or off
    (its chain element), `anchor_decay`'s groups (which parameters have an anchor).
    saved / requested: config.optim of the checkpoint and of the run; rates and scales may
    change on resume."""

    def layout(cfg) -> dict:
        anchor = str(cfg.get("anchor_decay", ""))
        regexes = tuple(rx.pattern for rx, r in parse_groups(anchor, "", 1e30) if r > 0)
        return {"lr_groups": bool(str(cfg.get("lr_groups", ""))), "anchor_decay": regexes}

    a, b = layout(saved), layout(requested)
    shown = lambda cfg, k: str(cfg.get(k, ""))
    return [
        f"optim.{k}: checkpoint {shown(saved, k)!r}, requested {shown(requested, k)!r}"
        for k in a
        if a[k] != b[k]
    ]


def make_optimizer(cfg, total_steps: int = 0) -> optax.GradientTransformation:
    """cfg = config.optim; `total_steps` (config.train.steps) places `cfg.decay_steps`;
    `cfg.anchor_decay` pulls parameter groups toward their initial weights
    (`decay_toward_anchor`); `cfg.lr_groups` scales the learning rate of parameter groups
    (`scale_by_param_groups`)."""
    if cfg.weight_decay:
        raise ValueError(f"optim.weight_decay={cfg.weight_decay}; STIV trains with none (use 0.0)")
    groups = str(cfg.get("lr_groups", ""))
    anchor = str(cfg.get("anchor_decay", ""))
    for _, rate in parse_groups(anchor, "optim.anchor_decay", 1e4, "RATE"):
        if rate * cfg.lr >= 1.0:  # one step would overshoot the anchor
            raise ValueError(
                f"optim.anchor_decay rate {rate:g} with optim.lr={cfg.lr:g}; expected rate * lr < 1"
            )
    return optax.chain(
        optax.clip_by_global_norm(cfg.clip_norm),
        scale_by_adafactor(b2=cfg.b2),
        optax.ema(decay=cfg.b1, debias=True),  # first moment, as Adam's b1
        *((decay_toward_anchor(anchor),) if anchor else ()),
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
