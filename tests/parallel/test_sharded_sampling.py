"""Sharded sampling (sample.shard_params): on 8 simulated devices (a subprocess, the flag set
before JAX starts) a tiny checkpoint's params are really split over a data=2 x fsdp=2 x
tensor=2 mesh, the prompts go over the data axes, and the videos equal the one-device ones.
In process: kernels stored in bfloat16 for a bfloat16 model give bit-identical samples."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _checkpoint(workdir: str, **model) -> None:
    """A tiny checkpoint with non-zero weights everywhere (fresh ones zero every gate)."""
    from configs.stiv import get_config
    from stiv_jax import checkpoint as ckpt
    from stiv_jax.optim import make_optimizer
    from stiv_jax.runtime import Components, fill_train_grid
    from stiv_jax.train import init_state

    c = get_config("variant=tiny")
    c.data.res, c.data.frames, c.sample.steps = 16, 4, 2
    c.model.update(model)
    fill_train_grid(c)
    _, state = init_state(Components(c).model(0), make_optimizer(c.optim))
    leaves, tree = jax.tree.flatten(state["ema"])
    keys = jax.random.split(jax.random.key(3), len(leaves))
    state["ema"] = jax.tree.unflatten(
        tree, [x + 0.05 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]
    )
    mngr = ckpt.manager(workdir, max_to_keep=1, async_save=False)
    ckpt.save(mngr, 0, state, None, c, force=True)
    mngr.wait_until_finished()


def test_sharded_params_sample_like_one_device(tmp_path):
    wd = str(tmp_path / "wd")
    _checkpoint(wd)
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tests/parallel/sharded_sampling_worker.py"), wd],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["devices"] == 8 and r["mesh"] == {"data": 2, "fsdp": 2, "context": 1, "tensor": 2}
    # fc1 [D, 4D]: embed over fsdp, mlp over tensor -> a quarter per device, on all 8
    assert r["kernel_spec"] == ["fsdp", "tensor"] and r["kernel_devices"] == 8
    d, h = r["kernel_shape"]
    assert r["kernel_shard_shape"] == [d // 2, h // 2]
    assert r["one_devices"] == 1
    assert r["video_std"] > 0.05  # a real video, not a constant
    assert r["max_abs_diff"] < 1e-4, r
    # sample.t2v_candidates: the same choice and videos with params sharded
    assert r["candidates_max_abs_diff"] < 1e-4 and r["candidates_change_the_video"] > 0.01, r


def test_bf16_kernels_sample_bit_identically(tmp_path):
    from configs.stiv import get_config
    from stiv_jax.pipeline import Request, STIVPipeline

    wd = str(tmp_path / "wd")
    _checkpoint(wd, dtype="bfloat16")
    videos, kernels = {}, {}
    for name in ("auto", "float32"):
        c = get_config("variant=tiny")
        c.data.res, c.data.frames, c.sample.steps = 16, 4, 2
        c.sample.param_dtype = name
        pipe = STIVPipeline.from_workdir(wd, c)
        kernels[name] = pipe.params["blocks"][0]["mlp"]["fc1"]["kernel"].dtype
        videos[name] = pipe.generate([Request(id="0", prompt="a red circle moves left")])[0]
    assert kernels == {"auto": np.dtype("bfloat16"), "float32": np.dtype("float32")}
    np.testing.assert_array_equal(videos["auto"], videos["float32"])
