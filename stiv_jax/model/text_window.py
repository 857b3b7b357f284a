"""Caption window: each text token also carries what its neighbouring words say.

Shapes: B batch, L text tokens, Dt text width, D model width, k window half-width.
  tokens [B, L, Dt], mask [B, L] bool (True = a real token) -> [B, L, D]

Why: cross-attention binds "this object moves left" to the object's video tokens only if
the token the object attends to also says how it moves. The S model's objects attend to
their own colour word (5-25× the other colour's weight) but not to direction words, and a
frozen sentence encoder moves the direction into the colour word's state only 2 times in 3
(docs/quality.md §12.1). A window adds, to every real token, a linear map of the mean of
the real tokens within ±k positions, minus the caption's mean over all its real tokens
(so the window carries what is local and adds no caption-wide vector, the failure of
§12.4's first refiner). In "a red square moves left while a blue circle moves up", k = 4
puts "moves left" into "red"'s window and "moves up" into "blue"'s. The map starts at zero:
a new window changes nothing until it trains, and `train.init_from` a model without one
copies every other weight. No attention is learned: the window is fixed, only its map is.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from stiv_jax.model.layers import EMBED, dense


def window_mean(tokens: jax.Array, mask: jax.Array, k: int) -> jax.Array:
    """[B, L, Dt] -> [B, L, Dt]: the mean of the real tokens within ±k positions, minus the
    mean of all the caption's real tokens; zeros at padding (and for an empty caption)."""
    m = mask.astype(tokens.dtype)[..., None]  # [B, L, 1]
    x = tokens * m
    pad = ((0, 0), (k + 1, k), (0, 0))  # cumulative sums with a leading zero row
    cx, cm = jnp.cumsum(jnp.pad(x, pad), axis=1), jnp.cumsum(jnp.pad(m, pad), axis=1)
    n = tokens.shape[1]
    hi, lo = slice(2 * k + 1, 2 * k + 1 + n), slice(0, n)  # window [i - k, i + k]
    local = (cx[:, hi] - cx[:, lo]) / jnp.maximum(cm[:, hi] - cm[:, lo], 1.0)
    whole = x.sum(1, keepdims=True) / jnp.maximum(m.sum(1, keepdims=True), 1.0)
    return (local - whole) * m


def window_mean_reference(tokens, mask, k):
    """Loop version of `window_mean` (tests)."""
    import numpy as np

    tokens, mask = np.asarray(tokens, np.float64), np.asarray(mask, bool)
    out = np.zeros_like(tokens)
    for b in range(tokens.shape[0]):
        real = np.flatnonzero(mask[b])
        if real.size == 0:
            continue
        whole = tokens[b, real].mean(0)
        for i in real:
            near = [j for j in real if abs(j - i) <= k]
            out[b, i] = tokens[b, near].mean(0) - whole
    return out


class TextWindow(nnx.Module):
    """`window_mean` of the encoder's tokens, mapped to D by a zero-initialised linear."""

    def __init__(self, text_dim: int, width: int, k: int, *, rngs, dtype, param_dtype):
        if k < 1:
            raise ValueError(f"model.text_window={k}; expected a half-width >= 1 (0 = off)")
        self.k = k
        self.proj = dense(
            text_dim, width, (None, EMBED), rngs=rngs, dtype=dtype, param_dtype=param_dtype
        )

    def __call__(self, tokens: jax.Array, mask: jax.Array) -> jax.Array:
        return self.proj(window_mean(tokens, mask, self.k))
