"""tpu_scripts.aot_compile: the tiny train step compiles for v5p:2x2x1 from abstract inputs.

Runs in a subprocess: libtpu initialisation prints to stderr and must not touch the CPU
test process. Skipped only when libtpu cannot be imported.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("libtpu") is None, reason="libtpu is not installed ([tpu] extra)"
)


def _run(*args, timeout=900):
    env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="")
    return subprocess.run(
        [sys.executable, "-m", "tpu_scripts.aot_compile", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def _state_bytes() -> int:
    """Bytes of the unsharded tiny train state (params, EMA, optimizer), from shapes only."""
    import jax
    from flax import nnx

    from configs.stiv import get_config
    from stiv_jax.model.stiv import STIV
    from stiv_jax.optim import make_optimizer
    from stiv_jax.runtime import fill_train_grid
    from stiv_jax.train import init_state

    c = get_config("variant=tiny,res=16,frames=4")
    c.model.depth, c.model.decoder_depth = 1, 1
    fill_train_grid(c)
    tx = make_optimizer(c.optim)
    model = lambda: STIV(c.model, in_channels=3, rngs=nnx.Rngs(0))
    state = jax.eval_shape(lambda: init_state(model(), tx)[1])
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state))


@pytest.mark.slow
@pytest.mark.timeout(1800)  # minutes of XLA compiles on 2 shared cores
def test_tiny_train_step_compiles_for_v5p(tmp_path):
    out = tmp_path / "aot.json"
    proc = _run(
        "--config=configs/stiv.py:variant=tiny,res=16,frames=4",
        "--topology=v5p:2x2x1",
        "--config.model.depth=1",
        "--config.model.decoder_depth=1",
        "--config.data.batch_size=4",
        "--config.mesh.data=1",
        "--config.mesh.fsdp=2",
        "--config.mesh.tensor=2",
        f"--json={out}",
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "train step on v5p:2x2x1 (4 chips" in proc.stdout
    (r,) = json.loads(out.read_text())
    assert r["chips"] == 4 and r["mesh"] == {"data": 1, "fsdp": 2, "context": 1, "tensor": 2}
    assert r["fits"] and 0 < r["total_gib"] < r["hbm_gib"]
    # Sharded over fsdp x tensor, each chip holds well under the whole train state.
    full = _state_bytes()
    assert 0 < r["argument_gib"] * 2**30 < 0.6 * full, (r["argument_gib"] * 2**30, full)
    assert r["flops_per_step"] > 1e8
    assert 0 < r["roofline_mfu"] <= 1 and r["roofline_s"] > 0


def test_unknown_topology_is_one_clear_error():
    proc = _run("--config=configs/stiv.py:variant=tiny", "--topology=v5p", timeout=300)
    assert proc.returncode != 0
    assert "error: topology 'v5p' must look like v5p:2x2x1" in proc.stderr


MULTISLICE = """
import json, ml_collections
from stiv_jax import parallel
from jax.experimental import topologies
devs = topologies.get_topology_desc(
    platform="tpu", topology_name="v5p:2x2x1", num_slices=2
).devices
cfg = ml_collections.ConfigDict(dict(data=-1, fsdp=2, context=1, tensor=1))
mesh = parallel.make_mesh(cfg, devs)
print(json.dumps({"shape": list(mesh.axis_sizes),
                  "slices": [[d.slice_index for d in row.flat] for row in mesh.devices]}))
"""


def _script_json(script: str, timeout: int) -> dict:
    """Runs `script` in a fresh process with libtpu loadable; its last stdout line as JSON."""
    env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="", ALLOW_MULTIPLE_LIBTPU_LOAD="1")
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_multislice_mesh_spans_slices_on_data():
    r = _script_json(MULTISLICE, timeout=300)
    assert r["shape"] == [4, 2, 1, 1]
    # data rows 0-1 on slice 0, rows 2-3 on slice 1: only the data axis crosses DCN
    assert r["slices"] == [[0, 0], [0, 0], [1, 1], [1, 1]]


SCAN_COST = """
import copy, json
from configs.stiv import get_config
from stiv_jax import parallel
from tpu_scripts import aot_compile as a
c = get_config("variant=tiny,res=16,frames=4")
c.model.depth, c.model.decoder_depth, c.model.scan_blocks = 3, 1, True
c.data.batch_size = 4
devs = a.topology_devices("v5p:2x2x1")
r = a.compile_train_step(c, "v5p:2x2x1", devs)
u = copy.deepcopy(c)
u.model.scan_blocks = False
flops, nbytes = a.xla_cost(a._lower_train_step(u, parallel.make_mesh(u.mesh, devs)))
print(json.dumps(dict(corrected=r.flops_per_step / r.chips, corrected_bytes=r.bytes_per_chip,
                      once=r.xla_flops_loop_once / r.chips, flops=flops, bytes=nbytes)))
"""


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_scanned_blocks_are_counted_depth_times():
    """XLA counts a scan body once; the 1-/2-block extrapolation equals the unrolled count."""
    r = _script_json(SCAN_COST, timeout=1700)
    assert r["once"] < 0.7 * r["flops"]  # the raw count misses two of the three blocks
    assert r["corrected"] == pytest.approx(r["flops"], rel=1e-3)
    assert r["corrected_bytes"] == pytest.approx(r["bytes"], rel=2e-2)


def test_program_over_hbm_is_reported_as_does_not_fit(tmp_path):
    """libtpu refuses a program over HBM; the report says so instead of a traceback."""
    out = tmp_path / "oom.json"
    proc = _run(
        "--config=configs/stiv.py:variant=tiny,res=128,frames=32",
        "--topology=v5e:2x2",
        "--config.data.batch_size=256",
        "--config.model.depth=1",
        "--config.model.decoder_depth=1",
        f"--json={out}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "DOES NOT FIT: RESOURCE_EXHAUSTED" in proc.stdout
    (r,) = json.loads(out.read_text())
    assert r["fits"] is False and r["what"] == "train step" and r["chips"] == 4
    assert r["required_gib"] > r["hbm_gib"] > 15.0


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_tiny_sampler_step_compiles_sharded_for_v5p(tmp_path):
    out = tmp_path / "aot.json"
    proc = _run(
        "--config=configs/stiv.py:variant=tiny,res=16,frames=4",
        "--topology=v5p:2x2x1",
        "--sample",
        "--notrain",
        "--exact_cost=false",
        "--config.model.dtype=bfloat16",
        "--config.sample.batch_size=4",
        "--config.mesh.data=1",
        "--config.mesh.fsdp=-1",
        f"--json={out}",
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "sampler: one guided ODE step (batch 4, CFG 8) on v5p:2x2x1 (4 chips" in proc.stdout
    (r,) = json.loads(out.read_text())
    assert r["mesh"] == {"data": 1, "fsdp": 4, "context": 1, "tensor": 1} and r["fits"]
    # bf16 kernels sharded over 4 chips: a chip's arguments (its params share + the
    # replicated inputs, which dominate for this tiny model) stay under one full fp32 copy
    # of the params, which a replicated restore alone would exceed.
    assert 0 < r["argument_gib"] < r["param_gib"], r
