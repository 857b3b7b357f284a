"""Host malloc policy for runs on XLA:CPU: a step's buffers stay in the process for the next.

  host_memory.configure()   # first thing in a tool's main, before JAX starts its backend

XLA:CPU runs each program on a worker thread of its client, and glibc gives that thread its
own malloc arena, whose heaps hold at most 64 MB: every larger block of a train step (the
step's temporaries) is `mmap`ed for the step and unmapped after it, so each step faults its
working set back in as fresh, zeroed pages. The S train step (2-core CPU) took 106 k minor
page faults and 165 ms of kernel CPU per step for a 330 ms step. `keep` runs programs on the
thread that calls them (`jax_cpu_enable_async_dispatch` off: the main thread, whose arena is
the process heap) and turns off `mmap` for large blocks (`M_MMAP_MAX` 0) and trimming of the
heap's top (`M_TRIM_THRESHOLD` 2 GiB), so a step's blocks are reused by the next: 0 faults,
8 ms of kernel CPU, a 265 ms step. Numbers, and the variants that do not help (each setting
alone, one arena for all threads, transparent huge pages): docs/performance.md, session 32.
The price is resident memory: the process keeps its peak heap. Python no longer queues a
CPU step behind the running one, which the trainer does not need (its batches are prepared
on their own thread, `stiv_jax/data/prefetch.py`).

The settings must be made before JAX creates its CPU client (`configure` refuses, with a
warning, once a backend is up). They apply when the run is CPU-only: `JAX_PLATFORMS` names
only `cpu`, or, unset, the machine has no TPU or GPU device node. `STIV_JAX_MALLOC`
overrides: `keep` (always), `system` (never: glibc's and JAX's defaults), `auto` or unset
(the rule above). Not glibc (macOS, musl): nothing to do.
"""

from __future__ import annotations

import ctypes
import glob
import logging
import os

import jax
from jax._src import xla_bridge  # backends_are_initialized: no public equivalent

ENV = "STIV_JAX_MALLOC"
CHOICES = ("auto", "keep", "system")
# mallopt parameters (glibc malloc.h) and the values `keep` sets.
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
KEEP = ((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 2**31 - 1))
# Device nodes of the accelerators JAX drives: TPU v2-v5p (accel), v5e/v6e (vfio groups),
# NVIDIA and AMD GPUs.
ACCELERATOR_NODES = ("/dev/accel*", "/dev/vfio/[0-9]*", "/dev/nvidia[0-9]*", "/dev/kfd")

_applied: str | None = None  # what configure() decided, once


def cpu_only(environ=os.environ, nodes=ACCELERATOR_NODES) -> bool:
    """True when JAX will run on the CPU alone (see module docstring)."""
    platforms = [p.strip() for p in environ.get("JAX_PLATFORMS", "").split(",") if p.strip()]
    if platforms:
        return all(p == "cpu" for p in platforms)
    return not any(glob.glob(pattern) for pattern in nodes)


def _mallopt():
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return None


def configure(environ=os.environ) -> str:
    """Applies the policy once; returns what it did (a short phrase for the console)."""
    global _applied
    choice = environ.get(ENV, "auto").strip().lower() or "auto"
    if choice not in CHOICES:
        raise ValueError(f"{ENV}={environ[ENV]!r}; expected one of {', '.join(CHOICES)}")
    if _applied is not None:
        return _applied
    if xla_bridge.backends_are_initialized():
        logging.warning("host malloc policy not set: JAX's backend is already up")
        _applied = "unchanged (JAX started first)"
    elif choice == "system" or (choice == "auto" and not cpu_only(environ)):
        _applied = "glibc defaults"
    elif (mallopt := _mallopt()) is None:
        _applied = "unchanged (not glibc)"
    else:
        jax.config.update("jax_cpu_enable_async_dispatch", False)
        failed = [param for param, value in KEEP if mallopt(param, value) != 1]
        _applied = f"freed memory kept in the process ({ENV}=system turns it off)"
        if failed:  # a glibc without these parameters: the run goes on at its defaults
            logging.warning("mallopt refused parameters %s (glibc malloc.h numbers)", failed)
            _applied = f"partly applied (mallopt refused {failed})"
    return _applied
