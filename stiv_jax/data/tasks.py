"""Training task mix: which latent frames a sample gives the model as clean conditions.

Shapes: F latent frames; `task_cond_mask` returns bool [F] (True = frame given).
  t2v      nothing given (text-to-video)
  ti2v     frame 0 given (text-image-to-video)
  predict  the first `predict_frames` given (video prediction)
  interp   the first and the last given (frame interpolation)
  keyframes  1-3 frames at random positions given (never all), so that conditions at any
           frame (`stiv_jax.cond_media`) are seen in training
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

TASKS = ("t2v", "ti2v", "predict", "interp", "keyframes")
MAX_KEYFRAMES = 3


def task_probs_array(probs: Mapping[str, float]) -> np.ndarray:
    """Validated, normalised probabilities float64 [len(TASKS)] in `TASKS` order."""
    unknown = sorted(set(probs) - set(TASKS))
    if unknown:
        raise ValueError(f"task_probs names {unknown} are unknown; expected a subset of {TASKS}")
    p = np.array([float(probs.get(name, 0.0)) for name in TASKS], np.float64)
    if not np.all(np.isfinite(p)) or np.any(p < 0):
        raise ValueError(f"task_probs {dict(probs)} must be finite and non-negative")
    if p.sum() <= 0:
        raise ValueError(f"task_probs {dict(probs)} must have a positive sum")
    return p / p.sum()


def sample_task(rng: np.random.Generator, probs: Mapping[str, float]) -> int:
    """Index into `TASKS` drawn with the (normalised) probabilities `probs`."""
    return int(rng.choice(len(TASKS), p=task_probs_array(probs)))


def task_index(task: int | str) -> int:
    if isinstance(task, str):
        if task not in TASKS:
            raise ValueError(f"task={task!r} is unknown; expected one of {TASKS}")
        return TASKS.index(task)
    if not 0 <= int(task) < len(TASKS):
        raise ValueError(f"task={task} is out of range; expected 0..{len(TASKS) - 1} ({TASKS})")
    return int(task)


def task_cond_mask(
    task: int | str,
    num_latent_frames: int,
    predict_frames: int,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """bool [F]: the latent frames given as clean conditions for `task`.

    `rng` draws the keyframes' count and positions (None: a fixed draw, for checks)."""
    name = TASKS[task_index(task)]
    f = int(num_latent_frames)
    if f < 1:
        raise ValueError(f"num_latent_frames={num_latent_frames} must be >= 1")
    mask = np.zeros(f, bool)
    if name == "ti2v":
        mask[0] = True
    elif name == "predict":
        if not 1 <= predict_frames < f:
            raise ValueError(
                f"predict_frames={predict_frames} must be in [1, {f - 1}] for {f} latent frames"
            )
        mask[:predict_frames] = True
    elif name == "interp":
        if f < 3:
            raise ValueError(f"interp needs >= 3 latent frames, got num_latent_frames={f}")
        mask[[0, -1]] = True
    elif name == "keyframes":
        if f < 2:
            raise ValueError(f"keyframes needs >= 2 latent frames, got num_latent_frames={f}")
        rng = np.random.default_rng(0) if rng is None else rng
        n = int(rng.integers(1, min(MAX_KEYFRAMES, f - 1) + 1))
        mask[rng.choice(f, n, replace=False)] = True
    return mask


def checked_task_probs(
    probs: Mapping[str, float], latent_frames: int, predict_frames: int
) -> dict[str, float]:
    """`probs` as a dict, every task with p > 0 checked against `latent_frames` up front
    (fail at construction, not on the first rare draw)."""
    probs = {k: float(v) for k, v in dict(probs).items()}
    p = task_probs_array(probs)
    for i, name in enumerate(TASKS):
        if p[i] > 0:
            task_cond_mask(name, latent_frames, predict_frames)
    return probs


def draw_task(
    rng: np.random.Generator,
    probs: Mapping[str, float],
    latent_frames: int,
    predict_frames: int,
) -> tuple[np.int32, np.ndarray]:
    """(task index int32, cond_mask bool [F]) of one training example."""
    task = sample_task(rng, probs)
    return np.int32(task), task_cond_mask(task, latent_frames, predict_frames, rng)
