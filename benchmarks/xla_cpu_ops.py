"""Is XLA:CPU the limit? The S step's non-GEMM ops alone, XLA against PyTorch eager.

  python benchmarks/xla_cpu_ops.py [--reps 30]

The S train step spends ~56% of its time outside GEMMs (docs/performance.md, session 22:
elementwise 27%, layout 16%, reductions 13%) while its GEMMs run near the machine's peak.
This times each kind of that work at the step's own shapes, forward + backward, as one
jitted XLA program and as PyTorch eager (2 threads, the same cores), round-robin in one
process so both sides see the same load. Shapes (variant S, batch 8): T = 2,048 tokens
(8 clips × 4 token frames × 64 spatial tokens), D = 128 width, M = 512 MLP width, 2 heads
of 64; spatial scores [32 clip-frames, 2, 64, 64].

  gemm        [T, D] @ [D, M]                    (the reference: both sides call a BLAS)
  layer_norm  LayerNorm over D of [T, D], no affine
  ln_modulate LayerNorm · (1 + scale) + shift, scale/shift per clip [8, D] (AdaLN)
  gelu        tanh GELU of [T, M]
  softmax     softmax over the last axis of [32, 2, 64, 64]
  head_split  [32, 64, 2, 64] → [32, 2, 64, 64], materialised (transpose + copy)
  frame_swap  [8, 4, 64, 128] → [8, 64, 4, 128], materialised (spatial ↔ temporal layout)
  dispatch    x + 1 on 8 floats: the fixed cost of one call

Printed per op: min and median µs per side, XLA/torch min/min and paired median, and the
bytes the forward reads and writes over XLA's min time (effective GB/s; the backward
moves about as much again). A ratio well above 1 on the layout and elementwise rows, with
the GEMM row near 1, is XLA:CPU's code for small tensors, not the model's math.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

TORCH_THREADS = 2
T, D, M, CLIPS, FRAMES, TOKENS, HEADS, HEAD_DIM = 2048, 128, 512, 8, 4, 64, 2, 64


def _ln(x, eps=1e-6):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / (var + eps) ** 0.5


def ops():
    """name -> (jax fn, torch fn, input shapes, forward bytes moved)."""
    import torch
    import torch.nn.functional as F

    def t_ln(x):
        return F.layer_norm(x, x.shape[-1:], eps=1e-6)

    def j_mod(x, s, b):
        x = x.reshape(CLIPS, -1, D)
        return (_ln(x) * (1 + s[:, None]) + b[:, None]).reshape(T, D)

    def t_mod(x, s, b):
        x = x.reshape(CLIPS, -1, D)
        return (t_ln(x) * (1 + s[:, None]) + b[:, None]).reshape(T, D)

    f4 = 4
    score = (CLIPS * FRAMES, HEADS, TOKENS, TOKENS)
    heads = (CLIPS * FRAMES, TOKENS, HEADS, HEAD_DIM)
    frames = (CLIPS, FRAMES, TOKENS, D)
    return {
        "gemm": (jnp.dot, torch.matmul, [(T, D), (D, M)], f4 * (T * D + D * M + T * M)),
        "layer_norm": (_ln, t_ln, [(T, D)], f4 * 2 * T * D),
        "ln_modulate": (j_mod, t_mod, [(T, D), (CLIPS, D), (CLIPS, D)], f4 * 2 * T * D),
        "gelu": (
            lambda x: jax.nn.gelu(x, approximate=True),
            lambda x: F.gelu(x, approximate="tanh"),
            [(T, M)],
            f4 * 2 * T * M,
        ),
        "softmax": (
            lambda x: jax.nn.softmax(x, -1),
            lambda x: torch.softmax(x, -1),
            [score],
            f4 * 2 * int(np.prod(score)),
        ),
        "head_split": (
            lambda x: x.transpose(0, 2, 1, 3),
            lambda x: x.permute(0, 2, 1, 3).contiguous(),
            [heads],
            f4 * 2 * int(np.prod(heads)),
        ),
        "frame_swap": (
            lambda x: x.transpose(0, 2, 1, 3),
            lambda x: x.permute(0, 2, 1, 3).contiguous(),
            [frames],
            f4 * 2 * int(np.prod(frames)),
        ),
        "dispatch": (lambda x: x + 1, lambda x: x + 1, [(8,)], f4 * 16),
    }


def xla_side(fn, shapes):
    """Thunk: jitted value-and-grad of sum(fn(*args) · R), R a fixed random cotangent."""
    args = [jax.random.normal(jax.random.key(i), s, jnp.float32) for i, s in enumerate(shapes)]
    cot = jax.random.normal(jax.random.key(99), jax.eval_shape(fn, *args).shape, jnp.float32)
    g = jax.jit(jax.value_and_grad(lambda *a: jnp.sum(fn(*a) * cot), tuple(range(len(args)))))
    return lambda: jax.block_until_ready(g(*args))


def torch_side(fn, shapes):
    """Thunk: the same forward + backward in PyTorch eager (autograd, fp32)."""
    import torch

    gen = torch.Generator().manual_seed(0)
    args = [torch.randn(s, generator=gen, requires_grad=True) for s in shapes]
    with torch.no_grad():
        cot = torch.randn(fn(*args).shape, generator=gen)

    def run():
        for a in args:
            a.grad = None
        out = fn(*args)
        out.backward(cot)

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=30, help="round-robin rounds per op")
    ap.add_argument("--inner", type=int, default=20, help="calls per timed sample")
    args = ap.parse_args()
    if args.reps < 1 or args.inner < 1:
        raise SystemExit(f"--reps={args.reps} and --inner={args.inner} must be >= 1")
    try:
        import torch
    except ImportError:
        raise SystemExit("xla_cpu_ops needs PyTorch (pip install -e '.[torch]')") from None
    torch.set_num_threads(TORCH_THREADS)
    print(
        f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
        f"{jax.devices()[0].device_kind} × {jax.device_count()}, torch {torch.__version__} "
        f"on {TORCH_THREADS} threads; µs per forward + backward",
        flush=True,
    )
    print(
        f"{'op':<12} {'XLA min':>9} {'median':>9} {'torch min':>10} {'median':>9}"
        f" {'XLA/torch min/min':>18} {'paired median':>14} {'XLA GB/s':>9}"
    )
    for name, (jfn, tfn, shapes, nbytes) in ops().items():
        sides = {"xla": xla_side(jfn, shapes), "torch": torch_side(tfn, shapes)}
        for f in sides.values():  # compile / warm
            f()
            f()
        times = {k: [] for k in sides}
        for _ in range(args.reps):
            for k, f in sides.items():
                t0 = time.perf_counter()
                for _ in range(args.inner):
                    f()
                times[k].append((time.perf_counter() - t0) / args.inner)
        x, t = times["xla"], times["torch"]
        paired = statistics.median(a / b for a, b in zip(x, t))
        print(
            f"{name:<12} {min(x) * 1e6:9.1f} {statistics.median(x) * 1e6:9.1f}"
            f" {min(t) * 1e6:10.1f} {statistics.median(t) * 1e6:9.1f}"
            f" {min(x) / min(t):18.2f} {paired:14.2f} {nbytes / min(x) / 1e9:9.2f}",
            flush=True,
        )
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
