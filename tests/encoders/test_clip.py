"""CLIP text encoder vs transformers on random tiny checkpoints (fp32, ≤ 1e-4)."""

import numpy as np
import pytest

from stiv_jax.encoders import get_text_encoder
from stiv_jax.encoders.clip import CLIPEncoder

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

V, L = 40, 12  # ids: words 0..37, 38 <|startoftext|>, 39 <|endoftext|> (largest, as in OpenAI)
BOS, EOS = V - 2, V - 1
TEXT = dict(
    vocab_size=V,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=L,
    bos_token_id=BOS,
    pad_token_id=EOS,
)


def save_tiny(
    directory, word_tokenizer, *, kind="with_projection", eos_token_id=EOS, act="quick_gelu"
):
    torch.manual_seed(0)
    text = dict(TEXT, eos_token_id=eos_token_id, hidden_act=act)
    if kind == "full":  # a CLIPModel: the vision tower must be ignored by the loader
        vision = dict(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=8,
            patch_size=4,
        )
        model = transformers.CLIPModel(
            transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=24)
        )
    elif kind == "with_projection":
        model = transformers.CLIPTextModelWithProjection(
            transformers.CLIPTextConfig(**text, projection_dim=24)
        )
    else:
        model = transformers.CLIPTextModel(transformers.CLIPTextConfig(**text))
    model.eval().save_pretrained(directory, safe_serialization=True)
    vocab = {f"w{i}": i for i in range(V - 2)} | {"<|startoftext|>": BOS, "<|endoftext|>": EOS}
    word_tokenizer(
        directory,
        vocab,
        "<|startoftext|> $A <|endoftext|>",
        ["<|startoftext|>", "<|endoftext|>"],
        "<|endoftext|>",
    )
    return model


def reference(model, ids, mask):
    kw = dict(
        input_ids=torch.from_numpy(ids.astype(np.int64)),
        attention_mask=torch.from_numpy(mask.astype(np.int64)),
    )
    with torch.no_grad():
        if isinstance(model, transformers.CLIPModel):
            out = model.get_text_features(**kw)
            pooled = out if isinstance(out, torch.Tensor) else out.pooler_output
            return model.text_model(**kw).last_hidden_state.numpy(), pooled.numpy()
        out = model(**kw)
        pooled = out.text_embeds if hasattr(out, "text_embeds") else out.pooler_output
        return out.last_hidden_state.numpy(), pooled.numpy()


@pytest.mark.parametrize(
    "kind,eos,act",
    [
        ("with_projection", EOS, "quick_gelu"),
        ("plain", 2, "gelu"),  # legacy config: pooled at argmax(ids)
        ("full", EOS, "quick_gelu"),
    ],
)
def test_forward_parity(tmp_path, kind, eos, act, word_tokenizer, make_ids, rng):
    model = save_tiny(str(tmp_path), word_tokenizer, kind=kind, eos_token_id=eos, act=act)
    enc = CLIPEncoder(str(tmp_path))
    assert enc.max_length == L and enc.dim == 32
    assert enc.pooled_dim == (32 if kind == "plain" else 24)
    ids, mask = make_ids(rng, 3, L, (0, V - 2), [L, 5, 2], first=BOS, last=EOS, pad=EOS)
    tokens, pooled = enc.forward(ids, mask)
    ref_tokens, ref_pooled = reference(model, ids, mask)
    np.testing.assert_allclose(np.asarray(tokens)[mask], ref_tokens[mask], atol=1e-4, rtol=0)
    np.testing.assert_allclose(np.asarray(pooled), ref_pooled, atol=1e-4, rtol=0)


def test_encode_end_to_end_and_pooled_override(tmp_path, word_tokenizer):
    clip_dir, t5_dir = tmp_path / "clip", tmp_path / "t5"
    clip_dir.mkdir()
    t5_dir.mkdir()
    model = save_tiny(str(clip_dir), word_tokenizer)
    texts = ["w1 w2 w3", "", " ".join(f"w{i}" for i in range(20))]
    enc = get_text_encoder(
        {"name": "clip", "path": str(clip_dir), "max_length": 8, "pooled_path": ""}
    )
    out = enc.encode(texts)
    ids, mask = enc.tokenize(texts)
    np.testing.assert_array_equal(ids[0], [BOS, 1, 2, 3, EOS, EOS, EOS, EOS])
    np.testing.assert_array_equal(mask[0], [1, 1, 1, 1, 1, 0, 0, 0])
    np.testing.assert_array_equal(ids[1, :2], [BOS, EOS])
    assert mask[2].all() and ids[2, -1] == EOS  # truncated keeps <|endoftext|>
    ref_tokens, ref_pooled = reference(model, ids, mask)
    np.testing.assert_allclose(out.tokens[mask], ref_tokens[mask], atol=1e-4, rtol=0)
    np.testing.assert_allclose(out.pooled, ref_pooled, atol=1e-4, rtol=0)

    # T5 tokens + CLIP pooled (run at CLIP's native length 12 — EOS position is what counts).
    t5 = transformers.T5EncoderModel(
        transformers.T5Config(
            vocab_size=V,
            d_model=16,
            d_kv=4,
            num_heads=4,
            d_ff=32,
            num_layers=1,
            feed_forward_proj="gated-gelu",
        )
    )
    t5.save_pretrained(str(t5_dir), safe_serialization=True)
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2} | {f"w{i}": 3 + i for i in range(V - 3)}
    word_tokenizer(str(t5_dir), vocab, "$A </s>", ["</s>"], "<pad>")
    both = get_text_encoder(
        {"name": "t5", "path": str(t5_dir), "max_length": 8, "pooled_path": str(clip_dir)}
    )
    got = both.encode(texts[:2])
    assert both.dim == 16 and both.pooled_dim == 24 and got.tokens.shape == (2, 8, 16)
    np.testing.assert_allclose(got.pooled, ref_pooled[:2], atol=1e-4, rtol=0)


def test_too_long_max_length(tmp_path, word_tokenizer):
    save_tiny(str(tmp_path), word_tokenizer, kind="plain")
    with pytest.raises(ValueError, match=f"max_length=20 exceeds max_position_embeddings={L}"):
        CLIPEncoder(str(tmp_path), 20)
