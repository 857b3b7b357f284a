"""Word pieces by relative position: each caption token also says which words sit near it.

Shapes: B batch, L text tokens, V hash buckets, E embedding width, K position bins, D width.
  ids int32 [B, L] (word-piece id mod V), mask bool [B, L] (True = a real token) -> [B, L, D]

Why: a two-object caption ("a red square moves left while a blue circle moves up") names
two directions, and only cross-attention from an object's video tokens to the words about
that object can say whose is whose. The S model's objects attend to their own colour word
(docs/quality.md §12.4), so the colour word's token must say how its object moves. A small
sentence encoder's contextual states do that only for the phrasings it was trained on: a
linear probe on MiniLM's colour-word state finds its object's direction in 0.68 of unseen
captions of the training templates but 0.25 of the held-out templates (a ±4-token mean of
the states, `model.text_window`'s feature: 0.92 and 0.21). Learned word-piece embeddings
summed per relative-position bin around the token find it in 0.94 and 0.94
(`benchmarks/text_binding.py`, docs/quality.md §20.1): which words are near, and on which
side, does not depend on the phrasing's other words.

Each real token i gets Σ_k W_k · Σ_{j real, j - i ∈ BINS[k]} table[ids_j]: one learned
embedding per hashed word piece (V × E, shared by the bins) summed over each bin of
relative offsets, then one linear map per bin (one [K·E, D] kernel). The kernel starts at
zero, so a new path changes nothing until it trains and `train.init_from` a model without
it copies every other weight; from scratch, `model.word_pieces_zero_init=False` keeps its
xavier init, and the binding drill then binds in half the steps (docs/quality.md §22).
The ids ride in the encoder's token states as one extra last channel
(`encoders.base.WordPieceIds`), so nothing else in the batch changes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from stiv_jax.model.layers import EMBED, dense

# Relative offsets (inclusive ranges) around a token: itself, then nearer to farther on
# each side. Seven words either way cover "fast motion down and to the right of a red".
BINS = ((0, 0), (-2, -1), (1, 2), (-4, -3), (3, 4), (-7, -5), (5, 7))
REACH = max(max(abs(a), abs(b)) for a, b in BINS)


def bin_sums(emb: jax.Array, mask: jax.Array) -> jax.Array:
    """[B, L, E] per-token embeddings -> [B, L, K·E]: for each token and each bin of BINS,
    the sum of the real tokens' embeddings at those relative offsets; zeros at padding."""
    m = mask.astype(emb.dtype)[..., None]
    x = emb * m
    n = emb.shape[1]
    # c[:, s] = sum of x[:, :s - REACH]; the sum over offsets [a, b] of token i is
    # c[:, i + REACH + b + 1] - c[:, i + REACH + a].
    c = jnp.cumsum(jnp.pad(x, ((0, 0), (REACH + 1, REACH), (0, 0))), axis=1)
    out = [
        c[:, REACH + b + 1 : REACH + b + 1 + n] - c[:, REACH + a : REACH + a + n] for a, b in BINS
    ]
    return jnp.concatenate(out, -1) * m


def bin_sums_reference(emb, mask):
    """Loop version of `bin_sums` (tests)."""
    import numpy as np

    emb, mask = np.asarray(emb, np.float64), np.asarray(mask, bool)
    b_, n, e = emb.shape
    out = np.zeros((b_, n, len(BINS) * e))
    for b in range(b_):
        for i in range(n):
            if not mask[b, i]:
                continue
            for k, (lo, hi) in enumerate(BINS):
                for j in range(i + lo, i + hi + 1):
                    if 0 <= j < n and mask[b, j]:
                        out[b, i, k * e : (k + 1) * e] += emb[b, j]
    return out


class WordPieces(nnx.Module):
    """Hashed word-piece embeddings summed per relative-position bin, mapped to D."""

    def __init__(self, buckets: int, width: int, *, embed: int = 64, rngs, dtype, param_dtype):
        if buckets < 1:
            raise ValueError(f"model.word_pieces={buckets}; expected a bucket count >= 1 (0 = off)")
        self.buckets, self.dtype = buckets, dtype
        self.table = nnx.Param(jax.random.normal(rngs.params(), (buckets, embed), param_dtype))
        self.proj = dense(
            len(BINS) * embed, width, (None, EMBED), rngs=rngs, dtype=dtype, param_dtype=param_dtype
        )

    def __call__(self, ids: jax.Array, mask: jax.Array) -> jax.Array:
        emb = jnp.take(self.table.get_value().astype(self.dtype), ids % self.buckets, axis=0)
        return self.proj(bin_sums(emb, mask))
