"""Grain training pipeline: ShapesBench (or ArrayRecord shards) -> per-host numpy batches.

Shapes (B = per-host batch = data.batch_size // process_count, T pixel frames,
H = W = data.res, F latent frames): the host batch of `stiv_jax.data.schema` with
`video` and `caption` (ShapesBench has no cached latents or text).

Pipeline: source -> host shard `[process_index::process_count]` -> shuffle(seed) -> repeat
-> random_map (task draw; Grain seeds its rng from (seed, position), so it is
deterministic) -> batch -> IterDataset (+ multiprocess prefetch when num_workers > 0).
The iterator's `get_state()` / `set_state()` resume exactly (the state is the position).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

import grain
import numpy as np
from absl import flags

from stiv_jax.data.schema import collate, host_batch_size, normalize_uint8
from stiv_jax.data.shapes import ShapesSource, config_kwargs, generate_clip
from stiv_jax.data.tasks import checked_task_probs, draw_task

# Grain's defaults (16 threads, 500 prefetched elements) would hold 500 *batches* here:
# gigabytes at real batch sizes. A few batches in flight hide the generation latency.
READ_THREADS = 2
PREFETCH_BATCHES = 4
# Shard-backed sources: config.data.source -> "module:function(config, *, latent_frames,
# split, process_index, process_count) -> grain.IterDataset of host batches". The embedded
# ShapesBench source is built below.
SOURCES = {
    "records": "stiv_jax.data.records:records_dataset",
    "tfds": "stiv_jax.data.tfds_source:tfds_dataset",
}


class ToTrainExample:
    """Grain random map: clip dict -> training example (task drawn from the example rng)."""

    def __init__(
        self, probs: Mapping[str, float], latent_frames: int, predict_frames: int, stride: int
    ):
        self.probs = {k: float(v) for k, v in probs.items()}
        self.latent_frames = int(latent_frames)
        self.predict_frames = int(predict_frames)
        self.stride = float(stride)

    def __call__(self, clip: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        video = clip["video"]
        task, cond_mask = draw_task(rng, self.probs, self.latent_frames, self.predict_frames)
        h, w = video.shape[1:3]
        caption = clip["caption"]
        if cond_mask.any():  # bg_drop_tasks="given", given_templates: a frame-given caption
            caption = clip.get("caption_given", caption)
        return {
            "video": normalize_uint8(video),
            "caption": caption,
            "motion_score": np.float32(clip["motion_score"]),
            "micro": np.array([h, w, 0.0, 0.0, self.stride], np.float32),
            "cond_mask": cond_mask,
            "task": task,
        }


def make_dataset(
    config: Any,
    *,
    latent_frames: int,
    split: str = "train",
    process_index: int = 0,
    process_count: int = 1,
) -> grain.IterDataset:
    """Infinite per-host batch stream for `config.data` (see the module docstring)."""
    d = config.data
    if d.source in SOURCES:
        module, name = SOURCES[d.source].split(":")
        backend = getattr(importlib.import_module(module), name)  # lazy: optional backends
        return backend(
            config,
            latent_frames=latent_frames,
            split=split,
            process_index=process_index,
            process_count=process_count,
        )
    if d.source != "shapes":
        raise ValueError(
            f"data.source={d.source!r} is unknown; expected one of {('shapes', *SOURCES)}"
        )
    if split not in ("train", "heldout"):
        raise ValueError(f"split={split!r} is unknown; expected 'train' or 'heldout'")
    batch = host_batch_size(int(d.batch_size), process_index, process_count)
    checked_task_probs(d.task_probs, latent_frames, int(d.predict_frames))
    num = int(d.shapes.num_train)
    if num < process_count:
        raise ValueError(f"data.shapes.num_train={num} must be >= process_count={process_count}")
    seed = int(d.seed) if split == "train" else int(d.shapes.heldout_seed)
    share = float(d.shapes.get("drill_share", 0.0)) if split == "train" else 0.0
    bg_drop = float(d.shapes.get("bg_drop", 0.0)) if split == "train" else 0.0
    free_start = float(d.shapes.get("free_start", 0.0)) if split == "train" else 0.0
    speed_binding = float(d.shapes.get("speed_binding", 0.0)) if split == "train" else 0.0
    speed_drill = float(d.shapes.get("speed_drill", 0.0)) if split == "train" else 0.0
    given_templates = int(d.shapes.get("given_templates", 0)) if split == "train" else 0
    source = ShapesSource(
        num,
        split=split,
        seed=seed,
        drill_share=share,
        free_start=free_start,
        speed_binding=speed_binding,
        speed_drill=speed_drill,
        bg_drop=bg_drop,
        bg_drop_tasks=str(d.shapes.get("bg_drop_tasks", "all")),
        given_templates=given_templates,
        **config_kwargs(config),
    )
    # Per-example randomness differs per host, so hosts do not draw the same task sequence.
    map_seed = int(np.random.SeedSequence([int(d.seed), process_index]).generate_state(1)[0])
    ds = (
        grain.MapDataset.source(source)[process_index::process_count]
        .shuffle(seed=int(d.seed))
        .repeat()
        .random_map(
            ToTrainExample(
                dict(d.task_probs), latent_frames, int(d.predict_frames), int(d.frame_stride)
            ),
            seed=map_seed,
        )
        .batch(batch, drop_remainder=True, batch_fn=collate)
    )
    it_ds = ds.to_iter_dataset(
        grain.ReadOptions(num_threads=READ_THREADS, prefetch_buffer_size=PREFETCH_BATCHES)
    )
    if int(d.num_workers) > 0:
        # Grain's worker processes read absl flags; a library caller (tests, notebooks) may
        # never have parsed them, and then every flag read raises. Defaults are what we want.
        if not flags.FLAGS.is_parsed():
            flags.FLAGS.mark_as_parsed()
        it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=int(d.num_workers)))
    return it_ds


def heldout_cases(config: Any, n: int) -> list[dict[str, Any]]:
    """The first `n` held-out ShapesBench clips with ground truth (fixed for a config).

    Each is `generate_clip`'s dict: video uint8 [T,H,W,3], caption, motion_score, truth.
    """
    if n < 0:
        raise ValueError(f"n={n} must be >= 0")
    seed = int(config.data.shapes.heldout_seed)
    kw = config_kwargs(config)
    return [generate_clip(i, split="heldout", seed=seed, **kw) for i in range(n)]
