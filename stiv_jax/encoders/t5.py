"""T5 v1.1 / T5-XXL and UMT5 encoders (HF `T5EncoderModel` / `UMT5EncoderModel` numerics).

Shapes: B prompts, L tokens, D d_model, N heads, H d_kv, F d_ff.
  T5(ids int32 [B, L], mask bool [B, L]) → tokens f32 [B, L, D], pooled f32 [B, D]

Pre-norm layers with T5's RMS norm (no mean subtraction, no bias), bias-free projections,
attention logits NOT scaled by 1/sqrt(H) (T5 folds it into the init), a learned relative
position bias over bidirectional log-spaced buckets: in layer 0 only and shared by all layers
(T5), or one table per layer (UMT5). FFN: gated (`gated-gelu` = gelu_new(x·wi_0) ⊙ (x·wi_1),
T5 v1.1) or plain (`relu`, original T5). Pooled = mean of the final token states over real
tokens (T5 has no pooled output of its own).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from stiv_jax.encoders.base import TextEncoder, load_module, read_config
from stiv_jax.encoders.layers import Norm, activation, attention, key_mask_bias, linear
from stiv_jax.encoders.tokenizer import Tokenizer
from stiv_jax.weights import Rule, load_safetensors


@dataclass(frozen=True)
class T5Config:
    vocab_size: int
    d_model: int
    d_kv: int
    num_heads: int
    d_ff: int
    num_layers: int
    num_buckets: int
    max_distance: int
    eps: float
    act: str
    gated: bool
    per_layer_bias: bool  # UMT5
    pad_token_id: int = 0
    eos_token_id: int = 1

    @classmethod
    def from_hf(cls, c: dict, *, umt5: bool) -> T5Config:
        proj = c.get("feed_forward_proj", "relu")
        parts = proj.split("-")
        if len(parts) > 2 or (len(parts) == 2 and parts[0] != "gated"):
            raise ValueError(f"T5 feed_forward_proj={proj!r}: expected '<act>' or 'gated-<act>'")
        # HF maps "gated-gelu" to the tanh approximation (gelu_new), as T5 v1.1 was trained.
        act = "gelu_new" if proj == "gated-gelu" else parts[-1]
        return cls(
            vocab_size=c["vocab_size"],
            d_model=c["d_model"],
            d_kv=c["d_kv"],
            num_heads=c["num_heads"],
            d_ff=c["d_ff"],
            num_layers=c["num_layers"],
            num_buckets=c.get("relative_attention_num_buckets", 32),
            max_distance=c.get("relative_attention_max_distance", 128),
            eps=c.get("layer_norm_epsilon", 1e-6),
            act=act,
            gated=len(parts) == 2,
            per_layer_bias=umt5,
            pad_token_id=c.get("pad_token_id", 0) or 0,
            eos_token_id=c.get("eos_token_id", 1),
        )


def relative_position_buckets(length: int, num_buckets: int, max_distance: int) -> np.ndarray:
    """Bidirectional T5 buckets int32 [L(query), L(key)] for relative position key − query."""
    rel = np.arange(length)[None, :] - np.arange(length)[:, None]
    half = num_buckets // 2
    out = (rel > 0).astype(np.int64) * half
    rel = np.abs(rel)
    max_exact = half // 2
    # Float32 log as in HF (torch .float()), truncated toward zero like `.to(torch.long)`.
    ratio = np.log(np.maximum(rel, 1).astype(np.float32) / np.float32(max_exact)) / np.float32(
        math.log(max_distance / max_exact)
    )
    large = max_exact + (ratio * np.float32(half - max_exact)).astype(np.int64)
    large = np.minimum(large, half - 1)
    return (out + np.where(rel < max_exact, rel, large)).astype(np.int32)


class T5Layer(nnx.Module):
    """[B, L, D] → [B, L, D]; optionally owns a relative-position table [buckets, N]."""

    def __init__(self, c: T5Config, has_bias: bool, *, dtype, param_dtype, rngs: nnx.Rngs):
        kw = dict(bias=False, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        inner = c.num_heads * c.d_kv
        self.n, self.h = c.num_heads, c.d_kv
        self.attn_norm = Norm(c.d_model, c.eps, rms=True, param_dtype=param_dtype)
        self.q, self.k, self.v = (linear(c.d_model, inner, **kw) for _ in range(3))
        self.o = linear(inner, c.d_model, **kw)
        self.rel_bias = (
            nnx.Embed(c.num_buckets, c.num_heads, param_dtype=param_dtype, rngs=rngs)
            if has_bias
            else None
        )
        self.ff_norm = Norm(c.d_model, c.eps, rms=True, param_dtype=param_dtype)
        self.wi_0 = linear(c.d_model, c.d_ff, **kw)
        self.wi_1 = linear(c.d_model, c.d_ff, **kw) if c.gated else None
        self.wo = linear(c.d_ff, c.d_model, **kw)
        self.act = activation(c.act)

    def position_bias(self, buckets: np.ndarray) -> jax.Array:
        """buckets [L, L] → bias f32 [1, N, L, L]."""
        table = self.rel_bias.embedding[...].astype(jnp.float32)  # [buckets, N]
        return jnp.transpose(table[buckets], (2, 0, 1))[None]

    def __call__(self, x: jax.Array, bias: jax.Array) -> jax.Array:
        b, n_tok, _ = x.shape
        h = self.attn_norm(x)
        split = lambda t: t.reshape(b, n_tok, self.n, self.h)  # [B, L, N·H] → [B, L, N, H]
        a = attention(split(self.q(h)), split(self.k(h)), split(self.v(h)), bias, scale=1.0)
        x = x + self.o(a.reshape(b, n_tok, self.n * self.h))
        h = self.ff_norm(x)
        f = self.act(self.wi_0(h))
        if self.wi_1 is not None:
            f = f * self.wi_1(h)
        return x + self.wo(f)


class T5(nnx.Module):
    """ids int32 [B, L], mask bool [B, L] → (tokens [B, L, D], mean-pooled [B, D])."""

    def __init__(self, c: T5Config, *, dtype=jnp.float32, param_dtype=jnp.float32, rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.c = c
        self.embed = nnx.Embed(c.vocab_size, c.d_model, **kw)
        self.layers = nnx.List(
            [T5Layer(c, i == 0 or c.per_layer_bias, **kw) for i in range(c.num_layers)]
        )
        self.final_norm = Norm(c.d_model, c.eps, rms=True, param_dtype=param_dtype)

    def __call__(self, ids: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
        buckets = relative_position_buckets(ids.shape[1], self.c.num_buckets, self.c.max_distance)
        keys = key_mask_bias(mask)
        x = self.embed(ids)
        bias = None
        for layer in self.layers:
            if layer.rel_bias is not None:  # T5: layer 0's bias is reused by every layer
                bias = layer.position_bias(buckets) + keys
            x = layer(x, bias)
        x = self.final_norm(x).astype(jnp.float32)
        w = mask.astype(jnp.float32)[..., None]
        return x, (x * w).sum(1) / jnp.maximum(w.sum(1), 1.0)


_P, _B = r"layers\.(\d+)\.", r"encoder.block.\1.layer."
T5_RULES = [
    Rule(r"embed\.embedding", "encoder.embed_tokens.weight"),
    Rule(_P + r"attn_norm\.scale", _B + "0.layer_norm.weight"),
    *(
        Rule(_P + rf"{p}\.kernel", _B + f"0.SelfAttention.{p}.weight", "linear")
        for p in ("q", "k", "v", "o")
    ),
    Rule(_P + r"rel_bias\.embedding", _B + "0.SelfAttention.relative_attention_bias.weight"),
    Rule(_P + r"ff_norm\.scale", _B + "1.layer_norm.weight"),
    Rule(_P + r"wi_1\.kernel", _B + "1.DenseReluDense.wi_1.weight", "linear"),
    Rule(_P + r"wo\.kernel", _B + "1.DenseReluDense.wo.weight", "linear"),
    Rule(r"final_norm\.scale", "encoder.final_layer_norm.weight"),
]
# wi_0 is called `wi` in the ungated (original T5) FFN.
_WI_GATED = Rule(_P + r"wi_0\.kernel", _B + "1.DenseReluDense.wi_0.weight", "linear")
_WI_PLAIN = Rule(_P + r"wi_0\.kernel", _B + "1.DenseReluDense.wi.weight", "linear")
T5_IGNORE = [r"shared\.weight", r"decoder\..*", r"lm_head\..*"]


def t5_tensors(directory: str) -> dict[str, np.ndarray]:
    """Checkpoint tensors with the tied embedding under the encoder's name."""
    t = load_safetensors(directory)
    if "encoder.embed_tokens.weight" not in t and "shared.weight" in t:
        t["encoder.embed_tokens.weight"] = t.pop("shared.weight")
    return t


class T5Encoder(TextEncoder):
    """An HF T5/T5 v1.1/UMT5 directory (config.json, safetensors, tokenizer) as a TextEncoder."""

    def __init__(
        self,
        path: str,
        max_length: int = 128,
        *,
        umt5: bool = False,
        dtype=jnp.float32,
        chunk_size: int = 64,
        cache_size: int = 0,
    ):
        super().__init__(chunk_size=chunk_size, cache_size=cache_size)
        if not os.path.isdir(path):
            raise FileNotFoundError(f"text_encoder.path {path!r} is not a directory")
        hf = read_config(path)
        name = "umt5" if umt5 else "t5"
        model_type = hf.get("model_type", name)
        if model_type not in ("t5", "umt5", "mt5") or (model_type == "umt5") != umt5:
            raise ValueError(
                f"text_encoder.name={name!r} but {path}/config.json has model_type="
                f"{model_type!r}; use name='umt5' for UMT5 checkpoints and 't5' for T5/mT5"
            )
        c = T5Config.from_hf(hf, umt5=umt5)
        self.config = c
        self.dim = self.pooled_dim = c.d_model
        self.max_length = max_length
        self.tokenizer = Tokenizer.from_dir(
            path, max_length, pad_id=c.pad_token_id, eos_id=c.eos_token_id
        )
        rules = [*T5_RULES, _WI_GATED if c.gated else _WI_PLAIN]
        self.model = load_module(
            lambda: T5(c, dtype=dtype, param_dtype=dtype, rngs=nnx.Rngs(0)),
            path,
            rules,
            ignore=T5_IGNORE,
            tensors=t5_tensors(path),
        )

    def tokenize(self, texts: list[str]):
        return self.tokenizer(texts)
