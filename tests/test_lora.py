"""LoRA: adapters start as a no-op, only adapters train, checkpoints are merged."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stiv_jax import lora
from stiv_jax.optim import make_optimizer
from stiv_jax.runtime import Components
from stiv_jax.train import init_state, make_train_step, prepare_batch
from stiv_jax.transfer import _flat

QKV = "['blocks'][0]['spatial']['qkv']['kernel']"


def test_merge_is_kernel_plus_scaled_low_rank_product():
    params = {"blocks": [{"spatial": {"qkv": {"kernel": jnp.ones((6, 9)), "bias": jnp.ones(9)}},
                          "mlp": {"fc1": {"kernel": jnp.ones((6, 4))}}}],
              "adaln": {"kernel": jnp.ones((6, 3))}}  # fmt: skip
    ad = lora.init(params, 2, "attention", jax.random.key(0))
    assert list(ad) == [QKV]  # attention only: not fc1, not adaln
    same = _flat(lora.merge(params, ad, 0.5))
    assert all(np.array_equal(same[k], v) for k, v in _flat(params).items())  # B = 0: no-op
    ad[QKV]["b"] = jnp.full((2, 9), 3.0)
    merged = lora.merge(params, ad, 0.5)
    want = 1.0 + 0.5 * ad[QKV]["a"] @ ad[QKV]["b"]
    np.testing.assert_allclose(merged["blocks"][0]["spatial"]["qkv"]["kernel"], want, rtol=1e-6)
    assert np.all(merged["blocks"][0]["mlp"]["fc1"]["kernel"] == 1)
    with pytest.raises(ValueError, match="lora_targets='attn'"):
        lora.target_names("attn")


def test_only_the_adapters_train_and_params_are_their_merge(tiny_config):
    from stiv_jax.data.pipeline import make_dataset

    c = tiny_config
    c.train.lora_rank, c.train.lora_alpha = 4, 8.0
    c.optim.lr, c.optim.warmup_steps = 1e-2, 1
    comps = Components(c)
    tx = make_optimizer(c.optim)
    graphdef, state = init_state(comps.model(0), tx, lora=c.train)
    # a "trained" base: DiT's zero-initialised gates would stop every gradient at init
    leaves, tree = jax.tree.flatten(state["base"])
    keys = jax.random.split(jax.random.key(5), len(leaves))
    base = jax.tree.unflatten(
        tree, [x + 0.05 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]
    )
    state = {**state, "base": base, "params": base, "ema": base}
    base0 = _flat(jax.tree.map(np.asarray, state["base"]))
    batch = prepare_batch(next(iter(make_dataset(c, latent_frames=comps.latent_shape[0]))), comps)
    step = jax.jit(make_train_step(c, graphdef, tx, comps.null_text))
    for _ in range(3):
        state, m = step(state, batch, jax.random.key(0))
    assert np.isfinite(float(m["loss"]))
    base, params = _flat(state["base"]), _flat(state["params"])
    for k in base0:  # the base is frozen
        np.testing.assert_array_equal(base[k], base0[k])
    changed = {k for k in params if not np.array_equal(params[k], base0[k])}
    assert changed and changed == set(state["lora"])  # exactly the adapted kernels moved
    assert all(k.endswith(("['qkv']['kernel']", "['q']['kernel']", "['kv']['kernel']",
                           "['out']['kernel']", "['fc1']['kernel']", "['fc2']['kernel']"))
               for k in changed)  # fmt: skip
    merged = _flat(lora.merge(state["base"], state["lora"], 2.0))
    np.testing.assert_allclose(params[QKV], merged[QKV], rtol=1e-6)
    # the optimizer state is the adapters' (a small fraction of the model)
    n_opt = sum(x.size for x in jax.tree.leaves(state["opt"]))
    n_params = sum(x.size for x in jax.tree.leaves(state["params"]))
    assert n_opt < 0.5 * n_params


def test_lora_without_init_from_is_one_clear_error(tmp_path, tiny_config):
    from stiv_jax.train import train_loop

    tiny_config.train.lora_rank = 4
    with pytest.raises(ValueError, match="lora_rank=4 trains adapters on a base model"):
        train_loop(tiny_config, str(tmp_path / "w"))


@pytest.mark.slow
def test_lora_run_from_init_from_samples_like_any_run(tmp_path, tiny_config):
    from stiv_jax import checkpoint as ckpt
    from stiv_jax.pipeline import STIVPipeline
    from stiv_jax.runtime import fill_train_grid
    from stiv_jax.train import train_loop

    c = tiny_config
    fill_train_grid(c)
    _, src = init_state(Components(c).model(3), make_optimizer(c.optim))
    mngr = ckpt.manager(str(tmp_path / "base"), max_to_keep=1, async_save=False)
    ckpt.save(mngr, 7, src, None, c, force=True)
    mngr.wait_until_finished()
    c.train.steps, c.train.ckpt_every, c.train.async_checkpoint = 1, 1, False
    c.train.lora_rank, c.train.init_from = 4, str(tmp_path / "base") + ":params"
    c.sample.steps, c.sample.num_train_samples = 1, 1
    state = train_loop(c, str(tmp_path / "ft"))
    assert int(state["step"]) == 1 and "lora" in state
    base = _flat(jax.tree.map(np.asarray, src["params"]))
    got = _flat(jax.tree.map(np.asarray, state["base"]))
    assert all(np.array_equal(got[k], base[k]) for k in base)  # the base is the init_from run
    # merge-on-export: the checkpoint's params/EMA are full weights; sampling needs nothing else
    video = STIVPipeline.from_workdir(str(tmp_path / "ft"))("a red circle", seed=0)
    assert video.shape == (4, 16, 16, 3)
