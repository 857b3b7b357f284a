"""The console of the command-line tools: our own lines and warnings by default, `--verbosity`
for the libraries' INFO lines, progress bars that log lines do not break.

  console.setup(verbosity)          # once, first thing in a tool's main (absl's --verbosity)
  for x in console.progress(xs, desc="sample"): ...
  with console.timed("compiling train step"): ...      # "compiling train step…" / "… 41.2 s"

Verbosity (absl's `--verbosity`, default 0):
  -1  warnings and errors only
   0  + our INFO lines (stiv_jax, data_pipeline, tpu_scripts, benchmarks, the root logger)
   1  + every library's lines down to DEBUG (Orbax's 60-100 INFO lines per checkpoint,
      JAX's backend probing) and the C++ lines libtpu prints while probing for a TPU on
      a machine without one

Every log line goes through `tqdm.write`, so it lands above the bar instead of cutting it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator

_OWN = ("root", "__main__", "stiv_jax", "data_pipeline", "tpu_scripts", "benchmarks")


class _TqdmHandler(logging.Handler):
    """Writes records with `tqdm.write` (clears and redraws any active bar)."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # noqa: BLE001 -- logging must never raise
            self.handleError(record)


class _OwnOrWarning(logging.Filter):
    """Verbosity 0: our INFO lines and every library's warnings."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or record.name.split(".")[0] in _OWN


class _Formatter(logging.Formatter):
    def __init__(self, names: bool):
        super().__init__(datefmt="%H:%M:%S")
        self.names = names

    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        if record.exc_info:
            msg += "\n" + self.formatException(record.exc_info)
        level = "" if record.levelno == logging.INFO else f"{record.levelname} "
        where = f"[{record.name}] " if self.names and record.name != "root" else ""
        return f"{self.formatTime(record, self.datefmt)} {level}{where}{msg}"


def setup(verbosity: int = 0) -> None:
    """Routes logging and Python warnings to one tqdm-safe console handler at `verbosity`."""
    import absl.logging

    root = logging.getLogger()
    for h in list(root.handlers):  # absl's handler (app.run installs it) and earlier setups
        if isinstance(h, (_TqdmHandler, absl.logging.ABSLHandler)):
            root.removeHandler(h)
    handler = _TqdmHandler()
    handler.setFormatter(_Formatter(names=verbosity >= 1))
    if verbosity <= 0:
        handler.addFilter(_OwnOrWarning())
    root.addHandler(handler)
    level = logging.WARNING if verbosity < 0 else logging.INFO if verbosity == 0 else logging.DEBUG
    root.setLevel(level)
    logging.getLogger("absl").setLevel(logging.NOTSET)  # absl's own level; the root decides
    # warnings.warn -> the "py.warnings" logger -> above the bar. Off, then on: a second setup
    # re-installs the hook even if something replaced `warnings.showwarning` in between.
    logging.captureWarnings(False)
    logging.captureWarnings(True)
    # imageio-ffmpeg starts ffmpeg with subprocess (fork + immediate exec), which JAX's
    # at-fork hook warns about on every MP4; exec'ing at once cannot hit the deadlock it means.
    warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
    if verbosity <= 0:
        _init_backends_quietly()


def _init_backends_quietly() -> None:
    """Initialises JAX's backends with the C-level stderr captured, when libtpu is installed
    but the machine has no TPU chip (the [tpu] extra on a CPU box, for AOT compiles): libtpu's
    probe then prints ~6 C++ lines (metadata server, worker hostnames) that mean nothing there.
    On a TPU VM, or with JAX_PLATFORMS set, nothing is captured."""
    if os.environ.get("JAX_PLATFORMS") or "jax" in sys.modules and _backends_ready():
        return
    try:
        import libtpu  # noqa: F401
        from jax._src import hardware_utils

        if hardware_utils.num_available_tpu_chips_and_device_id()[0] > 0:
            return
    except Exception:  # noqa: BLE001 -- no libtpu (nothing to hide) or another jax layout
        return
    import jax

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            jax.devices()
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _backends_ready() -> bool:
    try:
        from jax._src import xla_bridge

        return bool(xla_bridge._backends)
    except Exception:  # noqa: BLE001
        return False


def progress(iterable=None, **kw):
    """tqdm on process 0 only; sparse refreshes when stderr is a file (no megabyte of \\r lines)."""
    import jax
    from tqdm import tqdm

    tty = sys.stderr.isatty()
    kw.setdefault("disable", jax.process_index() != 0)
    kw.setdefault("mininterval", 0.5 if tty else 30.0)
    kw.setdefault("dynamic_ncols", True)
    return tqdm(iterable, **kw)


@contextlib.contextmanager
def timed(what: str, log=logging.info) -> Iterator[dict]:
    """Logs "`what`…" then "`what`: 12.3 s"; yields a dict whose "seconds" is set on exit."""
    out = {"seconds": 0.0}
    log("%s…", what)
    t0 = time.perf_counter()
    try:
        yield out
    finally:
        out["seconds"] = time.perf_counter() - t0
        log("%s: %.1f s", what, out["seconds"])


def help_for(module: str) -> None:
    """`--help` lists the tool's flags, its docstring and absl's `--verbosity`, also for a
    console script (`stiv-train`: `__main__` is pip's wrapper, so absl would list no flags
    and no docstring). Call after the tool's flags are defined."""
    from absl import flags

    fv = flags.FLAGS
    fv.register_key_flag_for_module(sys.argv[0], fv["verbosity"])
    main = sys.modules.get("__main__")
    if main is None or getattr(getattr(main, "__spec__", None), "name", None) == module:
        return
    for flag in fv.get_key_flags_for_module(module):
        fv.register_key_flag_for_module(sys.argv[0], flag)
    if not getattr(main, "__doc__", None):
        main.__doc__ = sys.modules[module].__doc__
