"""Probing, decoding and encoding videos with OpenCV (its bundled FFmpeg).

Shapes: T frames, H x W pixels; frames are uint8 RGB [T, H, W, 3].
OpenCV, not PyAV: `opencv-python-headless` is already a runtime dependency (the motion score
needs it), its FFmpeg decodes every container the engine meets, it reads mp4 bytes from
memory (OpenCV >= 4.10) for the Grain pipeline, and PySceneDetect's default backend is
OpenCV too, so scene cuts and our frame indices come from the same decoder.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Iterator

import cv2
import numpy as np


class ProbeError(Exception):
    """A video that cannot be used; `reason` is the report's counter name."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class Probe:
    frames: int  # container frame count (decoding may find fewer in a truncated file)
    fps: float
    height: int
    width: int

    @property
    def duration(self) -> float:
        return self.frames / self.fps


@dataclasses.dataclass(frozen=True)
class ProbeLimits:
    min_frames: int = 2  # fewer decodable frames is "too_short"
    min_side: int = 8  # a side below this is "bad_size" (not a video we can crop from)
    max_side: int = 16384  # a side above this is "bad_size" (absurd, or a corrupt header)
    max_aspect: float = 8.0  # long / short side above this is "bad_size"
    max_fps: float = 1000.0  # fps outside (0, max_fps] is "bad_fps"


def probe(path: str, limits: ProbeLimits = ProbeLimits()) -> Probe:
    """Metadata of `path` after decoding its first frame; raises ProbeError(reason)."""
    if not os.path.isfile(path) or not os.access(path, os.R_OK):
        raise ProbeError("unreadable", f"{path!r} is not a readable file")
    if os.path.getsize(path) == 0:
        raise ProbeError("empty", f"{path!r} has 0 bytes")
    cap = cv2.VideoCapture(path)
    try:
        if not cap.isOpened():
            raise ProbeError("undecodable", f"{path!r} could not be opened as a video")
        ok, frame = cap.read()
        frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    finally:
        cap.release()
    if not ok or frame is None:
        reason = "zero_frames" if frames == 0 else "undecodable"
        raise ProbeError(reason, f"{path!r}: no frame could be decoded ({frames} in header)")
    h, w = frame.shape[:2]
    if min(h, w) < limits.min_side or max(h, w) > limits.max_side:
        raise ProbeError(
            "bad_size",
            f"{path!r} is {w}x{h}; expected sides in [{limits.min_side}, {limits.max_side}]",
        )
    if max(h, w) / min(h, w) > limits.max_aspect:
        raise ProbeError("bad_size", f"{path!r} is {w}x{h}; aspect above {limits.max_aspect}")
    if not 0.0 < fps <= limits.max_fps:
        raise ProbeError("bad_fps", f"{path!r} reports fps={fps}; expected (0, {limits.max_fps}]")
    if frames < limits.min_frames:
        raise ProbeError(
            "too_short", f"{path!r} has {frames} frames; expected >= {limits.min_frames}"
        )
    return Probe(frames=frames, fps=fps, height=h, width=w)


def storage_size(height: int, width: int, max_side: int) -> tuple[int, int]:
    """(h, w) with the long side <= max_side, aspect kept, both even (mp4 chroma needs it)."""
    scale = min(1.0, max_side / max(height, width))
    h = max(2, int(round(height * scale / 2)) * 2)
    w = max(2, int(round(width * scale / 2)) * 2)
    return h, w


def iter_frames(path: str, size: tuple[int, int] | None = None) -> Iterator[np.ndarray]:
    """Decoded RGB frames of `path`, resized to `size` = (h, w) if given, until decoding stops."""
    cap = cv2.VideoCapture(path)
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                return
            if size is not None and frame.shape[:2] != size:
                frame = cv2.resize(frame, (size[1], size[0]), interpolation=cv2.INTER_AREA)
            yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    finally:
        cap.release()


def encode_mp4(frames: np.ndarray, fps: float, tmp_dir: str | None = None) -> bytes:
    """MPEG-4 Part 2 ("mp4v") bytes of uint8 [T, H, W, 3]; the codec every OpenCV build writes."""
    t, h, w, _ = frames.shape
    fd, path = tempfile.mkstemp(suffix=".mp4", dir=tmp_dir)
    os.close(fd)
    try:
        writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (w, h))
        if not writer.isOpened():
            raise RuntimeError(f"OpenCV could not open an mp4v writer for {w}x{h} at {fps} fps")
        for f in frames:
            writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
        writer.release()
        with open(path, "rb") as f:
            return f.read()
    finally:
        os.remove(path)
