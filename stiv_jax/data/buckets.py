"""Resolution/duration buckets: every batch has one (T, H, W) so the trainer compiles once each.

Shapes: B batch, T pixel frames, H x W pixel size. A bucket is a pixel clip shape
(T, H, W). A clip of h x w pixels and n frames goes to the bucket whose aspect ratio is
closest to h / w (in log space) among the buckets with T <= n; ties go to the longer bucket,
then the larger area. Clips that fit no bucket are dropped and counted by the pipeline.

Config (read with defaults, so configs without these fields keep working):
  config.data.buckets.shapes   tuple of "TxHxW" strings; default (f"{frames}x{res}x{res}",)
  config.data.buckets.weights  "count" (mix buckets in proportion to their clips) or
                               "uniform"; default "count"
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

WEIGHTINGS = ("count", "uniform")


@dataclasses.dataclass(frozen=True)
class Bucket:
    """One batch shape: `frames` pixel frames T of `height` x `width` pixels."""

    frames: int
    height: int
    width: int

    @property
    def aspect(self) -> float:
        return self.height / self.width

    def shape_row(self) -> tuple[int, int, int]:
        """The shard index row (height, width, num_frames) of a clip of exactly this shape."""
        return (self.height, self.width, self.frames)

    def __str__(self) -> str:
        return f"{self.frames}x{self.height}x{self.width}"


def parse_bucket(text: str) -> Bucket:
    """Parses "TxHxW" (e.g. "8x32x48")."""
    parts = str(text).lower().split("x")
    try:
        t, h, w = (int(p) for p in parts)
    except ValueError:
        raise ValueError(
            f"bucket {text!r} is not 'TxHxW' with three integers, e.g. '8x32x48'"
        ) from None
    if min(t, h, w) < 1:
        raise ValueError(f"bucket {text!r} has a non-positive dimension; expected T, H, W >= 1")
    return Bucket(t, h, w)


def buckets_from_config(config) -> tuple[list[Bucket], str]:
    """(buckets, weighting) from `config.data.buckets`, defaulting to one square bucket."""
    data = config.data
    default = (f"{data.frames}x{data.res}x{data.res}",)
    spec = data.get("buckets", None)
    shapes = spec.get("shapes", default) if spec is not None else default
    weights = spec.get("weights", "count") if spec is not None else "count"
    if isinstance(shapes, str):
        shapes = tuple(s for s in shapes.split(",") if s.strip())
    buckets = [parse_bucket(s) for s in shapes]
    if not buckets:
        raise ValueError("config.data.buckets.shapes is empty; expected at least one 'TxHxW'")
    if len(set(buckets)) != len(buckets):
        raise ValueError(f"config.data.buckets.shapes={tuple(shapes)} has duplicates")
    if weights not in WEIGHTINGS:
        raise ValueError(f"config.data.buckets.weights={weights!r}; expected one of {WEIGHTINGS}")
    return buckets, weights


def assign_bucket(buckets: Sequence[Bucket], height: int, width: int, num_frames: int) -> int:
    """Index of the bucket for a clip of `height` x `width` and `num_frames`, or -1 if none fits."""
    best, best_key = -1, None
    log_aspect = math.log(height / width)
    for i, b in enumerate(buckets):
        if b.frames > num_frames:
            continue
        key = (abs(math.log(b.aspect) - log_aspect), -b.frames, -b.height * b.width)
        if best_key is None or key < best_key:
            best, best_key = i, key
    return best


def assign_all(buckets: Sequence[Bucket], meta: np.ndarray) -> np.ndarray:
    """Bucket index per record from meta int [N, 3] = (height, width, num_frames); -1 = none."""
    meta = np.asarray(meta)
    if meta.ndim != 2 or meta.shape[1] != 3:
        raise ValueError(f"record meta shape {meta.shape} is not [N, 3] (height, width, frames)")
    return np.array([assign_bucket(buckets, *map(int, row)) for row in meta], dtype=np.int64)


def mix_weights(counts: Sequence[int], weighting: str) -> list[float]:
    """Sampling weight of each non-empty bucket."""
    if weighting == "uniform":
        return [1.0 for _ in counts]
    total = float(sum(counts))
    return [c / total for c in counts]
