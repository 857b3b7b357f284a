"""Conditioning for training and sampling: task masks in, model `Conditions` out.

Shapes: B batch, F latent frames, H/W latent size, C channels, L text tokens, Dt/Dp text widths.

`cond_mask [B, F]` says which latent frames are given. Frame replacement (STIV) and
channel concat (Step-Video) both read the clean latents of those frames from
`cond_latents`; the model applies them (stiv.py). Here: building the `Conditions` dict,
condition dropout for classifier-free guidance, and the noise augmentation that
channel concat uses on its given latents.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from stiv_jax.model.stiv import Conditions


def make_conditions(
    *,
    latents: jax.Array,
    cond_mask: jax.Array,
    text_tokens: jax.Array,
    text_mask: jax.Array,
    text_pooled: jax.Array,
    micro: jax.Array,
    motion: jax.Array,
) -> Conditions:
    """Given latents [B,F,H,W,C] where cond_mask [B,F] is set, zeros elsewhere."""
    given = cond_mask[:, :, None, None, None]
    return Conditions(
        text_tokens=text_tokens.astype(jnp.float32),
        text_mask=text_mask.astype(bool),
        text_pooled=text_pooled.astype(jnp.float32),
        micro=micro.astype(jnp.float32),
        motion=motion.astype(jnp.float32),
        cond_mask=cond_mask.astype(bool),
        cond_latents=jnp.where(given, latents, 0.0).astype(jnp.float32),
    )


def drop_text(cond: Conditions, drop: jax.Array, null_text: dict) -> Conditions:
    """Replace the text of samples where drop [B] is True by the null prompt's encoding."""
    out = dict(cond)
    for key, null in (("text_tokens", "tokens"), ("text_mask", "mask"), ("text_pooled", "pooled")):
        x = cond[key]
        d = drop.reshape((-1,) + (1,) * (x.ndim - 1))
        out[key] = jnp.where(d, jnp.broadcast_to(null_text[null].astype(x.dtype), x.shape), x)
    return Conditions(**out)


def drop_image(cond: Conditions, drop: jax.Array) -> Conditions:
    """Remove every given frame of samples where drop [B] is True (they become T2V)."""
    keep = ~drop
    out = dict(cond)
    out["cond_mask"] = cond["cond_mask"] & keep[:, None]
    out["cond_latents"] = cond["cond_latents"] * keep[:, None, None, None, None]
    return Conditions(**out)


def drop_conditions(
    key: jax.Array, cond: Conditions, null_text: dict, *, text_drop: float, image_drop: float
) -> Conditions:
    """Independent per-sample dropout of text and image conditions (STIV §3.2, for JIT-CFG)."""
    kt, ki = jax.random.split(key)
    b = cond["cond_mask"].shape[0]
    cond = drop_text(cond, jax.random.uniform(kt, (b,)) < text_drop, null_text)
    return drop_image(cond, jax.random.uniform(ki, (b,)) < image_drop)


def noise_augment(key: jax.Array, cond: Conditions, std: float) -> Conditions:
    """Channel concat: add N(0, std²) to the given latents (Step-Video), zeros stay zero."""
    if std <= 0:
        return cond
    out = dict(cond)
    noise = std * jax.random.normal(key, cond["cond_latents"].shape, jnp.float32)
    out["cond_latents"] = cond["cond_latents"] + noise * cond["cond_mask"][:, :, None, None, None]
    return Conditions(**out)


def null_conditions(cond: Conditions, null_text: dict, *, drop_text_too: bool = True) -> Conditions:
    """The unconditional branch for CFG: null text (optional) and no given frames."""
    b = cond["cond_mask"].shape[0]
    if drop_text_too:
        cond = drop_text(cond, jnp.ones((b,), bool), null_text)
    return drop_image(cond, jnp.ones((b,), bool))
