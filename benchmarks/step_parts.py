"""Where an S training step's time goes besides the model: host work, optimizer, fusions.

  python benchmarks/step_parts.py [--res 32] [--reps 15] [--batches 28]

Shapes: B = data.batch_size (8 for S); latents [B, F, res, res, C] of `variant=S,res=R`.

Prints, in one process (ratios and minima are the figures to quote; the load average is
printed beside them, and the 2 cores are shared with everything else that runs):
  host       per batch, serially: MiniLM encoding of its B captions (fresh captions, as in
             training), ShapesBench drawing of B clips, and `prepare_batch` once the
             captions are encoded (assembly, device put);
  optimizer  the optimizer + parameter EMA + non-finite guard of `make_train_step` alone on
             the real state (per-leaf `where`, no guard, and the guard as one `lax.cond`),
             interleaved with the whole jitted step;
  program    XLA's FLOPs and bytes of the compiled step and its entry computation's fusion
             count by origin (forward, backward, the guard, the optimizer's arithmetic).
docs/performance.md (session 10) has the figures and what they mean.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402


def _timed(fn, reps: int) -> list[float]:
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        out.append(time.perf_counter() - t0)
    return out


def _line(name: str, times: list[float]) -> str:
    return f"  {name:34s} min {min(times) * 1e3:7.1f} ms  median {statistics.median(times) * 1e3:7.1f} ms"


def host_parts(config, comps, batches: int) -> None:
    from stiv_jax.data.pipeline import make_dataset
    from stiv_jax.data.shapes import generate_clip
    from stiv_jax.train import prepare_batch

    it = iter(make_dataset(config, latent_frames=comps.latent_shape[0]))
    data = [next(it) for _ in range(batches + 2)]
    enc = comps.text_encoder
    for b in data[:2]:  # compile the encoder's lengths
        enc.encode([str(c) for c in b["caption"]])
    bs = int(config.data.batch_size)
    t = {"encode": [], "draw": [], "prepare": []}
    for i, b in enumerate(data[2:]):
        captions = [str(c) for c in b["caption"]]
        t0 = time.perf_counter()
        jax.block_until_ready(enc.encode(captions).tokens)  # fresh captions: no LRU hit
        t["encode"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for j in range(bs):
            generate_clip(10_000 + i * bs + j, **_clip_kwargs(config))
        t["draw"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        jax.block_until_ready(prepare_batch(b, comps))  # captions now cached
        t["prepare"].append(time.perf_counter() - t0)
    print(f"host work per batch of {bs} ({batches} batches; load {os.getloadavg()[0]:.2f}):")
    print(_line(f"MiniLM encoding of {bs} captions", t["encode"]))
    print(_line(f"ShapesBench drawing of {bs} clips", t["draw"]))
    print(_line("prepare_batch, captions encoded", t["prepare"]))


def _clip_kwargs(config) -> dict:
    from stiv_jax.data.shapes import config_kwargs

    return config_kwargs(config)


def optimizer_parts(config, comps, reps: int):
    from stiv_jax.data.pipeline import make_dataset
    from stiv_jax.optim import ema_decay, ema_update, make_optimizer
    from stiv_jax.train import init_state, make_train_step, prepare_batch

    tx = make_optimizer(config.optim, int(config.train.steps))
    graphdef, state = init_state(comps.model(0), tx)
    batch = prepare_batch(
        next(iter(make_dataset(config, latent_frames=comps.latent_shape[0]))), comps
    )
    grads = jax.tree.map(lambda p: jnp.full_like(p, 1e-3), state["params"])
    decay = float(config.optim.ema_decay)

    def update(guard: str):
        def fn(st, g):  # the tail of make_train_step after the gradient
            updates, opt = tx.update(g, st["opt"], st["params"])
            params = optax.apply_updates(st["params"], updates)
            ema = ema_update(st["ema"], params, ema_decay(decay, st["step"]))
            new = {"params": params, "ema": ema, "opt": opt}
            old = {k: st[k] for k in new}
            finite = jnp.isfinite(optax.tree.norm(g)) & jnp.isfinite(optax.tree.norm(updates))
            if guard == "where":
                new = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
            elif guard == "cond":
                new = jax.lax.cond(finite, lambda: new, lambda: old)
            new["step"] = st["step"] + 1
            return new

        return jax.jit(fn)

    fns = {
        "optimizer+EMA, guard per leaf": update("where"),
        "optimizer+EMA, no guard": update("none"),
        "optimizer+EMA, guard as lax.cond": update("cond"),
    }
    step = jax.jit(make_train_step(config, graphdef, tx, comps.null_text))
    key = jax.random.key(0)
    calls = {name: (lambda f=f: f(state, grads)) for name, f in fns.items()}
    calls["whole jitted step"] = lambda: step(state, batch, key)[1]
    for call in calls.values():
        jax.block_until_ready(call())
    times = {name: [] for name in calls}
    for _ in range(reps):  # interleaved
        for name, call in calls.items():
            times[name] += _timed(call, 1)
    print(f"optimizer vs step (min of {reps}, interleaved; load {os.getloadavg()[0]:.2f}):")
    for name, t in times.items():
        print(_line(name, t))
    return step, state, batch, key


def program_parts(step, state, batch, key) -> None:
    compiled = step.lower(state, batch, key).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    text = compiled.as_text()
    entry = text[text.find("ENTRY") :]
    kinds = collections.Counter()
    for line in entry.splitlines():
        if " fusion(" not in line:
            continue
        m = re.search(r'op_name="([^"]*)"', line)
        name = m.group(1) if m else ""
        if "transpose(jvp" in name:
            kinds["backward"] += 1
        elif "jvp(" in name:
            kinds["forward"] += 1
        elif "_where" in name:
            kinds["non-finite guard (where)"] += 1
        else:
            kinds["optimizer, EMA, norms, other"] += 1
    leaves = len(jax.tree.leaves(state))
    print(
        f"compiled step: {cost.get('flops', 0) / 1e9:.2f} GFLOP, "
        f"{cost.get('bytes accessed', 0) / 1e9:.2f} GB accessed, {leaves} state leaves, "
        f"{sum(kinds.values())} fusions in the entry computation:"
    )
    for k, v in kinds.most_common():
        print(f"  {v:6d}  {k}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--res", type=int, default=32)
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--batches", type=int, default=28)
    args = ap.parse_args()
    from configs.stiv import get_config
    from stiv_jax.runtime import Components, fill_train_grid

    config = get_config(f"variant=S,res={args.res}")
    if args.res != 32:  # RoPE positions of the 32² grid, as a low-resolution stage would
        config.model.train_grid = (4, 8, 8)
    fill_train_grid(config)
    comps = Components(config)
    print(f"S at {args.res}², batch {config.data.batch_size}; {jax.device_count()}x "
          f"{jax.devices()[0].device_kind}, {os.cpu_count()} cores")  # fmt: skip
    host_parts(config, comps, args.batches)
    program_parts(*optimizer_parts(config, comps, args.reps))


if __name__ == "__main__":
    main()
