"""Progressive training: init_from transfer rules (T2I -> T2V -> TI2V) and the trainer hook."""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import pytest
from flax import nnx

from configs.stiv import get_config
from stiv_jax.runtime import build_model, fill_train_grid
from stiv_jax.transfer import _flat, parse_init_from, transfer_params


def _cfg(arg, **model):
    c = get_config(f"variant=tiny,{arg}")
    c.data.res = 16
    for k, v in model.items():
        c.model[k] = v
    fill_train_grid(c)
    return c


def _params(c, seed):
    _, p = nnx.split(build_model(c, seed), nnx.Param)
    return jax.tree.map(np.asarray, nnx.to_pure_dict(p))


def test_t2i_to_t2v_copies_spatial_inflates_patches_keeps_temporal_fresh():
    src_c, dst_c = _cfg("stage=t2i"), _cfg("stage=t2v,frames=4")
    assert (src_c.model.temporal_patch, dst_c.model.temporal_patch) == (1, 2)
    src, dst = _params(src_c, 1), _params(dst_c, 2)
    out, rep = transfer_params(dst, src, src_c, dst_c)
    fs, fd, fo = _flat(src), _flat(dst), _flat(out)
    for key in ("['blocks'][0]['spatial']['qkv']['kernel']", "['blocks'][1]['cross']['kv']['kernel']",
                "['blocks'][0]['mlp']['fc1']['kernel']", "['adaln']['kernel']"):  # fmt: skip
        np.testing.assert_array_equal(fo[key], fs[key])
    # the T2I run saw one frame: its temporal attention is not taken
    key = "['blocks'][0]['temporal']['qkv']['kernel']"
    np.testing.assert_array_equal(fo[key], fd[key])
    assert key in rep["fresh"] and not any("spatial" in k for k in rep["fresh"])
    # patch embedding [1·p·p·C, D] -> [2·p·p·C, D]: each sub-frame gets half the image weights
    w = fo["['patch_embed']['kernel']"].reshape(2, 2, 2, 3, -1)
    src_w = fs["['patch_embed']['kernel']"].reshape(1, 2, 2, 3, -1)
    np.testing.assert_allclose(w, np.repeat(src_w / 2, 2, axis=0), rtol=1e-6)
    fin = fo["['final']['kernel']"].reshape(-1, 2, 12)
    np.testing.assert_array_equal(fin[:, 0], fs["['final']['kernel']"])
    np.testing.assert_array_equal(fin[:, 1], fs["['final']['kernel']"])
    assert set(rep["inflated"]) == {
        "['patch_embed']['kernel']", "['final']['kernel']", "['final']['bias']"
    }  # fmt: skip


def test_t2v_to_channel_concat_ti2v_takes_temporal_and_zeroes_the_new_half():
    src_c = _cfg("stage=t2v,frames=4")
    dst_c = _cfg("frames=8,image_cond=channel_concat")
    src, dst = _params(src_c, 1), _params(dst_c, 2)
    out, rep = transfer_params(dst, src, src_c, dst_c)
    fs, fo = _flat(src), _flat(out)
    key = "['blocks'][0]['temporal']['qkv']['kernel']"
    np.testing.assert_array_equal(fo[key], fs[key])  # a T2V source's temporal layers are taken
    w = fo["['patch_embed']['kernel']"].reshape(2, 2, 2, 6, -1)
    np.testing.assert_array_equal(
        w[..., :3, :], fs["['patch_embed']['kernel']"].reshape(2, 2, 2, 3, -1)
    )
    assert np.all(w[..., 3:, :] == 0)  # the concatenated given latents start with no effect
    assert rep["fresh"] == [] and rep["inflated"] == ["['patch_embed']['kernel']"]


def test_untransferable_shape_is_one_clear_error():
    src_c = _cfg("frames=4")
    dst_c = _cfg("frames=4", mlp_ratio=2.0)
    with pytest.raises(ValueError, match=r"parameter \['blocks'\]\[0\]\['mlp'\]\['fc1'\]\['bias'\] "
                       r"has shape \(256,\) there but \(128,\) here"):  # fmt: skip
        transfer_params(_params(dst_c, 0), _params(src_c, 0), src_c, dst_c, source="src")
    with pytest.raises(ValueError, match="spatial patch 1 but this run's is 2"):
        transfer_params(_params(dst_c, 0), {}, _cfg("frames=4", patch_size=1), dst_c)


def test_parse_init_from(tmp_path):
    (tmp_path / "run" / "checkpoints" / "40").mkdir(parents=True)
    assert parse_init_from(str(tmp_path / "run")) == (str(tmp_path / "run"), None, True)
    assert parse_init_from(f"{tmp_path}/run/checkpoints/40:params") == (
        str(tmp_path / "run"),
        40,
        False,
    )
    with pytest.raises(FileNotFoundError, match="not a workdir with checkpoints"):
        parse_init_from(str(tmp_path / "nope"))


@pytest.mark.slow
def test_trainer_starts_fresh_from_init_from(tmp_path):
    from stiv_jax import checkpoint as ckpt
    from stiv_jax.optim import make_optimizer
    from stiv_jax.runtime import Components
    from stiv_jax.train import init_state, train_loop

    src_c = _cfg("stage=t2i")
    src_c.data.batch_size = 2
    _, state = init_state(Components(src_c).model(3), make_optimizer(src_c.optim))
    state["step"] = state["step"] + 50  # the source's step must not carry over
    mngr = ckpt.manager(str(tmp_path / "src"), max_to_keep=1, async_save=False)
    ckpt.save(mngr, 50, state, None, src_c, force=True)
    mngr.wait_until_finished()

    c = get_config("variant=tiny,stage=t2v,frames=4,res=32")
    c.data.batch_size, c.train.steps, c.train.ckpt_every = 2, 1, 1
    c.train.async_checkpoint, c.sample.num_train_samples, c.sample.steps = False, 1, 1
    c.optim.lr = 1e-9  # one step barely moves the weights: what we read back is the transfer
    c.train.init_from = str(tmp_path / "src") + ":params"
    train_loop(c, str(tmp_path / "dst"))
    # RoPE interpolation between stages: the spatial grid is the source's (16 px -> 8x8)
    assert tuple(c.model.train_grid) == (2, 8, 8)
    params, step = ckpt.restore_params(str(tmp_path / "dst"), _abstract(c), ema=False)
    assert step == 1  # fresh step counter: 1 step taken, not 51
    got, want = _flat(params), _flat(jax.tree.map(np.asarray, state["params"]))
    key = "['blocks'][0]['spatial']['qkv']['kernel']"
    np.testing.assert_allclose(got[key], want[key], atol=1e-6)
    with open(os.path.join(tmp_path / "dst", "metrics.jsonl")) as fh:
        assert [json.loads(x)["step"] for x in fh] == [1]


def _abstract(c):
    _, p = nnx.split(nnx.eval_shape(lambda: build_model(c, 0)), nnx.Param)
    sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), nnx.to_pure_dict(p)
    )


def test_init_from_anchors_the_optimizer_at_the_transferred_weights(tmp_path):
    """optim.anchor_decay's anchor is the init_from source's weights (the optimizer starts
    after the transfer), and it is checkpointed with the optimizer state."""
    from stiv_jax import checkpoint as ckpt
    from stiv_jax.optim import make_optimizer
    from stiv_jax.runtime import Components
    from stiv_jax.train import init_state, train_loop

    c = get_config("variant=tiny,stage=t2v,frames=4,res=16")
    c.data.batch_size, c.train.steps, c.train.ckpt_every = 2, 1, 1
    c.train.async_checkpoint, c.sample.num_train_samples = False, 0
    _, src = init_state(Components(c).model(3), make_optimizer(c.optim))
    mngr = ckpt.manager(str(tmp_path / "src"), max_to_keep=1, async_save=False)
    ckpt.save(mngr, 5, src, None, c, force=True)
    mngr.wait_until_finished()

    c.optim.anchor_decay = r"^blocks/.*cross/q/:10"
    c.train.init_from = str(tmp_path / "src") + ":params"
    train_loop(c, str(tmp_path / "dst"))
    tx = make_optimizer(c.optim)
    comps = Components(c)
    abstract = jax.eval_shape(lambda: init_state(comps.model(0), tx)[1])
    got = ckpt.restore(ckpt.manager(str(tmp_path / "dst"), max_to_keep=1), 1, abstract)
    anchor = got["opt"][3].anchor
    blocks = src["params"]["blocks"]
    assert sorted(anchor) == ["blocks"] and sorted(anchor["blocks"]) == sorted(blocks)
    for i, block in anchor["blocks"].items():
        assert list(block) == ["cross"] and list(block["cross"]) == ["q"]
        np.testing.assert_array_equal(
            block["cross"]["q"]["kernel"], blocks[i]["cross"]["q"]["kernel"]
        )
