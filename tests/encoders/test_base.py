"""TextEncoder base: validation, padding to L, chunking (compile once per bucket), LRU cache."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from stiv_jax.encoders import ENCODERS, get_text_encoder
from stiv_jax.encoders.base import PooledOverride, TextEncoder, WordBag, _bucket, word_bag

L = 6


class Toy(nnx.Module):
    """tokens [B, L, 3] = (id, position, 0); pooled [B, 2] = (sum of real ids, real count)."""

    def __call__(self, ids, mask):
        f = ids.astype(jnp.float32)
        pos = jnp.broadcast_to(jnp.arange(ids.shape[1], dtype=jnp.float32), ids.shape)
        tok = jnp.stack([f, pos, jnp.zeros_like(f)], -1)
        pooled = jnp.stack([(f * mask).sum(1), mask.sum(1).astype(jnp.float32)], -1)
        return tok, pooled


class ToyEncoder(TextEncoder):
    dim, pooled_dim, max_length = 3, 2, L

    def __init__(self, **kw):
        super().__init__(**kw)
        self.model = Toy()
        self.calls = []

    def tokenize(self, texts):
        ids = np.zeros((len(texts), L), np.int32)
        mask = np.zeros((len(texts), L), bool)
        for i, t in enumerate(texts):
            w = [len(x) for x in t.split()][: L - 1] + [99]  # word lengths + an "EOS"
            ids[i, : len(w)], mask[i, : len(w)] = w, True
        return ids, mask

    def forward(self, ids, mask):
        self.calls.append(ids.shape)
        return super().forward(ids, mask)


def test_padding_truncation_and_null_prompt():
    e = ToyEncoder().encode(["ab c", "", "a b c d e f g h"])
    assert e.tokens.shape == (3, L, 3) and e.mask.shape == (3, L) and e.pooled.shape == (3, 2)
    assert e.tokens.dtype == np.float32 and e.mask.dtype == bool
    np.testing.assert_array_equal(e.mask.sum(1), [3, 1, L])
    np.testing.assert_array_equal(e.tokens[0, :3, 0], [2, 1, 99])
    np.testing.assert_array_equal(e.pooled[:, 1], [3, 1, L])


def test_chunking_pads_batch_to_power_of_two_and_matches_one_batch():
    texts = [f"w{'x' * i} y" for i in range(11)]
    enc = ToyEncoder(chunk_size=4)
    e = enc.encode(texts)
    assert enc.calls == [(4, L), (4, L), (4, L)]  # 11 = 4 + 4 + 3 (padded to 4)
    ref = ToyEncoder(chunk_size=64).encode(texts)
    np.testing.assert_array_equal(e.tokens, ref.tokens)
    np.testing.assert_array_equal(e.pooled, ref.pooled)
    assert [_bucket(n, 64) for n in (1, 2, 3, 5, 64, 65)] == [1, 2, 4, 8, 64, 64]


def test_bad_input_messages():
    enc = ToyEncoder()
    with pytest.raises(TypeError, match=r"texts\[1\] is int"):
        enc.encode(["ok", 3])
    with pytest.raises(TypeError, match="list of str"):
        enc.encode("a single string")
    e = enc.encode([])
    assert e.tokens.shape == (0, L, 3) and e.pooled.shape == (0, 2)


def test_cache_is_bounded_and_reuses_results():
    enc = ToyEncoder(cache_size=2)
    a = enc.encode(["aa", "b", "aa"])  # "aa" encoded once
    assert enc.calls == [(2, L)]
    b = enc.encode(["b"])
    assert enc.calls == [(2, L)]  # hit
    np.testing.assert_array_equal(a.tokens[1], b.tokens[0])
    enc.encode(["ccc"])  # evicts "aa" (least recently used)
    assert set(enc._cache) == {"b", "ccc"}
    np.testing.assert_array_equal(enc.encode(["aa"]).tokens, a.tokens[:1])
    with pytest.raises(ValueError, match="cache_size=-1"):
        ToyEncoder(cache_size=-1)


def test_pooled_override():
    class Other(ToyEncoder):
        pooled_dim = 2

    enc = PooledOverride(ToyEncoder(), Other())
    e = enc.encode(["ab", ""])
    assert enc.dim == 3 and enc.pooled_dim == 2
    np.testing.assert_array_equal(e.pooled, [[101, 2], [99, 1]])


def test_word_bag_appends_normalised_hashed_counts():
    enc = WordBag(ToyEncoder(cache_size=4), buckets=4)
    assert (enc.dim, enc.pooled_dim, enc.max_length) == (3, 2 + 4, L)
    e = enc.encode(["ab cd", "abcde", ""])  # ids (2, 2, 99), (5, 99), (99,)
    np.testing.assert_array_equal(
        e.pooled[:, :2], ToyEncoder().encode(["ab cd", "abcde", ""]).pooled
    )
    # 2 % 4 = 2 (twice), 99 % 4 = 3, 5 % 4 = 1; each row L2-normalised.
    np.testing.assert_allclose(e.pooled[0, 2:], np.array([0, 0, 2, 1]) / np.sqrt(5), rtol=1e-6)
    np.testing.assert_allclose(e.pooled[1, 2:], np.array([0, 1, 0, 1]) / np.sqrt(2), rtol=1e-6)
    np.testing.assert_allclose(e.pooled[2, 2:], [0, 0, 0, 1])
    assert enc.encode([]).pooled.shape == (0, 6)
    with pytest.raises(ValueError, match="word_bag=0"):
        WordBag(ToyEncoder(), 0)
    # Padding never counts: a fully masked row is all zeros, not NaN.
    bag = word_bag(np.array([[7, 7]]), np.array([[False, False]]), 3)
    np.testing.assert_array_equal(bag, [[0, 0, 0]])


def test_word_bag_over_pooled_override_uses_the_main_tokenizer():
    class Other(ToyEncoder):
        pooled_dim = 2

    enc = WordBag(PooledOverride(ToyEncoder(), Other()), buckets=8)
    e = enc.encode(["ab"])  # main's ids (2, 99): buckets 2 and 3
    np.testing.assert_array_equal(e.pooled[0, :2], [101, 2])
    np.testing.assert_allclose(e.pooled[0, 2:], np.array([0, 0, 1, 1, 0, 0, 0, 0]) / np.sqrt(2))


def test_get_text_encoder_errors():
    with pytest.raises(ValueError, match=r"name='bert'.*minilm"):
        get_text_encoder({"name": "bert", "path": "", "max_length": 8, "pooled_path": ""})
    with pytest.raises(ValueError, match=r"path is required.*'t5'"):
        get_text_encoder({"name": "t5", "path": "", "max_length": 8, "pooled_path": ""})
    assert ENCODERS == ("minilm", "t5", "umt5", "clip")


def test_encoders_doc_table_lists_exactly_the_config_fields():
    """docs/encoders.md's `config.text_encoder` table and configs/stiv.py name the same fields
    (`dtype` is in both; every field the doc documents can be overridden on the CLI)."""
    import os
    import re

    from configs.stiv import get_config

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    doc = open(os.path.join(root, "docs", "encoders.md")).read()
    table = doc.split("## Config fields (`config.text_encoder`)")[1].split("\n\n")[1]
    documented = set(re.findall(r"^\| `(\w+)`", table, re.M))
    assert documented == set(get_config("variant=S").text_encoder.keys())


def test_encoder_runs_at_the_longest_prompt_and_zeroes_padding(monkeypatch):
    import stiv_jax.encoders.base as base

    monkeypatch.setattr(base, "LENGTH_STEP", 2)
    enc = ToyEncoder()
    e = enc.encode(["ab c", "a"])  # ids (2, 1, 99) and (1, 99): longest 3 -> run at 4
    assert enc.calls == [(2, 4)]
    assert e.tokens.shape == (2, L, 3)
    ids, mask = enc.tokenize(["ab c", "a"])
    np.testing.assert_array_equal(e.tokens[..., 0][mask], ids[mask])  # real tokens as before
    np.testing.assert_array_equal(e.tokens[~mask], 0.0)  # padding (cut or not) is zero
    np.testing.assert_array_equal(e.pooled, [[102.0, 3.0], [100.0, 2.0]])
    enc.encode(["a b c d e f g"])  # 6 tokens: the full length, never more
    assert enc.calls[-1] == (1, L)
