"""stiv_jax.host_memory: when the malloc policy applies, and that it keeps freed memory.

The policy changes the whole process, so each check of its effect runs in a child Python.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import textwrap

import pytest

from stiv_jax import host_memory

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Mallocs, frees and mallocs again a 64 MiB block; prints the policy and the minor
# page faults of the second allocation (glibc's default maps a block this large anew).
CHILD = textwrap.dedent(
    """
    import ctypes, json, resource, sys
    from stiv_jax import host_memory
    if sys.argv[1] == "jax_first":
        import jax
        jax.devices()
    policy = host_memory.configure()
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
    def touch():  # malloc (not numpy, which asks for huge pages), write every byte
        p = libc.malloc(64 << 20)
        ctypes.memset(p, 1, 64 << 20)
        return p
    libc.free(touch())
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    touch()
    f1 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    print(json.dumps({"policy": policy, "faults": f1 - f0}))
    """
)


def _child(choice: str, order: str = "policy_first") -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT, STIV_JAX_MALLOC=choice)
    out = subprocess.run(
        [sys.executable, "-c", CHILD, order], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_cpu_only_reads_jax_platforms_then_the_device_nodes(tmp_path):
    assert host_memory.cpu_only({"JAX_PLATFORMS": "cpu"})
    assert not host_memory.cpu_only({"JAX_PLATFORMS": "tpu,cpu"})
    node = tmp_path / "accel0"
    node.write_text("")
    assert not host_memory.cpu_only({}, nodes=(str(tmp_path / "accel*"),))
    assert host_memory.cpu_only({}, nodes=(str(tmp_path / "nvidia[0-9]*"),))


def test_a_bad_choice_is_a_one_line_error_naming_it():
    with pytest.raises(ValueError, match="STIV_JAX_MALLOC='fast'; expected one of auto, keep"):
        host_memory.configure({"STIV_JAX_MALLOC": "fast"})


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the policy is glibc's mallopt")
def test_keep_reuses_freed_memory_and_system_maps_it_anew():
    keep, system = _child("keep"), _child("system")
    assert keep["policy"].startswith("freed memory kept"), keep
    assert system["policy"] == "glibc defaults", system
    pages = (64 << 20) // os.sysconf("SC_PAGE_SIZE")
    assert system["faults"] > pages // 2, system  # a fresh mapping, faulted in page by page
    assert keep["faults"] < pages // 20, keep  # the freed block, already resident


def test_it_refuses_once_jax_has_started():
    late = _child("keep", order="jax_first")
    assert late["policy"] == "unchanged (JAX started first)", late


@pytest.mark.parametrize(
    "tool",
    ["stiv_jax.train", "stiv_jax.sample", "stiv_jax.evaluate", "data_pipeline.cache_latents"],
)
def test_a_tool_given_a_bad_choice_stops_with_one_line(tmp_path, tool):
    args = ["--config", "configs/stiv.py:variant=tiny"]
    args += {
        "stiv_jax.sample": ["--prompts", "p", "--out", "o"],
        "stiv_jax.evaluate": ["--out", "o"],
        "data_pipeline.cache_latents": [
            "--in",
            str(tmp_path / "in"),
            "--out",
            str(tmp_path / "wd"),
        ],
    }.get(tool, [])
    if not tool.startswith("data_pipeline"):
        args += ["--workdir", str(tmp_path / "wd")]
    env = dict(os.environ, JAX_PLATFORMS="cpu", STIV_JAX_MALLOC="fast")
    proc = subprocess.run(
        [sys.executable, "-m", tool, *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == [
        "error: STIV_JAX_MALLOC='fast'; expected one of auto, keep, system"
    ], proc.stderr[-2000:]
    assert not os.path.exists(tmp_path / "wd")
