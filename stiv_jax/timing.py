"""Step time without compiles: `sec_per_step` measures training, not XLA.

  clock = StepClock()
  with clock.pause():        # sampling videos, an ahead-of-time compile: not a training step
      ...
  sec = clock.elapsed() / steps; clock.reset()

Every XLA compile in the process (the train step, but also the text encoder's and the
autoencoder's first calls per batch shape inside the data step) is counted through JAX's
monitoring events and left out, so the first logged value is not 10x the rest and no
later bucket compile makes a spike in TensorBoard.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

# Lowering to MLIR and the backend compile (persistent-cache reads included); not nested.
_EVENTS = (
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
)
_total = [0.0]
_registered = [False]


def _listen(event: str, duration: float, **_) -> None:
    if event in _EVENTS:
        _total[0] += duration


def compile_seconds() -> float:
    """Seconds this process spent lowering and compiling XLA programs since the first call."""
    if not _registered[0]:
        import jax

        jax.monitoring.register_event_duration_secs_listener(_listen)
        _registered[0] = True
    return _total[0]


class StepClock:
    """Wall time since `reset()` less compiles and the intervals marked with `pause()`."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.t0, self.c0, self.paused = time.perf_counter(), compile_seconds(), 0.0

    @contextlib.contextmanager
    def pause(self) -> Iterator[None]:
        t, c = time.perf_counter(), compile_seconds()
        try:
            yield
        finally:  # the compiles inside are already left out by elapsed()
            self.paused += (time.perf_counter() - t) - (compile_seconds() - c)

    def elapsed(self) -> float:
        wall = time.perf_counter() - self.t0
        return max(wall - self.paused - (compile_seconds() - self.c0), 0.0)
