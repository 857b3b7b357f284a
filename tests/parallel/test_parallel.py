"""stiv_jax.parallel: mesh sizes, rules, shardings, host data, and (8 simulated devices, in
a subprocess) train-step parity across meshes plus the context-parallel all-to-all."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from stiv_jax import parallel

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _mesh_cfg(**sizes):
    return ml_collections.ConfigDict({"data": -1, "fsdp": 1, "context": 1, "tensor": 1, **sizes})


def test_mesh_shape_fills_and_validates():
    assert parallel.mesh_shape(_mesh_cfg(), 8) == (8, 1, 1, 1)
    assert parallel.mesh_shape(_mesh_cfg(fsdp=2, tensor=2), 8) == (2, 2, 1, 2)
    assert parallel.mesh_shape(_mesh_cfg(data=2, fsdp=-1), 8) == (2, 4, 1, 1)
    with pytest.raises(ValueError, match="not divisible"):
        parallel.mesh_shape(_mesh_cfg(fsdp=3), 8)
    with pytest.raises(ValueError, match="at most one -1"):
        parallel.mesh_shape(_mesh_cfg(fsdp=-1), 8)
    with pytest.raises(ValueError, match="needs 4 devices"):
        parallel.mesh_shape(_mesh_cfg(data=4), 8)


def test_logical_to_spec_drops_unusable_axes():
    mesh = jax.sharding.AbstractMesh((2, 4, 2, 1), parallel.MESH_AXES)
    assert parallel.logical_to_spec(("embed", "heads"), (64, 64), mesh) == P("fsdp")  # tensor=1
    assert parallel.logical_to_spec(("batch", None), (8, 3), mesh) == P(("data", "fsdp"))
    assert parallel.logical_to_spec(("batch",), (2,), mesh) == P("data")  # 4 does not divide
    assert parallel.logical_to_spec(("batch", "frames"), (8, 6), mesh) == P(
        ("data", "fsdp"), "context"
    )
    assert parallel.logical_to_spec(("frames", "tokens"), (4, 4), mesh) == P("context")  # once
    assert parallel.logical_to_spec((None, "unknown"), (4, 4), mesh) == P()


def test_constrain_is_identity_without_mesh():
    x = jnp.ones((2, 4, 8, 16))
    assert parallel.constrain(x, parallel.SPATIAL_LAYOUT) is x


def test_state_specs_follow_params_through_adafactor():
    from stiv_jax.optim import make_optimizer

    config = ml_collections.ConfigDict(
        dict(lr=1e-3, warmup_steps=0, b1=0.9, b2=0.999, clip_norm=1.0, weight_decay=0.0)
    )
    tx = make_optimizer(config)
    params = {"w": jnp.zeros((2, 256, 128)), "b": jnp.zeros((128,))}
    state = {"step": jnp.zeros([], jnp.int32), "params": params, "ema": params}
    state["opt"] = tx.init(params)
    abstract = jax.eval_shape(lambda: state)
    p_specs = {"w": P(None, "fsdp", "tensor"), "b": P("tensor")}
    specs = parallel.state_specs(abstract, p_specs)
    flat = {
        jax.tree_util.keystr(k): (tuple(x.shape), s)
        for (k, s), x in zip(
            jax.tree_util.tree_flatten_with_path(specs["opt"], is_leaf=lambda s: isinstance(s, P))[
                0
            ],
            jax.tree.leaves(abstract["opt"]),
        )
    }
    got = {(shape, spec) for shape, spec in flat.values()}
    assert ((2, 256), P(None, "fsdp")) in got  # AdaFactor row statistics
    assert ((2, 128), P(None, "tensor")) in got  # column statistics
    assert ((2, 256, 128), P(None, "fsdp", "tensor")) in got  # first moment
    assert ((128,), P("tensor")) in got  # unfactored second moment of b
    assert ((), P()) in got  # counts


class _Shard:
    """Fake Grain shard v of n: rows numbered globally, state = position."""

    def __init__(self, v, n, global_size):
        self.v, self.per, self.pos = v, global_size // n, 0

    def __iter__(self):
        return self

    def __next__(self):
        base = self.pos * 1000 + self.v * self.per
        self.pos += 1
        return {"x": np.arange(base, base + self.per), "y": np.full((self.per, 2), self.v)}

    def get_state(self):
        return {"pos": self.pos}

    def set_state(self, s):
        self.pos = s["pos"]


def _host(rows, num_shards=4, size=8):
    return parallel.HostData(
        lambda v, n: _Shard(v, n, size), num_shards=num_shards, global_size=size, rows=rows
    )


def test_host_data_rows_and_state_across_layouts():
    # 2 processes x 4 shards: process 1 holds rows 4..7, i.e. shards 2 and 3.
    h = _host(np.arange(4, 8))
    assert sorted(h.iters) == [2, 3]
    np.testing.assert_array_equal(next(h)["x"], [4, 5, 6, 7])
    # Resume on one process holding every row: merge the two processes' states.
    h0 = _host(np.arange(0, 4))
    next(h0)
    merged = {"num_shards": 4, "shards": {}}
    for part in (h0, h):
        merged["shards"].update(json.loads(part.get_state())["shards"])
    one = _host(np.arange(8))
    one.set_state(merged)
    np.testing.assert_array_equal(next(one)["x"], np.arange(1000, 1008))
    # Rows in non-adjacent shards (e.g. an interleaved TPU device order).
    gaps = _host(np.array([0, 1, 6, 7]))
    np.testing.assert_array_equal(next(gaps)["x"], [0, 1, 6, 7])
    # Rows inside one shard (more processes than shards): sliced out in order.
    part = _host(np.array([5, 6]), num_shards=2)
    np.testing.assert_array_equal(next(part)["x"], [5, 6])
    with pytest.raises(ValueError, match="checkpoint has 2 data shards"):
        one.set_state({"num_shards": 2, "shards": {}})
    with pytest.raises(ValueError, match="multiple of the 3 data shards"):
        _host(np.arange(8), num_shards=3)


def test_read_data_states_merges_process_files(tmp_path):
    for i, shards in enumerate(({"0": {"pos": 3}}, {"1": {"pos": 3}})):
        (tmp_path / f"process_{i}-of-2.json").write_text(
            json.dumps({"num_shards": 2, "shards": shards})
        )
    merged = parallel.read_data_states(str(tmp_path))
    assert merged == {"num_shards": 2, "shards": {"0": {"pos": 3}, "1": {"pos": 3}}}
    assert parallel.read_data_states(str(tmp_path / "missing")) is None


def _elems(tuple_shape: str) -> int:
    return sum(
        math.prod(int(d) for d in dims.split(",") if d)
        for dims in re.findall(r"\[([0-9,]*)\]", tuple_shape)
    )


@pytest.mark.slow
@pytest.mark.timeout(1800)  # minutes of XLA compiles on 2 shared cores
def test_sharded_train_step_matches_single_device_and_context_all_to_all():
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    worker = os.path.join(ROOT, "tests", "parallel", "sharded_step_worker.py")
    proc = subprocess.run(
        [sys.executable, worker], env=env, cwd=ROOT, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    steps = {tuple(r["mesh"]): r for r in rows if "mesh" in r}
    assert set(steps) == {(8, 1, 1, 1), (2, 4, 1, 1), (2, 1, 2, 2), (1, 2, 4, 1)}
    for shape, r in steps.items():
        # fp32 tolerance: reductions run in another order on another mesh.
        assert abs(r["loss"] - r["ref_loss"]) <= 1e-5 * abs(r["ref_loss"]), (shape, r)
        assert abs(r["grad_norm"] - r["ref_grad_norm"]) <= 1e-5 * r["ref_grad_norm"], (shape, r)
        assert r["params_max_abs_update"] > 1e-4, r  # the step really moved the params
        assert r["params_max_abs_diff"] <= 1e-6, (shape, r)
        assert r["ema_max_abs_diff"] <= 1e-6 and r["opt_max_abs_diff"] <= 1e-5, (shape, r)
    # Parameters are sharded as the rules say: fsdp on embed, tensor on heads.
    assert steps[(8, 1, 1, 1)]["qkv_spec"] == []
    assert steps[(2, 4, 1, 1)]["qkv_spec"] == ["fsdp"]
    assert steps[(2, 1, 2, 2)]["qkv_spec"] == ["None", "tensor"]
    blocks = {tuple(r["block_mesh"]): r for r in rows if "block_mesh" in r}
    for shape, r in blocks.items():
        assert r["max_abs_diff"] <= 1e-5, (shape, r)
    # Context meshes switch x [B, F, S, D] from frames- to tokens-sharded with all-to-alls
    # that move exactly this device's block input; a data-only mesh has none.
    assert blocks[(4, 1, 1, 1)]["all_to_all"] == []
    for shape in ((1, 1, 4, 1), (1, 2, 2, 2)):
        r = blocks[shape]
        local = r["x_elems"] // (shape[1] * shape[2])
        assert any(_elems(a) == local for a in r["all_to_all"]), (shape, r["all_to_all"])
