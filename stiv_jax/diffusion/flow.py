"""Rectified flow matching: noising, velocity target, timestep sampling and the masked loss.

Shapes: B batch, F latent frames; a video latent is x [B, F, H, W, C] (H, W latent height and
width, C channels). Time t [B] float32.

Convention (STIV): t = 0 is pure noise, t = 1 is data,
  x_t = t·x1 + (1 − t)·ε,   target velocity v = dx_t/dt = x1 − ε.
The noise level is σ = 1 − t; resolution shifts act on σ as in SD3 (arXiv 2403.03206, §5.3.2).
All arithmetic is float32 whatever the input dtype.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

TIME_METHODS = ("logit_normal", "uniform")
# What the network's output means: the velocity itself, or the clean data x1 (x-prediction,
# "Back to Basics", Li & He 2025) from which the velocity is derived.
PREDICTIONS = ("velocity", "data")
# x-prediction divides by the noise level 1 − t; clipped so that t → 1 stays finite (JiT: 0.05).
MIN_NOISE = 0.05
# Sampled t is clipped to [T_EPS, 1 − T_EPS] so that it lies strictly inside (0, 1) even after
# float32 rounding of sigmoid / the shift (1 − 1e-5 is exactly representable apart from 6e-8).
T_EPS = 1e-5


def _expand_time(t: jax.Array, ndim: int) -> jax.Array:
    """t [B] -> [B, 1, ..., 1] with `ndim` dims, for broadcasting over non-batch dims."""
    t = jnp.asarray(t, jnp.float32)
    return t.reshape(t.shape + (1,) * (ndim - t.ndim))


def interpolate(x1: jax.Array, eps: jax.Array, t: jax.Array) -> jax.Array:
    """Noised sample x_t = t·x1 + (1 − t)·ε.

    x1, eps [B, ...]; t [B] (or scalar) -> x_t [B, ...] float32.
    """
    x1 = jnp.asarray(x1, jnp.float32)
    eps = jnp.asarray(eps, jnp.float32)
    if x1.shape != eps.shape:
        raise ValueError(f"interpolate: x1 shape {x1.shape} != eps shape {eps.shape}")
    tb = _expand_time(t, x1.ndim)
    return tb * x1 + (1.0 - tb) * eps


def velocity_target(x1: jax.Array, eps: jax.Array) -> jax.Array:
    """Flow-matching target v = x1 − ε (the time derivative of `interpolate`), float32."""
    x1 = jnp.asarray(x1, jnp.float32)
    eps = jnp.asarray(eps, jnp.float32)
    if x1.shape != eps.shape:
        raise ValueError(f"velocity_target: x1 shape {x1.shape} != eps shape {eps.shape}")
    return x1 - eps


def to_velocity(out: jax.Array, x_t: jax.Array, t: jax.Array, prediction: str) -> jax.Array:
    """Network output [B, ...] -> velocity [B, ...] float32 at (x_t, t [B]).

    `velocity`: the output is v. `data`: the output is x̂1 and v = (x̂1 − x_t) / (1 − t), the
    velocity of the straight path through x_t that ends at x̂1, with 1 − t clipped at
    `MIN_NOISE`. The loss stays the velocity MSE either way (x-prediction, v-loss).
    """
    out = jnp.asarray(out, jnp.float32)
    if prediction == "velocity":
        return out
    if prediction != "data":
        raise ValueError(f"prediction={prediction!r} is unknown; expected one of {PREDICTIONS}")
    noise = jnp.maximum(1.0 - _expand_time(t, out.ndim), MIN_NOISE)
    return (out - jnp.asarray(x_t, jnp.float32)) / noise


def to_data(out: jax.Array, x_t: jax.Array, t: jax.Array, prediction: str) -> jax.Array:
    """Network output [B, ...] -> the clean estimate x̂1 [B, ...] float32 at (x_t, t [B]):
    the output itself for `data`, x_t + (1 − t)·v for `velocity` (self-conditioning's input)."""
    if prediction == "data":
        return jnp.asarray(out, jnp.float32)
    v = to_velocity(out, x_t, t, prediction)
    return jnp.asarray(x_t, jnp.float32) + (1.0 - _expand_time(t, v.ndim)) * v


def perturbed_target(x1: jax.Array, eps: jax.Array, x_t: jax.Array, t: jax.Array,
                     prediction: str) -> jax.Array:  # fmt: skip
    """The velocity target [B, ...] float32 when the model's input x_t was perturbed beyond
    `interpolate(x1, eps, t)` (`diffusion.input_perturb`, DDPM-IP: Ning et al. 2023): the
    target ignores the perturbation. x-prediction (`data`): the velocity from x_t to the
    true x1, `to_velocity(x1, x_t, t)`, so an exact x̂1 = x1 has zero loss; velocity
    prediction: the unperturbed v = x1 − ε, as DDPM-IP keeps the unperturbed ε."""
    if prediction == "data":
        return to_velocity(x1, x_t, t, prediction)
    return velocity_target(x1, eps)


def shift_time(t: jax.Array, shift: float | jax.Array) -> jax.Array:
    """SD3 resolution shift applied to the noise level σ = 1 − t.

    σ' = shift·σ / (1 + (shift − 1)·σ),  t' = 1 − σ'.  Monotone, fixes 0 and 1; shift > 1 moves
    t toward 0 (more time near noise), shift = 1 is the identity. Any shape, float32 out.
    """
    t = jnp.asarray(t, jnp.float32)
    sigma = 1.0 - t
    sigma = shift * sigma / (1.0 + (shift - 1.0) * sigma)
    return 1.0 - sigma


def resolution_shift(
    num_tokens: int, base_tokens: int = 256, max_shift: float | None = None
) -> float:
    """Shift for a sequence of `num_tokens` latent tokens: sqrt(num_tokens / base_tokens).

    SD3 (arXiv 2403.03206, eq. 23) matches the signal-to-noise ratio seen by a model trained at
    `base_tokens` with shift α = sqrt(m / n) for m tokens against n base tokens: more tokens
    average away more noise, so the same σ is "less noisy" and must be pushed up. The result is
    capped at `max_shift` when given (None: no cap). Tokens below the base give a shift < 1.
    """
    if num_tokens <= 0:
        raise ValueError(f"resolution_shift: num_tokens={num_tokens} must be a positive count")
    if base_tokens <= 0:
        raise ValueError(f"resolution_shift: base_tokens={base_tokens} must be a positive count")
    shift = math.sqrt(num_tokens / base_tokens)
    if max_shift is not None:
        if max_shift <= 0:
            raise ValueError(f"resolution_shift: max_shift={max_shift} must be positive")
        shift = min(shift, float(max_shift))
    return shift


def sample_time(
    rng: jax.Array,
    batch: int,
    *,
    method: str = "logit_normal",
    logit_mean: float = 0.0,
    logit_std: float = 1.0,
    shift: float = 1.0,
    noisy_share: float = 0.0,
    noisy_law: tuple[float, float] | None = None,
) -> jax.Array:
    """Training times t [batch] float32 in (0, 1), drawn then passed through `shift_time`.

    `logit_normal` (SD3): t = sigmoid(logit_mean + logit_std·n), n ~ N(0, 1); the density is on
    t (the data end), so a positive `logit_mean` favours cleaner samples (SD3 writes the same
    law on σ = 1 − t, whose mean has the opposite sign). `uniform`: t ~ U(0, 1).
    `noisy_share`: that share of the draws (each independently) come from the logit-normal
    `noisy_law` (mean, std) instead, a mixture that keeps the noise end trained.
    """
    if not 0.0 <= noisy_share <= 1.0:
        raise ValueError(f"sample_time: noisy_share={noisy_share}; expected a value in [0, 1]")
    if noisy_share > 0.0 and (noisy_law is None or len(noisy_law) != 2):
        raise ValueError(
            f"sample_time: noisy_share={noisy_share} needs noisy_law=(mean, std), got {noisy_law}"
        )
    if method == "logit_normal":
        n = jax.random.normal(rng, (batch,), jnp.float32)
        t = jax.nn.sigmoid(logit_mean + logit_std * n)
    elif method == "uniform":
        t = jax.random.uniform(rng, (batch,), jnp.float32)
    else:
        raise ValueError(
            f"sample_time: method={method!r} is unknown; expected one of {TIME_METHODS}"
        )
    if noisy_share > 0.0:  # own rng streams: noisy_share = 0 draws exactly what it did before
        k_pick, k_n = jax.random.split(jax.random.fold_in(rng, 1))
        n = jax.random.normal(k_n, (batch,), jnp.float32)
        noisy_t = jax.nn.sigmoid(noisy_law[0] + noisy_law[1] * n)
        t = jnp.where(jax.random.uniform(k_pick, (batch,)) < noisy_share, noisy_t, t)
    t = shift_time(t, shift)
    return jnp.clip(t, T_EPS, 1.0 - T_EPS)


# Mean change over channels of a latent pixel from the clip's first frame at which
# `motion_weight` is full: 0.1 is ~13 of 255 levels on pixel latents in [-1, 1].
MOTION_DELTA = 0.1


def motion_weight(x1: jax.Array, strength: float, delta: float = MOTION_DELTA) -> jax.Array:
    """Per-pixel loss weight [B, F, H, W] float32 that favours what moves (`flow_loss(weight=)`).

    x1 [B, F, H, W, C] clean latents. weight = 1 + strength · min(1, c / delta), with
    c = mean over C of |x1[:, f] − x1[:, 0]|: a moving object's new and vacated places weigh
    up to 1 + strength, pixels that stay as in frame 0 weigh 1 (a pan changes nearly all of
    them, so its clip stays close to uniform). Objects cover a few percent of a ShapesBench
    frame, so under a uniform loss the motion the caption asks for is a few percent of the
    gradient (docs/quality.md §15).
    """
    if not strength >= 0.0:
        raise ValueError(f"motion_weight strength={strength}; expected a value >= 0")
    x = x1.astype(jnp.float32)
    change = jnp.mean(jnp.abs(x - x[:, :1]), axis=-1)  # [B, F, H, W]
    return 1.0 + strength * jnp.minimum(change / delta, 1.0)


def flow_loss(
    v_pred: jax.Array, v_target: jax.Array, loss_mask: jax.Array, weight: jax.Array | None = None
) -> jax.Array:
    """Masked mean squared error over counted frames, a float32 scalar.

    v_pred, v_target [B, F, ...] (normally [B, F, H, W, C]); loss_mask [B, F] bool, True where
    the frame counts (from the image-cond method: frame replacement leaves its given frames
    out, channel concat counts every frame). The loss is
    Σ (v_pred − v_target)² over counted frames / (number of counted elements), pooled over the
    whole batch so that every generated element weighs the same. Returns 0 when nothing counts.
    `weight` (broadcastable to [B, F, H, W], optional) makes it a weighted mean over counted
    elements (MaskDiT: weight λ on the latent pixels of masked tokens).
    """
    if v_pred.shape != v_target.shape:
        raise ValueError(
            f"flow_loss: v_pred shape {v_pred.shape} != v_target shape {v_target.shape}"
        )
    if loss_mask.shape != v_pred.shape[:2]:
        raise ValueError(
            f"flow_loss: loss_mask shape {loss_mask.shape} != (B, F) = {v_pred.shape[:2]} of v_pred"
        )
    err = jnp.square(v_pred.astype(jnp.float32) - v_target.astype(jnp.float32))
    mask = loss_mask.astype(bool).reshape(loss_mask.shape + (1,) * (err.ndim - 2))
    w = jnp.ones(err.shape[:-1] + (1,), jnp.float32)
    if weight is not None:
        w = jnp.broadcast_to(jnp.asarray(weight, jnp.float32), err.shape[:-1])[..., None]
    # where (not multiply) so that a NaN/inf prediction on a given frame cannot leak in.
    total = jnp.sum(jnp.where(mask, w * err, 0.0))
    count = jnp.sum(jnp.where(mask, jnp.broadcast_to(w, err.shape), 0.0))
    return total / jnp.maximum(count, 1.0)
