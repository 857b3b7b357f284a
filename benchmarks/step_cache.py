"""Sampler step cache (stiv_jax/step_cache.py): block evaluations, wall time and SSIM against
the uncached sampler, same seeds, on held-out ShapesBench prompts of a trained run.

  python benchmarks/step_cache.py --workdir runs/stiv_s [--thresholds 0.05,0.1,0.2] \
      [--prompts 8] [--repeats 5] [--json out.json]

Shapes: B prompts, T pixel frames. The prompts are the run's first `--prompts` held-out
ShapesBench clips, TI2V from their frame 0 as the evaluator samples them (seed = index),
all in one batch. For every threshold it prints the block evaluations as a fraction of the
uncached sampler's (and the reduction, uncached / cached), the sampler's wall time ratio
cached / uncached (min/min and median of `--repeats` calls interleaved round-robin in this
one process, compiles excluded) and the SSIM of the cached videos against the uncached ones
(per frame, mean and worst video; uint8 RGB). The load average is printed beside the times.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

# Run as a script from the repo root: `configs` (not installed) is found beside benchmarks/.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from stiv_jax.atomic import atomic_write  # noqa: E402


def video_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean per-frame SSIM of two uint8 videos [T, H, W, 3]."""
    from stiv_jax.metrics import ssim

    return float(np.mean([ssim(x, y) for x, y in zip(a, b)]))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", required=True, help="trained run (read only)")
    ap.add_argument("--thresholds", default="0.05,0.1,0.15,0.2,0.3")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=0, help="ODE steps (0 = the run's sample.steps)")
    ap.add_argument("--json", default="")
    args = ap.parse_args(argv)

    from stiv_jax import step_cache
    from stiv_jax.checkpoint import restore_config
    from stiv_jax.data.pipeline import heldout_cases
    from stiv_jax.data.schema import normalize_uint8
    from stiv_jax.pipeline import (
        Request,
        build_conditions,
        make_sample_fn,
        negative_text,
        restore_for_sampling,
    )
    from stiv_jax.video import to_uint8

    config = restore_config(args.workdir)
    if args.steps:
        config.sample.steps = args.steps
    comps, graphdef, params, step = restore_for_sampling(config, args.workdir)
    cases = heldout_cases(config, args.prompts)
    reqs = [
        Request(
            id=f"{i:03d}", prompt=c["caption"], cond_frames=[0], seed=i,
            motion_score=float(c["motion_score"]), first_frame=normalize_uint8(c["video"][0]),
        ).with_defaults(config)
        for i, c in enumerate(cases)
    ]  # fmt: skip
    cond, x0 = build_conditions(config, comps, reqs)
    scale = np.asarray([r.cfg_scale for r in reqs], np.float32)
    inputs = (x0, cond, negative_text(comps, reqs), scale)

    thresholds = [float(t) for t in args.thresholds.split(",") if t]
    uncached = make_sample_fn(config, graphdef)
    cfg = config.copy_and_resolve_references()
    cfg.sample.step_cache = True
    cached = make_sample_fn(cfg, graphdef, with_stats=True)  # threshold traced: one compile
    fns = {"uncached": lambda: uncached(params, *inputs)}
    for t in thresholds:
        fns[t] = lambda t=t: cached(params, *inputs, None, jnp.float32(t))

    def run(fn):
        return jax.block_until_ready(fn())

    def videos(latents):
        return to_uint8(np.clip(np.asarray(comps.autoencoder.decode(latents)), -1.0, 1.0))

    load = os.getloadavg()
    print(
        f"step cache on {args.workdir} (step {step}): {len(reqs)} held-out ShapesBench prompts "
        f"(TI2V), {config.sample.steps} {config.sample.solver} steps, CFG {config.sample.cfg_scale}"
        f", {step_cache.total_blocks(config.model)} blocks per uncached call; "
        f"{args.repeats} interleaved repeats; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
        flush=True,
    )
    ref = videos(run(fns["uncached"]))
    print(
        "| threshold | block evals (fraction of uncached) | fewer block evals | SSIM mean "
        "| SSIM worst video |\n|---|---|---|---|---|",
        flush=True,
    )
    rows = []
    for t in thresholds:  # each row as soon as it is measured
        latents, state = run(fns[t])
        s = step_cache.stats(config.model, state)
        scores = [video_ssim(a, b) for a, b in zip(ref, videos(latents))]
        row = dict(
            threshold=t, **s, reduction=1.0 / s["fraction"],
            ssim_mean=float(np.mean(scores)), ssim_min=float(np.min(scores)),
        )  # fmt: skip
        rows.append(row)
        print(
            f"| {t:g} | {s['blocks']}/{s['uncached_blocks']} ({s['fraction']:.2f}) "
            f"| {row['reduction']:.2f}x | {row['ssim_mean']:.3f} | {row['ssim_min']:.3f} |",
            flush=True,
        )
    times: dict = {k: [] for k in fns}
    for _ in range(args.repeats):  # interleaved round-robin: load drifts hit every variant
        for k, fn in fns.items():
            tick = time.perf_counter()
            run(fn)
            times[k].append(time.perf_counter() - tick)
    base_min, base_med = (
        (min(times["uncached"]), float(np.median(times["uncached"])))
        if args.repeats
        else (0.0, 0.0)
    )
    load = os.getloadavg()
    for row in rows if args.repeats else []:
        t = row["threshold"]
        row["time_min_ratio"] = min(times[t]) / base_min
        row["time_median_ratio"] = float(np.median(times[t])) / base_med
        print(
            f"threshold {t:g}: wall time cached/uncached min/min {row['time_min_ratio']:.2f}, "
            f"median {row['time_median_ratio']:.2f} (load average {load[0]:.2f})",
            flush=True,
        )
    print(f"uncached sampler: min {base_min:.3f} s, median {base_med:.3f} s per batch")
    result = {"workdir": args.workdir, "step": step, "prompts": len(reqs),
              "steps": config.sample.steps, "loadavg": load, "uncached_min_s": base_min,
              "uncached_median_s": base_med, "rows": rows}  # fmt: skip
    if args.json:
        with atomic_write(args.json) as fh:
            json.dump(result, fh, indent=1)
    return result


if __name__ == "__main__":
    main()
