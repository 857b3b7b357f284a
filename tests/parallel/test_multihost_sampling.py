"""Batch sampling on two processes (gloo): the prompts are split, nothing is done twice.

Two `python -m stiv_jax.sample` processes share one OUT directory: together they write every
prompt's MP4 exactly once, each logs its own results file, and a one-process rerun finds
everything done. With `sample.shard_params` the params span both processes (2 devices
each): they run every batch in lockstep and process 0 writes each video once.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FLAGS = [
    "--config=configs/stiv.py:variant=tiny",
    "--config.data.res=16",
    "--config.data.frames=4",
    "--config.sample.steps=2",
    "--config.sample.batch_size=2",
]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _checkpoint(workdir: str) -> None:
    from configs.stiv import get_config
    from stiv_jax import checkpoint as ckpt
    from stiv_jax.optim import make_optimizer
    from stiv_jax.runtime import Components, fill_train_grid
    from stiv_jax.train import init_state

    c = get_config("variant=tiny")
    c.data.res, c.data.frames, c.sample.steps = 16, 4, 2
    fill_train_grid(c)
    tx = make_optimizer(c.optim)
    _, state = init_state(Components(c).model(0), tx)
    mngr = ckpt.manager(workdir, max_to_keep=1, async_save=False)
    ckpt.save(mngr, 0, state, None, c, force=True)
    mngr.wait_until_finished()


def _sample(workdir, prompts, out, processes: int, *extra: str, devices: int = 1):
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    env.pop("JAX_COMPILATION_CACHE_DIR", None)  # multi-process runs hang with a shared cache
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    cmd = [sys.executable, "-m", "stiv_jax.sample", f"--workdir={workdir}",
           f"--prompts={prompts}", f"--out={out}", *FLAGS, *extra]  # fmt: skip
    if processes > 1:
        env.update(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{_port()}", JAX_NUM_PROCESSES=str(processes))
    procs = [
        subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=dict(env, JAX_PROCESS_ID=str(i)),
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        for i in range(processes)
    ]
    results = [p.communicate(timeout=900) for p in procs]
    for p, (_, err) in zip(procs, results):
        assert p.returncode == 0, err[-3000:]
    return [json.loads(o.strip().splitlines()[-1]) for o, _ in results]


def test_two_processes_split_the_prompts(tmp_path):
    wd, out = str(tmp_path / "wd"), str(tmp_path / "out")
    _checkpoint(wd)
    ids = [f"p{i}" for i in range(5)]
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(
        "".join(json.dumps({"id": i, "prompt": f"a red circle moves left {i}"}) + "\n" for i in ids)
    )
    counts = _sample(wd, prompts, out, processes=2)
    assert sorted(c["generated"] for c in counts) == [2, 3]
    files = sorted(f for f in os.listdir(out) if f.startswith("results"))
    assert files == ["results.00000-of-00002.jsonl", "results.00001-of-00002.jsonl"]
    logged = [[json.loads(line)["id"] for line in open(os.path.join(out, f))] for f in files]
    assert sorted(logged[0] + logged[1]) == ids and not set(logged[0]) & set(logged[1])
    assert sorted(f for f in os.listdir(out) if f.endswith(".mp4")) == [f"{i}.mp4" for i in ids]
    (again,) = _sample(wd, prompts, out, processes=1)
    assert again == {
        "generated": 0, "skipped_done": 5, "bad_lines": 0, "failed": 0, "claimed_elsewhere": 0
    }  # fmt: skip


@pytest.mark.slow
def test_sharded_params_run_every_batch_in_lockstep(tmp_path):
    wd, out = str(tmp_path / "wd"), str(tmp_path / "out")
    _checkpoint(wd)
    ids = [f"p{i}" for i in range(3)]
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(
        "".join(json.dumps({"id": i, "prompt": f"a red circle moves left {i}"}) + "\n" for i in ids)
    )
    sharded = ("--config.sample.shard_params=True", "--config.mesh.data=1",
               "--config.mesh.fsdp=-1")  # fmt: skip
    counts = _sample(wd, prompts, out, 2, *sharded, devices=2)
    assert [c["generated"] for c in counts] == [3, 0]  # process 0 writes, both compute
    assert sorted(f for f in os.listdir(out) if f.startswith("results")) == ["results.jsonl"]
    logged = [json.loads(line)["id"] for line in open(os.path.join(out, "results.jsonl"))]
    assert sorted(logged) == ids
    assert sorted(f for f in os.listdir(out) if f.endswith(".mp4")) == [f"{i}.mp4" for i in ids]
