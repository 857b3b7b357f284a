"""Sampler step cache (stiv_jax/step_cache.py): off is the old sampler, threshold 0 is the
uncached result, a high threshold skips the later blocks and the counts say so."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tiny_pipeline import make_pipeline

from stiv_jax import step_cache
from stiv_jax.pipeline import Request, build_conditions, make_sample_fn


@pytest.fixture
def setup(tiny_config):
    c = tiny_config
    pipe = make_pipeline(c)
    c.sample.steps = 4
    reqs = [
        Request(id=str(i), prompt=p, seed=i)
        for i, p in enumerate(["a red circle moves left", "a blue square"])
    ]
    cond, x0 = build_conditions(c, pipe.comps, reqs)
    return c, pipe, (x0, cond, pipe.comps.null_text, jnp.full((2,), 2.0))


def _sample(c, pipe, args, **sample):
    with c.unlocked():
        c.sample.update(sample)
    fn = make_sample_fn(c, pipe.graphdef, with_stats=c.sample.step_cache)
    return fn(pipe.params, *args)


def test_split_forward_equals_model_call(tiny_config):
    """embed -> block 0 -> blocks 1.. -> decoder -> head is the model's unmasked forward,
    for listed and for scanned (stacked) blocks."""
    from flax import nnx

    from stiv_jax.conditioning import make_conditions

    for scan in (False, True):
        c = tiny_config
        c.model.scan_blocks, c.model.depth = scan, 3
        pipe = make_pipeline(c)
        x = jax.random.normal(jax.random.key(0), (2, 4, 16, 16, 3))
        t = jnp.array([0.3, 0.7])
        cond = make_conditions(
            text_tokens=jnp.ones((2, 32, 384)),
            text_mask=jnp.ones((2, 32), bool),
            text_pooled=jnp.ones((2, 384 + 1024)),  # MiniLM + word bag
            latents=jnp.zeros_like(x),
            cond_mask=jnp.zeros((2, 4), bool),
            micro=jnp.ones((2, 5)),
            motion=jnp.ones((2,)),
        )

        @jax.jit
        def both(params, x, t, cond, graphdef=pipe.graphdef):
            model = nnx.merge(graphdef, params)
            h, args, cvec = model.embed(x, t, cond)
            h = model.run_blocks(model.run_blocks(h, *args, stop=1), *args, start=1)
            for block in model.decoder:
                h = block(h, *args)
            return model.head(h, cvec, x.shape), model(x, t, cond)

        split, whole = both(pipe.params, x, t, cond)
        np.testing.assert_allclose(split, whole, atol=1e-6)


def test_cache_off_is_the_default_and_threshold_zero_is_uncached(setup):
    c, pipe, args = setup
    assert not c.sample.step_cache  # off by default
    plain = _sample(c, pipe, args)
    cached, state = _sample(c, pipe, args, step_cache=True, cache_threshold=0.0)
    np.testing.assert_allclose(np.asarray(cached), np.asarray(plain), atol=1e-6)
    s = step_cache.stats(c.model, state)
    assert s["calls"] == 4 and s["blocks"] == s["uncached_blocks"] == 4 * (2 + 2)


def test_high_threshold_reuses_the_later_blocks(setup):
    c, pipe, args = setup
    plain = _sample(c, pipe, args)
    cached, state = _sample(c, pipe, args, step_cache=True, cache_threshold=1e9)
    # the first call computes everything, every later one only block 0
    s = step_cache.stats(c.model, state)
    assert (s["calls"], s["blocks"]) == (4, 4 + 3 * 1)
    assert s["fraction"] == pytest.approx(7 / 16)
    assert float(jnp.abs(cached - plain).max()) > 1e-4  # reuse changed the result
    # Heun: two model calls per step, the state runs through both
    _, state = _sample(c, pipe, args, solver="heun")
    assert step_cache.stats(c.model, state)["calls"] == 8


def test_relative_change_is_the_worst_row():
    ref = jnp.ones((2, 3))
    r = ref.at[1].set(1.5)
    assert float(step_cache.relative_change(r, ref)) == pytest.approx(0.5)
    assert float(step_cache.relative_change(ref, ref)) == 0.0


def test_scanned_blocks_cache_inside_the_loop(tiny_config):
    """Stacked (nnx.scan) main blocks: the sliced first block and the rest run inside the
    cache's lax.cond; threshold 0 gives the uncached samples."""
    c = tiny_config
    c.model.scan_blocks, c.model.depth = True, 3
    pipe = make_pipeline(c)
    cond, x0 = build_conditions(c, pipe.comps, [Request(id="0", prompt="a red circle")])
    args = (x0, cond, pipe.comps.null_text, jnp.full((1,), 2.0))
    plain = _sample(c, pipe, args)
    cached, state = _sample(c, pipe, args, step_cache=True, cache_threshold=0.0)
    np.testing.assert_allclose(np.asarray(cached), np.asarray(plain), atol=1e-6)
    assert step_cache.stats(c.model, state)["blocks"] == 2 * (3 + 2)


def test_step_cache_with_self_cond_is_one_line_error(tiny_config):
    """The step cache does not carry self-conditioning's estimate: refused, not ignored."""
    from stiv_jax.pipeline import make_sample_fn

    tiny_config.model.self_cond = True
    tiny_config.sample.step_cache = True
    with pytest.raises(ValueError, match="model.self_cond") as info:
        make_sample_fn(tiny_config, None)
    assert "\n" not in str(info.value)
