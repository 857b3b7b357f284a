"""Optimizer: AdaFactor against a numpy reference, warmup schedule, EMA warmup."""

import jax.numpy as jnp
import numpy as np

from stiv_jax.optim import ema_decay, learning_rate, scale_by_factored_rms


def _reference(grads, b2=0.999, decay_rate=0.8, eps=1e-30):
    """Factored second moments (Shazeer & Stern) with capped β2, update clipping at RMS 1."""
    vr = np.zeros(grads[0].shape[0])
    vc = np.zeros(grads[0].shape[1])
    out = []
    for t, g in enumerate(grads, 1):
        beta = min(1 - t ** (-decay_rate), b2)
        g2 = g * g + eps
        vr = beta * vr + (1 - beta) * g2.mean(1)
        vc = beta * vc + (1 - beta) * g2.mean(0)
        u = g / np.sqrt(np.outer(vr / vr.mean(), vc))
        out.append(u / max(1.0, np.sqrt(np.mean(u * u))))
    return out


def test_factored_rms_matches_reference():
    rng = np.random.default_rng(0)
    grads = [rng.normal(size=(128, 160)) * (1 + i) for i in range(5)]
    tx = scale_by_factored_rms(b2=0.999, min_dim_to_factor=128)
    params = {"w": jnp.zeros((128, 160)), "b": jnp.zeros((160,))}
    state = tx.init(params)
    ref = _reference(grads)
    for g, r in zip(grads, ref):
        u, state = tx.update({"w": jnp.asarray(g), "b": jnp.ones((160,))}, state)
        np.testing.assert_allclose(u["w"], r, rtol=2e-4, atol=1e-5)
    # an unfactored vector normalises by its own RMS history: constant grads -> update 1
    np.testing.assert_allclose(u["b"], 1.0, rtol=1e-5)


def test_warmup_then_constant_and_ema_warmup():
    sched = learning_rate(1e-3, 10)
    assert float(sched(0)) == 0.0 and abs(float(sched(5)) - 5e-4) < 1e-9
    assert float(sched(10)) == float(sched(1000)) == np.float32(1e-3)
    d = [float(ema_decay(0.999, jnp.asarray(s))) for s in (0, 10, 100, 100_000)]
    assert d[0] == np.float32(0.1) and d[1] < d[2] < d[3] == np.float32(0.999)
