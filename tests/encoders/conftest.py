"""Helpers for encoder tests: tiny word-level tokenizers saved as tokenizer.json."""

import json
import os

import numpy as np
import pytest

WORDS = [f"w{i}" for i in range(40)]


def save_word_tokenizer(directory, vocab: dict, template: str, specials: list, pad: str):
    """A whitespace word-level tokenizer whose post-processor adds `template`'s specials."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>" if "<unk>" in vocab else pad))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single=template, special_tokens=[(s, vocab[s]) for s in specials]
    )
    tok.save(os.path.join(directory, "tokenizer.json"))
    with open(os.path.join(directory, "special_tokens_map.json"), "w") as f:
        json.dump({"pad_token": pad}, f)


def random_ids(rng, batch, length, vocab, lengths, *, first=None, last=None, pad=0):
    """ids int32 [B, L] of random words, real lengths `lengths`, optional BOS/EOS, pad after."""
    ids = np.full((batch, length), pad, np.int32)
    mask = np.zeros((batch, length), bool)
    for b, n in enumerate(lengths):
        row = list(rng.integers(vocab[0], vocab[1], n))
        if first is not None:
            row[0] = first
        if last is not None:
            row[n - 1] = last
        ids[b, :n], mask[b, :n] = row, True
    return ids, mask


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def word_tokenizer():
    return save_word_tokenizer


@pytest.fixture
def make_ids():
    return random_ids
