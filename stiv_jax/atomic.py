"""Atomic file writes: write to a unique temp name in the target's directory, then `os.replace`.

Readers (a resumed job, another host, `evaluate` listing MP4s) see either the old file or the
whole new one, never a partial write; a failed or killed write leaves at most a `*.tmp*` file
(`os.replace` is atomic within one filesystem, hence the same directory).

    with atomic_path("out/video.mp4", suffix=".mp4") as tmp:   # for writers that take a path
        ffmpeg_write(tmp)
    with atomic_write("out/results.json") as f:                 # for writers that take a file
        json.dump(obj, f)
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from typing import IO

__all__ = ["temp_name", "atomic_path", "atomic_write", "write_text"]


def temp_name(path: str, suffix: str = "") -> str:
    """A unique sibling of `path`: `<path>.<8 hex>.tmp<suffix>` (the suffix keeps an extension
    that the writing library dispatches on, e.g. ".mp4" for ffmpeg)."""
    return f"{path}.{uuid.uuid4().hex[:8]}.tmp{suffix}"


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str, *, suffix: str = "", fsync: bool = False) -> Iterator[str]:
    """Yields a temp path beside `path`; on success renames it onto `path` (after an fsync if
    asked), on an exception removes it and re-raises."""
    path = os.fspath(path)
    tmp = temp_name(path, suffix)
    try:
        yield tmp
        if fsync:
            _fsync(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "w", *, fsync: bool = False, **open_kw) -> Iterator[IO]:
    """`open(path, mode)` that only replaces `path` once the block finished without error."""
    if not mode.startswith(("w", "x")):
        raise ValueError(f"atomic_write mode={mode!r}; expected a write mode ('w', 'wb')")
    with atomic_path(path) as tmp:
        with open(tmp, mode, **open_kw) as f:
            yield f
            if fsync:
                f.flush()
                os.fsync(f.fileno())


def write_text(path: str, text: str, *, fsync: bool = False) -> None:
    """Writes `text` to `path` atomically."""
    with atomic_write(path, "w", fsync=fsync) as f:
        f.write(text)
