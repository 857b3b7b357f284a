"""ShapesBench generator and pipeline throughput (prints figures, writes JSON).

Shapes: clips uint8 [T, H, W, 3]; batches as in `stiv_jax.data.pipeline`.

  python benchmarks/shapes_throughput.py [--res 32] [--frames 8] [--clips 600] [--out F.json]

Reports clips/s of `generate_clip` on one core (wall and process-CPU time: on a shared
machine the CPU figure is the one that transfers), with and without the motion score, and
batches/s of the in-process Grain pipeline.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

# Run as a script from the repo root: `configs` (not installed) is found beside benchmarks/.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import stiv_jax.data.shapes as shapes_mod  # noqa: E402
from configs.stiv import get_config  # noqa: E402
from stiv_jax.atomic import atomic_write  # noqa: E402
from stiv_jax.data.pipeline import make_dataset  # noqa: E402
from stiv_jax.data.shapes import generate_clip  # noqa: E402


def _rate(fn, n: int) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(n):
        fn(i)
    return n / (time.perf_counter() - wall), n / (time.process_time() - cpu)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--res", type=int, default=32)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--clips", type=int, default=600)
    p.add_argument("--out", default="")
    a = p.parse_args()
    import cv2

    cv2.setNumThreads(1)  # one core: OpenCV would otherwise spread Farneback over threads
    gen = lambda i: generate_clip(i, res=a.res, frames=a.frames)
    generate_clip(0, res=a.res, frames=a.frames)  # warm up imports / caches
    wall, cpu = _rate(gen, a.clips)
    real_score = shapes_mod.motion_score
    shapes_mod.motion_score = lambda video, interval: 0.0  # rendering alone
    try:
        wall_nf, cpu_nf = _rate(gen, a.clips)
    finally:
        shapes_mod.motion_score = real_score
    cfg = get_config(f"variant=S,res={a.res},frames={a.frames}")
    cfg.data.batch_size = 8
    it = iter(make_dataset(cfg, latent_frames=a.frames))
    next(it)
    n_batches = max(1, a.clips // 8)
    t0 = time.perf_counter()
    for _ in range(n_batches):
        next(it)
    batches = n_batches / (time.perf_counter() - t0)
    out = {
        "res": a.res,
        "frames": a.frames,
        "clips_per_s_wall": round(wall, 1),
        "clips_per_s_cpu": round(cpu, 1),
        "clips_per_s_cpu_without_motion_score": round(cpu_nf, 1),
        "clips_per_s_wall_without_motion_score": round(wall_nf, 1),
        "pipeline_batches_per_s_wall(B=8)": round(batches, 1),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(out, indent=1))
    if a.out:
        with atomic_write(a.out) as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
