"""Text-encoder interface: strings → padded token states, mask and a pooled sentence vector.

Shapes: B prompts, L = max_length tokens, D token width, Dp pooled width.
  encode(texts) → TextEmbeddings(tokens f32 [B, L, D], mask bool [B, L], pooled f32 [B, Dp])

Subclasses give a tokenizer (`tokenize(texts) -> ids int32 [B, L], mask bool [B, L]`) and an
NNX module whose `__call__(ids, mask)` returns `(tokens [B, L, D], pooled [B, Dp])`. The base
class validates input, splits large prompt lists into chunks, pads each chunk's batch to a power
of two and cuts its length to the longest prompt rounded up to `LENGTH_STEP` tokens (so few
shapes ever compile; the encoders mask padded keys, so real tokens are unchanged and padded
token rows are returned as zeros), jits the forward once per shape, and keeps an optional
bounded LRU cache keyed by the prompt text.
"""

from __future__ import annotations

import json
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import jax
import numpy as np
from flax import nnx


@dataclass
class TextEmbeddings:
    """tokens f32 [B, L, D]; mask bool [B, L] (True = real token); pooled f32 [B, Dp]."""

    tokens: np.ndarray
    mask: np.ndarray
    pooled: np.ndarray


def read_config(directory: str) -> dict:
    """Reads `<directory>/config.json` with a one-line error when absent or malformed."""
    path = os.path.join(directory, "config.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"text encoder config {path!r} not found (expected an HF dir)")
    with open(path) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"text encoder config {path!r} is not valid JSON: {e}") from None


def check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str | bytes):
        raise TypeError(f"encode() expects a list of str, got a single {type(texts).__name__}")
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"texts[{i}] is {type(t).__name__} ({t!r:.40}), expected str")
    return texts


LENGTH_STEP = 16  # encoders run at the chunk's longest prompt, rounded up to this many tokens


def _bucket(n: int, cap: int) -> int:
    """Smallest power of two ≥ n, capped at `cap` (chunk sizes that compile)."""
    return min(cap, 1 << max(0, (n - 1).bit_length()))


class TextEncoder:
    """Base class; subclasses set `dim`, `pooled_dim`, `max_length`, `model`, `tokenize`."""

    dim: int
    pooled_dim: int
    max_length: int
    model: nnx.Module

    def __init__(self, *, chunk_size: int = 64, cache_size: int = 0):
        if chunk_size < 1 or cache_size < 0:
            raise ValueError(f"{chunk_size=} must be ≥ 1 and {cache_size=} ≥ 0")
        self.chunk_size = chunk_size
        self.cache_size = cache_size  # 0 = no cache; else max number of prompts kept (LRU)
        self._cache: OrderedDict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = OrderedDict()
        self._jitted = None
        # The trainer's prefetch thread and the main thread (samples) may encode at once.
        self._lock = threading.Lock()

    # Subclasses implement this.
    def tokenize(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def forward(self, ids: np.ndarray, mask: np.ndarray) -> tuple[jax.Array, jax.Array]:
        """Jitted model call on token ids int32 [B, L] and mask bool [B, L]."""
        if self._jitted is None:
            graphdef, state = nnx.split(self.model)
            fn = jax.jit(lambda st, i, m: nnx.merge(graphdef, st)(i, m))
            self._jitted = lambda i, m: fn(state, i, m)
        return self._jitted(ids, mask)

    def _encode_uncached(self, texts: list[str]) -> TextEmbeddings:
        ids, mask = self.tokenize(texts)
        full = ids.shape[1]
        toks, pooled = [], []
        for s in range(0, len(texts), self.chunk_size):
            ci, cm = ids[s : s + self.chunk_size], mask[s : s + self.chunk_size]
            n = len(ci)
            b = _bucket(n, self.chunk_size)
            # Pad the batch with copies of row 0 (a fully masked row could divide by zero).
            ci = np.concatenate([ci, np.repeat(ci[:1], b - n, 0)])
            cm = np.concatenate([cm, np.repeat(cm[:1], b - n, 0)])
            # Run only as long as the chunk's longest prompt (rounded up to LENGTH_STEP so
            # few lengths compile): every encoder masks padded keys, so real tokens do not
            # depend on the padding. Padded positions come back as zeros.
            n_len = min(full, -(-max(1, int(cm.sum(1).max())) // LENGTH_STEP) * LENGTH_STEP)
            t, p = self.forward(ci[:, :n_len], cm[:, :n_len])
            t = np.asarray(t[:n], np.float32) * cm[:n, :n_len, None]
            toks.append(np.pad(t, ((0, 0), (0, full - n_len), (0, 0))))
            pooled.append(np.asarray(p[:n], np.float32))
        return TextEmbeddings(np.concatenate(toks), mask, np.concatenate(pooled))

    def encode(self, texts: Sequence[str]) -> TextEmbeddings:
        """Encodes prompts ("" is the null prompt) to numpy arrays; see module docstring.
        Thread-safe (one encode at a time per encoder)."""
        texts = check_texts(texts)
        with self._lock:
            return self._encode(texts)

    def _encode(self, texts: list[str]) -> TextEmbeddings:
        if not texts:
            return TextEmbeddings(
                np.zeros((0, self.max_length, self.dim), np.float32),
                np.zeros((0, self.max_length), bool),
                np.zeros((0, self.pooled_dim), np.float32),
            )
        if not self.cache_size:
            return self._encode_uncached(texts)
        todo = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if todo:
            new = self._encode_uncached(todo)
            for i, t in enumerate(todo):
                self._cache[t] = (new.tokens[i], new.mask[i], new.pooled[i])
        rows = []
        for t in texts:
            # A hit moves the prompt to the back; evict from the front only after assembling.
            self._cache.move_to_end(t)
            rows.append(self._cache[t])
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return TextEmbeddings(*(np.stack(x) for x in zip(*rows)))


def word_bag(ids: np.ndarray, mask: np.ndarray, buckets: int) -> np.ndarray:
    """Token ids int32 [B, L] and mask bool [B, L] -> f32 [B, buckets]: counts of the real
    tokens' ids hashed to `buckets` (id mod buckets), L2-normalised per prompt."""
    rows = np.broadcast_to(np.arange(ids.shape[0])[:, None], ids.shape)
    bag = np.zeros((ids.shape[0], buckets), np.float32)
    np.add.at(bag, (rows[mask], ids[mask] % buckets), 1.0)
    return bag / np.maximum(np.linalg.norm(bag, axis=1, keepdims=True), 1e-6)


class WordBag(TextEncoder):
    """Pooled vector = [`inner`'s pooled vector, `word_bag` of the prompt's word pieces].

    The model's pooled projection over the bag is a learned embedding per word piece, summed
    (an EmbeddingBag): one strong global feature per word. A small encoder's own pooled
    vector barely separates captions that differ in one word (MiniLM: "moves left" vs "moves
    right" differ by 0.017 in cosine), and reading that word through cross-attention takes
    the S model ~1,000 drill steps to learn; through the bag it reads it far sooner
    (docs/quality.md §10).
    """

    def __init__(self, inner: TextEncoder, buckets: int):
        if buckets < 1:
            raise ValueError(f"text_encoder.word_bag={buckets}; expected a bucket count >= 1")
        super().__init__(chunk_size=inner.chunk_size, cache_size=0)
        self.inner, self.buckets = inner, buckets
        self.dim, self.max_length = inner.dim, inner.max_length
        self.pooled_dim = inner.pooled_dim + buckets

    def tokenize(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        return self.inner.tokenize(texts)

    def encode(self, texts: Sequence[str]) -> TextEmbeddings:
        out = self.inner.encode(texts)
        if len(out.pooled):
            ids, mask = self.tokenize(check_texts(texts))
            bag = word_bag(np.asarray(ids), np.asarray(mask, bool), self.buckets)
        else:
            bag = np.zeros((0, self.buckets), np.float32)
        return TextEmbeddings(out.tokens, out.mask, np.concatenate([out.pooled, bag], 1))


class WordPieceIds(TextEncoder):
    """Token states of `inner` with one more last channel: each token's word-piece id (as
    float32, exact below 2**24; 0 at padding), for the model's word-piece path
    (`model.word_pieces`, stiv_jax/model/word_pieces.py). `dim` is `inner.dim + 1`."""

    def __init__(self, inner: TextEncoder):
        super().__init__(chunk_size=inner.chunk_size, cache_size=0)
        self.inner = inner
        self.dim, self.max_length, self.pooled_dim = (
            inner.dim + 1,
            inner.max_length,
            inner.pooled_dim,
        )

    def tokenize(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        return self.inner.tokenize(texts)

    def encode(self, texts: Sequence[str]) -> TextEmbeddings:
        out = self.inner.encode(texts)
        ids = np.zeros(out.mask.shape, np.float32)
        if len(out.mask):
            tok, mask = self.tokenize(check_texts(texts))
            ids = np.where(np.asarray(mask, bool), np.asarray(tok), 0).astype(np.float32)
        return TextEmbeddings(
            np.concatenate([out.tokens, ids[..., None]], -1), out.mask, out.pooled
        )


class PooledOverride(TextEncoder):
    """Token states and mask from `main`, pooled vector from `pooled` (e.g. CLIP's EOS state)."""

    def __init__(self, main: TextEncoder, pooled: TextEncoder):
        super().__init__(chunk_size=main.chunk_size, cache_size=0)
        self.main, self.pooled = main, pooled
        self.dim, self.max_length = main.dim, main.max_length
        self.pooled_dim = pooled.pooled_dim

    def tokenize(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        return self.main.tokenize(texts)

    def encode(self, texts: Sequence[str]) -> TextEmbeddings:
        out = self.main.encode(texts)
        out.pooled = self.pooled.encode(texts).pooled
        return out


def load_module(make, directory: str, rules, *, ignore=(), tensors=None) -> nnx.Module:
    """Builds `make()` abstractly (no random init of big weights) and fills it from safetensors."""
    from stiv_jax.weights import load_into, load_safetensors

    model = nnx.eval_shape(make)
    load_into(
        model, load_safetensors(directory) if tensors is None else tensors, rules, ignore=ignore
    )
    # Non-Param state would still be abstract here; the encoders are built to have none.
    flat = nnx.to_flat_state(nnx.state(model))
    abstract = [p for p, v in flat if isinstance(v.get_value(), jax.ShapeDtypeStruct)]
    assert not abstract, f"state left uninitialised after loading: {abstract[:3]}"
    return model
