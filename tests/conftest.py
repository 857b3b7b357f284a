"""Shared test setup: CPU only, tiny configs."""

import os

# libtpu may be installed (the [tpu] extra, for AOT compile tests); the suite runs on CPU.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402


@pytest.fixture
def tiny_config():
    """The tiny variant shrunk to 16x16 pixels, 4 frames, batch 2."""
    from configs.stiv import get_config

    c = get_config("variant=tiny")
    c.data.res, c.data.frames, c.data.batch_size = 16, 4, 2
    return c
