"""Does each object take ITS direction? The binding probe, and the check after a binding drill.

A binding drill (`data.shapes.drill_objects=2`) shows two objects moving in different
directions; a model has bound the words to the objects when swapping the two directions in
the caption swaps the objects' motion. The probe samples held-out binding-drill clips (the
pipeline's default sampler, frame 0 given unless `t2v`) once under the true caption and
once with the two objects' directions exchanged, the same clips and seeds under both, and
tracks each object by its colour (`stiv_jax.metrics.track_color`):

  own[i], other[i]    cosine of object i's displacement (first to last frame it is seen)
                      with its own direction and with the other object's; NaN when it is
                      seen in fewer than two frames, 0 when it moves < 0.5 px
  swap effect         mean over objects of ((own_true - own_swapped) +
                      (other_swapped - other_true)) / 2

A model that binds trades own and other (effect 1 - cos between the two directions, 0.7 on
average); one that does not leaves both where they were (effect ~0), whatever its own/other
gap, which then comes from the clips and seeds, not the words. Measured (docs/quality.md
§21-24): bound drills +0.6 to +1.2, unbound ones -0.02 to +0.05.

`check_drill` runs it after a binding drill in `train.prelude` (stiv_jax.stages) and stops
the command when the effect is under `train.bind_min`: the mix that follows cannot bring the
binding (§23.3), so an unbound drill would waste the run.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import asdict, dataclass

import numpy as np

from stiv_jax.atomic import atomic_write

NUM_CLIPS = 16  # held-out clips per probe: 32 objects, ~50 s for S on 2 CPU cores
RESULT_FILE = "binding.json"  # the check's result, beside the drill's checkpoints
_SWAP = {"left": "right", "right": "left", "up": "down", "down": "up"}


@dataclass(frozen=True)
class Binding:
    """The probe's figures: per caption (true / swapped), mean cos with own / other direction
    over the tracked objects, the share exact (cos > cos(pi/8)), and the swap effect."""

    step: int
    clips: int
    tracked: int  # objects seen in >= 2 frames under the true caption, of 2 * clips
    own_true: float
    other_true: float
    own_swapped: float
    other_swapped: float
    exact_true: float  # share of tracked objects within half a sector of their own direction
    effect: float

    def summary(self) -> str:
        return (
            f"swap effect {self.effect:+.2f} (own / other direction cos: true caption "
            f"{self.own_true:+.2f} / {self.other_true:+.2f}, swapped {self.own_swapped:+.2f} / "
            f"{self.other_swapped:+.2f}; {self.tracked}/{2 * self.clips} objects tracked)"
        )


def object_cosine(video: np.ndarray, obj: dict, direction: str) -> float:
    """Cosine between an object's colour-tracked displacement (first to last visible frame)
    and `direction`; NaN when it is seen in fewer than two frames, 0 when it moves < 0.5 px.
    video: uint8 [T, H, W, 3]; obj: a clip truth object (its "rgb")."""
    from stiv_jax.data.shapes import DIRECTIONS
    from stiv_jax.metrics import track_color

    tr = track_color(video, obj["rgb"])
    idx = np.flatnonzero(tr["visible"])
    if idx.size < 2:
        return math.nan
    dx, dy = tr["x"][idx[-1]] - tr["x"][idx[0]], tr["y"][idx[-1]] - tr["y"][idx[0]]
    tx, ty = DIRECTIONS[direction]
    norm = math.hypot(dx, dy)
    return (dx * tx + dy * ty) / norm if norm > 0.5 else 0.0


def opposite_direction(caption: str) -> str:
    """The caption with every direction word swapped for its opposite."""
    import re

    return re.sub(r"\b(left|right|up|down)\b", lambda m: _SWAP[m.group(1)], caption)


def swap_directions(clip: dict) -> str:
    """A two-object drill clip's caption with its objects' directions (and speeds) exchanged."""
    from stiv_jax.data.captions import TEMPLATES, caption

    truth = clip["truth"]
    a, b = truth["objects"]
    objs = [
        dict(a, motion=b["motion"], speed=b["speed"]),
        dict(b, motion=a["motion"], speed=a["speed"]),
    ]
    tpl = TEMPLATES[truth["split"]][truth["template"]]
    still = {"direction": "none", "speed": "none"}  # the binding drill has no camera pan
    return caption(tpl, objs, truth["background"], still, background=True)


def drill_clips(config, num: int = NUM_CLIPS, swappable: bool | None = None) -> list[dict]:
    """`num` held-out binding-drill clips at the run's resolution, frames and drill speeds."""
    from stiv_jax.data.shapes import generate_clip

    s = config.data.shapes
    swappable = bool(s.get("drill_swappable", False)) if swappable is None else swappable
    return [
        generate_clip(i, split="heldout", seed=s.heldout_seed, res=config.data.res,
                      frames=config.data.frames, drill=True, drill_objects=2,
                      drill_swappable=swappable, drill_speeds=s.get("drill_speeds", "fast"))
        for i in range(num)
    ]  # fmt: skip


def probe(pipe, clips: list[dict], *, t2v: bool = False, step: int = -1, log=None) -> Binding:
    """Samples `clips` under the true and the swapped caption with `pipe` (STIVPipeline).
    `log(name, own, other)` (optional) sees each caption's per-object cosines."""
    scores = {}
    for name, caps in (("true", [c["caption"] for c in clips]),
                       ("swapped", [swap_directions(c) for c in clips])):  # fmt: skip
        own, other = [], []
        for j, (cap, c) in enumerate(zip(caps, clips)):
            image = None if t2v else c["video"][0]
            video = pipe(cap, image=image, seed=j, motion_score=float(c["motion_score"]))
            a, b = c["truth"]["objects"]
            own += [object_cosine(video, a, a["motion"]), object_cosine(video, b, b["motion"])]
            other += [object_cosine(video, a, b["motion"]), object_cosine(video, b, a["motion"])]
        scores[name] = np.asarray(own), np.asarray(other)
        if log is not None:
            log(name, *scores[name])
    (own_t, other_t), (own_s, other_s) = scores["true"], scores["swapped"]
    seen = np.isfinite(own_t)

    def mean(x) -> float:  # over the objects tracked (NaN ones skipped); NaN when none is
        return float(np.nanmean(x)) if np.isfinite(x).any() else math.nan

    return Binding(
        step=int(step), clips=len(clips), tracked=int(seen.sum()),
        own_true=mean(own_t), other_true=mean(other_t),
        own_swapped=mean(own_s), other_swapped=mean(other_s),
        exact_true=float(np.mean(own_t[seen] > math.cos(math.pi / 8))) if seen.any() else 0.0,
        effect=mean(((own_t - own_s) + (other_s - other_t)) / 2),
    )  # fmt: skip


def is_binding_drill(config) -> bool:
    """A drill whose clips show two objects: the one whose binding `check_drill` measures."""
    return int(config.data.shapes.get("drill_objects", 1)) >= 2


def check_drill(workdir: str, step: int, bind_min: float) -> Binding:
    """The probe on the binding drill in `workdir` at `step` (EMA weights, its own config and
    sampler); the result is kept in `workdir/binding.json`, so a rerun of the command reads it
    instead of probing again. Raises ValueError (one line, with what to do) when the swap
    effect is under `bind_min` or no object could be tracked. With several processes each
    one probes the same clips and seeds (the same result; the pipeline restores a copy per
    process, or samples in lockstep with `sample.shard_params`)."""
    path = os.path.join(workdir, RESULT_FILE)
    result = _read(path, step)
    if result is None:
        from stiv_jax.pipeline import STIVPipeline

        logging.info("binding check: sampling %d held-out binding-drill clips twice", NUM_CLIPS)
        pipe = STIVPipeline.from_workdir(workdir, step=step)
        result = probe(pipe, drill_clips(pipe.config), step=step)
        with atomic_write(path, "w") as f:
            json.dump(asdict(result), f, indent=1)
    logging.info("binding check after the drill (step %d): %s", step, result.summary())
    if not result.effect >= bind_min:  # NaN (nothing tracked) fails too
        raise ValueError(
            f"the binding drill in {workdir} has not bound at step {step}: {result.summary()}, "
            f"expected >= train.bind_min={bind_min:g}; drill further (a prelude entry with more "
            "steps resumes it), start afresh (new --workdir) with another --config.train.seed, "
            "or pass --config.train.bind_min=0 to go on regardless"
        )
    return result


def _read(path: str, step: int) -> Binding | None:
    """The kept result for `step`, or None (none kept, another step, or unreadable)."""
    try:
        with open(path) as f:
            result = Binding(**json.load(f))
    except (OSError, ValueError, TypeError):
        return None
    return result if result.step == step else None
