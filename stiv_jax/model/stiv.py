"""STIV: factorized spatial→temporal DiT with text cross-attention (arXiv 2412.07730).

Shapes: B batch, F latent frames, H/W latent height/width, C latent channels, p spatial and
pt temporal patch, F' = F/pt, S = (H/p)·(W/p) spatial tokens, L text tokens, D width.

  x [B, F, H, W, C], t [B] in [0, 1] (1 = data), cond (dict, see `Conditions`)
  -> velocity (or x1 with model.prediction=data) [B, F, H, W, C] float32

Pieces, in order: image conditioning of the input (frame replacement or channel concat),
patch embedding (plus one of the model's previous estimate x̂1 with `model.self_cond`,
self-conditioning), caption projection (plus the optional caption window, `model.text_window`:
each token's ±k neighbours; then the optional token refiner, `model.text_refiner`
self-attention layers over the caption; plus hashed word pieces summed by relative position
around each token, `model.word_pieces`), the singleton condition (stateless-LN'd
embeddings of t, micro-conditions, motion score, pooled text and its word bag, summed)
feeding one shared AdaLN-single projection, MaskDiT (the main blocks see a random
(1 − mask_ratio) share of spatial positions, the same in every frame; a learned mask token
fills the rest before the decoder blocks), final modulated LayerNorm and linear, unpatchify
(plus a linear map of each input patch with `model.input_skip`, each frame's nearest
given latent with `model.ref_skip`, or that latent times a gate the head predicts per output
value with `model.ref_gate`; with `model.input_mix` the head also predicts, per output value,
weights over the same pixel's m·C input channels: a 1×1 mix of the input the token chooses).

`python -m stiv_jax.model.stiv --config configs/stiv.py:variant=XL/2 --count-params`
prints the parameter count from `nnx.eval_shape` (nothing is allocated).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from stiv_jax.conditioning import Conditions, get_image_cond, with_image_defaults
from stiv_jax.model.block import MOD_ROWS, STIVBlock, remat_block
from stiv_jax.model.layers import (
    EMBED,
    MLP,
    ScalarEmbedder,
    dense,
    layer_norm,
    layer_norm_modulate,
)
from stiv_jax.model.rope import rope_1d, rope_2d
from stiv_jax.model.text_refiner import TextRefiner
from stiv_jax.model.text_window import TextWindow
from stiv_jax.model.word_pieces import WordPieces

__all__ = ["STIV", "Conditions", "count_params", "initialize_weights"]

# Random special inits, drawn at construction (so the rng stream stays fixed); the rest is
# set by `initialize_weights`.
EMBEDDER_INIT = nnx.initializers.normal(0.02)  # t / micro / motion embedder kernels (DiT)
MASK_TOKEN_STD = 0.02  # MaskDiT's learned mask token


def patchify(x: jax.Array, pt: int, p: int) -> jax.Array:
    """[B, F, H, W, C] -> [B, F/pt, (H/p)·(W/p), pt·p·p·C]."""
    b, f, h, w, c = x.shape
    x = x.reshape(b, f // pt, pt, h // p, p, w // p, p, c)
    x = x.transpose(0, 1, 3, 5, 2, 4, 6, 7)
    return x.reshape(b, f // pt, (h // p) * (w // p), pt * p * p * c)


def unpatchify(x: jax.Array, pt: int, p: int, hw: tuple[int, int], c: int) -> jax.Array:
    """[B, F', S, pt·p·p·C] -> [B, F'·pt, H, W, C] (inverse of `patchify`)."""
    b, fp = x.shape[:2]
    gh, gw = hw[0] // p, hw[1] // p
    x = x.reshape(b, fp, gh, gw, pt, p, p, c).transpose(0, 1, 4, 2, 5, 3, 6, 7)
    return x.reshape(b, fp * pt, hw[0], hw[1], c)


def mask_select(tokens: jax.Array, key: jax.Array, ratio: float) -> tuple[jax.Array, jax.Array]:
    """MaskDiT: keep a random (1 − ratio) share of spatial positions, the same in every frame.

    tokens [B, F', S, D] -> (kept [B, F', K, D], perm [B, S]); perm[:, :K] are the kept
    positions, perm[:, K:] the masked ones.
    """
    b, _, s, _ = tokens.shape
    keep = _num_kept(s, ratio)
    perm = _mask_perm(key, b, s)
    return jnp.take_along_axis(tokens, perm[:, None, :keep, None], axis=2), perm


def _num_kept(s: int, ratio: float) -> int:
    return max(1, int(round(s * (1.0 - ratio))))


def _mask_perm(key: jax.Array, b: int, s: int) -> jax.Array:
    return jnp.argsort(jax.random.uniform(key, (b, s)), axis=1)


def visible_pixels(key: jax.Array, shape: tuple[int, ...], p: int, ratio: float) -> jax.Array:
    """bool [B, H, W]: latent pixels whose spatial token MaskDiT keeps for `key` (as in
    `mask_select` for latents of `shape` [B, F, H, W, C] and spatial patch p)."""
    b, _, h, w = shape[:4]
    s = (h // p) * (w // p)
    perm = _mask_perm(key, b, s)
    kept = jnp.zeros((b, s), bool).at[jnp.arange(b)[:, None], perm[:, : _num_kept(s, ratio)]]
    kept = kept.set(True).reshape(b, h // p, w // p)
    return jnp.repeat(jnp.repeat(kept, p, axis=1), p, axis=2)


def mask_restore(kept: jax.Array, perm: jax.Array, mask_token: jax.Array) -> jax.Array:
    """Inverse of `mask_select`: [B, F', K, D] -> [B, F', S, D], mask token at masked positions."""
    b, f, k, d = kept.shape
    s = perm.shape[1]
    fill = jnp.broadcast_to(mask_token.astype(kept.dtype), (b, f, s - k, d))
    full = jnp.concatenate([kept, fill], axis=2)
    return jnp.take_along_axis(full, jnp.argsort(perm, axis=1)[:, None, :, None], axis=2)


# The value of each model key added after the first checkpoints, where a config (a saved
# checkpoint's) lacks it: the model as it was before the key existed. `option` reads them, and
# a resume compares a checkpoint without the key as if it had this value (run_checks).
LEGACY_DEFAULTS = {
    "ref_skip": False,
    "ref_gate": False,
    "ref_gate_init": 0.0,
    "word_bag": 0,
    "temporal_adaln": True,
    "key_shift": False,
    "qk_norm_init": 1.0,
    "text_refiner": 0,
    "text_window": 0,
    "input_skip": False,
    "input_mix": False,
    "self_cond": False,
    "word_pieces": 0,
    "word_pieces_zero_init": True,
    "ref_noise": 0.0,
}

REF_NOISE_SEED = 20_241_205  # the fixed unit noise of the reference when cond has no ref_eps


def option(cfg, key: str):
    """config.model[key], or its `LEGACY_DEFAULTS` value when the config predates it."""
    return cfg.get(key, LEGACY_DEFAULTS[key])


def token_width(cfg) -> int:
    """Width of the text token states the model takes (config.model): the encoder's
    `text_dim`, plus the word-piece id channel when `word_pieces` is on."""
    return int(cfg.text_dim) + (1 if int(option(cfg, "word_pieces")) else 0)


class STIV(nnx.Module):
    """The STIV diffusion transformer (see module docstring for shapes)."""

    def __init__(self, cfg, *, rngs: nnx.Rngs, in_channels: int | None = None):
        """`cfg` is config.model; `in_channels` defaults to cfg.in_channels."""
        image_cond = get_image_cond(cfg.image_cond)
        in_channels = int(cfg.in_channels if in_channels is None else in_channels)
        if cfg.temporal_patch not in (1, 2, 4):
            raise ValueError(f"model.temporal_patch={cfg.temporal_patch}; expected 1, 2 or 4")
        if not 0.0 <= cfg.mask_ratio < 1.0:
            raise ValueError(f"model.mask_ratio={cfg.mask_ratio}; expected a value in [0, 1)")
        self.ref_skip = bool(option(cfg, "ref_skip"))
        ref_gate = bool(option(cfg, "ref_gate"))
        for key, on in (("ref_skip", self.ref_skip), ("ref_gate", ref_gate)):
            if on and (cfg.get("prediction") != "data" or not image_cond.has_reference):
                raise ValueError(
                    f"model.{key}=True needs model.prediction='data' and an image_cond with a "
                    f"reference (frame_replace_ref); got prediction={cfg.get('prediction')!r}, "
                    f"image_cond={cfg.image_cond!r}"
                )
        self.ref_noise = float(option(cfg, "ref_noise"))
        if self.ref_noise < 0 or (self.ref_noise and not image_cond.has_reference):
            raise ValueError(
                f"model.ref_noise={self.ref_noise}; expected 0, or > 0 with an image_cond that "
                f"has a reference (frame_replace_ref), not {cfg.image_cond!r}"
            )
        if float(option(cfg, "ref_gate_init")) and not ref_gate:
            raise ValueError(
                f"model.ref_gate_init={cfg.ref_gate_init} sets the ref_gate's start; it needs "
                "model.ref_gate=True"
            )
        self.cfg = cfg = ml_collections.FrozenConfigDict(cfg)  # a snapshot, immune to later edits
        d, p, pt = cfg.width, cfg.patch_size, cfg.temporal_patch
        dtype, pdtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=pdtype)
        self.in_channels, self.dtype, self.image_cond = in_channels, dtype, image_cond
        self.cin = cin = in_channels * image_cond.channel_multiplier
        self.patch_embed = dense(pt * p * p * cin, d, (None, EMBED), **kw)
        self.text_proj = MLP(cfg.text_dim, d, **kw, dout=d)
        emb_kw = dict(freq_dim=cfg.freq_dim, kernel_init=EMBEDDER_INIT, **kw)
        self.t_embed = ScalarEmbedder(1, d, scale=1000.0, **emb_kw)
        # The pooled vector's last `word_bag` columns are the encoder's word-piece bag
        # (encoders.base.WordBag): a linear map of them is a learned embedding per word piece,
        # summed; it gets its own LN'd term so MiniLM's sentence vector cannot drown it.
        self.word_bag = nb = int(option(cfg, "word_bag"))
        self.pooled_proj = MLP(cfg.pooled_dim - nb, d, **kw, dout=d)
        self.word_proj = dense(nb, d, (None, EMBED), **kw) if nb else None
        self.micro_embed = ScalarEmbedder(5, d, scale=1.0, **emb_kw) if cfg.micro_cond else None
        self.motion_embed = ScalarEmbedder(1, d, scale=100.0, **emb_kw) if cfg.motion_cond else None
        self.image_embed = (
            dense(p * p * in_channels, d, (None, EMBED), **kw) if image_cond.image_tokens else None
        )
        self.adaln = dense(d, MOD_ROWS * d, (EMBED, None), **kw)
        block_kw = dict(
            impl=cfg.attention_impl,
            causal_temporal=cfg.causal_temporal,
            temporal_adaln=option(cfg, "temporal_adaln"),
            key_shift=bool(option(cfg, "key_shift")),
            theta=cfg.rope_theta,
            qk_norm_init=float(option(cfg, "qk_norm_init")),
            **kw,
        )
        if cfg.scan_blocks:

            @nnx.split_rngs(splits=cfg.depth)
            @nnx.vmap(in_axes=(0,), out_axes=0)
            def make(r):
                return STIVBlock(d, cfg.heads, cfg.mlp_ratio, **{**block_kw, "rngs": r})

            self.blocks = make(rngs)
        else:
            self.blocks = nnx.List(
                [STIVBlock(d, cfg.heads, cfg.mlp_ratio, **block_kw) for _ in range(cfg.depth)]
            )
        self.decoder = nnx.List(
            [STIVBlock(d, cfg.heads, cfg.mlp_ratio, **block_kw) for _ in range(cfg.decoder_depth)]
        )
        self.mask_token = nnx.Param(MASK_TOKEN_STD * jax.random.normal(rngs.params(), (d,), pdtype))
        self.final_table = nnx.Param(jnp.zeros((2, d), pdtype))
        self.final = dense(d, pt * p * p * in_channels, (EMBED, None), **kw)
        # Last, so that a refiner leaves every other weight of a seed as it was.
        nr = int(option(cfg, "text_refiner"))
        self.text_refiner = (
            TextRefiner(d, cfg.heads, nr, cfg.mlp_ratio, theta=cfg.rope_theta, **kw) if nr else None
        )
        nw = int(option(cfg, "text_window"))  # after the refiner, for the same reason
        self.text_window = TextWindow(cfg.text_dim, d, nw, **kw) if nw else None
        # A linear map from each input patch (noisy latents + image-cond channels) straight
        # to its output patch, zero at init: the given frame's texture need not pass the
        # blocks' width-D bottleneck (U-ViT's long skip, to the output). Last, as above.
        out_dim = pt * p * p * in_channels
        self.input_skip = (
            dense(pt * p * p * cin, out_dim, (None, None), **kw)
            if option(cfg, "input_skip")
            else None
        )
        # The head's second linear: a gate per output value, zero at init, that multiplies
        # each frame's nearest given latent into the output (x̂1 = final + gate·reference).
        # Unlike the input skip, the blocks choose per token where to copy (still background)
        # and where not (a moving object). Last, as above.
        self.ref_gate = dense(d, out_dim, (EMBED, None), **kw) if ref_gate else None
        # The head's third linear: per output value, weights over the same pixel's m·C input
        # channels (noisy latents + image-cond channels), zero at init. A per-pixel copy path
        # of the input that the token steers (x̂1 += Σ_j w_j · input_j): still background from
        # the reference, the nearly clean input at high t, a colour mix; the 4×4×2 patch's
        # values need not pass the width-D token (docs/quality.md §16-17). Last, as above.
        self.input_mix = (
            dense(d, out_dim * cin, (EMBED, None), **kw) if option(cfg, "input_mix") else None
        )
        # Self-conditioning (Chen et al. 2022, "Analog Bits"): a second patch embedding of the
        # model's own previous estimate x̂1 (`cond["self_cond"]`, zeros when absent), added to
        # the tokens; zero at init, so it starts as no change. Last, as above.
        self.self_cond_embed = (
            dense(out_dim, d, (None, EMBED), **kw) if option(cfg, "self_cond") else None
        )
        # Hashed word pieces summed by relative position around each caption token (ids in
        # the tokens' last channel, encoders.base.WordPieceIds); zero at init. Last, as above.
        nwp = int(option(cfg, "word_pieces"))
        self.word_pieces = WordPieces(nwp, d, **kw) if nwp else None
        initialize_weights(self)

    @classmethod
    def from_config(cls, cfg, *, rngs: nnx.Rngs | None = None, seed: int = 0) -> STIV:
        """STIV of `config.model` (in_channels from it), weights from `rngs` or `seed`."""
        return cls(cfg, rngs=rngs if rngs is not None else nnx.Rngs(seed))

    # ---------------------------------------------------------------- pieces
    def singleton(self, t: jax.Array, cond: Conditions) -> jax.Array:
        """[B] t + conditions -> [B, D]: sum of stateless-LN'd embeddings."""
        c = layer_norm(self.t_embed(t[:, None]))
        pooled = cond["text_pooled"].astype(self.dtype)
        if pooled.shape[-1] != self.cfg.pooled_dim:
            raise ValueError(
                f"text_pooled width {pooled.shape[-1]} != model.pooled_dim "
                f"{self.cfg.pooled_dim} (the encoder's pooled width + text_encoder.word_bag)"
            )
        split = pooled.shape[-1] - self.word_bag
        c = c + layer_norm(self.pooled_proj(pooled[:, :split]))
        if self.word_proj is not None:
            c = c + layer_norm(self.word_proj(pooled[:, split:]))
        if self.micro_embed is not None:
            c = c + layer_norm(self.micro_embed(cond["micro"]))
        if self.motion_embed is not None:
            c = c + layer_norm(self.motion_embed(cond["motion"][:, None]))
        return c

    def caption_tokens(self, tokens: jax.Array, mask: jax.Array, *, refine: bool = True):
        """Text token states [B, L, token_width] and mask [B, L] -> caption tokens [B, L, D]:
        projected, plus the word-piece and window terms, then the refiner (unless `refine`
        is False)."""
        if tokens.shape[-1] != token_width(self.cfg):
            raise ValueError(
                f"text_tokens width {tokens.shape[-1]} != {token_width(self.cfg)} (model.text_dim"
                f" {self.cfg.text_dim}{' + 1 word-piece id channel' if self.word_pieces else ''})"
            )
        if self.word_pieces is not None:  # ids before any cast: bf16 cannot hold them
            ids = jnp.round(tokens[..., -1]).astype(jnp.int32)
            tokens = tokens[..., :-1]
        tokens = tokens.astype(self.dtype)
        ctx = self.text_proj(tokens)
        if self.word_pieces is not None:
            ctx = ctx + self.word_pieces(ids, mask)
        if self.text_window is not None:
            ctx = ctx + self.text_window(tokens, mask)
        if refine and self.text_refiner is not None:
            ctx = self.text_refiner(ctx, mask)
        return ctx

    def context(self, cond: Conditions):
        """Caption tokens (+ image tokens when the image-cond method adds them) and mask."""
        mask = cond["text_mask"]
        ctx = self.caption_tokens(cond["text_tokens"], mask)
        if self.image_embed is not None:
            img, img_mask = self.image_cond.context_tokens(cond, self.cfg.patch_size)
            img = self.image_embed(img.astype(self.dtype))
            ctx, mask = jnp.concatenate([ctx, img], 1), jnp.concatenate([mask, img_mask], 1)
        return ctx, mask

    def rope(self, fp: int, gh: int, gw: int):
        c = self.cfg
        hd = c.width // c.heads
        tf, th, tw = c.train_grid
        rope_s = rope_2d(
            gh, gw, hd, theta=c.rope_theta, train_hw=(th, tw), interpolate=c.rope_interpolation
        )
        rope_t = rope_1d(fp, hd, theta=c.rope_theta, train_n=tf, interpolate=c.rope_interpolation)
        return rope_s, rope_t

    def run_blocks(self, h, mod, ctx, ctx_mask, rope_s, rope_t, *, start=0, stop=None):
        """Main blocks [start, stop) (all by default; the sampler's step cache runs block 0
        alone, then the rest)."""
        call = remat_block(self.cfg.remat)
        if self.cfg.scan_blocks:
            blocks = self.blocks
            if (start, stop) != (0, None):  # a slice of the stacked layers
                graph, state = nnx.split(blocks)
                blocks = nnx.merge(graph, jax.tree.map(lambda a: a[start:stop], state))

            @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
            def body(h, block):
                return call(block, h, mod, ctx, ctx_mask, rope_s, rope_t)

            return body(h, blocks)
        for block in list(self.blocks)[start:stop]:
            h = call(block, h, mod, ctx, ctx_mask, rope_s, rope_t)
        return h

    def embed(self, x: jax.Array, t: jax.Array, cond: Conditions):
        """Everything before the blocks: (tokens [B, F', S, D], block arguments (mod, ctx,
        ctx_mask, rope_s, rope_t), singleton cvec [B, D])."""
        c = self.cfg
        b, f, hh, ww, ch = x.shape
        p, pt = c.patch_size, c.temporal_patch
        if ch != self.in_channels:
            raise ValueError(f"latent channels {ch} != model in_channels {self.in_channels}")
        if f % pt or hh % p or ww % p:
            raise ValueError(
                f"latent shape F={f}, H={hh}, W={ww} must be divisible by temporal patch {pt} "
                f"and spatial patch {p}"
            )
        cond = with_image_defaults(cond, x)
        tokens = self.patch_embed(self.patched_input(x, cond))
        if self.self_cond_embed is not None:  # the previous x̂1, or zeros: no estimate yet
            est = cond.get("self_cond", jnp.zeros_like(x))
            tokens = tokens + self.self_cond_embed(patchify(est.astype(self.dtype), pt, p))
        ctx, ctx_mask = self.context(cond)
        cvec = self.singleton(t, cond)  # [B, D]
        mod = self.adaln(jax.nn.silu(cvec)).reshape(b, MOD_ROWS, c.width)
        rope_s, rope_t = self.rope(f // pt, hh // p, ww // p)
        return tokens, (mod, ctx, ctx_mask, rope_s, rope_t), cvec

    def head(self, h: jax.Array, cvec: jax.Array, shape: tuple[int, ...]) -> jax.Array:
        """Block output [B, F', S, D] -> velocity [B, F, H, W, C] float32 (`shape` is x's),
        followed on the channel axis by the copy gate (C, `model.ref_gate`) and the input-mix
        weights (C·m·C, `model.input_mix`) when on; `finish` splits them off."""
        c = self.cfg
        shift, scale = jnp.split(self.final_table[...][None] + cvec[:, None], 2, axis=1)
        h = layer_norm_modulate(
            h, shift[:, :, None].astype(h.dtype), scale[:, :, None].astype(h.dtype)
        )
        _, _, hh, ww, ch = shape
        heads = [(self.final, ch), (self.ref_gate, ch), (self.input_mix, ch * self.cin)]
        out = [
            unpatchify(linear(h), c.temporal_patch, c.patch_size, (hh, ww), n)
            for linear, n in heads
            if linear is not None
        ]
        return jnp.concatenate(out, -1).astype(jnp.float32)

    # ---------------------------------------------------------------- forward
    def __call__(
        self, x: jax.Array, t: jax.Array, cond: Conditions, *, mask_key: jax.Array | None = None
    ) -> jax.Array:
        """The output for noisy latents x at times t: the velocity, or the clean latents x1
        with `prediction='data'` (plus the reference with `ref_skip`). `mask_key` turns on
        MaskDiT (training)."""
        cond = self.noised_reference(cond, t, x.shape)
        h, (mod, ctx, ctx_mask, rope_s, rope_t), cvec = self.embed(x, t, cond)
        masked = mask_key is not None and self.cfg.mask_ratio > 0
        if masked:
            h, perm = mask_select(h, mask_key, self.cfg.mask_ratio)
            rope_k = tuple(r[perm[:, : h.shape[2]]] for r in rope_s)  # [B, K, H/2]
        else:
            rope_k = rope_s
        h = self.run_blocks(h, mod, ctx, ctx_mask, rope_k, rope_t)
        if masked:
            h = mask_restore(h, perm, self.mask_token[...])
        for block in self.decoder:
            h = block(h, mod, ctx, ctx_mask, rope_s, rope_t)
        return self.finish(self.head(h, cvec, x.shape), x, cond)

    def noised_reference(self, cond: Conditions, t: jax.Array, shape) -> Conditions:
        """With `model.ref_noise` = σ: cond plus `ref_noise` = σ·(1 − t)·ε for the reference
        channel (t: 0 noise → 1 data), so the reference is hidden where x_t is, and clean at
        the data end. ε is `cond["ref_eps"]` (training draws it per sample) or one fixed draw
        (`REF_NOISE_SEED`; sampling: deterministic, the same in every sampling path)."""
        if not self.ref_noise:
            return cond
        eps = cond.get("ref_eps")
        if eps is None:  # one draw for every sample: independent of the batch's size
            eps = jax.random.normal(jax.random.key(REF_NOISE_SEED), shape[1:], jnp.float32)[None]
        scale = self.ref_noise * (1.0 - t.astype(jnp.float32))[:, None, None, None, None]
        return {**cond, "ref_noise": scale * eps}

    def patched_input(self, x: jax.Array, cond: Conditions) -> jax.Array:
        """x [B, F, H, W, C] and its (defaulted) conditions -> the image-cond method's input in
        patches [B, F', S, pt·p·p·m·C], what the patch embedding (and the input skip) reads."""
        c = self.cfg
        inp = self.image_cond.model_input(x, cond).astype(self.dtype)
        return patchify(inp, c.temporal_patch, c.patch_size)

    def finish(self, out: jax.Array, x: jax.Array, cond: Conditions) -> jax.Array:
        """The head's output [B, F, H, W, C] plus what bypasses the blocks: the input skip
        (`model.input_skip`), the reference (`model.ref_skip`; with `model.ref_gate`, the
        reference times the head's gate) and the head's per-pixel mix of the input
        (`model.input_mix`). Every forward path (the call, the step cache's split forward)
        ends here."""
        c = self.cfg
        ch = x.shape[-1]
        extra = (self.ref_gate, self.input_mix, self.input_skip)
        if self.ref_skip or any(e is not None for e in extra):
            cond = with_image_defaults(cond, x)
        n_gate = ch if self.ref_gate is not None else 0  # head gave [output | gate | mix]
        out, gate, mix = out[..., :ch], out[..., ch : ch + n_gate], out[..., ch + n_gate :]
        if self.ref_gate is not None:
            out = out + gate * self.image_cond.reference(cond)
        if self.input_mix is not None:
            inp = self.image_cond.model_input(x, cond).astype(jnp.float32)  # [B, F, H, W, m·C]
            mix = mix.reshape(*mix.shape[:-1], ch, self.cin)
            out = out + jnp.einsum("...cj,...j->...c", mix, inp)
        if self.input_skip is not None:  # XLA merges this with embed's identical patchify
            skip = unpatchify(self.input_skip(self.patched_input(x, cond)), c.temporal_patch,
                              c.patch_size, x.shape[2:4], x.shape[-1])  # fmt: skip
            out = out + skip.astype(jnp.float32)
        if self.ref_skip:  # x-prediction relative to the reference (model.ref_skip)
            out = out + self.image_cond.reference(cond)
        return out


def initialize_weights(model: STIV) -> None:
    """All deterministic special initialisation of STIV, in one place (DiT's).

    Zero: the shared AdaLN-single projection and every block's table (so every gate is 0
    and each block starts as the identity), the final table and the final linear (the
    model starts by predicting v = 0; a `model.ref_gate` starts at `model.ref_gate_init`
    everywhere). Construction has already drawn every random value
    from the rng stream (xavier-uniform linears, `EMBEDDER_INIT`, `MASK_TOKEN_STD`), so
    the values of a seed do not depend on what this zeroes.
    """

    def zero(v: nnx.Variable) -> None:
        v.set_value(jnp.zeros_like(v.get_value()))

    for linear in (model.adaln, model.final):
        zero(linear.kernel)
        zero(linear.bias)
    for linear in (model.ref_gate, model.input_mix):  # a new gate or mix starts as no copy
        if linear is not None:
            zero(linear.kernel)
            zero(linear.bias)
    if model.self_cond_embed is not None:  # a new input starts as no change
        zero(model.self_cond_embed.kernel)
        zero(model.self_cond_embed.bias)
    if model.ref_gate is not None and option(model.cfg, "ref_gate_init"):  # or half/fully open
        bias = model.ref_gate.bias
        bias.set_value(jnp.full_like(bias.get_value(), float(model.cfg.ref_gate_init)))
    zero(model.final_table)
    if model.input_skip is not None:  # a new skip starts as no change
        zero(model.input_skip.kernel)
        zero(model.input_skip.bias)
    if model.word_pieces is not None:  # a new word-piece path starts as no change
        if option(model.cfg, "word_pieces_zero_init"):  # False: xavier (from scratch, §22)
            zero(model.word_pieces.proj.kernel)
        zero(model.word_pieces.proj.bias)
    if model.text_window is not None:  # a new window starts as no change
        zero(model.text_window.proj.kernel)
        zero(model.text_window.proj.bias)
    blocks = [model.blocks] if model.cfg.scan_blocks else list(model.blocks)
    for block in blocks + list(model.decoder):
        zero(block.table)


def count_params(cfg, in_channels: int | None = None) -> dict[str, int]:
    """Parameter counts from abstract shapes (nothing is allocated), split by part."""
    abstract = nnx.eval_shape(lambda: STIV(cfg, in_channels=in_channels, rngs=nnx.Rngs(0)))
    counts = dict(total=0, temporal=0, decoder=0, decoder_temporal=0, blocks=0)
    for path, leaf in nnx.to_flat_state(nnx.state(abstract, nnx.Param)):
        n = _numel(leaf.get_value().shape)
        counts["total"] += n
        counts["temporal"] += n if "temporal" in path else 0
        counts["decoder"] += n if path[0] == "decoder" else 0
        counts["decoder_temporal"] += n if path[0] == "decoder" and "temporal" in path else 0
        counts["blocks"] += n if path[0] == "blocks" else 0
    counts["without_temporal"] = counts["total"] - counts["temporal"]
    counts["other"] = counts["total"] - counts["blocks"] - counts["decoder"]
    return counts


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def main(argv=None) -> None:
    from absl import app, flags
    from ml_collections import config_flags

    cfg_flag = config_flags.DEFINE_config_file("config", None, "Config file:arg.", lock_config=True)
    flags.DEFINE_bool("count-params", True, "Print the parameter count (the only action).")

    def run(_):
        config = cfg_flag.value
        counts = count_params(config.model)
        print(f"params: {counts['total']}")
        print(f"  main blocks: {counts['blocks']}")
        print(f"  MaskDiT decoder blocks: {counts['decoder']}")
        print(f"  embedders, AdaLN-single, caption projection, final layer: {counts['other']}")
        print(f"  temporal attention (all blocks): {counts['temporal']}")
        print(f"params without temporal layers: {counts['without_temporal']}")
        main_only = counts["without_temporal"] - (counts["decoder"] - counts["decoder_temporal"])
        print(f"params without temporal layers and decoder blocks: {main_only}")

    app.run(run, argv)


if __name__ == "__main__":
    main()
