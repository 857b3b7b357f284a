"""Text encoders (Flax NNX ports; no torch): MiniLM-L6 (embedded default), T5, UMT5, CLIP.

Shapes: B prompts, L = config.text_encoder.max_length, D token width, Dp pooled width.
  get_text_encoder(config.text_encoder).encode(list[str])
    → TextEmbeddings(tokens f32 [B, L, D], mask bool [B, L], pooled f32 [B, Dp])

Config fields read: name (minilm | t5 | umt5 | clip), path ("" = packaged MiniLM; an HF
directory otherwise), max_length, pooled_path ("" or a CLIP directory whose pooled vector
replaces the pooled output), word_bag (0 = off; else the pooled vector gains that many
buckets of hashed word-piece counts, `base.WordBag`), word_pieces (0 = off; else the token
states gain a last channel holding each token's word-piece id, `base.WordPieceIds`). Optional: dtype ("float32" default;
"bfloat16" halves T5-XXL's memory), cache_size (0 = off; LRU of that many prompts), chunk_size (64).
See docs/encoders.md for which files each directory must hold.
"""

from __future__ import annotations

from stiv_jax.encoders.base import (
    PooledOverride,
    TextEmbeddings,
    TextEncoder,
    WordBag,
    WordPieceIds,
)

__all__ = [
    "TextEmbeddings",
    "TextEncoder",
    "PooledOverride",
    "WordBag",
    "WordPieceIds",
    "get_text_encoder",
    "ENCODERS",
]

ENCODERS = ("minilm", "t5", "umt5", "clip")


def _get(cfg, key, default):
    # Works for ml_collections.ConfigDict, dicts and plain objects.
    if isinstance(cfg, dict) or hasattr(cfg, "get"):
        try:
            return cfg.get(key, default)
        except TypeError:
            pass
    return getattr(cfg, key, default)


def get_text_encoder(cfg) -> TextEncoder:
    """Builds the encoder named by `cfg.name` (config.text_encoder); errors name the bad value."""
    import jax.numpy as jnp

    name = str(_get(cfg, "name", "minilm")).lower()
    path = _get(cfg, "path", "") or ""
    max_length = int(_get(cfg, "max_length", 128))
    pooled_path = _get(cfg, "pooled_path", "") or ""
    dtype = jnp.dtype(_get(cfg, "dtype", "float32"))
    kw = dict(
        chunk_size=int(_get(cfg, "chunk_size", 64)), cache_size=int(_get(cfg, "cache_size", 0))
    )
    if name not in ENCODERS:
        raise ValueError(f"text_encoder.name={name!r} is unknown; expected one of {ENCODERS}")
    if name != "minilm" and not path:
        raise ValueError(f"text_encoder.path is required for text_encoder.name={name!r}")
    if name == "minilm":
        from stiv_jax.encoders.minilm import MiniLMEncoder

        enc: TextEncoder = MiniLMEncoder(path, max_length, dtype=dtype, **kw)
    elif name in ("t5", "umt5"):
        from stiv_jax.encoders.t5 import T5Encoder

        enc = T5Encoder(path, max_length, umt5=name == "umt5", dtype=dtype, **kw)
    else:
        from stiv_jax.encoders.clip import CLIPEncoder

        enc = CLIPEncoder(path, max_length, dtype=dtype, **kw)
    if pooled_path:
        from stiv_jax.encoders.clip import CLIPEncoder

        # Only CLIP's pooled (EOS) vector is used, so it runs at its own native length.
        pooled = CLIPEncoder(pooled_path, None, dtype=dtype, **kw)
        enc = PooledOverride(enc, pooled)
    if int(_get(cfg, "word_pieces", 0)):
        enc = WordPieceIds(enc)
    buckets = int(_get(cfg, "word_bag", 0))
    return WordBag(enc, buckets) if buckets else enc
