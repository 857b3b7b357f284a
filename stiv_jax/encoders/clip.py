"""CLIP text encoder (HF `CLIPTextModel` / `CLIPTextModelWithProjection` numerics).

Shapes: B prompts, L tokens (≤ max_position_embeddings, 77 for OpenAI CLIP), D width,
N heads, H head dim, P projection width.
  CLIPText(ids int32 [B, L], mask bool [B, L]) → tokens f32 [B, L, D], pooled f32 [B, P or D]

Pre-LN layers with causal self-attention (plus the padding mask), quick_gelu or gelu MLP,
final LayerNorm. Pooled = final state at the EOS token — the argmax of the ids for legacy
configs with eos_token_id == 2 (OpenAI's EOS is the largest id), else the first position
holding eos_token_id — followed by `text_projection` when the checkpoint has one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import jax
import jax.numpy as jnp
from flax import nnx

from stiv_jax.encoders.base import TextEncoder, load_module, read_config
from stiv_jax.encoders.layers import (
    Norm,
    activation,
    attention,
    causal_bias,
    key_mask_bias,
    linear,
)
from stiv_jax.encoders.tokenizer import Tokenizer
from stiv_jax.weights import Rule, load_safetensors


@dataclass(frozen=True)
class CLIPTextConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    max_position_embeddings: int
    layer_norm_eps: float
    hidden_act: str
    eos_token_id: int
    pad_token_id: int
    projection_dim: int | None  # None: no text_projection (CLIPTextModel)

    @classmethod
    def from_hf(cls, c: dict, projection_dim: int | None) -> CLIPTextConfig:
        # A full CLIPModel config nests the text tower's fields under "text_config".
        t = c.get("text_config") or c
        missing = [
            k
            for k in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads")
            if k not in t
        ]
        if missing:
            raise ValueError(f"CLIP text config lacks {missing}; expected an HF CLIP config.json")
        return cls(
            vocab_size=t["vocab_size"],
            hidden_size=t["hidden_size"],
            intermediate_size=t.get("intermediate_size", 4 * t["hidden_size"]),
            num_layers=t["num_hidden_layers"],
            num_heads=t["num_attention_heads"],
            max_position_embeddings=t.get("max_position_embeddings", 77),
            layer_norm_eps=t.get("layer_norm_eps", 1e-5),
            hidden_act=t.get("hidden_act", "quick_gelu"),
            eos_token_id=t.get("eos_token_id", 2),
            pad_token_id=t.get("pad_token_id", 1),
            projection_dim=projection_dim,
        )


class CLIPLayer(nnx.Module):
    """[B, L, D] → [B, L, D]: pre-LN attention and MLP."""

    def __init__(self, c: CLIPTextConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        d, kw = c.hidden_size, dict(bias=True, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.n = c.num_heads
        self.norm1 = Norm(d, c.layer_norm_eps, param_dtype=param_dtype)
        self.q, self.k, self.v, self.o = (linear(d, d, **kw) for _ in range(4))
        self.norm2 = Norm(d, c.layer_norm_eps, param_dtype=param_dtype)
        self.fc1 = linear(d, c.intermediate_size, **kw)
        self.fc2 = linear(c.intermediate_size, d, **kw)
        self.act = activation(c.hidden_act)

    def __call__(self, x: jax.Array, bias: jax.Array) -> jax.Array:
        b, n_tok, d = x.shape
        h = self.norm1(x)
        split = lambda t: t.reshape(b, n_tok, self.n, d // self.n)  # [B, L, D] → [B, L, N, H]
        a = attention(split(self.q(h)), split(self.k(h)), split(self.v(h)), bias)
        x = x + self.o(a.reshape(b, n_tok, d))
        return x + self.fc2(self.act(self.fc1(self.norm2(x))))


class CLIPText(nnx.Module):
    """ids int32 [B, L], mask bool [B, L] → (tokens [B, L, D], EOS-pooled [B, P or D])."""

    def __init__(self, c: CLIPTextConfig, *, dtype=jnp.float32, param_dtype=jnp.float32, rngs):
        d, kw = c.hidden_size, dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.eos_token_id = c.eos_token_id
        self.token_embedding = nnx.Embed(c.vocab_size, d, **kw)
        self.position_embedding = nnx.Embed(c.max_position_embeddings, d, **kw)
        self.layers = nnx.List([CLIPLayer(c, **kw) for _ in range(c.num_layers)])
        self.final_norm = Norm(d, c.layer_norm_eps, param_dtype=param_dtype)
        self.projection = (
            linear(d, c.projection_dim, bias=False, **kw) if c.projection_dim is not None else None
        )

    def __call__(self, ids: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
        n_tok = ids.shape[1]
        x = self.token_embedding(ids) + self.position_embedding(jnp.arange(n_tok))[None]
        bias = causal_bias(n_tok) + key_mask_bias(mask)
        for layer in self.layers:
            x = layer(x, bias)
        x = self.final_norm(x)
        if self.eos_token_id == 2:  # legacy configs: EOS is the largest id (HF PR #24773)
            eos = jnp.argmax(ids, axis=-1)
        else:
            eos = jnp.argmax(ids == self.eos_token_id, axis=-1)
        pooled = jnp.take_along_axis(x, eos[:, None, None], axis=1)[:, 0]
        if self.projection is not None:
            pooled = self.projection(pooled)
        return x.astype(jnp.float32), pooled.astype(jnp.float32)


_P, _T = r"layers\.(\d+)\.", r"text_model.encoder.layers.\1."
CLIP_RULES = [
    Rule(r"token_embedding\.embedding", "text_model.embeddings.token_embedding.weight"),
    Rule(r"position_embedding\.embedding", "text_model.embeddings.position_embedding.weight"),
    *(
        Rule(
            _P + rf"{a}\.{b}",
            _T + f"self_attn.{t}_proj.{w}",
            "linear" if b == "kernel" else "identity",
        )
        for a, t in (("q", "q"), ("k", "k"), ("v", "v"), ("o", "out"))
        for b, w in (("kernel", "weight"), ("bias", "bias"))
    ),
    *(
        Rule(_P + rf"{a}\.{b}", _T + f"{t}.{w}", "linear" if b == "kernel" else "identity")
        for a, t in (("fc1", "mlp.fc1"), ("fc2", "mlp.fc2"))
        for b, w in (("kernel", "weight"), ("bias", "bias"))
    ),
    *(
        Rule(_P + rf"{a}\.{b}", _T + f"{t}.{w}")
        for a, t in (("norm1", "layer_norm1"), ("norm2", "layer_norm2"))
        for b, w in (("scale", "weight"), ("bias", "bias"))
    ),
    Rule(r"final_norm\.scale", "text_model.final_layer_norm.weight"),
    Rule(r"final_norm\.bias", "text_model.final_layer_norm.bias"),
    Rule(r"projection\.kernel", "text_projection.weight", "linear"),
]
# A full CLIPModel checkpoint also holds the vision tower; position_ids is a buffer.
CLIP_IGNORE = [
    r"vision_model\..*",
    r"visual_projection\..*",
    r"logit_scale",
    r"text_model\.embeddings\.position_ids",
]


def clip_tensors(directory: str) -> dict:
    """Checkpoint tensors under `text_model.` names: transformers ≥ 5 saves a CLIPTextModel
    without that prefix, older versions (e.g. Stable Diffusion's text_encoder/) with it."""
    t = load_safetensors(directory)
    if "embeddings.token_embedding.weight" in t:
        t = {(k if k == "text_projection.weight" else f"text_model.{k}"): v for k, v in t.items()}
    return t


class CLIPEncoder(TextEncoder):
    """An HF CLIP directory (CLIPTextModel[WithProjection] or full CLIPModel) as a TextEncoder.

    `max_length=None` uses the model's max_position_embeddings (77 for OpenAI CLIP).
    """

    def __init__(
        self,
        path: str,
        max_length: int | None = None,
        *,
        dtype=jnp.float32,
        chunk_size: int = 64,
        cache_size: int = 0,
    ):
        super().__init__(chunk_size=chunk_size, cache_size=cache_size)
        if not os.path.isdir(path):
            raise FileNotFoundError(f"CLIP path {path!r} is not a directory")
        hf = read_config(path)
        tensors = clip_tensors(path)
        proj = tensors.get("text_projection.weight")
        c = CLIPTextConfig.from_hf(hf, None if proj is None else int(proj.shape[0]))
        max_length = c.max_position_embeddings if max_length is None else max_length
        if max_length > c.max_position_embeddings:
            raise ValueError(
                f"CLIP max_length={max_length} exceeds max_position_embeddings="
                f"{c.max_position_embeddings} of {path!r}"
            )
        self.config = c
        self.dim = c.hidden_size
        self.pooled_dim = c.projection_dim or c.hidden_size
        self.max_length = max_length
        self.tokenizer = Tokenizer.from_dir(path, max_length, pad_id=c.pad_token_id)
        self.model = load_module(
            lambda: CLIPText(c, dtype=dtype, param_dtype=dtype, rngs=nnx.Rngs(0)),
            path,
            CLIP_RULES,
            ignore=CLIP_IGNORE,
            tensors=tensors,
        )

    def tokenize(self, texts: list[str]):
        return self.tokenizer(texts)
