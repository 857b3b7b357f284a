"""Videos → scene-split, motion-scored, filtered ArrayRecord shards + manifest + report.

Shapes: T frames, H x W stored pixels; clips are uint8 RGB [T, H, W, 3] before encoding.

  python -m data_pipeline.prepare --input DIR_OR_MANIFEST --out SHARDS_DIR [--workers 2]

Stage 1, one task per video, in parallel processes: probe → video-level filters (resolution,
orientation) → scene detection → clips cut to [min, max] length → one decoding pass that
resizes to the storage size and scores each clip (motion, clarity, near-duplicates) → kept
clips encoded into `OUT/work/<key>.array_record`, then `OUT/work/<key>.json` (the task's
result, written last). A re-run skips every video whose result exists for the same settings.
Stage 2: records of all finished videos, in input order, dealt round-robin into
`OUT/<split>-<i>-of-<n>.array_record` (n >= --hosts and a multiple of it), each with its
`.index.npy`; then `OUT/report.json` (every skip/filter reason counted, per-video details) and
`OUT/manifest.json` (shards, counts, histograms). No pickle anywhere.
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import hashlib
import json
import multiprocessing
import os
import sys
import time
from collections import Counter
from typing import Any

import cv2
import numpy as np
import tqdm

from data_pipeline import filters as filters_lib
from data_pipeline import scenes as scenes_lib
from data_pipeline import shards as shards_lib
from data_pipeline import video_io
from data_pipeline.inputs import InputItem, is_regular, list_inputs, sidecar
from stiv_jax.atomic import atomic_write
from stiv_jax.data.records import encode_record

FORMAT = "stiv_jax.records/1"
HIST_EDGES = {
    "motion": [0, 0.5, 1, 2, 4, 8, 16, 32, 60, 1e9],
    "clarity": [0, 20, 50, 100, 200, 500, 1000, 1e12],
    "seconds": [0, 1, 2, 4, 6, 8, 10, 1e9],
}


@dataclasses.dataclass(frozen=True)
class Settings:
    scenes: scenes_lib.SceneSettings = scenes_lib.SceneSettings()
    filters: filters_lib.FilterSettings = filters_lib.FilterSettings()
    probe: video_io.ProbeLimits = video_io.ProbeLimits()
    max_side: int = 512  # stored clips: long side at most this (aspect kept, even sides)
    video_format: str = "mp4"  # mp4 (encoded bytes) | raw (uint8 [T, H, W, 3])
    missing_caption: str = "skip"  # skip | empty (keep with caption "")

    def key(self) -> str:
        blob = json.dumps(dataclasses.asdict(self), sort_keys=True)
        return hashlib.sha1(blob.encode()).hexdigest()[:12]


def video_key(item: InputItem, settings: Settings) -> str:
    """Work-file name: input path, size, mtime, caption and settings (a change redoes it)."""
    try:
        st = os.stat(item.path)
        stamp = f"{st.st_size}:{st.st_mtime_ns}"
    except OSError:
        stamp = "missing"
    blob = json.dumps([os.path.abspath(item.path), stamp, item.caption, item.meta, settings.key()])
    return hashlib.sha1(blob.encode()).hexdigest()[:20]


# ---------------------------------------------------------------- stage 1: one video


def _skip(result: dict, reason: str, message: str) -> dict:
    result.update(status="skipped", reason=reason, message=message)
    return result


def process_video(item: InputItem, settings: Settings, work_dir: str) -> dict[str, Any]:
    """Scores and filters the clips of one video; writes its records; returns its result."""
    key = video_key(item, settings)
    result: dict[str, Any] = {"input": item.path, "key": key, "clips": [], "written": 0}
    try:
        result.update(_process(item, settings, work_dir, key, result))
    except video_io.ProbeError as e:
        _skip(result, e.reason, str(e))
    except Exception as e:  # a corrupt file must not stop the run; its reason is counted
        _skip(result, "error", f"{type(e).__name__}: {e}")
    with atomic_write(os.path.join(work_dir, key + ".json")) as f:
        json.dump(result, f)
    return result


def _process(item: InputItem, s: Settings, work_dir: str, key: str, result: dict) -> dict:
    if os.path.exists(item.path) and not is_regular(item.path):  # a FIFO would block the decoder
        return _skip(result, "not_regular_file", f"{item.path!r} is not a regular file")
    caption = item.caption
    if caption is None:
        if s.missing_caption == "skip":
            txt = sidecar(item.path)
            note = " (its sidecar is not a regular file)" if os.path.exists(txt) else ""
            return _skip(result, "missing_caption", f"{item.path!r} has no caption{note}")
        result["warning"] = "missing_caption"
        caption = ""
    p = video_io.probe(item.path, s.probe)
    result["probe"] = {**dataclasses.asdict(p), "seconds": p.duration}
    if min(p.height, p.width) < s.filters.min_short_side:
        return _skip(result, "resolution", f"{p.width}x{p.height} below {s.filters.min_short_side}")
    if not filters_lib.orientation_ok(p.height, p.width, s.filters.orientation):
        return _skip(result, "orientation", f"{p.width}x{p.height} is not {s.filters.orientation}")
    scenes, decoded = scenes_lib.detect_scenes(item.path, s.scenes)
    if decoded < s.probe.min_frames:
        return _skip(result, "too_short", f"{decoded} decodable frames")
    if decoded < p.frames:
        result["warning"] = f"truncated: {decoded} of {p.frames} frames decode"
    clips, dropped = scenes_lib.cut_clips(scenes, p.fps, s.scenes)
    result.update(scenes=len(scenes), decoded_frames=decoded, dropped_duration=dropped)
    size = video_io.storage_size(p.height, p.width, s.max_side)
    records, rows = [], []
    clip_i, buf = 0, []
    for i, frame in enumerate(video_io.iter_frames(item.path, size)):
        if clip_i >= len(clips):
            break
        start, end = clips[clip_i]
        if i >= start:
            buf.append(frame)
        if i == end - 1:
            _finish_clip(np.stack(buf), clips[clip_i], item, caption, p, s, result, records, rows)
            clip_i, buf = clip_i + 1, []
    # Clips past the last decodable frame (a truncated file) are counted, not written.
    result["dropped_truncated"] = len(clips) - clip_i
    if records:
        path = os.path.join(work_dir, key + ".array_record")
        shards_lib.write_records(path, records)
        shards_lib.write_index(path + ".index.npy", rows)
    result.update(status="ok", written=len(records))
    return result


def _finish_clip(frames, span, item, caption, p, s, result, records, rows) -> None:
    stats = filters_lib.clip_stats(frames, s.filters)
    verdict = filters_lib.clip_verdict(stats, s.filters)
    t = len(frames)
    info = {"start": span[0], "end": span[1], "seconds": t / p.fps, **stats, "rejected": verdict}
    result["clips"].append(info)
    if verdict is not None:
        return
    video = video_io.encode_mp4(frames, p.fps) if s.video_format == "mp4" else frames
    record = {
        "video": video,
        "video_format": s.video_format,
        "caption": caption,
        "motion_score": np.float32(stats["motion"]),
        "fps": float(p.fps),
        "orig_size": [p.height, p.width],
        "num_frames": t,
        "source": f"{item.path}#{span[0]}-{span[1]}",
        "clip": list(span),
        "meta": item.meta,
    }
    records.append(encode_record(record))
    rows.append((frames.shape[1], frames.shape[2], t))


# ---------------------------------------------------------------- stage 2: shards + report


def _histogram(values: list[float], edges: list[float]) -> dict:
    counts, _ = np.histogram(np.asarray(values, np.float64), bins=np.asarray(edges, np.float64))
    return {"edges": edges, "counts": counts.tolist()}


def summarize(results: list[dict]) -> dict[str, Any]:
    """Counts by reason and histograms over all clips (kept and rejected)."""
    skipped = Counter(r["reason"] for r in results if r.get("status") == "skipped")
    warnings = Counter(str(r["warning"]).split(":")[0] for r in results if r.get("warning"))
    clips = [c for r in results for c in r.get("clips", [])]
    rejected = Counter(c["rejected"] for c in clips if c["rejected"])
    rejected["duration"] = sum(r.get("dropped_duration", 0) for r in results)
    rejected["truncated"] = sum(r.get("dropped_truncated", 0) for r in results)
    kept = [c for c in clips if not c["rejected"]]
    return {
        "videos": {
            "inputs": len(results),
            "ok": sum(r.get("status") == "ok" for r in results),
            "skipped": dict(sorted(skipped.items())),
            "warnings": dict(sorted(warnings.items())),
        },
        "clips": {
            "scenes": sum(r.get("scenes", 0) for r in results),
            "scored": len(clips),
            "written": sum(r.get("written", 0) for r in results),
            "rejected": dict(sorted((k, v) for k, v in rejected.items() if v)),
        },
        "histograms": {
            "all_clips": {k: _histogram([c[k] for c in clips], e) for k, e in HIST_EDGES.items()},
            "kept_clips": {k: _histogram([c[k] for c in kept], e) for k, e in HIST_EDGES.items()},
        },
    }


def write_shards(out: str, split: str, results: list[dict], hosts: int, per_shard: int) -> list:
    """Streams the finished records round-robin into shards; returns [{file, num_records}]."""
    work = os.path.join(out, "work")
    sources = [r for r in results if r.get("status") == "ok" and r.get("written", 0) > 0]
    total = sum(r["written"] for r in sources)
    n = shards_lib.num_shards(total, hosts, per_shard)
    names = [shards_lib.shard_name(split, i, n) for i in range(n)]
    for old in glob.glob(os.path.join(glob.escape(out), f"{split}-*-of-*.array_record*")):
        if os.path.basename(old).split(".array_record")[0] + ".array_record" not in names:
            os.remove(old)  # shards of an earlier run with another shard count
    rows: list[list] = [[] for _ in range(n)]
    with shards_lib.ShardWriters([os.path.join(out, name) for name in names]) as writers:
        k = 0
        for r in sources:
            path = os.path.join(work, r["key"] + ".array_record")
            index = np.load(path + ".index.npy", allow_pickle=False)
            for rec, row in zip(shards_lib.read_records(path), index):
                writers.write(k % n, rec)
                rows[k % n].append(row)
                k += 1
    for name, idx in zip(names, rows):
        shards_lib.write_index(os.path.join(out, name + ".index.npy"), idx)
    return [{"file": name, "num_records": len(idx)} for name, idx in zip(names, rows)]


def _dump_json(path: str, obj: Any) -> None:
    with atomic_write(path) as f:
        json.dump(obj, f, indent=1)


def _load_done(work: str, key: str) -> dict | None:
    try:
        with open(os.path.join(work, key + ".json")) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError):
        return None


def _worker(args: tuple[InputItem, Settings, str]) -> dict:
    return process_video(*args)


def _init_worker() -> None:
    # One OpenCV thread per worker process: the processes are the parallelism, and OpenCV's
    # own thread pool in every process would oversubscribe the cores.
    cv2.setNumThreads(1)


def prepare(
    inputs: list[InputItem],
    out: str,
    settings: Settings = Settings(),
    *,
    split: str = "train",
    hosts: int = 1,
    records_per_shard: int = 1000,
    workers: int = 1,
    progress: bool = True,
) -> dict[str, Any]:
    """Runs both stages; returns the manifest dict (also written to OUT/manifest.json)."""
    if settings.video_format not in ("mp4", "raw"):
        raise ValueError(f"video_format={settings.video_format!r}; expected 'mp4' or 'raw'")
    if settings.missing_caption not in ("skip", "empty"):
        raise ValueError(f"missing_caption={settings.missing_caption!r}; expected skip or empty")
    work = os.path.join(out, "work")
    os.makedirs(work, exist_ok=True)
    t0 = time.perf_counter()
    keys = [video_key(item, settings) for item in inputs]
    results: dict[int, dict] = {}
    todo = []
    for i, key in enumerate(keys):
        done = _load_done(work, key)
        if done is None:
            todo.append(i)
        else:
            results[i] = done
    bar = tqdm.tqdm(total=len(todo), desc="videos", unit="video", disable=not progress)
    jobs = [(inputs[i], settings, work) for i in todo]
    if workers > 1 and len(jobs) > 1:
        # spawn: no forked copies of OpenCV/FFmpeg threads or of a caller's JAX runtime.
        with multiprocessing.get_context("spawn").Pool(
            min(workers, len(jobs)), initializer=_init_worker
        ) as pool:
            for i, r in zip(todo, pool.imap(_worker, jobs)):
                results[i] = r
                bar.update()
    else:
        for i, job in zip(todo, jobs):
            results[i] = _worker(job)
            bar.update()
    bar.close()
    ordered = [results[i] for i in range(len(inputs))]
    shards = write_shards(out, split, ordered, hosts, records_per_shard)
    summary = summarize(ordered)
    seconds = time.perf_counter() - t0
    report = {
        "format": FORMAT,
        "settings": dataclasses.asdict(settings),
        "processed_now": len(todo),
        "reused": len(inputs) - len(todo),
        "seconds": seconds,
        **summary,
        "per_video": ordered,
    }
    _dump_json(os.path.join(out, "report.json"), report)
    manifest = {
        "format": FORMAT,
        "split": split,
        "num_records": sum(s["num_records"] for s in shards),
        "hosts": hosts,
        "video_format": settings.video_format,
        "shards": shards,
        **summary,
    }
    _dump_json(os.path.join(out, "manifest.json"), manifest)
    return manifest


# ---------------------------------------------------------------- command line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    sc, fi, pl = scenes_lib.SceneSettings(), filters_lib.FilterSettings(), video_io.ProbeLimits()
    p = argparse.ArgumentParser(prog="python -m data_pipeline.prepare", description=__doc__)
    p.add_argument("--input", required=True, help="video directory or .csv/.jsonl manifest")
    p.add_argument("--out", required=True, help="output shards directory")
    p.add_argument("--split", default="train", help="split name in shard file names")
    p.add_argument("--hosts", type=int, default=1, help="host count; shards >= and a multiple")
    p.add_argument("--records-per-shard", type=int, default=1000)
    p.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 1)))
    p.add_argument("--max-side", type=int, default=Settings.max_side)
    p.add_argument("--video-format", choices=("mp4", "raw"), default=Settings.video_format)
    p.add_argument("--missing-caption", choices=("skip", "empty"), default="skip")
    p.add_argument("--content-threshold", type=float, default=sc.content_threshold)
    p.add_argument("--fade-threshold", type=float, default=sc.fade_threshold)
    p.add_argument("--min-scene-seconds", type=float, default=sc.min_scene_seconds)
    p.add_argument("--min-clip-seconds", type=float, default=sc.min_clip_seconds)
    p.add_argument("--max-clip-seconds", type=float, default=sc.max_clip_seconds)
    p.add_argument("--min-short-side", type=int, default=fi.min_short_side)
    p.add_argument("--orientation", choices=filters_lib.ORIENTATIONS, default=fi.orientation)
    p.add_argument("--motion-min", type=float, default=fi.motion_min)
    p.add_argument("--motion-max", type=float, default=fi.motion_max)
    p.add_argument("--clarity-min", type=float, default=fi.clarity_min)
    p.add_argument("--max-dup-fraction", type=float, default=fi.max_dup_fraction)
    p.add_argument("--min-frames", type=int, default=pl.min_frames)
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def settings_from_args(a: argparse.Namespace) -> Settings:
    return Settings(
        scenes=scenes_lib.SceneSettings(
            content_threshold=a.content_threshold,
            fade_threshold=a.fade_threshold,
            min_scene_seconds=a.min_scene_seconds,
            min_clip_seconds=a.min_clip_seconds,
            max_clip_seconds=a.max_clip_seconds,
        ),
        filters=filters_lib.FilterSettings(
            min_short_side=a.min_short_side,
            orientation=a.orientation,
            motion_min=a.motion_min,
            motion_max=a.motion_max,
            clarity_min=a.clarity_min,
            max_dup_fraction=a.max_dup_fraction,
        ),
        probe=video_io.ProbeLimits(min_frames=a.min_frames),
        max_side=a.max_side,
        video_format=a.video_format,
        missing_caption=a.missing_caption,
    )


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    manifest = prepare(
        list_inputs(a.input),
        a.out,
        settings_from_args(a),
        split=a.split,
        hosts=a.hosts,
        records_per_shard=a.records_per_shard,
        workers=a.workers,
        progress=not a.no_progress,
    )
    with open(os.path.join(a.out, "report.json")) as f:
        report = json.load(f)
    for r in report["per_video"]:
        if r.get("status") != "ok":
            print(f"skipped {r['input']}: {r['reason']} ({r.get('message', '')})")
            continue
        for c in r["clips"]:
            verdict = c["rejected"] or "kept"
            print(
                f"{os.path.basename(r['input'])} frames {c['start']}-{c['end']}: "
                f"motion {c['motion']:.3f} clarity {c['clarity']:.1f} "
                f"dup {c['dup_fraction']:.2f} -> {verdict}"
            )
    print(json.dumps({k: manifest[k] for k in ("num_records", "videos", "clips")}, indent=1))
    print(f"{report['seconds']:.2f}s; shards in {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
