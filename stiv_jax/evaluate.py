"""ShapesBench evaluation: sample held-out cases with a trained STIV, score them, write a table.

  python -m stiv_jax.evaluate --config configs/stiv.py:variant=S --workdir runs/stiv_s --out R
  python -m stiv_jax.evaluate --config configs/stiv.py:variant=S --videos R/videos --out R2

Shapes: T pixel frames, H = W = data.res; videos are uint8 [T, H, W, 3] (model outputs
float [-1, 1] [B, T, H, W, 3] are converted). The model legend (B, F, S, L, D, N, H) does
not apply here: everything after sampling is pixel-space.

Cases are the first `num_cases` clips of the held-out ShapesBench split (seeds and caption
templates never used in training). Each case is sampled as TI2V (its frame 0 given) at
several requested motion scores (the ground-truth score times each `motion_multipliers`
entry, same noise seed, so only the motion request varies) and as T2V at the ground-truth
score. Video ids are `<task>-<index:04d>-x<multiplier>`, e.g. `ti2v-0003-x0.5`.

Scores (per task; the metric definitions are `stiv_jax.metrics.evaluate_videos`):
  adherence, consistency, dynamic degree, first-frame fidelity: on the x1 videos
  motion_control          Spearman(requested, measured) pooled over every multiplier
  motion_control_within   mean over cases of that Spearman across the case's multipliers
  video_psnr              TI2V: PSNR of frames 1.. against the held-out clip (x1 videos)
Two baselines are scored by the same code on the same cases: `static` (frame 0 repeated:
the floor) and `ground_truth` (the generator's clip: the ceiling). Their motion control
uses the x1 requests (the ground truth's own score), so it is 1.0 for the ceiling by
construction; within-case control does not apply to them (one video per case).
First-frame fidelity is not reported for T2V (no condition image).

Applications (`--tasks predict,interp,keyframes,long_extend,long_hier`, not in the default
plan): `predict` gives the case's first `data.predict_frames` latent frames, `interp` its
first and last, `keyframes` 1-3 latent frames at positions drawn from the case index (the
training task's rule), each as the case's own pixel frames (`stiv_jax.cond_media`); they
are scored like TI2V. `long_extend` / `long_hier` sample `--long_frames` (64) frames from
the case's frame 0 with `stiv_jax.long_video` against a case clip of that length; their
table adds direction / consistency per chunk (`chunk<i>_...`, chunks split at the seams)
and the seam metrics of `stiv_jax.metrics.seam_scores` (`seam_*`), beside the static
floor and the ground truth (whose "seams" are just frames: the no-seam reference).

Outputs (each written to a temp name, then renamed): `OUT/videos/<id>.mp4` and
`OUT/videos/<id>.json` (the case's ground truth and request), `OUT/scores.json`,
`OUT/scores.md`. `--videos DIR` scores existing MP4s named by id; the truth comes from
`<id>.json` when present (the clip is regenerated from the generator arguments recorded
there), otherwise from the held-out split of `--config` by the index in the id. A missing,
unreadable or wrong-shaped video is reported in one line naming the file, counted in
`skipped`, and left out.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from stiv_jax import console, host_memory, metrics
from stiv_jax.atomic import atomic_write, write_text
from stiv_jax.data import tasks as tasks_lib
from stiv_jax.data.motion import motion_score
from stiv_jax.data.schema import normalize_uint8
from stiv_jax.data.shapes import config_kwargs, generate_clip
from stiv_jax.pipeline import guidance_scale, restore_for_sampling

# Evaluated tasks, in plan order: names (and given frames) from `stiv_jax.data.tasks`.
TASKS = ("ti2v", "t2v")  # the default plan
APP_TASKS = ("predict", "interp", "keyframes")  # given frames from the case's own video
LONG_TASKS = {"long_extend": "extend", "long_hier": "hierarchical"}  # -> long_mode
ALL_TASKS = (*TASKS, *APP_TASKS, *LONG_TASKS)
assert set(TASKS + APP_TASKS) <= set(tasks_lib.TASKS), TASKS
DEFAULT_MULTIPLIERS = (0.5, 1.0, 2.0)
LONG_FRAMES = 64
_ID = re.compile(rf"^({'|'.join(ALL_TASKS)})-(\d{{4,}})-x(\d+(?:\.\d+)?)$")
SEAM_KEYS = ("seam_color_jump_ratio", "seam_color_drift", "seam_track_jump_ratio",
             "seam_track_lost_at_seam")  # fmt: skip
ADHERENCE_KEYS = (*metrics.VIDEO_METRICS, "video_psnr")
MOTION_KEYS = ("motion_control", "motion_control_within")
ROWS = ("static", "model", "ground_truth")


# ============================================================================ plan


@dataclass(frozen=True)
class Item:
    """One video to sample or score: a held-out case under one task and motion request."""

    task: str
    index: int
    multiplier: float

    @property
    def id(self) -> str:
        return f"{self.task}-{self.index:04d}-x{self.multiplier:g}"

    @classmethod
    def from_id(cls, vid: str) -> Item:
        m = _ID.match(vid)
        if not m:
            raise ValueError(f"video id {vid!r} is not <task>-<index>-x<multiplier>")
        return cls(m.group(1), int(m.group(2)), float(m.group(3)))


def make_plan(
    num_cases: int, tasks: Sequence[str] = TASKS, multipliers: Sequence[float] = DEFAULT_MULTIPLIERS
) -> list[Item]:
    """TI2V at every multiplier, T2V at x1 only (its motion request is not the point)."""
    if num_cases < 1:
        raise ValueError(f"num_cases={num_cases} must be >= 1")
    bad = [t for t in tasks if t not in ALL_TASKS]
    if bad or not tasks:
        raise ValueError(f"tasks {list(tasks)} must be a non-empty subset of {ALL_TASKS}")
    if not multipliers or any(not (m > 0 and math.isfinite(m)) for m in multipliers):
        raise ValueError(f"motion multipliers {list(multipliers)} must be positive numbers")
    items = []
    for t in tasks:
        mults = sorted(set(multipliers)) if t == "ti2v" else [1.0]
        items += [Item(t, i, float(m)) for i in range(num_cases) for m in mults]
    return items


def generator_kwargs(config: Any, frames: int | None = None) -> dict[str, Any]:
    """`generate_clip` arguments of the config's held-out split (recorded in each truth JSON);
    `frames` overrides the clip length (long-video cases)."""
    kw = dict(split="heldout", seed=int(config.data.shapes.heldout_seed), **config_kwargs(config))
    if frames is not None:
        kw["frames"] = int(frames)
    return kw


def case_key(item: Item) -> int | tuple[str, int]:
    """Key of an item's case in a cases dict: long-video cases are other (longer) clips."""
    return ("long", item.index) if item.task in LONG_TASKS else item.index


def given_conditions(config: Any, item: Item, video: np.ndarray) -> list:
    """The case's own frames an application task gives, as pixel-frame `Condition`s (clips
    covering whole latent frames, float [-1, 1])."""
    from stiv_jax.autoencoders import latent_geometry
    from stiv_jax.cond_media import Condition

    geo = latent_geometry(config.autoencoder)
    f = geo.latent_frames(video.shape[0])
    rng = np.random.default_rng(item.index)  # keyframes: positions fixed per case
    mask = tasks_lib.task_cond_mask(item.task, f, int(config.data.predict_frames), rng)
    out = []
    for j in np.flatnonzero(mask):
        lo, hi = geo.pixel_span(int(j))
        out.append(Condition(lo, normalize_uint8(video[lo : hi + 1])))
    return out


def requested_motion(case: dict, item: Item) -> float:
    return float(case["motion_score"]) * item.multiplier


# ============================================================================ truth files


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None  # JSON has no NaN / inf
    return x


def _write_json(path: str, obj: Any) -> None:
    with atomic_write(path) as fh:
        json.dump(_jsonable(obj), fh, indent=1)


def truth_record(case: dict, item: Item, gen_kwargs: dict) -> dict:
    """What `<id>.json` holds: the request, the caption and the generator's ground truth."""
    return {
        "id": item.id,
        "task": item.task,
        "index": item.index,
        "multiplier": item.multiplier,
        "requested_motion_score": requested_motion(case, item),
        "caption": case["caption"],
        "motion_score": float(case["motion_score"]),
        "generator": gen_kwargs,
        "truth": case["truth"],
    }


def load_case(item: Item, json_path: str | None, gen_kwargs: dict) -> dict:
    """The held-out clip of `item`, regenerated from `json_path`'s generator args if given."""
    if json_path is None:
        return generate_clip(item.index, **gen_kwargs)
    with open(json_path) as fh:
        rec = json.load(fh)
    if rec.get("id") != item.id or "generator" not in rec:
        raise ValueError(f"{json_path} is not the truth file of video {item.id!r}")
    case = generate_clip(int(rec["index"]), **rec["generator"])
    if case["caption"] != rec["caption"]:
        raise ValueError(
            f"{json_path}: the generator now gives caption {case['caption']!r}, not the "
            f"recorded {rec['caption']!r} (written by another ShapesBench version)"
        )
    return case


# ============================================================================ sampling


def sample_items(
    config: Any,
    comps,
    graphdef,
    params,
    items: Sequence[Item],
    cases: dict,
    out_dir: str,
    long_frames: int = LONG_FRAMES,
) -> int:
    """Samples every item whose MP4 + JSON are not yet in `out_dir`; returns how many.
    `cases` is keyed by `case_key` (long-video cases are `long_frames`-frame clips)."""
    from tqdm import tqdm

    from stiv_jax.pipeline import Request, generate, make_sample_fn, score_fn_for
    from stiv_jax.video import write_mp4

    os.makedirs(out_dir, exist_ok=True)
    gen_kwargs = generator_kwargs(config)
    long_kwargs = generator_kwargs(config, long_frames)

    def done(it: Item) -> bool:
        base = os.path.join(out_dir, it.id)
        return os.path.exists(base + ".mp4") and os.path.exists(base + ".json")

    todo = [it for it in items if not done(it)]
    if not todo:
        return 0
    long_items = [it for it in todo if it.task in LONG_TASKS]
    if long_items:
        _sample_long(config, comps, graphdef, params, long_items, cases, out_dir, long_kwargs)
    todo = [it for it in todo if it.task not in LONG_TASKS]
    if not todo:
        return len(long_items)
    sample_fn, score_fn = make_sample_fn(config, graphdef), score_fn_for(config, graphdef)
    latent_frames = comps.latent_shape[0]
    bs = int(config.sample.batch_size)
    for i in tqdm(range(0, len(todo), bs), desc="evaluate: sample"):
        batch = todo[i : i + bs]
        reqs = []
        for it in batch:
            case = cases[it.index]
            if it.task in APP_TASKS:
                given, conds = [], given_conditions(config, it, case["video"])
            else:
                given, conds = tasks_lib.task_cond_mask(it.task, latent_frames, 1), []
            ti2v = bool(np.any(given))  # the case's frame 0 is the condition image
            reqs.append(
                Request(
                    id=it.id,
                    prompt=case["caption"],
                    cond_frames=np.flatnonzero(given).tolist(),
                    motion_score=requested_motion(case, it),
                    seed=it.index,  # same noise across multipliers: only the request varies
                    first_frame=normalize_uint8(case["video"][0]) if ti2v else None,
                    conditions=conds,
                )
            )
        # Pad to a fixed batch so the jitted sampler compiles once.
        reqs += [reqs[-1]] * (bs - len(reqs))
        videos = generate(config, comps, sample_fn, params, reqs, score_fn=score_fn)
        for it, video in zip(batch, videos):
            base = os.path.join(out_dir, it.id)
            write_mp4(base + ".mp4", video, int(config.sample.fps))
            _write_json(base + ".json", truth_record(cases[it.index], it, gen_kwargs))
    return len(todo) + len(long_items)


def _sample_long(config, comps, graphdef, params, items, cases, out_dir, gen_kwargs) -> None:
    """Long-video items: `stiv_jax.long_video` from the long case's frame 0."""
    from tqdm import tqdm

    from stiv_jax.pipeline import Request, STIVPipeline
    from stiv_jax.video import write_mp4

    pipe = STIVPipeline(config, comps, graphdef, params)
    for it in tqdm(items, desc="evaluate: long video"):
        case = cases[case_key(it)]
        req = Request(
            id=it.id,
            prompt=case["caption"],
            cond_frames=[0],
            first_frame=normalize_uint8(case["video"][0]),
            motion_score=requested_motion(case, it),
            seed=it.index,
            frames=int(case["video"].shape[0]),
            long_mode=LONG_TASKS[it.task],
        )
        video = pipe.generate([req])[0]
        base = os.path.join(out_dir, it.id)
        write_mp4(base + ".mp4", video, int(config.sample.fps))
        _write_json(base + ".json", truth_record(case, it, gen_kwargs))


# ============================================================================ scoring


def read_videos(
    video_dir: str, config: Any
) -> tuple[dict[Item, np.ndarray], dict[int, dict], list[str]]:
    """MP4s in `video_dir` -> ({item: uint8 video}, {index: case}, errors); bad files skipped."""
    from stiv_jax.video import read_mp4

    if not os.path.isdir(video_dir):
        raise FileNotFoundError(f"videos directory {video_dir!r} does not exist")
    gen_kwargs = generator_kwargs(config)
    names = sorted(os.listdir(video_dir))
    mp4s = {n[:-4] for n in names if n.endswith(".mp4") and not n.endswith(".tmp.mp4")}
    jsons = {n[:-5] for n in names if n.endswith(".json")}
    videos, cases, errors = {}, {}, []
    for vid in sorted(jsons - mp4s):
        errors.append(f"{os.path.join(video_dir, vid + '.mp4')}: missing (truth JSON has no video)")
    for vid in sorted(mp4s):
        path = os.path.join(video_dir, vid + ".mp4")
        try:
            item = Item.from_id(vid)
            js = os.path.join(video_dir, vid + ".json") if vid in jsons else None
            case = cases.get(case_key(item)) if js is None else None
            case = case or load_case(item, js, gen_kwargs)
            video = read_mp4(path)
            want = case["video"].shape
            if video.shape != want:
                raise ValueError(f"video shape {video.shape} but the case is {want}")
        except Exception as e:  # noqa: BLE001 - any unreadable file is counted and skipped
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            errors.append(f"{path}: {msg}; skipped")
            continue
        known = cases.setdefault(case_key(item), case)
        if known["caption"] != case["caption"]:
            errors.append(f"{path}: its truth differs from other videos of case {item.index}")
            continue
        videos[item] = video
    if not videos and not errors:
        errors.append(f"{video_dir}: no <task>-<index>-x<multiplier>.mp4 videos found")
    return videos, cases, errors


def _within_case_control(items: list[Item], requested: list[float], measured: list[float]):
    """Mean over cases (with >= 2 multipliers) of Spearman(requested, measured)."""
    by_case: dict[int, list[int]] = {}
    for k, it in enumerate(items):
        by_case.setdefault(it.index, []).append(k)
    rhos = [
        metrics.spearman([requested[k] for k in ks], [measured[k] for k in ks])
        for ks in by_case.values()
        if len(ks) >= 2
    ]
    return float(np.mean(rhos)) if rhos else math.nan


def codec_roundtrip(videos: Sequence[np.ndarray], fps: int = 8) -> list[np.ndarray]:
    """Each video written as MP4 and read back, so baselines carry the model's codec loss."""
    import tempfile

    from stiv_jax.video import read_mp4, write_mp4

    with tempfile.TemporaryDirectory() as tmp:
        return [
            read_mp4(write_mp4(os.path.join(tmp, f"{i}.mp4"), v, fps)) for i, v in enumerate(videos)
        ]


def video_psnr(videos: Sequence[np.ndarray], cases: Sequence[dict]) -> float:
    """Mean PSNR (dB, capped at 100) of frames 1.. against the case's clip.

    Given frame 0 and the caption, a ShapesBench clip is determined up to sub-pixel
    start offsets, so for TI2V this is a prediction-style fidelity score; it separates
    noisy from clean generations long before tracking-based metrics leave the floor.
    """
    vals = [
        min(metrics.psnr(v[f], c["video"][f]), 100.0)
        for v, c in zip(videos, cases)
        for f in range(1, v.shape[0])
    ]
    return float(np.mean(vals)) if vals else math.nan


def score_task(
    task: str, videos: dict[Item, np.ndarray], cases: dict[int, dict], *, codec: bool = True
) -> dict:
    """Rows static / model / ground_truth for one task (see the module docstring).

    codec: pass the baselines through the same MP4 encoding as sampled videos (at 32 px,
    4:2:0 chroma blurs object edges, which costs size accuracy and consistency).
    """
    items = sorted(
        (it for it in videos if it.task == task), key=lambda it: (it.index, it.multiplier)
    )
    if not items:
        return {}
    primary = [it for it in items if it.multiplier == 1.0] or items
    prim_cases = [cases[it.index] for it in primary]
    rows: dict[str, dict] = {}
    truth_videos = [c["video"] for c in prim_cases]
    static_videos = [metrics.static_baseline(v) for v in truth_videos]
    if codec:
        truth_videos, static_videos = codec_roundtrip(truth_videos), codec_roundtrip(static_videos)
    model_videos = [videos[it] for it in primary]
    for name, vids in (
        ("static", static_videos),
        ("model", model_videos),
        ("ground_truth", truth_videos),
    ):
        rows[name] = metrics.evaluate_videos(vids, prim_cases)
        rows[name]["video_psnr"] = video_psnr(vids, prim_cases)
    requested = [requested_motion(cases[it.index], it) for it in items]
    measured = [
        motion_score(videos[it], interval=cases[it.index]["truth"]["motion_interval"])
        for it in items
    ]
    pooled = metrics.spearman(requested, measured) if len(items) > 1 else math.nan
    rows["model"]["motion_control"] = pooled
    rows["model"]["motion_control_within"] = _within_case_control(items, requested, measured)
    rows["model"]["num_videos"] = float(len(items))
    for name in ("static", "ground_truth"):
        rows[name]["motion_control_within"] = 0.0 if name == "static" else math.nan
    if task == "t2v":  # no condition image: first-frame fidelity does not apply
        for row in rows.values():
            row["first_frame_psnr"] = row["first_frame_ssim"] = row["video_psnr"] = math.nan
    per_video = [
        {"id": it.id, "requested_motion_score": r, "measured_motion_score": m}
        for it, r, m in zip(items, requested, measured)
    ]
    return {"rows": rows, "num_cases": len(primary), "per_video": per_video}


def score_videos(
    videos: dict[Item, np.ndarray], cases: dict, *, codec: bool = True, config: Any = None
) -> dict[str, dict]:
    """{task: score_task(...) or score_long(...)} for the tasks that have videos."""
    out = {t: s for t in TASKS + APP_TASKS if (s := score_task(t, videos, cases, codec=codec))}
    for t in LONG_TASKS:
        if config is not None and (s := score_long(config, t, videos, cases, codec=codec)):
            out[t] = s
    return out


def score_long(
    config: Any, task: str, videos: dict[Item, np.ndarray], cases: dict, *, codec: bool = True
) -> dict:
    """Long-video rows: whole-video metrics, per-chunk direction / consistency, seams."""
    from stiv_jax import long_video
    from stiv_jax.pipeline import Request

    items = sorted((it for it in videos if it.task == task), key=lambda it: it.index)
    if not items:
        return {}
    long_cases = [cases[case_key(it)] for it in items]
    t = long_cases[0]["video"].shape[0]
    seams = long_video.chunk_bounds(config, Request("x", "x", frames=t, long_mode=LONG_TASKS[task]))
    bounds = [0, *seams, t]
    truth = [c["video"] for c in long_cases]
    static = [metrics.static_baseline(v) for v in truth]
    if codec:
        truth, static = codec_roundtrip(truth), codec_roundtrip(static)
    rows: dict[str, dict] = {}
    for name, vids in (("static", static), ("model", [videos[it] for it in items]),
                       ("ground_truth", truth)):  # fmt: skip
        row = metrics.evaluate_videos(vids, long_cases)
        for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
            part = metrics.evaluate_videos(
                [v[a:b] for v in vids], [dict(c, video=c["video"][a:b]) for c in long_cases]
            )
            row[f"chunk{i}_direction_accuracy"] = part["direction_accuracy"]
            row[f"chunk{i}_subject_consistency"] = part["subject_consistency"]
        seam = [
            metrics.seam_scores(v, seams, [o["rgb"] for o in c["truth"]["objects"]])
            for v, c in zip(vids, long_cases)
        ]
        for key in SEAM_KEYS:
            vals = [x[key[len("seam_") :]] for x in seam]
            vals = [v for v in vals if math.isfinite(v)]
            row[key] = float(np.mean(vals)) if vals else math.nan
        rows[name] = row
    keys = [
        *metrics.VIDEO_METRICS,
        *(k for k in rows["model"] if k.startswith("chunk")),
        *SEAM_KEYS,
    ]
    return {"rows": rows, "num_cases": len(items), "frames": t, "seams": seams, "keys": keys}


# ============================================================================ report


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    return f"{v:.3f}" if abs(v) < 10 else f"{v:.2f}"


def markdown_table(scores: dict[str, dict], header: dict[str, Any]) -> str:
    """One table per task: metric rows x (static floor, model, ground-truth ceiling)."""
    lines = ["# ShapesBench scores", ""]
    lines += [f"- {k}: {v}" for k, v in header.items()]
    for task, s in scores.items():
        rows = s["rows"]
        lines += ["", f"## {task.upper()} ({s['num_cases']} cases, "
                  f"{int(rows['model']['num_videos'])} model videos)", ""]  # fmt: skip
        if "seams" in s:
            lines += [f"{s['frames']} frames, chunks start at frames {s['seams']}", ""]
        lines += ["| metric | static (floor) | model | ground truth (ceiling) |"]
        lines += ["|---|---|---|---|"]
        for key in s.get("keys", (*ADHERENCE_KEYS, *MOTION_KEYS)):
            lines.append(f"| {key} | " + " | ".join(_fmt(rows[r].get(key)) for r in ROWS) + " |")
    return "\n".join(lines) + "\n"


def write_report(out: str, scores: dict, header: dict, errors: list[str]) -> dict:
    os.makedirs(out, exist_ok=True)
    report = {**header, "skipped": len(errors), "errors": errors, "scores": scores}
    _write_json(os.path.join(out, "scores.json"), report)
    write_text(
        os.path.join(out, "scores.md"), markdown_table(scores, {**header, "skipped": len(errors)})
    )
    return report


# ============================================================================ jobs


def evaluate_checkpoint(
    config: Any,
    workdir: str,
    out: str,
    *,
    num_cases: int = 16,
    tasks: Sequence[str] = TASKS,
    multipliers: Sequence[float] = DEFAULT_MULTIPLIERS,
    step: int | None = None,
    long_frames: int = LONG_FRAMES,
) -> dict:
    """Samples the plan with `workdir`'s checkpoint into OUT/videos, then scores that dir."""
    comps, graphdef, params, step = restore_for_sampling(config, workdir, step)
    items = make_plan(num_cases, tasks, multipliers)
    gen_kwargs = generator_kwargs(config)
    long_kwargs = generator_kwargs(config, long_frames)
    cases = {
        case_key(it): generate_clip(
            it.index, **(long_kwargs if it.task in LONG_TASKS else gen_kwargs)
        )
        for it in items
    }
    video_dir = os.path.join(out, "videos")
    sample_items(config, comps, graphdef, params, items, cases, video_dir, long_frames)
    header = {
        "workdir": os.path.abspath(workdir),
        "checkpoint_step": step,
        "variant": config.model.variant,
        "image_cond": config.model.image_cond,
        "res": gen_kwargs["res"],
        "frames": gen_kwargs["frames"],
        "ode_steps": int(config.sample.steps),
        "cfg_scale": float(config.sample.cfg_scale),
        "cfg_scale_given": guidance_scale(config, True),
        "cfg_interval": list(config.sample.get("cfg_interval", (0.0, 1.0))),
        "use_ema": bool(config.sample.use_ema),
        "t2v_image_first": bool(config.sample.get("t2v_image_first", False)),
        "t2v_candidates": int(config.sample.get("t2v_candidates", 1)),
        "ti2v_candidates": int(config.sample.get("ti2v_candidates", 1)),
        "t2v_score_levels": list(config.sample.get("t2v_score_levels", (0.2, 0.4, 0.6))),
        "motion_multipliers": sorted(set(multipliers)),
    }
    return evaluate_dir(config, video_dir, out, header=header)


def evaluate_dir(config: Any, video_dir: str, out: str, *, header: dict | None = None) -> dict:
    """Scores the MP4s in `video_dir` (see the module docstring) and writes the report."""
    videos, cases, errors = read_videos(video_dir, config)
    for e in errors:
        logging.error(e)
    header = {"videos": os.path.abspath(video_dir), **(header or {})}
    return write_report(out, score_videos(videos, cases, config=config), header, errors)


def main(argv=None) -> None:
    from absl import app, flags
    from ml_collections import config_flags

    cfg_flag = config_flags.DEFINE_config_file(
        "config", None, "configs/stiv.py:ARG", lock_config=True
    )
    wd = flags.DEFINE_string("workdir", None, "Training run directory (sample its checkpoint).")
    vd = flags.DEFINE_string("videos", None, "Score the MP4s in this directory instead.")
    out = flags.DEFINE_string("out", None, "Report directory (scores.json, scores.md, videos/).")
    n = flags.DEFINE_integer("num_cases", 16, "Held-out cases to sample.")
    tk = flags.DEFINE_list("tasks", list(TASKS), f"Tasks to sample: {', '.join(ALL_TASKS)}.")
    lf = flags.DEFINE_integer("long_frames", LONG_FRAMES, "Frames of long_extend/long_hier videos.")
    mu = flags.DEFINE_list("motion_multipliers", ["0.5", "1", "2"], "TI2V motion requests.")
    st = flags.DEFINE_integer("step", None, "Checkpoint step (default: latest).")
    flags.mark_flags_as_required(["config", "out"])

    def run(_):
        console.setup(flags.FLAGS.verbosity)
        try:
            logging.debug("host malloc: %s", host_memory.configure())  # before JAX starts
        except ValueError as e:  # a bad STIV_JAX_MALLOC: one line, no traceback
            raise SystemExit(f"error: {e}") from None
        if (wd.value is None) == (vd.value is None):
            raise app.UsageError("give exactly one of --workdir (sample) or --videos (score)")
        if vd.value:
            report = evaluate_dir(cfg_flag.value, vd.value, out.value)
        else:
            mults = [float(m) for m in mu.value]
            report = evaluate_checkpoint(
                cfg_flag.value, wd.value, out.value, num_cases=n.value, tasks=tk.value,
                multipliers=mults, step=st.value, long_frames=lf.value,
            )  # fmt: skip
        print(markdown_table(report["scores"], {"skipped": report["skipped"]}))

    console.help_for(__name__)
    app.run(run, argv)


if __name__ == "__main__":
    main()
