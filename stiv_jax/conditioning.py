"""Image conditioning, one object per method, and the model's `Conditions` dict.

Shapes: B batch, F latent frames, H/W latent size, C channels, L text tokens, Dt/Dp text
widths, p spatial patch, S = (H/p)·(W/p) spatial tokens.

`cond_mask [B, F]` says which latent frames are given (clean); `cond_latents [B, F, H, W, C]`
holds their latents (zeros elsewhere). A method of `IMAGE_CONDS` says everything that
differs between image-conditioning schemes, so the model, the trainer and the sampler
never branch on its name:

  method             in-channels  model input                    context        augment  loss on      post-step
  frame_replace      C            given frames of x_t replaced   text           -        other frames re-impose given
  frame_replace_ref  2C           [replaced x_t, nearest given]  text           -        other frames re-impose given
  channel_concat     2C           [x_t, given latents | 0]       text           noise    every frame  -
  cross_attn         C            x_t                            text + image   -        every frame  -

Frame replacement is STIV's: the given frames are the data, so they are neither predicted
nor supervised. `frame_replace_ref` adds a reference on C: every frame also sees the latent
of its nearest given frame (zeros when none is given), as Stable Video Diffusion concatenates
the conditioning image to every frame (Blattmann et al. 2023), here at any given positions.
What stays put in the video is then one patch-embedding away instead of one attention hop;
`model.ref_noise` hides the reference under noise that grows with the noise level, so where
the motion is decided the model reads the given frame through attention instead of copying
it (conditional image leakage, Zhao et al. 2024);
with `model.ref_skip` (x-prediction only) the model's output is added to that reference, so
an untrained model already predicts "the video holds the given frame" and learns the change.
Channel concat (Step-Video-TI2V) and the cross-attention ablation leave x_t untouched, so
every frame is generated and supervised (Step-Video's loss covers all frames). Also here:
building `Conditions`, and condition dropout for classifier-free guidance.
"""

from __future__ import annotations

from typing import NotRequired, TypedDict

import jax
import jax.numpy as jnp


class Conditions(TypedDict):
    """Everything besides (x, t) that the model reads; leaves carry batch B first.

    `cond_mask` and `cond_latents` may be left out for text-to-video (nothing given)."""

    text_tokens: jax.Array  # [B, L, Dt] text-encoder token states
    text_mask: jax.Array  # [B, L] bool, True = real token
    text_pooled: jax.Array  # [B, Dp] pooled sentence vector
    micro: jax.Array  # [B, 5] orig h, orig w, crop top, crop left, frame stride
    motion: jax.Array  # [B] motion score
    cond_mask: NotRequired[jax.Array]  # [B, F] bool, True = this latent frame is given
    cond_latents: NotRequired[jax.Array]  # [B, F, H, W, C] clean (or augmented) given latents
    self_cond: NotRequired[jax.Array]  # [B, F, H, W, C] the model's previous x̂1 (model.self_cond)
    ref_eps: NotRequired[jax.Array]  # [B, F, H, W, C] unit noise for the reference (training)
    ref_noise: NotRequired[jax.Array]  # [B, F, H, W, C] noise the reference carries at this t


def frames_mask(cond_mask: jax.Array) -> jax.Array:
    """[B, F] -> [B, F, 1, 1, 1]: broadcastable over a latent video [B, F, H, W, C]."""
    return cond_mask[:, :, None, None, None]


def with_image_defaults(cond: Conditions, x: jax.Array) -> Conditions:
    """`cond` with a T2V `cond_mask` (nothing given) and zero `cond_latents` filled in."""
    if "cond_mask" in cond and "cond_latents" in cond:
        return cond
    if "cond_latents" not in cond and "cond_mask" in cond:
        raise ValueError("Conditions has cond_mask but no cond_latents; give both or neither")
    b, f = x.shape[:2]
    out = dict(cond)
    out.setdefault("cond_mask", jnp.zeros((b, f), bool))
    out["cond_latents"] = jnp.zeros(x.shape, jnp.float32)
    return Conditions(**out)


# ============================================================================ methods


class ImageCond:
    """One image-conditioning method (see the module docstring's table)."""

    name: str = ""
    channel_multiplier: int = 1
    """Patch embedding input channels = channel_multiplier · C."""
    image_tokens: bool = False
    """Given latents are patch-embedded and appended to the cross-attention context."""
    has_reference: bool = False
    """`reference(cond)` gives every frame a latent to start from (see `reference`)."""

    def model_input(self, x: jax.Array, cond: Conditions) -> jax.Array:
        """Noisy latents x [B, F, H, W, C] -> the patch embedding's input [B, F, H, W, m·C]."""
        return x

    def augment(self, key: jax.Array, cond: Conditions, diffusion_cfg) -> Conditions:
        """Training-time change of the given latents (after condition dropout)."""
        return cond

    def loss_mask(self, cond: Conditions) -> jax.Array:
        """bool [B, F]: the frames the flow-matching loss counts (all: each is generated)."""
        return jnp.ones_like(cond["cond_mask"], bool)

    def post_step(self, cond: Conditions):
        """`post_step(x, t) -> x` for the ODE sampler, or None."""
        return None

    def context_tokens(self, cond: Conditions, patch: int) -> tuple[jax.Array, jax.Array]:
        """(image tokens [B, F·S, p·p·C], mask [B, F·S]) for the context; image_tokens only."""
        raise NotImplementedError(f"{self.name} adds no image tokens")

    def reference(self, cond: Conditions) -> jax.Array | None:
        """[B, F, H, W, C] the latent each frame is told to start from, or None (no reference):
        with `model.ref_skip` an x-predicting model's output is added to it."""
        return None


class FrameReplace(ImageCond):
    """STIV: given frames of x_t are their clean latents at every step; loss on the others."""

    name = "frame_replace"

    def model_input(self, x, cond):
        return jnp.where(frames_mask(cond["cond_mask"]), cond["cond_latents"].astype(x.dtype), x)

    def loss_mask(self, cond):
        return ~cond["cond_mask"]  # given frames are data, not predictions

    def post_step(self, cond):
        given, latents = frames_mask(cond["cond_mask"]), cond["cond_latents"]

        def post_step(x, t):  # given frames stay clean
            return jnp.where(given, latents, x)

        return post_step


def nearest_given(cond: Conditions) -> jax.Array:
    """[B, F, H, W, C]: at each frame, the latent of the nearest given frame (the earlier one
    on a tie); zeros in a sample where no frame is given."""
    mask, latents = cond["cond_mask"], cond["cond_latents"]
    f = mask.shape[1]
    pos = jnp.arange(f)
    dist = jnp.abs(pos[:, None] - pos[None, :]).astype(jnp.float32)  # [F frame, F given]
    dist = jnp.where(mask[:, None, :], dist, jnp.inf)  # [B, F, F]
    src = jnp.argmin(dist, axis=-1)  # [B, F]: first minimum = the earlier frame on a tie
    ref = jnp.take_along_axis(latents, src[:, :, None, None, None], axis=1)
    return jnp.where(frames_mask(mask.any(axis=1, keepdims=True)), ref, 0)


class FrameReplaceRef(FrameReplace):
    """Frame replacement plus each frame's nearest given latent concatenated on C."""

    name = "frame_replace_ref"
    channel_multiplier = 2
    has_reference = True

    def model_input(self, x, cond):
        replaced = super().model_input(x, cond)
        return jnp.concatenate([replaced, self.reference(cond).astype(x.dtype)], -1)

    def reference(self, cond):
        """Each frame's nearest given latent, plus `cond["ref_noise"]` where one is given
        (`model.ref_noise`, set by the model from t)."""
        ref = nearest_given(cond)
        if "ref_noise" not in cond:
            return ref
        given = frames_mask(cond["cond_mask"].any(axis=1, keepdims=True))
        return jnp.where(given, ref + cond["ref_noise"].astype(ref.dtype), 0)


class ChannelConcat(ImageCond):
    """Step-Video-TI2V: noise-augmented given latents (zeros elsewhere) concatenated on C."""

    name = "channel_concat"
    channel_multiplier = 2

    def model_input(self, x, cond):
        given = jnp.where(frames_mask(cond["cond_mask"]), cond["cond_latents"], 0)
        return jnp.concatenate([x, given.astype(x.dtype)], -1)

    def augment(self, key, cond, diffusion_cfg):
        return noise_augment(key, cond, float(diffusion_cfg.concat_noise))


class CrossAttn(ImageCond):
    """Ablation baseline: given latents become extra cross-attention tokens."""

    name = "cross_attn"
    image_tokens = True

    def context_tokens(self, cond, patch):
        lat = cond["cond_latents"]
        b, f, h, w, c = lat.shape
        x = lat.reshape(b, f, h // patch, patch, w // patch, patch, c).transpose(
            0, 1, 2, 4, 3, 5, 6
        )
        s = (h // patch) * (w // patch)
        tokens = x.reshape(b, f * s, patch * patch * c)
        return tokens, jnp.repeat(cond["cond_mask"], s, axis=1)


IMAGE_CONDS: dict[str, ImageCond] = {
    m.name: m for m in (FrameReplace(), FrameReplaceRef(), ChannelConcat(), CrossAttn())
}


def get_image_cond(name: str) -> ImageCond:
    if name not in IMAGE_CONDS:
        raise ValueError(
            f"model.image_cond={name!r} is unknown; expected one of {tuple(IMAGE_CONDS)}"
        )
    return IMAGE_CONDS[name]


# ============================================================================ building, dropout


def make_conditions(
    *,
    latents: jax.Array | None,
    cond_mask: jax.Array | None,
    text_tokens: jax.Array,
    text_mask: jax.Array,
    text_pooled: jax.Array,
    micro: jax.Array,
    motion: jax.Array,
) -> Conditions:
    """Given latents [B,F,H,W,C] where cond_mask [B,F] is set, zeros elsewhere.

    `latents=None, cond_mask=None`: text only (T2V), no image entries."""
    cond = Conditions(
        text_tokens=text_tokens.astype(jnp.float32),
        text_mask=text_mask.astype(bool),
        text_pooled=text_pooled.astype(jnp.float32),
        micro=micro.astype(jnp.float32),
        motion=motion.astype(jnp.float32),
    )
    if cond_mask is not None:
        cond["cond_mask"] = cond_mask.astype(bool)
        cond["cond_latents"] = jnp.where(frames_mask(cond_mask), latents, 0.0).astype(jnp.float32)
    return cond


def batch_conditions(batch: dict) -> Conditions:
    """`Conditions` of a model batch (`stiv_jax.data.schema.MODEL_BATCH` keys)."""
    keys = ("cond_mask", "text_tokens", "text_mask", "text_pooled", "micro", "motion")
    return make_conditions(latents=batch["latents"], **{k: batch[k] for k in keys})


def drop_text(cond: Conditions, drop: jax.Array, null_text: dict) -> Conditions:
    """Replace the text of samples where drop [B] is True by the null prompt's encoding."""
    out = dict(cond)
    for key, null in (("text_tokens", "tokens"), ("text_mask", "mask"), ("text_pooled", "pooled")):
        x = cond[key]
        d = drop.reshape((-1,) + (1,) * (x.ndim - 1))
        out[key] = jnp.where(d, jnp.broadcast_to(null_text[null].astype(x.dtype), x.shape), x)
    return Conditions(**out)


def drop_states(cond: Conditions, drop: jax.Array) -> Conditions:
    """Zero the encoder's token states of samples where drop [B] is True, keeping the last
    channel (the word-piece ids, `model.word_pieces`): their caption reaches the model only
    through the word pieces by position, which do not depend on the phrasing."""
    x = cond["text_tokens"]
    states = jnp.ones((x.shape[-1],), bool).at[-1].set(False)  # every channel but the ids
    out = dict(cond)
    out["text_tokens"] = jnp.where(drop[:, None, None] & states, jnp.zeros_like(x), x)
    return Conditions(**out)


def drop_image(cond: Conditions, drop: jax.Array) -> Conditions:
    """Remove every given frame of samples where drop [B] is True (they become T2V)."""
    if "cond_mask" not in cond:
        return cond
    keep = ~drop
    out = dict(cond)
    out["cond_mask"] = cond["cond_mask"] & keep[:, None]
    out["cond_latents"] = cond["cond_latents"] * frames_mask(keep[:, None])
    return Conditions(**out)


def drop_conditions(
    key: jax.Array, cond: Conditions, null_text: dict, *, text_drop: float, image_drop: float
) -> Conditions:
    """Independent per-sample dropout of text and image conditions (STIV §3.2, for JIT-CFG)."""
    kt, ki = jax.random.split(key)
    b = cond["text_tokens"].shape[0]
    cond = drop_text(cond, jax.random.uniform(kt, (b,)) < text_drop, null_text)
    return drop_image(cond, jax.random.uniform(ki, (b,)) < image_drop)


def noise_augment(key: jax.Array, cond: Conditions, std: float) -> Conditions:
    """Add N(0, std²) to the given latents (Step-Video), zeros stay zero."""
    if std <= 0:
        return cond
    out = dict(cond)
    noise = std * jax.random.normal(key, cond["cond_latents"].shape, jnp.float32)
    out["cond_latents"] = cond["cond_latents"] + noise * frames_mask(cond["cond_mask"])
    return Conditions(**out)


def null_conditions(cond: Conditions, null_text: dict) -> Conditions:
    """The unconditional branch for CFG: null text and no given frames."""
    b = cond["text_tokens"].shape[0]
    cond = drop_text(cond, jnp.ones((b,), bool), null_text)
    return drop_image(cond, jnp.ones((b,), bool))
