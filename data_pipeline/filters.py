"""Offline clip filters that need no downloaded model: clarity, near-duplicate frames, motion.

Shapes: T frames, H x W pixels; clips are uint8 RGB [T, H, W, 3].
Resolution and orientation are video-level (checked once per file in prepare.py); duration
is enforced when cutting scenes (scenes.py). STIV's aesthetic, OCR-text-area and caption
quality filters need downloaded models and are left out (docs/data_engine.md).
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from stiv_jax.data.motion import motion_score

ORIENTATIONS = ("any", "landscape", "portrait", "square")


@dataclasses.dataclass(frozen=True)
class FilterSettings:
    min_short_side: int = 64  # source short side below this: "resolution"
    orientation: str = "any"  # any | landscape (w > h) | portrait (h > w) | square (h == w)
    motion_interval: int = 12  # Step-Video: frames sampled every 12
    motion_min: float = 0.5  # motion score below: "motion_low" (static / slideshow)
    motion_max: float = 60.0  # above: "motion_high" (shaky, flashes, cuts missed)
    clarity_min: float = 20.0  # mean Laplacian variance below: "blurry"
    dup_threshold: float = 0.5  # mean |Δ| (grey levels, 64-px thumbs) of a near-duplicate pair
    max_dup_fraction: float = 0.5  # more near-duplicate consecutive pairs: "static"

    def __post_init__(self):
        if self.orientation not in ORIENTATIONS:
            raise ValueError(f"orientation={self.orientation!r}; expected one of {ORIENTATIONS}")


def orientation_ok(height: int, width: int, orientation: str) -> bool:
    return {
        "any": True,
        "landscape": width > height,
        "portrait": height > width,
        "square": height == width,
    }[orientation]


def clarity(frames: np.ndarray, interval: int = 12) -> float:
    """Mean variance of the Laplacian of grey frames sampled every `interval` (sharpness)."""
    vals = [
        cv2.Laplacian(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var()
        for f in frames[::interval]
    ]
    return float(np.mean(vals))


def duplicate_fraction(frames: np.ndarray, threshold: float) -> float:
    """Fraction of consecutive frame pairs whose mean |difference| is below `threshold`."""
    if len(frames) < 2:
        return 1.0
    thumbs = np.stack(
        [
            cv2.resize(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), (64, 64), interpolation=cv2.INTER_AREA)
            for f in frames
        ]
    ).astype(np.float32)
    diffs = np.abs(np.diff(thumbs, axis=0)).mean(axis=(1, 2))
    return float(np.mean(diffs < threshold))


def clip_stats(frames: np.ndarray, settings: FilterSettings) -> dict[str, float]:
    """motion, clarity and dup_fraction of a clip (all reported, also for rejected clips)."""
    return {
        "motion": motion_score(frames, interval=settings.motion_interval),
        "clarity": clarity(frames, settings.motion_interval),
        "dup_fraction": duplicate_fraction(frames, settings.dup_threshold),
    }


def clip_verdict(stats: dict[str, float], settings: FilterSettings) -> str | None:
    """The first failed filter's name, or None when the clip is kept."""
    if stats["dup_fraction"] > settings.max_dup_fraction:
        return "static"
    if stats["motion"] < settings.motion_min:
        return "motion_low"
    if stats["motion"] > settings.motion_max:
        return "motion_high"
    if stats["clarity"] < settings.clarity_min:
        return "blurry"
    return None
