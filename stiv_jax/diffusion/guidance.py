"""Classifier-free guidance over image and text conditions in ONE batched model call.

Shapes: B batch; x [B, ...] (a video latent is [B, F, H, W, C], F latent frames); t [B]
float32; a condition `cond` is any pytree whose leaves all have leading dim B (text tokens
[B, L, D], pooled text [B, D], cond_mask [B, F], ...). The model is called on batch kB:

  joint (STIV JIT-CFG, k = 2), branches = (cond_full, cond_null):
    v = v(∅) + scale·(v(c_T, c_I) − v(∅))
  separate (Step-Video / InstructPix2Pix, k = 3), branches = (cond_full, cond_image, cond_null):
    v = v(∅) + image_scale·(v(c_I) − v(∅)) + text_scale·(v(c_T, c_I) − v(c_I))

`interval=(lo, hi)` guides only where lo <= t < hi (t: 0 noise -> 1 data; hi = 1 includes
t = 1) and uses the fully conditional velocity elsewhere: guidance in a limited interval
(Kynkäänniemi et al. 2024).

Branches are stacked on the batch axis in the order given, so `model_fn` sees
[full; (image;) null] and the result is split back in that order. Guidance math is float32.
`make_stateful_guided_fn` carries a model's state (the step cache's, or with
`make_self_conditioned_fn` each branch row's previous x̂1) from one call to the next as
`sample_ode`'s state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from stiv_jax.diffusion.flow import to_data, to_velocity

MODES = {"joint": 2, "separate": 3}

ModelFn = Callable[[jax.Array, jax.Array, Any], jax.Array]


def _stack_branches(branches: tuple[Any, ...], batch: int) -> Any:
    """Concatenate k condition pytrees of batch B into one of batch k·B (same structure)."""
    structs = [jax.tree.structure(b) for b in branches]
    for i, s in enumerate(structs[1:], start=1):
        if s != structs[0]:
            raise ValueError(
                f"guided_velocity: branch {i} has pytree structure {s}, expected {structs[0]}"
            )
    for i, b in enumerate(branches):
        for leaf in jax.tree.leaves(b):
            if jnp.ndim(leaf) == 0 or jnp.shape(leaf)[0] != batch:
                raise ValueError(
                    f"guided_velocity: branch {i} has a leaf of shape {jnp.shape(leaf)}, "
                    f"expected leading batch {batch}"
                )
    return jax.tree.map(lambda *leaves: jnp.concatenate(leaves, axis=0), *branches)


def _per_sample(scale: float | jax.Array, x: jax.Array) -> jax.Array:
    """A guidance scale as float32, a 1-D [B] array reshaped to [B, 1, ..., 1] (one per sample)."""
    scale = jnp.asarray(scale, jnp.float32)
    if scale.ndim == 1:
        if scale.shape[0] != x.shape[0]:
            raise ValueError(
                f"guided_velocity: per-sample scale has shape {scale.shape}, expected ({x.shape[0]},)"
            )
        scale = scale.reshape(scale.shape + (1,) * (x.ndim - 1))
    return scale


RENORM_MODES = ("scale_down", "rescale")


def check_interval(
    interval: tuple[float, float], name: str = "guidance interval"
) -> tuple[float, float]:
    """(lo, hi) with 0 <= lo < hi <= 1, as floats; a one-line error naming `name` and the
    value otherwise."""
    try:
        lo, hi = (float(v) for v in interval)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={interval!r}; expected (lo, hi) numbers") from None
    if not 0.0 <= lo < hi <= 1.0:
        raise ValueError(f"{name}={interval!r}; expected 0 <= lo < hi <= 1")
    return lo, hi


def _in_interval(
    scale: jax.Array, t: jax.Array, interval: tuple[float, float] | None, x: jax.Array
) -> jax.Array:
    """`scale` where the sample's t [B] lies in [lo, hi) ([lo, 1] when hi = 1: Heun's last
    corrector evaluates t = 1), 1 (no guidance) elsewhere; broadcastable to x [B, ...]."""
    if interval is None:
        return scale
    lo, hi = check_interval(interval)
    inside = (t >= lo) & ((t < hi) if hi < 1.0 else (t <= 1.0))
    inside = inside.reshape(t.shape + (1,) * (x.ndim - 1))
    return jnp.where(inside, scale, 1.0)


def renormalize(v: jax.Array, v_full: jax.Array, mode: str = "scale_down") -> jax.Array:
    """CFG renormalisation of the guided velocity v against the conditional one v_full.

    v, v_full [B, ...]; norms per sample over all non-batch dims.
      scale_down  (Lumina-Image-2 style) scale v down to ‖v_full‖ where it exceeds it; never
                  up, so a guided velocity no longer than the conditional one is unchanged.
      rescale     (CFG-Renorm as STIV uses it, after Lumina-Next) v·‖v_full‖/‖v‖: the guided
                  velocity keeps its direction and takes the conditional velocity's norm.
    """
    if mode not in RENORM_MODES:
        raise ValueError(f"cfg renorm mode {mode!r} is unknown; expected one of {RENORM_MODES}")
    axes = tuple(range(1, v.ndim))
    norm = jnp.sqrt(jnp.sum(jnp.square(v), axis=axes, keepdims=True))
    norm_full = jnp.sqrt(jnp.sum(jnp.square(v_full), axis=axes, keepdims=True))
    # where-guarded ratio: norm = 0 (then v = 0 and needs no scaling) must not divide by zero.
    ratio = norm_full / jnp.where(norm > 0, norm, 1.0)
    if mode == "scale_down":
        ratio = jnp.where(norm > norm_full, ratio, 1.0)
    return v * jnp.where(norm > 0, ratio, 1.0)


def guided_velocity(
    model_fn: ModelFn,
    x: jax.Array,
    t: jax.Array,
    branches: tuple[Any, ...],
    *,
    mode: str = "joint",
    scale: float | jax.Array = 7.5,
    text_scale: float | jax.Array = 7.5,
    image_scale: float | jax.Array = 1.5,
    renorm: bool = False,
    renorm_mode: str = "scale_down",
    interval: tuple[float, float] | None = None,
) -> jax.Array:
    """Guided velocity [B, ...] float32 from one `model_fn(x [kB, ...], t [kB], cond)` call.

    `mode="joint"` uses `scale` with branches (cond_full, cond_null); `mode="separate"` uses
    `image_scale` and `text_scale` with branches (cond_full, cond_image_only, cond_null).
    scale = 1 (joint) or image_scale = text_scale = 1 (separate) gives the fully conditional
    velocity. `renorm=True` applies `renormalize(v, v_full, renorm_mode)`. t may be a scalar or [B].
    `interval=(lo, hi)`: every scale is 1 for samples whose t is outside [lo, hi).
    Each scale is a float, a [B] array (one scale per sample) or an array broadcastable to x.
    """
    if mode not in MODES:
        raise ValueError(
            f"guided_velocity: mode={mode!r} is unknown; expected one of {tuple(MODES)}"
        )
    k = MODES[mode]
    if not isinstance(branches, (tuple, list)) or len(branches) != k:
        got = len(branches) if isinstance(branches, (tuple, list)) else type(branches).__name__
        raise ValueError(f"guided_velocity: mode={mode!r} needs {k} condition branches, got {got}")
    batch = x.shape[0]
    t = jnp.broadcast_to(jnp.asarray(t, jnp.float32), (batch,))
    cond = _stack_branches(tuple(branches), batch)
    v_all = model_fn(jnp.concatenate([x] * k, axis=0), jnp.concatenate([t] * k, axis=0), cond)
    if v_all.shape != (k * batch,) + x.shape[1:]:
        raise ValueError(
            f"guided_velocity: model_fn returned shape {v_all.shape}, "
            f"expected {(k * batch,) + x.shape[1:]}"
        )
    parts = jnp.split(v_all.astype(jnp.float32), k, axis=0)
    if mode == "joint":
        v_full, v_null = parts
        v = v_null + _in_interval(_per_sample(scale, x), t, interval, x) * (v_full - v_null)
    else:
        v_full, v_img, v_null = parts
        s_img = _in_interval(_per_sample(image_scale, x), t, interval, x)
        s_text = _in_interval(_per_sample(text_scale, x), t, interval, x)
        v = v_null + s_img * (v_img - v_null) + s_text * (v_full - v_img)
    return renormalize(v, v_full, renorm_mode) if renorm else v


def make_guided_fn(
    model_fn: ModelFn, branches: tuple[Any, ...], **kwargs: Any
) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """`velocity_fn(x, t)` for `sample_ode`: `guided_velocity` with fixed branches and options."""

    def velocity_fn(x: jax.Array, t: jax.Array) -> jax.Array:
        return guided_velocity(model_fn, x, t, branches, **kwargs)

    return velocity_fn


def make_stateful_guided_fn(
    model_fn: Callable[[jax.Array, jax.Array, Any, Any], tuple[jax.Array, Any]],
    branches: tuple[Any, ...],
    **kwargs: Any,
) -> Callable[[jax.Array, jax.Array, Any], tuple[jax.Array, Any]]:
    """`velocity_fn(x, t, state) -> (v, state')` for `sample_ode(..., state=...)`: a model that
    carries state from one call to the next (the step cache, self-conditioning).

    `model_fn(x [kB, ...], t [kB], cond, state) -> (velocity [kB, ...], state')` is called
    once per step, on all branches stacked; `guided_velocity` guides its velocity (`kwargs`:
    as `guided_velocity`'s) and its new state comes back with it."""

    def velocity_fn(x: jax.Array, t: jax.Array, state: Any) -> tuple[jax.Array, Any]:
        # guided_velocity makes exactly one model call; its new state leaves through this
        # cell (plain Python while tracing, no transform in between).
        cell = {}

        def call(xa, ta, cond):
            v, cell["state"] = model_fn(xa, ta, cond, state)
            return v

        v = guided_velocity(call, x, t, branches, **kwargs)
        return v, cell["state"]

    return velocity_fn


def make_self_conditioned_fn(
    model_fn: ModelFn, branches: tuple[Any, ...], prediction: str, **kwargs: Any
) -> Callable[[jax.Array, jax.Array, jax.Array], tuple[jax.Array, jax.Array]]:
    """`velocity_fn(x, t, est) -> (v, est')` for `sample_ode(..., state=est0)`: self-conditioning.

    `model_fn(x [kB, ...], t [kB], cond)` returns the network's raw output (v, or x̂1 with
    `prediction='data'`); each call sees `cond["self_cond"] = est` [kB, ...], every branch
    row's own x̂1 from the previous model call (start with zeros: no estimate yet), and
    returns the guided velocity with this call's x̂1 as the next `est`. `kwargs`: as
    `guided_velocity`'s."""

    def with_estimate(xa, ta, cond, est):
        out = model_fn(xa, ta, {**cond, "self_cond": est})
        return to_velocity(out, xa, ta, prediction), to_data(out, xa, ta, prediction)

    return make_stateful_guided_fn(with_estimate, branches, **kwargs)
