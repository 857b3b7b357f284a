"""T5 v1.1 / UMT5 encoder ports vs transformers on random tiny checkpoints (fp32, ≤ 1e-4)."""

import json
import os

import numpy as np
import pytest

from stiv_jax.encoders import get_text_encoder
from stiv_jax.encoders.t5 import T5Encoder, relative_position_buckets

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

V = 48  # 0 <pad>, 1 </s>, 2 <unk>, words from 3
TINY = dict(
    vocab_size=V,
    d_model=32,
    d_kv=8,
    num_heads=4,
    d_ff=64,
    num_layers=2,
    relative_attention_num_buckets=8,
    relative_attention_max_distance=16,
    pad_token_id=0,
    eos_token_id=1,
)


def save_tiny(directory, kind: str, word_tokenizer, **overrides):
    """Random tiny HF encoder + tokenizer.json in `directory`; returns the torch model."""
    torch.manual_seed(0)
    kw = {**TINY, "feed_forward_proj": "gated-gelu", **overrides}
    if kind == "umt5":
        model = transformers.UMT5EncoderModel(transformers.UMT5Config(**kw))
    else:
        model = transformers.T5EncoderModel(transformers.T5Config(**kw))
    model.eval().save_pretrained(directory, safe_serialization=True)
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{f"w{i}": 3 + i for i in range(V - 3)}}
    word_tokenizer(directory, vocab, "$A </s>", ["</s>"], "<pad>")
    return model


def reference(model, ids, mask):
    with torch.no_grad():
        out = model(
            input_ids=torch.from_numpy(ids.astype(np.int64)),
            attention_mask=torch.from_numpy(mask.astype(np.int64)),
        ).last_hidden_state.numpy()
    w = mask[..., None].astype(np.float32)
    return out, (out * w).sum(1) / w.sum(1)


@pytest.mark.parametrize(
    "kind,proj", [("t5", "gated-gelu"), ("t5", "relu"), ("umt5", "gated-gelu")]
)
def test_forward_parity(tmp_path, kind, proj, word_tokenizer, make_ids, rng):
    model = save_tiny(str(tmp_path), kind, word_tokenizer, feed_forward_proj=proj)
    enc = T5Encoder(str(tmp_path), max_length=20, umt5=kind == "umt5")
    # Lengths up to 20 with max_distance 16 exercise both exact and log-spaced buckets.
    ids, mask = make_ids(rng, 4, 20, (3, V), [20, 7, 1, 13], last=1)
    tokens, pooled = enc.forward(ids, mask)
    ref_tokens, ref_pooled = reference(model, ids, mask)
    np.testing.assert_allclose(np.asarray(tokens)[mask], ref_tokens[mask], atol=1e-4, rtol=0)
    np.testing.assert_allclose(np.asarray(pooled), ref_pooled, atol=1e-4, rtol=0)


def test_relative_position_buckets_match_hf():
    from transformers.models.t5.modeling_t5 import T5Attention

    for buckets, dist in [(32, 128), (8, 16)]:
        pos = torch.arange(300)
        ref = T5Attention._relative_position_bucket(
            pos[None, :] - pos[:, None], bidirectional=True, num_buckets=buckets, max_distance=dist
        ).numpy()
        np.testing.assert_array_equal(relative_position_buckets(300, buckets, dist), ref)


def test_encode_end_to_end_with_tokenizer(tmp_path, word_tokenizer):
    model = save_tiny(str(tmp_path), "t5", word_tokenizer)
    cfg = {"name": "t5", "path": str(tmp_path), "max_length": 6, "pooled_path": ""}
    enc = get_text_encoder(cfg)
    texts = ["w3 w10 w4", "", "w1 w2 w3 w4 w5 w6 w7 w8", "w0 zzz"]
    out = enc.encode(texts)
    ids, mask = enc.tokenize(texts)
    assert out.tokens.shape == (4, 6, 32) and out.pooled.shape == (4, 32)
    np.testing.assert_array_equal(ids[0], [6, 13, 7, 1, 0, 0])  # words, </s>, <pad>
    np.testing.assert_array_equal(ids[1], [1, 0, 0, 0, 0, 0])  # null prompt: just </s>
    assert mask[2].all() and ids[2, -1] == 1  # truncated, keeps </s>
    assert ids[3, 1] == 2  # unknown word → <unk>
    ref_tokens, ref_pooled = reference(model, ids, mask)
    np.testing.assert_allclose(out.tokens[mask], ref_tokens[mask], atol=1e-4, rtol=0)
    np.testing.assert_allclose(out.pooled, ref_pooled, atol=1e-4, rtol=0)


def test_sharded_checkpoint_and_tied_embedding(tmp_path, word_tokenizer, make_ids, rng):
    model = save_tiny(str(tmp_path), "t5", word_tokenizer)
    # Re-save sharded, with only `shared.weight` for the tied embedding (as some exports do).
    from safetensors.numpy import save_file

    state = {k: v.numpy() for k, v in model.state_dict().items()}
    state["shared.weight"] = state.pop("encoder.embed_tokens.weight")
    keys = sorted(state)
    shards = {"a.safetensors": keys[: len(keys) // 2], "b.safetensors": keys[len(keys) // 2 :]}
    for name, ks in shards.items():
        save_file({k: state[k] for k in ks}, str(tmp_path / name))
    with open(tmp_path / "model.safetensors.index.json", "w") as f:
        json.dump({"weight_map": {k: n for n, ks in shards.items() for k in ks}}, f)
    os.remove(tmp_path / "model.safetensors")
    enc = T5Encoder(str(tmp_path), max_length=8)
    ids, mask = make_ids(rng, 2, 8, (3, V), [8, 3], last=1)
    np.testing.assert_allclose(
        np.asarray(enc.forward(ids, mask)[0])[mask], reference(model, ids, mask)[0][mask], atol=1e-4
    )


def test_sentencepiece_tokenizer_fallback(tmp_path, word_tokenizer):
    spm = pytest.importorskip("sentencepiece")
    save_tiny(str(tmp_path), "t5", word_tokenizer)
    os.remove(tmp_path / "tokenizer.json")
    corpus = ["the cat sat on the mat", "a dog runs in the park", "red ball blue sky"] * 20
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus),
        model_prefix=str(tmp_path / "spiece"),
        vocab_size=V,
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    enc = T5Encoder(str(tmp_path), max_length=12)
    ids, mask = enc.tokenize(["the cat", "", "the cat sat on the mat " * 3])
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "spiece.model"))
    want = sp.encode_as_ids("the cat") + [1]
    np.testing.assert_array_equal(ids[0, : len(want)], want)
    assert mask[0].sum() == len(want) and (ids[0, len(want) :] == 0).all()
    np.testing.assert_array_equal(ids[1], [1] + [0] * 11)
    assert mask[2].all() and ids[2, -1] == 1
    assert enc.encode(["the cat"]).tokens.shape == (1, 12, 32)


def test_config_errors(tmp_path, word_tokenizer):
    save_tiny(str(tmp_path), "umt5", word_tokenizer)
    with pytest.raises(ValueError, match=r"model_type='umt5'"):
        T5Encoder(str(tmp_path), 8, umt5=False)
    with pytest.raises(FileNotFoundError, match="not a directory"):
        T5Encoder(str(tmp_path / "missing"), 8)
