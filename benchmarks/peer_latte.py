"""STIV's train step vs diffusers' Latte train step, interleaved in one process (CPU, fp32).

  python benchmarks/peer_latte.py [--shapes S,wide] [--pairs 6] [--json out.json]

Shapes: B batch, T pixel frames, F' = T/2 token frames, S = (32/4)² = 64 spatial tokens,
D width, L = 48 text tokens (MiniLM, text_encoder.max_length), Dt = 384 text width.

Both sides see the same token grid [B, F', S, D] (Latte gets STIV's temporal patch of 2
folded into its input channels: [B, 6, F', 32, 32]) and the same caption tokens, and both run
a whole training step: noising, forward, MSE on the velocity, backward and the optimizer
(STIV: `stiv_jax.train.make_train_step` with its AdaFactor + EMA; Latte:
`LatteTransformer3DModel` (ada_norm_single, tanh-GELU, biases) with torch.optim.AdamW,
torch.set_num_threads(2)). Shapes (`SHAPES`):
  S     STIV variant S (4 + 2 decoder blocks = 6 × 128, 4 heads, 4×4 patches, 32², 8 frames,
        batch 8) vs Latte 4 layers × 128 (each layer a spatial and a temporal block).
  wide  the same with D = 512 (8 heads of 64): GEMM-heavy, ~350 GFLOP a step.
FLOPs: matmul FLOPs counted the same way on both sides (STIV: every dot_general in the step's
jaxpr; Latte: torch's FlopCounterMode over one step), plus XLA's cost_analysis total.
A third side, "before", is the STIV step traced with the math before issue 16 patched back
in (`step_levers.reference_math`), so before and after are measured in the same run.
Rounds rotate which side runs first; printed: min and median per side, the min/min and
paired-median STIV/Latte ratios, the same per FLOP, achieved GFLOP/s and the load average.
The host malloc policy is the train CLI's (`stiv_jax.host_memory`), for both sides: torch's
CPU tensors come from the same glibc heap (`STIV_JAX_MALLOC=system` for glibc's defaults).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time

# Run as a script from the repo root: `configs` (not installed) is found beside benchmarks/.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402
from step_levers import reference_math  # noqa: E402  (beside this script)

from stiv_jax import host_memory  # noqa: E402
from stiv_jax.atomic import atomic_write  # noqa: E402

# name -> (STIV config overrides, Latte layers); the rest is variant S's config.
SHAPES = {
    "S": ({}, 4),
    "wide": ({"model.width": 512, "model.heads": 8}, 4),
}
TORCH_THREADS = 2


def matmul_flops(jaxpr) -> int:
    """2·M·N·K summed over every dot_general of a (closed) jaxpr, scans × their length."""
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    total = 0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            (contract, _), _ = eqn.params["dimension_numbers"]
            k = math.prod(eqn.invars[0].aval.shape[d] for d in contract)
            total += 2 * math.prod(eqn.outvars[0].aval.shape) * k
        times = int(eqn.params.get("length", 1)) if eqn.primitive.name == "scan" else 1
        for v in eqn.params.values():
            for sub in v if isinstance(v, tuple | list) else (v,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    total += times * matmul_flops(inner)
    return total


def stiv_side(overrides: dict, *, reference: bool = False):
    """(run() -> seconds of one synced step, batch, matmul FLOPs, XLA FLOPs, config).

    `reference`: the step traced with the math before issue 16 patched back in
    (`step_levers.reference_math`), to show before and after in one run."""
    from configs.stiv import get_config
    from stiv_jax.data.pipeline import make_dataset
    from stiv_jax.optim import make_optimizer
    from stiv_jax.runtime import Components, fill_train_grid
    from stiv_jax.train import init_state, make_train_step, prepare_batch

    config = get_config("variant=S")
    with config.unlocked():
        for k, v in overrides.items():
            section, name = k.split(".")
            config[section][name] = v
    fill_train_grid(config)
    comps = Components(config)
    tx = make_optimizer(config.optim, int(config.train.steps))
    graphdef, state = init_state(comps.model(0), tx)
    batch = prepare_batch(
        next(iter(make_dataset(config, latent_frames=comps.latent_shape[0]))), comps
    )
    fn = make_train_step(config, graphdef, tx, comps.null_text)
    key = jax.random.key(0)
    undo = reference_math() if reference else (lambda: None)
    try:
        mm = matmul_flops(jax.make_jaxpr(fn)(state, batch, key))
        compiled = jax.jit(fn, donate_argnums=0).lower(state, batch, key).compile()
    finally:
        undo()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    box = {"state": state}

    def run() -> float:
        t0 = time.perf_counter()
        box["state"], m = compiled(box["state"], batch, key)
        jax.block_until_ready(m)
        return time.perf_counter() - t0

    return run, batch, mm, float(cost.get("flops", float("nan"))), config


def latte_side(config, batch, layers: int):
    """(run() -> seconds of one step, matmul FLOPs) for Latte on the same batch and token grid."""
    import torch
    from diffusers import LatteTransformer3DModel
    from torch.utils.flop_counter import FlopCounterMode

    torch.set_num_threads(TORCH_THREADS)
    torch.manual_seed(0)
    m = config.model
    pt, p = int(m.temporal_patch), int(m.patch_size)
    heads, d = int(m.heads), int(m.width)
    x1 = np.asarray(batch["latents"])  # [B, F, H, W, C] -> [B, pt·C, F/pt, H, W]
    b, f, h, w, c = x1.shape
    x1 = (
        x1.reshape(b, f // pt, pt, h, w, c)
        .transpose(0, 2, 5, 1, 3, 4)
        .reshape(b, pt * c, f // pt, h, w)
    )
    x1 = torch.from_numpy(np.ascontiguousarray(x1))
    text = torch.from_numpy(np.asarray(batch["text_tokens"], np.float32))
    # No encoder_attention_mask: diffusers' Latte repeats the captions per frame but not their
    # mask (its attention processor then fails to view the mask), and a key mask changes no
    # FLOPs, so Latte attends to the padded tokens too.
    model = LatteTransformer3DModel(
        num_attention_heads=heads, attention_head_dim=d // heads, in_channels=pt * c,
        out_channels=pt * c, num_layers=layers, cross_attention_dim=d, attention_bias=True,
        sample_size=h, patch_size=p, activation_fn="gelu-approximate",
        norm_type="ada_norm_single", norm_elementwise_affine=False, norm_eps=1e-6,
        caption_channels=text.shape[-1], video_length=f // pt,
    )  # fmt: skip
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(0)

    def step() -> None:
        t = torch.rand(b, generator=gen)
        eps = torch.randn(x1.shape, generator=gen)
        tb = t.view(b, 1, 1, 1, 1)
        xt = tb * x1 + (1 - tb) * eps
        out = model(xt, timestep=t * 1000, encoder_hidden_states=text,
                    return_dict=False)[0]  # fmt: skip
        loss = torch.nn.functional.mse_loss(out, x1 - eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    with FlopCounterMode(display=False) as counter:
        step()

    def run() -> float:
        t0 = time.perf_counter()
        step()
        return time.perf_counter() - t0

    return run, float(counter.get_total_flops())


def compare(name: str, pairs: int) -> dict:
    overrides, layers = SHAPES[name]
    stiv_run, batch, stiv_mm, stiv_xla, config = stiv_side(overrides)
    before_run, *_ = stiv_side(overrides, reference=True)
    latte_run, latte_mm = latte_side(config, batch, layers)
    sides = {"stiv": stiv_run, "before": before_run, "latte": latte_run}
    for run in sides.values():  # warm-up
        run()
    times = {k: [] for k in sides}
    for i in range(pairs):  # rotate the order so no side always runs first
        order = list(sides)[i % 3 :] + list(sides)[: i % 3]
        for k in order:
            times[k].append(sides[k]())
    stiv, latte, before = times["stiv"], times["latte"], times["before"]
    per_flop = (stiv_mm / latte_mm) if latte_mm else float("nan")
    row = {
        "shape": name,
        "stiv_config": {**overrides, "variant": "S"},
        "latte_layers": layers,
        "before_min_s": min(before),
        "before_median_s": statistics.median(before),
        "before_ratio_min_min": min(before) / min(latte),
        "before_ratio_paired_median": statistics.median(b / t for b, t in zip(before, latte)),
        "after_over_before_paired_median": statistics.median(s / b for s, b in zip(stiv, before)),
        "stiv_min_s": min(stiv),
        "stiv_median_s": statistics.median(stiv),
        "latte_min_s": min(latte),
        "latte_median_s": statistics.median(latte),
        "ratio_min_min": min(stiv) / min(latte),
        "ratio_paired_median": statistics.median(s / t for s, t in zip(stiv, latte)),
        "stiv_matmul_gflop": stiv_mm / 1e9,
        "latte_matmul_gflop": latte_mm / 1e9,
        "stiv_xla_gflop": stiv_xla / 1e9,
        "ratio_per_flop_min_min": min(stiv) / min(latte) / per_flop,
        "stiv_gflops_per_s": stiv_mm / min(stiv) / 1e9,
        "latte_gflops_per_s": latte_mm / min(latte) / 1e9,
        "loadavg": os.getloadavg(),
    }
    print(
        f"{name:>5}: STIV {row['stiv_min_s'] * 1e3:.0f} ms min / {row['stiv_median_s'] * 1e3:.0f} "
        f"median ({row['stiv_matmul_gflop']:.1f} matmul GFLOP, XLA {row['stiv_xla_gflop']:.1f}; "
        f"{row['stiv_gflops_per_s']:.1f} GFLOP/s)  Latte {row['latte_min_s'] * 1e3:.0f} ms min / "
        f"{row['latte_median_s'] * 1e3:.0f} median ({row['latte_matmul_gflop']:.1f} GFLOP; "
        f"{row['latte_gflops_per_s']:.1f} GFLOP/s)\n"
        f"       STIV/Latte: {row['ratio_min_min']:.3f} min/min, {row['ratio_paired_median']:.3f} "
        f"paired median, {row['ratio_per_flop_min_min']:.3f} per FLOP (min/min); {pairs} pairs, "
        f"load average {' '.join(f'{x:.2f}' for x in row['loadavg'])}\n"
        f"       before issue 16: STIV {row['before_min_s'] * 1e3:.0f} ms min / "
        f"{row['before_median_s'] * 1e3:.0f} median, STIV/Latte {row['before_ratio_min_min']:.3f} "
        f"min/min, {row['before_ratio_paired_median']:.3f} paired median; after/before "
        f"{row['stiv_min_s'] / row['before_min_s']:.3f} min/min, "
        f"{row['after_over_before_paired_median']:.3f} paired median, "
        f"load average {' '.join(f'{x:.2f}' for x in row['loadavg'])}",
        flush=True,
    )
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default="S,wide", help=f"comma list of {sorted(SHAPES)}")
    ap.add_argument(
        "--pairs", type=int, default=6, help="interleaved rounds (one step of each side)"
    )
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    names = args.shapes.split(",")
    bad = [n for n in names if n not in SHAPES]
    if bad or args.pairs < 1:
        raise SystemExit(f"--shapes={args.shapes} must name {sorted(SHAPES)}; --pairs >= 1")
    malloc = host_memory.configure()  # as the train CLI does; glibc malloc serves torch too
    print(
        f"load average before: {os.getloadavg()}; {os.cpu_count()} cores; host malloc: {malloc}",
        flush=True,
    )
    rows = [compare(n, args.pairs) for n in names]
    if args.json:
        with atomic_write(args.json) as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
