"""Optimizer: AdaFactor (optax pieces) against the hand-written form it replaced and a numpy
reference, the whole chain over 30 steps, warmup schedule, EMA warmup."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from stiv_jax.optim import ema_decay, learning_rate, make_optimizer, scale_by_adafactor


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


class _FactoredState(NamedTuple):
    count: jax.Array
    v_row: optax.Updates
    v_col: optax.Updates
    v: optax.Updates


def scale_by_factored_rms_reference(b2=0.999, decay_rate=0.8, eps=1e-30, min_dim_to_factor=128):
    """The hand-written AdaFactor scaling stiv_jax used before optax's (factors the last two
    axes, float32 statistics, clips the update RMS to 1 inside)."""
    factored = lambda shape: len(shape) >= 2 and sorted(shape)[-2] >= min_dim_to_factor

    def init(params):
        row = lambda p: jnp.zeros(p.shape[:-1]) if factored(p.shape) else jnp.zeros((1,))
        col = lambda p: (
            jnp.zeros(p.shape[:-2] + p.shape[-1:]) if factored(p.shape) else jnp.zeros((1,))
        )
        full = lambda p: jnp.zeros((1,)) if factored(p.shape) else jnp.zeros(p.shape)
        m = lambda f: jax.tree.map(f, params)
        return _FactoredState(jnp.zeros([], jnp.int32), m(row), m(col), m(full))

    def update(grads, state, params=None):
        t = state.count + 1
        beta = jnp.minimum(1.0 - t.astype(jnp.float32) ** (-decay_rate), b2)

        def one(g, vr, vc, v):
            g2 = g * g + eps
            if factored(g.shape):
                vr = beta * vr + (1 - beta) * jnp.mean(g2, axis=-1)
                vc = beta * vc + (1 - beta) * jnp.mean(g2, axis=-2)
                r = vr / jnp.mean(vr, axis=-1, keepdims=True)
                u = g * jax.lax.rsqrt(r[..., :, None] * vc[..., None, :])
            else:
                v = beta * v + (1 - beta) * g2
                u = g * jax.lax.rsqrt(v)
            u = u / jnp.maximum(1.0, jnp.sqrt(jnp.mean(u * u)))
            return u, vr, vc, v

        out = jax.tree.map(one, grads, state.v_row, state.v_col, state.v)
        pick = lambda i: jax.tree.map(lambda o: o[i], out, is_leaf=lambda o: isinstance(o, tuple))
        return pick(0), _FactoredState(t, pick(1), pick(2), pick(3))

    return optax.GradientTransformation(init, update)


# Factored 2D, factored 3D whose largest axes are the last two, small unfactored 2D, a vector.
SHAPES = {"w": (128, 160), "qkv": (3, 160, 128), "small": (16, 96), "b": (160,)}


def _grads(step: int, scale: float = 1.0) -> dict:
    keys = jax.random.split(jax.random.key(step), len(SHAPES))
    return {
        k: scale * (1 + step % 7) * jax.random.normal(key, s)
        for key, (k, s) in zip(keys, SHAPES.items())
    }


def test_factored_rms_matches_numpy_reference():
    rng = np.random.default_rng(0)
    grads = [rng.normal(size=(128, 160)) * (1 + i) for i in range(5)]
    tx = scale_by_adafactor(b2=0.999, min_dim_to_factor=128)
    params = {"w": jnp.zeros((128, 160)), "b": jnp.zeros((160,))}
    state = tx.init(params)
    ref = _reference(grads)
    for g, r in zip(grads, ref):
        u, state = tx.update({"w": jnp.asarray(g), "b": jnp.ones((160,))}, state, params)
        np.testing.assert_allclose(u["w"], r, rtol=2e-4, atol=1e-5)
    # an unfactored vector normalises by its own RMS history: constant grads -> update 1
    np.testing.assert_allclose(u["b"], 1.0, rtol=1e-5)


def test_scaling_matches_hand_written_reference_30_steps():
    params = {k: jnp.zeros(s) for k, s in SHAPES.items()}
    tx, ref = scale_by_adafactor(), scale_by_factored_rms_reference()
    s, r = tx.init(params), ref.init(params)
    worst = 0.0
    for step in range(30):
        g = _grads(step)
        u, s = tx.update(g, s, params)
        v, r = ref.update(g, r, params)
        for k in SHAPES:
            worst = max(worst, float(jnp.max(jnp.abs(u[k] - v[k]))))
    print(f"max |optax - reference| over 30 steps: {worst:.2e}")
    assert worst < 2e-6, worst


def test_cap_on_beta2_applies_late():
    """Past t = 1000^(1/0.8) ≈ 5623 steps β2 stays at b2 (optax's default would keep rising)."""
    params = {"b": jnp.zeros((4,))}
    tx, ref = scale_by_adafactor(b2=0.999), scale_by_factored_rms_reference(b2=0.999)
    late = dict(count=jnp.asarray(20_000, jnp.int32), v={"b": jnp.ones((4,))})
    s, r = tx.init(params), ref.init(params)
    s, r = (s[0]._replace(**late), s[1]), r._replace(**late)
    g = {"b": jnp.asarray([0.01, 0.02, 0.03, 0.04])}
    for _ in range(3):
        u, s = tx.update(g, s, params)
        v, r = ref.update(g, r, params)
        np.testing.assert_allclose(u["b"], v["b"], rtol=1e-6)
    uncapped = optax.scale_by_factored_rms(decay_rate=0.8)
    w, _ = uncapped.update(g, uncapped.init(params)._replace(**late), params)
    assert not np.allclose(w["b"], v["b"], rtol=1e-5)  # the cap is what makes them agree


def test_whole_chain_matches_reference_chain_30_steps():
    cfg = ml_collections.ConfigDict(
        dict(lr=1e-3, warmup_steps=5, b1=0.9, b2=0.999, clip_norm=1.0, weight_decay=0.0)
    )
    reference = optax.chain(
        optax.clip_by_global_norm(cfg.clip_norm),
        scale_by_factored_rms_reference(b2=cfg.b2),
        optax.ema(decay=cfg.b1, debias=True),
        optax.scale_by_learning_rate(learning_rate(cfg.lr, cfg.warmup_steps)),
    )
    tx = make_optimizer(cfg)
    p = q = {k: 0.1 * jax.random.normal(jax.random.key(9), s) for k, s in SHAPES.items()}
    s, r = tx.init(p), reference.init(q)
    for step in range(30):
        u, s = tx.update(_grads(step, 0.01), s, p)
        v, r = reference.update(_grads(step, 0.01), r, q)
        p, q = optax.apply_updates(p, u), optax.apply_updates(q, v)
    for k in SHAPES:
        np.testing.assert_allclose(p[k], q[k], rtol=0, atol=1e-7)
        assert (
            float(jnp.max(jnp.abs(p[k] - 0.1 * jax.random.normal(jax.random.key(9), SHAPES[k]))))
            > 1e-3
        )


def test_warmup_then_constant_and_ema_warmup():
    sched = learning_rate(1e-3, 10)
    assert float(sched(0)) == 0.0 and abs(float(sched(5)) - 5e-4) < 1e-9
    assert float(sched(10)) == float(sched(1000)) == np.float32(1e-3)
    d = [float(ema_decay(0.999, jnp.asarray(s))) for s in (0, 10, 100, 100_000)]
    assert d[0] == np.float32(0.1) and d[1] < d[2] < d[3] == np.float32(0.999)


def test_cool_down_reaches_zero_at_the_last_step_and_bad_lengths_are_errors():
    import pytest

    sched = learning_rate(1e-3, 10, decay_steps=20, total_steps=100)
    np.testing.assert_allclose(float(sched(5)), 0.5e-3, rtol=1e-6)  # warmup untouched
    np.testing.assert_allclose(float(sched(80)), 1e-3, rtol=1e-6)  # stable until the cool-down
    np.testing.assert_allclose(float(sched(90)), 0.5e-3, rtol=1e-6)  # linear
    np.testing.assert_allclose(float(sched(100)), 0.0, atol=1e-12)
    assert float(learning_rate(1e-3, 0, 5, 10)(0)) == np.float32(1e-3)  # no warmup
    for bad in (-1, 95):
        with pytest.raises(ValueError, match=f"optim.decay_steps={bad}"):
            learning_rate(1e-3, 10, decay_steps=bad, total_steps=100)


def test_lr_groups_scale_each_groups_updates_and_freeze_at_zero():
    base = dict(lr=1e-3, warmup_steps=2, b1=0.9, b2=0.999, clip_norm=1.0, weight_decay=0.0)
    params = {
        "blocks": {"0": {"cross": {"q": jnp.ones((4, 4))}, "mlp": {"fc1": jnp.ones((4, 4))}}},
        "final": {"kernel": jnp.ones((4, 2))},
    }
    grads = jax.tree.map(lambda a: 0.3 * jnp.ones_like(a), params)
    plain = make_optimizer(ml_collections.ConfigDict(base))
    tx = make_optimizer(ml_collections.ConfigDict({**base, "lr_groups": "cross:0, mlp|fc:0.5"}))
    s, r = tx.init(params), plain.init(params)
    for _ in range(5):
        u, s = tx.update(grads, s, params)
        v, r = plain.update(grads, r, params)
    assert float(jnp.abs(v["blocks"]["0"]["cross"]["q"]).min()) > 0  # the plain chain moves it
    np.testing.assert_array_equal(u["blocks"]["0"]["cross"]["q"], 0.0)  # frozen
    np.testing.assert_allclose(u["blocks"]["0"]["mlp"]["fc1"], 0.5 * v["blocks"]["0"]["mlp"]["fc1"])
    np.testing.assert_allclose(u["final"]["kernel"], v["final"]["kernel"])  # no group: scale 1


def test_lr_groups_bad_entries_are_one_line_errors():
    for bad in ("cross", "cross:x", "cross:-1", ":0.5", "[:0.5"):
        cfg = ml_collections.ConfigDict(
            dict(
                lr=1e-3,
                warmup_steps=2,
                b1=0.9,
                b2=0.999,
                clip_norm=1.0,
                weight_decay=0.0,
                lr_groups=bad,
            )  # fmt: skip
        )
        try:
            make_optimizer(cfg)
        except ValueError as e:
            assert "optim.lr_groups" in str(e) and repr(bad.strip()) in str(e)
            assert "\n" not in str(e)
        else:
            raise AssertionError(f"lr_groups={bad!r} was accepted")


def test_anchor_decay_pulls_matched_groups_toward_their_initial_weights():
    """update = the plain chain's − lr · rate · (param − anchor) on matched params, the same
    elsewhere; the anchor is the params at `init` and stores only the matched ones."""
    base = dict(lr=1e-2, warmup_steps=0, b1=0.9, b2=0.999, clip_norm=1.0, weight_decay=0.0)
    p0 = {
        "blocks": {0: {"cross": {"q": jnp.ones((4, 4))}, "mlp": {"fc1": jnp.ones((4, 4))}}},
        "final": {"kernel": jnp.ones((4, 2))},
    }
    grads = jax.tree.map(lambda a: 0.3 * jnp.ones_like(a), p0)
    moved = jax.tree.map(lambda a: a + 0.5 * jnp.arange(a.size, dtype=a.dtype).reshape(a.shape), p0)
    plain = make_optimizer(ml_collections.ConfigDict(base))
    tx = make_optimizer(ml_collections.ConfigDict({**base, "anchor_decay": "cross:20, mlp:0"}))
    s, r = tx.init(p0), plain.init(p0)
    anchor = s[3].anchor  # clip, adafactor, momentum, then the anchor
    assert jax.tree_util.tree_structure(anchor) == jax.tree_util.tree_structure(
        {"blocks": {0: {"cross": {"q": 0}}}}
    )  # only the matched parameter is stored
    for _ in range(3):
        u, s = tx.update(grads, s, moved)
        v, r = plain.update(grads, r, moved)
    delta = moved["blocks"][0]["cross"]["q"] - p0["blocks"][0]["cross"]["q"]
    np.testing.assert_allclose(
        u["blocks"][0]["cross"]["q"], v["blocks"][0]["cross"]["q"] - 1e-2 * 20 * delta, rtol=1e-5
    )
    np.testing.assert_allclose(u["blocks"][0]["mlp"]["fc1"], v["blocks"][0]["mlp"]["fc1"])
    np.testing.assert_allclose(u["final"]["kernel"], v["final"]["kernel"])
    np.testing.assert_array_equal(s[3].anchor["blocks"][0]["cross"]["q"], 1.0)  # fixed


def test_anchor_decay_bad_entries_are_one_line_errors():
    base = dict(lr=1e-3, warmup_steps=2, b1=0.9, b2=0.999, clip_norm=1.0, weight_decay=0.0)
    for bad, says in (
        ("cross", "optim.anchor_decay entry 'cross'"),
        ("cross:-1", "optim.anchor_decay entry 'cross:-1'"),
        ("(:3", "optim.anchor_decay entry '(:3'"),
        ("cross:1000", "optim.anchor_decay rate 1000 with optim.lr=0.001; expected rate * lr < 1"),
    ):
        cfg = ml_collections.ConfigDict({**base, "anchor_decay": bad})
        try:
            make_optimizer(cfg)
        except ValueError as e:
            assert says in str(e) and "\n" not in str(e), str(e)
        else:
            raise AssertionError(f"anchor_decay={bad!r} was accepted")
