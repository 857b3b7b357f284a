"""Multi-host training with local processes (gloo): SIGTERM agreement, resume elsewhere.

Run B: 2 processes x 2 CPU devices, mesh data=2 x fsdp=2, trains >= 20 steps; SIGTERM to
process 1 alone makes both processes save the same step k and exit cleanly.
Run C: ONE process x 4 devices, mesh context=2 x tensor=2, resumes B's checkpoint to k+4.
Run A: 2 processes uninterrupted to k+4. C's losses after k equal A's (fp32 tolerance).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COMMON = [
    "--config=configs/stiv.py:variant=tiny,res=16,frames=4",
    "--config.model.depth=1",
    "--config.model.decoder_depth=1",
    "--config.data.batch_size=4",
    "--config.train.log_every=1",
    "--config.train.ckpt_every=1000",
    "--config.train.async_checkpoint=False",
    "--config.sample.num_train_samples=0",
    "--config.train.unmasked_steps=0",  # the same (masked) step in runs of any length
]
STOP_AFTER = 20  # SIGTERM once this step is logged


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(workdir, *, processes: int, devices: int, mesh: tuple, steps: int, logs):
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    env.pop("JAX_COMPILATION_CACHE_DIR", None)  # multi-process runs hang with a shared cache
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    mesh_flags = [
        f"--config.mesh.{a}={n}" for a, n in zip(("data", "fsdp", "context", "tensor"), mesh)
    ]
    cmd = [sys.executable, "-m", "stiv_jax.train", f"--workdir={workdir}", *COMMON, *mesh_flags]
    cmd.append(f"--config.train.steps={steps}")
    if processes > 1:
        env.update(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{_port()}", JAX_NUM_PROCESSES=str(processes))
    procs = []
    for i in range(processes):
        out = open(os.path.join(logs, f"{os.path.basename(workdir)}_{i}.log"), "w")
        procs.append(
            subprocess.Popen(
                cmd, cwd=ROOT, env=dict(env, JAX_PROCESS_ID=str(i)), stdout=out, stderr=out
            )
        )
    return procs


def _wait(procs, logs, timeout=900):
    deadline = time.time() + timeout
    codes = []
    for p in procs:
        try:
            codes.append(p.wait(timeout=max(1, deadline - time.time())))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
    if any(codes):
        tails = [open(os.path.join(logs, f)).read()[-3000:] for f in sorted(os.listdir(logs))]
        pytest.fail(f"exit codes {codes}:\n" + "\n".join(tails))


def _metrics(workdir) -> dict[int, float]:
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return {}
    out = {}
    for line in open(path):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        out[row["step"]] = row["loss"]
    return out


@pytest.mark.slow
@pytest.mark.timeout(1800)  # minutes of XLA compiles on 2 shared cores
def test_two_hosts_sigterm_then_resume_on_one_host_other_mesh(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    run_b, run_a = str(tmp_path / "B"), str(tmp_path / "A")
    procs = _launch(run_b, processes=2, devices=2, mesh=(2, 2, 1, 1), steps=10_000, logs=logs)
    deadline = time.time() + 900
    while max(_metrics(run_b), default=0) < STOP_AFTER:
        assert all(p.poll() is None for p in procs), "a process died before the SIGTERM"
        assert time.time() < deadline, "run B too slow"
        time.sleep(0.5)
    procs[1].send_signal(signal.SIGTERM)  # only the non-logging host is signalled
    _wait(procs, logs)
    saved = sorted(int(d) for d in os.listdir(os.path.join(run_b, "checkpoints")) if d.isdigit())
    assert len(saved) == 1 and saved[0] >= STOP_AFTER, saved
    k = saved[0]
    data_dir = os.path.join(run_b, "checkpoints", str(k), "data")
    data_files = sorted(f for f in os.listdir(data_dir) if f.endswith(".json"))
    assert data_files == ["process_0-of-2.json", "process_1-of-2.json"], data_files
    for i in range(2):
        why = "SIGTERM" if i == 1 else "a stop signal on another process"  # only 1 was signalled
        assert f"{why}: saved step {k}, exiting" in open(logs / f"B_{i}.log").read(), i
    assert max(_metrics(run_b)) == k

    # Resume on one process with 4 devices and another mesh layout.
    _wait(_launch(run_b, processes=1, devices=4, mesh=(1, 1, 2, 2), steps=k + 4, logs=logs), logs)
    _wait(_launch(run_a, processes=2, devices=2, mesh=(2, 2, 1, 1), steps=k + 4, logs=logs), logs)
    resumed, reference = _metrics(run_b), _metrics(run_a)
    assert sorted(resumed) == sorted(reference) == list(range(1, k + 5))
    for step in range(1, k + 5):
        # same mesh and processes up to k: identical; other mesh after k: fp32 reorderings
        tol = 0.0 if step <= k else 2e-5 * abs(reference[step])
        assert abs(resumed[step] - reference[step]) <= tol, (step, resumed[step], reference[step])
