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
    # The tiny state (params + EMA + AdaFactor moments, fp32) is ~2.6 MB unsharded; sharded
    # over fsdp x tensor each chip holds well under that (plus the replicated batch).
    assert 0 < r["argument_gib"] * 2**30 < 2.6e6
    assert r["flops_per_step"] > 1e8
    assert 0 < r["roofline_mfu"] <= 1 and r["roofline_s"] > 0


def test_unknown_topology_is_one_clear_error():
    proc = _run("--config=configs/stiv.py:variant=tiny", "--topology=v5p", timeout=300)
    assert proc.returncode != 0
    assert "error: topology 'v5p' must look like v5p:2x2x1" in proc.stderr
