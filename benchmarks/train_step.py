"""Train-step benchmark: jitted step vs the training loop, FLOPs and the GEMM roofline.

  python benchmarks/train_step.py [--variants tiny,S] [--steps 10] [--rounds 3] [--no-loop]
                                  [--text online|offline] [--json out.json]

Shapes: B batch; the latents and text of each variant's default config.

Per variant, in one process and interleaved over `--rounds` rounds (the machine may be shared,
so the ratios are the figures to quote, with the load average printed beside them):
  jitted   the compiled train step alone on two fixed batches (`--steps` steps, then a sync);
  loop     `stiv_jax.train.train_loop` itself for 2·steps steps in a fresh workdir: its
           `sec_per_step` of the second log window (data, caption and latent encoding, host
           batch assembly, dispatch, metrics; compiles and the final save left out);
  host     the host side of one batch alone, serially (`prepare_batch` of the next data batch:
           drawing, caption and latent encoding, assembly), which the loop's prefetch thread
           overlaps with the step only where a core is free;
  --text offline: before each loop round the text encoder encodes every caption that
           round will draw (its LRU then serves them), as a pipeline whose records carry
           their text states (the data engine's `text_tokens`, data_pipeline.cache_latents)
           serves them; the loop still draws and assembles its batches. `online` (default):
           the loop encodes each batch's captions, as ShapesBench training does;
  gemm     a square fp32 `jnp.dot` of 2048³ (min of 5), the roofline the step is held against.
Prints min and median per side, the min/min and paired-median loop/jitted ratios, XLA's
FLOPs per step (cost_analysis of the compiled step), achieved GFLOP/s, the roofline
fraction, the compile time and the load average. `--no-loop` times the jitted step (and
the GEMM) alone: the quick A/B of an XLA_FLAGS setting, one process per setting. The jitted
rounds also print their minor page faults and kernel CPU time per step; the host malloc
policy is the train CLI's (`stiv_jax.host_memory`; `STIV_JAX_MALLOC=system` for glibc's
defaults, the A/B of docs/performance.md session 32). Set
JAX_COMPILATION_CACHE_DIR (docs/performance.md) so the loop's compile of each round after
the first is a cache read.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import statistics
import sys
import tempfile
import time

# Run as a script from the repo root: `configs` (not installed) is found beside benchmarks/.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from stiv_jax import host_memory  # noqa: E402
from stiv_jax.atomic import atomic_write  # noqa: E402

GEMM_N = 2048


def gemm_gflops(n: int = GEMM_N, reps: int = 5) -> float:
    """Best GFLOP/s of a square fp32 matmul [n, n] @ [n, n] (jitted, min of `reps`)."""
    ka, kb = jax.random.split(jax.random.key(0))
    a = jax.random.normal(ka, (n, n), jnp.float32)
    b = jax.random.normal(kb, (n, n), jnp.float32)
    f = jax.jit(jnp.dot)
    f(a, b).block_until_ready()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        f(a, b).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def encoder_chain(encoder) -> list:
    """`encoder` and the encoders it wraps, outermost first: the wrappers (word pieces, word
    bag, pooled override) hold no cache and pass their prompts to `inner` / `main`."""
    chain = [encoder]
    while (wrapped := getattr(chain[-1], "inner", getattr(chain[-1], "main", None))) is not None:
        chain.append(wrapped)
    return chain


def loop_step_s(
    config, comps, steps: int, workdir: str, data_seed: int, text_offline: bool = False
) -> float:
    """`sec_per_step` of train_loop's second window of `steps` steps (see module docstring).

    Each round draws its own data (`data_seed`): the shared text encoder's LRU would
    otherwise hold every caption of a later round from the first, and its loop would skip
    the encoding a real run pays for (ShapesBench captions almost never repeat).
    `text_offline`: every caption of the round is encoded first (`--text offline`)."""
    from stiv_jax.data.pipeline import make_dataset
    from stiv_jax.train import train_loop

    c = copy.deepcopy(config)
    with c.unlocked():
        c.train.steps, c.train.log_every = 2 * steps, steps
        c.train.ckpt_every, c.train.sample_every, c.train.max_to_keep = 10**9, 0, 1
        c.sample.num_train_samples = 0
        c.optim.decay_steps = 0  # a 2·steps run has no room for S's cool-down; same step cost
        c.data.seed = data_seed
    if text_offline:
        # The loop's batches plus the prefetch thread's look-ahead, drawn as train_loop draws
        # them (same config and seed, host 0 of 1), encoded into the encoder's LRU.
        n = 2 * steps + int(c.data.prefetch_batches) + 2
        it = iter(make_dataset(c, latent_frames=comps.latent_shape[0]))
        captions = [str(t) for _ in range(n) for t in next(it)["caption"]]
        cached = max(int(e.cache_size) for e in encoder_chain(comps.text_encoder))
        if cached < len(set(captions)):
            raise SystemExit(
                f"--text offline needs text_encoder.cache_size >= {len(set(captions))} "
                f"(the round's captions); got {config.text_encoder.cache_size}"
            )
        comps.text_encoder.encode(captions)
    deepest = encoder_chain(comps.text_encoder)[-1]  # the model that encodes on a miss
    encoded = []  # captions the loop itself encodes (cache misses)
    uncached = deepest._encode_uncached
    deepest._encode_uncached = lambda texts: encoded.extend(texts) or uncached(texts)
    try:
        train_loop(c, workdir, comps=comps)
    finally:
        del deepest._encode_uncached  # back to the class's method
    print(
        f"    loop encoded {len(encoded)} captions ({'offline' if text_offline else 'online'} text)"
    )
    with open(os.path.join(workdir, "metrics.jsonl")) as fh:
        rows = [json.loads(line) for line in fh]
    return float(next(r for r in rows if r["step"] == 2 * steps)["sec_per_step"])


def bench(
    variant: str,
    steps: int,
    rounds: int,
    overrides: dict,
    tmp: str,
    loop_too: bool = True,
    text_offline: bool = False,
) -> dict:
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
    tx = make_optimizer(config.optim, int(config.train.steps))
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

    jitted, loop, host, gemm, faults, kernel = [], [], [], [], [], []
    for r in range(rounds):
        gemm.append(gemm_gflops())
        u0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        for i in range(steps):
            state, m = compiled(state, batches[i % 2], key)
        jax.block_until_ready(m)
        jitted.append((time.perf_counter() - t0) / steps)
        u1 = resource.getrusage(resource.RUSAGE_SELF)
        faults.append((u1.ru_minflt - u0.ru_minflt) / steps)
        kernel.append((u1.ru_stime - u0.ru_stime) / steps)
        if loop_too:
            t0 = time.perf_counter()
            for _ in range(steps):
                jax.block_until_ready(prepare_batch(next(it), comps))
            host.append((time.perf_counter() - t0) / steps)
            run_dir = os.path.join(tmp, f"{variant}_{r}")
            loop.append(
                loop_step_s(config, comps, steps, run_dir, 1000 + r, text_offline=text_offline)
            )
        else:  # --no-loop: the loop and host figures print as NaN
            host.append(float("nan"))
            loop.append(float("nan"))
        print(
            f"  {variant} round {r}: jitted {jitted[-1] * 1e3:.1f} ms ({faults[-1]:.0f} page "
            f"faults, {kernel[-1] * 1e3:.1f} ms kernel CPU per step), loop {loop[-1] * 1e3:.1f}"
            f" ms, host {host[-1] * 1e3:.1f} ms, gemm {gemm[-1]:.1f} GFLOP/s, load "
            f"{os.getloadavg()[0]:.2f}",
            flush=True,
        )
    best_gemm, best = max(gemm), min(jitted)
    b = config.data.batch_size
    return {
        "variant": variant,
        "text": "offline" if text_offline else "online",
        "batch": b,
        "shape": list(comps.latent_shape),
        "jitted_min_s": best,
        "jitted_median_s": statistics.median(jitted),
        "loop_min_s": min(loop),
        "loop_median_s": statistics.median(loop),
        "loop_over_jitted_min": min(loop) / best,
        "loop_over_jitted_paired_median": statistics.median(a / j for a, j in zip(loop, jitted)),
        "jitted_page_faults_per_step": statistics.median(faults),
        "jitted_kernel_cpu_s_per_step": statistics.median(kernel),
        "host_min_s": min(host),
        "host_median_s": statistics.median(host),
        "samples_per_s": b / best,
        "gflops_per_step": flops / 1e9,
        "achieved_gflops_per_s": flops / best / 1e9,
        "gemm_gflops_per_s": best_gemm,
        "roofline_fraction": flops / best / 1e9 / best_gemm,
        "compile_s": compile_s,
        "loadavg": os.getloadavg(),
        "devices": f"{jax.device_count()}x {jax.devices()[0].device_kind}",
        "cpu_count": os.cpu_count(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", default="tiny,S")
    ap.add_argument("--steps", type=int, default=10, help="steps per timed window")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved jitted/loop rounds")
    ap.add_argument("--set", action="append", default=[], help="config override a.b=v")
    ap.add_argument("--no-loop", action="store_true", help="time the jitted step only")
    ap.add_argument(
        "--text",
        choices=("online", "offline"),
        default="online",
        help="loop: encode captions per batch (online) or all before the round (offline)",
    )
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    if args.steps < 1 or args.rounds < 1:
        raise SystemExit(f"--steps={args.steps} and --rounds={args.rounds} must be >= 1")
    overrides = dict(s.split("=", 1) for s in args.set)
    malloc = host_memory.configure()  # as the train CLI does, before JAX starts
    print(
        f"load average before: {os.getloadavg()}; XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r};"
        f" host malloc: {malloc}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="train_step_bench_") as tmp:
        rows = [
            bench(
                v,
                args.steps,
                args.rounds,
                overrides,
                tmp,
                loop_too=not args.no_loop,
                text_offline=args.text == "offline",
            )
            for v in args.variants.split(",")
        ]
    for r in rows:
        print(
            f"{r['variant']:>5}: batch {r['batch']} latents {r['shape']}  jitted step min "
            f"{r['jitted_min_s'] * 1e3:.1f} ms (median {r['jitted_median_s'] * 1e3:.1f})  loop min "
            f"{r['loop_min_s'] * 1e3:.1f} ms (median {r['loop_median_s'] * 1e3:.1f})\n"
            f"       loop/jitted ({r['text']} text) {r['loop_over_jitted_min']:.3f} min/min, "
            f"{r['loop_over_jitted_paired_median']:.3f} paired median; host batch min "
            f"{r['host_min_s'] * 1e3:.1f} ms (median {r['host_median_s'] * 1e3:.1f})  |  "
            f"{r['samples_per_s']:.2f} samples/s  {r['gflops_per_step']:.2f} GFLOP/step (XLA)  "
            f"{r['achieved_gflops_per_s']:.1f} GFLOP/s = {100 * r['roofline_fraction']:.1f}% of "
            f"the {GEMM_N}³ fp32 GEMM's {r['gemm_gflops_per_s']:.1f} GFLOP/s\n"
            f"       jitted step per step (median): {r['jitted_page_faults_per_step']:.0f} minor "
            f"page faults, {r['jitted_kernel_cpu_s_per_step'] * 1e3:.1f} ms kernel CPU\n"
            f"       compile {r['compile_s']:.1f} s (not in any figure above), {r['devices']}, "
            f"{r['cpu_count']} cores, load average {r['loadavg'][0]:.2f} "
            f"{r['loadavg'][1]:.2f} {r['loadavg'][2]:.2f}"
        )
    if args.json:
        with atomic_write(args.json) as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
