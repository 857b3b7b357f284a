"""Shared encoder layers vs plain numpy / HF activation functions."""

import numpy as np
import pytest

from stiv_jax.encoders.layers import (
    ACTIVATIONS,
    Norm,
    activation,
    attention,
    causal_bias,
    key_mask_bias,
)


def test_attention_matches_numpy_with_masks():
    r = np.random.default_rng(0)
    q, k, v = (r.normal(size=(2, 5, 3, 4)).astype(np.float32) for _ in range(3))
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
    bias = np.asarray(causal_bias(5) + key_mask_bias(mask))
    out = np.asarray(attention(q, k, v, bias))
    logits = np.einsum("blnh,bmnh->bnlm", q, k) / 2.0
    keep = np.tril(np.ones((5, 5), bool))[None, None] & mask[:, None, None, :]
    logits = np.where(keep, logits, -np.inf)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    np.testing.assert_allclose(out, np.einsum("bnlm,bmnh->blnh", p, v), atol=1e-5)
    # T5 passes scale=1.0 (no 1/sqrt(H)).
    out1 = np.asarray(attention(q, k, v, np.zeros((1, 1, 5, 5), np.float32), scale=1.0))
    l1 = np.einsum("blnh,bmnh->bnlm", q, k)
    p1 = np.exp(l1 - l1.max(-1, keepdims=True))
    p1 /= p1.sum(-1, keepdims=True)
    np.testing.assert_allclose(out1, np.einsum("bnlm,bmnh->blnh", p1, v), atol=1e-5)


def test_layer_norm_and_rms_norm():
    x = np.random.default_rng(1).normal(2.0, 3.0, size=(3, 8)).astype(np.float32)
    ln = Norm(8, 1e-5)
    ref = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(np.asarray(ln(x)), ref, atol=1e-5)
    rms = Norm(8, 1e-6, rms=True)
    assert rms.bias is None
    ref = x / np.sqrt((x**2).mean(-1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(np.asarray(rms(x)), ref, atol=1e-5)


def test_activations_match_transformers():
    torch = pytest.importorskip("torch")
    act2fn = pytest.importorskip("transformers.activations").ACT2FN
    x = np.linspace(-6, 6, 101, dtype=np.float32)
    for name in ACTIVATIONS:
        ref = act2fn[name](torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(np.asarray(activation(name)(x)), ref, atol=1e-5, err_msg=name)
    with pytest.raises(ValueError, match="'mish' is not supported"):
        activation("mish")
