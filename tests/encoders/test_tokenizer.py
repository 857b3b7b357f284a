"""Fixed-length tokenisation: padding/truncation to L, pad-token resolution, file lookup."""

import builtins
import json

import numpy as np
import pytest

from stiv_jax.encoders.tokenizer import Tokenizer

VOCAB = {"<pad>": 0, "</s>": 1, "<unk>": 2, "a": 3, "b": 4, "c": 5}


def test_pads_and_truncates_to_exactly_max_length(tmp_path, word_tokenizer):
    word_tokenizer(str(tmp_path), VOCAB, "$A </s>", ["</s>"], "<pad>")
    tok = Tokenizer.from_dir(str(tmp_path), 4, pad_id=7)  # the declared <pad> wins over 7
    ids, mask = tok(["a b", "", "a b c a b c", "zz"])
    assert ids.dtype == np.int32 and ids.shape == (4, 4) and mask.dtype == bool
    np.testing.assert_array_equal(ids, [[3, 4, 1, 0], [1, 0, 0, 0], [3, 4, 5, 1], [2, 1, 0, 0]])
    np.testing.assert_array_equal(mask.sum(1), [3, 1, 4, 2])


def test_truncation_is_counted_and_warned(tmp_path, word_tokenizer, caplog):
    word_tokenizer(str(tmp_path), VOCAB, "$A </s>", ["</s>"], "<pad>")
    tok = Tokenizer.from_dir(str(tmp_path), 4)
    with caplog.at_level("WARNING"):
        tok(["a b", "a b c"])  # 3 + </s> fits exactly
    assert tok.truncated == 0 and not caplog.records
    with caplog.at_level("WARNING"):
        tok(["a b c a", "a", "c c c c c"])
    assert tok.truncated == 2
    assert "2 prompt(s) longer than text_encoder.max_length=4" in caplog.text
    assert "'a b c a'" in caplog.text


def test_pad_id_from_config_when_nothing_declared(tmp_path, word_tokenizer):
    word_tokenizer(str(tmp_path), VOCAB, "$A </s>", ["</s>"], "<pad>")
    (tmp_path / "special_tokens_map.json").write_text(json.dumps({}))
    ids, mask = Tokenizer.from_dir(str(tmp_path), 3, pad_id=5)(["a"])
    np.testing.assert_array_equal(ids, [[3, 1, 5]])
    np.testing.assert_array_equal(mask, [[True, True, False]])


def test_diffusers_sibling_tokenizer_dir(tmp_path, word_tokenizer):
    (tmp_path / "text_encoder_2").mkdir()
    (tmp_path / "tokenizer_2").mkdir()
    word_tokenizer(str(tmp_path / "tokenizer_2"), VOCAB, "$A </s>", ["</s>"], "<pad>")
    ids, _ = Tokenizer.from_dir(str(tmp_path / "text_encoder_2"), 3)(["c"])
    np.testing.assert_array_equal(ids, [[5, 1, 0]])


def test_missing_tokenizer_messages(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="expected tokenizer.json"):
        Tokenizer.from_dir(str(tmp_path), 8)
    (tmp_path / "spiece.model").write_bytes(b"not a model")
    real_import = builtins.__import__

    def no_sentencepiece(name, *a, **k):
        if name == "sentencepiece":
            raise ImportError(name)
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_sentencepiece)
    with pytest.raises(ImportError, match="pip install sentencepiece"):
        Tokenizer.from_dir(str(tmp_path), 8, eos_id=1)
    with pytest.raises(ValueError, match="max_length=0"):
        Tokenizer(None, 0)
