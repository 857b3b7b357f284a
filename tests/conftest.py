"""Shared test setup: CPU only, tiny configs."""

import os
import shutil
import tempfile

# libtpu may be installed (the [tpu] extra, for AOT compile tests); the suite runs on CPU.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

# One persistent XLA compilation cache for the whole run, fresh each run: set before JAX is
# imported, so the tests and every CLI they start (subprocesses inherit the environment)
# compile a program once. Many tests train, sample or resume the same tiny model, and on CI's
# 2 cores compiling is most of their time (a 10-step tiny run: 131 s cold, 51 s cached). The
# multi-process tests remove it (their runs hang with a shared cache). A cache you set
# yourself is used as is.
_OWN_CACHE = None
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _OWN_CACHE = tempfile.mkdtemp(prefix="stiv_jax_test_xla_")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _OWN_CACHE

import pytest  # noqa: E402


def pytest_sessionfinish(session, exitstatus):
    if _OWN_CACHE:
        shutil.rmtree(_OWN_CACHE, ignore_errors=True)


@pytest.fixture
def tiny_config():
    """The tiny variant shrunk to 16x16 pixels, 4 frames, batch 2."""
    from configs.stiv import get_config

    c = get_config("variant=tiny")
    c.data.res, c.data.frames, c.data.batch_size = 16, 4, 2
    return c
