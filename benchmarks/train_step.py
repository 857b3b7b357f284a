"""Train-step benchmark: step time, samples/s and compiled FLOPs per step (CPU or any backend).

  python benchmarks/train_step.py [--variants tiny,S] [--steps 10] [--json out.json]

Prints one line per variant; figures are for this machine (quote them with its core count).
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

from stiv_jax.atomic import atomic_write  # noqa: E402


def bench(variant: str, steps: int, overrides: dict) -> dict:
    from configs.stiv import get_config
    from stiv_jax.data.pipeline import make_dataset
    from stiv_jax.optim import make_optimizer
    from stiv_jax.runtime import Components, fill_train_grid
    from stiv_jax.train import init_state, make_train_step, prepare_batch

    config = get_config(f"variant={variant}")
    for k, v in overrides.items():
        node = config
        *path, last = k.split(".")
        for p in path:
            node = node[p]
        node[last] = type(node[last])(v)
    fill_train_grid(config)
    comps = Components(config)
    tx = make_optimizer(config.optim)
    graphdef, state = init_state(comps.model(0), tx)
    it = iter(make_dataset(config, latent_frames=comps.latent_shape[0]))
    batches = [prepare_batch(next(it), comps) for _ in range(2)]
    step = jax.jit(make_train_step(config, graphdef, tx, comps.null_text), donate_argnums=0)
    key = jax.random.key(0)
    t0 = time.perf_counter()
    compiled = step.lower(state, batches[0], key).compile()
    compile_s = time.perf_counter() - t0
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    flops = float(cost.get("flops", float("nan")))
    state, m = compiled(state, batches[0], key)  # warm-up
    jax.block_until_ready(m)
    t0 = time.perf_counter()
    for i in range(steps):
        state, m = compiled(state, batches[i % 2], key)
    jax.block_until_ready(m)
    dt = (time.perf_counter() - t0) / steps
    b = config.data.batch_size
    return {
        "variant": variant,
        "batch": b,
        "shape": list(comps.latent_shape),
        "step_s": dt,
        "samples_per_s": b / dt,
        "gflops_per_step": flops / 1e9,
        "achieved_gflops_per_s": flops / dt / 1e9,
        "compile_s": compile_s,
        "devices": f"{jax.device_count()}x {jax.devices()[0].device_kind}",
        "cpu_count": os.cpu_count(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", default="tiny,S")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--set", action="append", default=[], help="config override a.b=v")
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    overrides = dict(s.split("=", 1) for s in args.set)
    rows = [bench(v, args.steps, overrides) for v in args.variants.split(",")]
    for r in rows:
        print(
            f"{r['variant']:>5}: batch {r['batch']} latents {r['shape']}  step {r['step_s'] * 1e3:8.1f} ms"
            f"  {r['samples_per_s']:7.2f} samples/s  {r['gflops_per_step']:8.2f} GFLOP/step"
            f"  ({r['achieved_gflops_per_s']:.1f} GFLOP/s achieved, compile {r['compile_s']:.1f} s,"
            f" {r['devices']}, {r['cpu_count']} cores)"
        )
    if args.json:
        with atomic_write(args.json) as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
