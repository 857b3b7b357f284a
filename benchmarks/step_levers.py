"""Micro-benchmarks of the S train step's levers on XLA:CPU, interleaved in one process.

  python benchmarks/step_levers.py [--reps 15] [--only attention,rope,norm,layout,step]

Shapes (variant S, batch 8): B batch, F' = 4 token frames, S = 64 spatial tokens, N = 4
heads, H = 32 head dim, D = 128 width, L = 32 text tokens.
  spatial attention  q/k/v [B·F' = 32, 64, N, H]
  temporal attention q/k/v [B·S = 512, 4, N, H]
  cross attention    q [B = 8, F'·S = 256, N, H], k/v [8, 32, N, H], key mask [8, 32]

Every figure is forward + backward (grad of a fixed random projection of the output) of a
jitted function; variants of one item run round-robin, `--reps` rounds, so each ratio
compares runs made under the same load. Printed per variant: min and median ms and the
min/min and paired-median ratio to the first (reference) variant, with the load average.
`attention`, `rope`, `temporal` and `layout` time the candidates of
`attention_variants.py` (beside this script) against the model's math; `gemm` the step's own
GEMM shapes against a square 2048³ one; `step` the whole S train step with the math before
issue 16 patched back in (LayerNorm then modulate, autodiff backward) against the current code.
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

from stiv_jax.kernels import prologue  # noqa: E402
from stiv_jax.kernels.attention import attention_reference  # noqa: E402


def fwd_bwd(fn, *args, argnums=None):
    """jitted: grads of sum(fn(*args) · R) for a fixed random R w.r.t. the float args."""
    out = jax.eval_shape(fn, *args)
    cot = jax.random.normal(jax.random.key(7), out.shape, jnp.float32)
    argnums = argnums if argnums is not None else tuple(range(len(args)))
    # value_and_grad: the forward stays live even where the gradient would not need it.
    g = jax.jit(jax.value_and_grad(lambda *a: jnp.sum(fn(*a).astype(jnp.float32) * cot), argnums))
    return lambda: jax.block_until_ready(g(*args))


def race(name: str, variants: dict, reps: int) -> None:
    """Round-robin timing of `variants` {label: thunk}; prints ratios to the first."""
    for f in variants.values():  # compile + warm
        f()
        f()
    times = {k: [] for k in variants}
    for _ in range(reps):
        for k, f in variants.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    ref = next(iter(variants))
    print(f"{name}  (load average {' '.join(f'{x:.2f}' for x in os.getloadavg())})", flush=True)
    for k, ts in times.items():
        paired = statistics.median(a / b for a, b in zip(ts, times[ref]))
        print(
            f"  {k:<44} min {min(ts) * 1e3:8.2f} ms  median {statistics.median(ts) * 1e3:8.2f} ms"
            f"  min/min {min(ts) / min(times[ref]):.3f}  paired median {paired:.3f}",
            flush=True,
        )


def rand(*shape, seed=0):
    return jax.random.normal(jax.random.key(seed), shape, jnp.float32)


# ---------------------------------------------------------------------------- attention
B, FP, S, N, H, D, L = 8, 4, 64, 4, 32, 128, 32
ATTN_SHAPES = {  # name -> (q batch, q len, k len, rope, mask)
    "spatial": (B * FP, S, S, True, False),
    "temporal": (B * S, FP, FP, True, False),
    "cross": (B, FP * S, L, False, True),
}


def attention_inputs(name: str):
    from stiv_jax.model.rope import rope_1d, rope_2d

    b, lq, lk, use_rope, use_mask = ATTN_SHAPES[name]
    q, k, v = rand(b, lq, N, H, seed=1), rand(b, lk, N, H, seed=2), rand(b, lk, N, H, seed=3)
    qs, ks = 1 + 0.1 * rand(H, seed=4), 1 + 0.1 * rand(H, seed=5)
    rope = (rope_2d(8, 8, H) if lq == S else rope_1d(FP, H)) if use_rope else None
    mask = (
        (jnp.arange(lk)[None] < jnp.array([[5], [32], [9], [17], [1], [30], [12], [20]]))
        if use_mask
        else None
    )
    return (q, k, v, qs, ks), dict(rope=rope, mask=mask)


def attention_levers(reps: int) -> None:
    from attention_variants import xla_attention

    def dpa(q, k, v, qs, ks, rope=None, mask=None):
        qf = prologue.qk_prologue(q, qs, rope, 1e-6)
        kf = prologue.qk_prologue(k, ks, rope, 1e-6)
        m = None if mask is None else mask[:, None, None, :]
        return jax.nn.dot_product_attention(qf, kf, v, mask=m, implementation="xla")

    for name in ATTN_SHAPES:
        args, kw = attention_inputs(name)

        def call(fn, args=args, kw=kw, **extra):
            return fwd_bwd(
                lambda q, k, v, qs, ks: fn(
                    q, k, v, q_norm_scale=qs, k_norm_scale=ks, **kw, **extra
                ),
                *args,
            )

        race(
            f"attention {name}: q{tuple(args[0].shape)} k{tuple(args[1].shape)} fwd+bwd",
            {
                "reference = the model's path (einsum, concat RoPE)": call(attention_reference),
                "xla_attention (folded RoPE, score form by key count)": call(xla_attention),
                "einsum scores, folded RoPE": call(xla_attention, short_keys=0),
                "multiply-reduce scores, folded RoPE": call(xla_attention, short_keys=1 << 30),
                "jax.nn.dot_product_attention(xla)": fwd_bwd(
                    lambda q, k, v, qs, ks, kw=kw: dpa(q, k, v, qs, ks, **kw), *args
                ),
            },
            reps,
        )


# ---------------------------------------------------------------------------- rope
def rope_levers(reps: int) -> None:
    from attention_variants import apply_rope_folded, fold_rope

    from stiv_jax.model.rope import rope_2d

    x = rand(B * FP, S, N, H)
    cos, sin = rope_2d(8, 8, H)
    c, s = fold_rope(cos, sin)
    race(
        f"RoPE on x{tuple(x.shape)} fwd+bwd",
        {
            "reference (slices + concat)": fwd_bwd(lambda x: prologue.apply_rope(x, cos, sin), x),
            "sign-folded tables, reversed halves": fwd_bwd(lambda x: apply_rope_folded(x, c, s), x),
            "sign-folded tables, roll": fwd_bwd(
                lambda x: (
                    x * jnp.concatenate([cos, cos], -1)[:, None]
                    + jnp.roll(x, H // 2, -1) * jnp.concatenate([-sin, sin], -1)[:, None]
                ),
                x,
            ),
        },
        reps,
    )


# ---------------------------------------------------------------------------- norm
def norm_levers(reps: int) -> None:
    from stiv_jax.model import layers

    x = rand(B, FP, S, D)
    shift, scale = 0.1 * rand(B, 1, 1, D, seed=1), 0.1 * rand(B, 1, 1, D, seed=2)
    variants = {
        "reference: modulate(layer_norm(x))": fwd_bwd(
            layers.layer_norm_modulate_reference, x, shift, scale
        ),
        "one-pass statistics (E[x²] − E[x]²)": fwd_bwd(
            lambda x, sh, sc: _one_pass_ln(x) * (1 + sc) + sh, x, shift, scale
        ),
        "layer_norm_modulate (custom VJP)": fwd_bwd(layers.layer_norm_modulate, x, shift, scale),
    }
    race(f"LayerNorm + modulate on x{tuple(x.shape)} fwd+bwd", variants, reps)
    y, gate = rand(B, FP, S, D, seed=3), 0.1 * rand(B, 1, 1, D, seed=4)
    variants = {
        "reference: x + gate·layer_norm(y)": fwd_bwd(
            layers.add_gated_layer_norm_reference, x, y, gate
        ),
        "add_gated_layer_norm (custom VJP)": fwd_bwd(layers.add_gated_layer_norm, x, y, gate),
    }
    race(f"residual + gate·LayerNorm on y{tuple(y.shape)} fwd+bwd", variants, reps)


def _one_pass_ln(x, eps=1e-6):
    mean = jnp.mean(x, -1, keepdims=True)
    var = jnp.mean(x * x, -1, keepdims=True) - mean * mean
    return (x - mean) * jax.lax.rsqrt(var + eps)


# ---------------------------------------------------------------------------- layout
def layout_levers(reps: int) -> None:
    """Spatial self-attention sub-layer with its projections: [B, L, 3·D] then head slices
    (the model) vs q/k/v projected straight into [3, B, N, L, H] by one einsum."""
    from attention_variants import fold_rope, xla_attention

    from stiv_jax.model.rope import rope_2d

    x = rand(B * FP, S, D)
    w_qkv, w_out = rand(D, 3 * D, seed=1) / D**0.5, rand(D, D, seed=2) / D**0.5
    qs = ks = jnp.ones((H,))
    cos, sin = rope_2d(8, 8, H)
    c, s = fold_rope(cos, sin)

    def rows(x, w_qkv, w_out):  # the model: 2-D GEMMs, heads as a reshape
        b, l, _ = x.shape
        qkv = (x.reshape(-1, D) @ w_qkv).reshape(b, l, 3, N, H)
        o = xla_attention(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], q_norm_scale=qs,
                          k_norm_scale=ks, rope=(cos, sin))  # fmt: skip
        return (o.reshape(-1, D) @ w_out).reshape(b, l, D)

    def heads_first(x, w_qkv, w_out):  # [3, B, N, L, H] straight from one einsum
        qkv = jnp.einsum("bld,dtnh->tbnlh", x, w_qkv.reshape(D, 3, N, H))
        q, k, v = (
            prologue.rms_norm(t, s, 1e-6) for t, s in ((qkv[0], qs), (qkv[1], ks), (qkv[2], None))
        )

        def rot(t):  # folded RoPE in [B, N, L, H]: tables [L, 2, H/2]
            t2 = t.reshape(*t.shape[:-1], 2, H // 2)
            return (t2 * c + t2[..., ::-1, :] * s).reshape(t.shape)

        q, k = rot(q), rot(k)
        p = jax.nn.softmax(jnp.einsum("bnlh,bnmh->bnlm", q, k) / H**0.5, axis=-1)
        o = jnp.einsum("bnlm,bnmh->bnlh", p, qkv[2])
        return jnp.einsum("bnlh,nhd->bld", o, w_out.reshape(N, H, D))

    race(
        f"spatial self-attention sub-layer x{tuple(x.shape)} with projections, fwd+bwd",
        {
            "rows: [B·L, D] GEMMs, head reshape": fwd_bwd(rows, x, w_qkv, w_out),
            "heads-first einsum projections": fwd_bwd(heads_first, x, w_qkv, w_out),
        },
        reps,
    )


def temporal_layout_levers(reps: int) -> None:
    """Temporal self-attention sub-layer on [B, F', S, D]: tokens folded into batch by a
    transpose (the model) vs attention along the frames axis in place (no transposes)."""
    from attention_variants import apply_rope_folded, fold_rope, xla_attention

    from stiv_jax.model.rope import rope_1d

    x = rand(B, FP, S, D)
    w_qkv, w_out = rand(D, 3 * D, seed=1) / D**0.5, rand(D, D, seed=2) / D**0.5
    qs = ks = jnp.ones((H,))
    cos, sin = rope_1d(FP, H)
    c, s = fold_rope(cos, sin)

    def folded(x, w_qkv, w_out):  # the model: [B·S, F', D] via swapaxes
        h = x.swapaxes(1, 2).reshape(B * S, FP, D)
        qkv = (h.reshape(-1, D) @ w_qkv).reshape(B * S, FP, 3, N, H)
        o = xla_attention(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], q_norm_scale=qs,
                          k_norm_scale=ks, rope=(cos, sin))  # fmt: skip
        o = (o.reshape(-1, D) @ w_out).reshape(B, S, FP, D)
        return o.swapaxes(1, 2)

    def in_place(x, w_qkv, w_out):  # attention along axis 1 of [B, F', S, N, H]
        qkv = (x.reshape(-1, D) @ w_qkv).reshape(B, FP, S, 3, N, H)
        q, k, v = (qkv[:, :, :, i] for i in range(3))
        q = prologue.rms_norm(q, qs, 1e-6)
        k = prologue.rms_norm(k, ks, 1e-6)
        cc, ss = c[:, None], s[:, None]  # [F', 1, 2, H/2] -> broadcast over S (and N)
        q = apply_rope_folded(q, cc, ss) / H**0.5
        k = apply_rope_folded(k, cc, ss)
        logits = jnp.sum(q[:, :, None] * k[:, None], -1)  # [B, F', F', S, N]
        p = jax.nn.softmax(logits, axis=2)
        o = jnp.sum(p[..., None] * v[:, None], axis=2)  # [B, F', S, N, H]
        return (o.reshape(-1, D) @ w_out).reshape(B, FP, S, D)

    race(
        f"temporal self-attention sub-layer x{tuple(x.shape)} with projections, fwd+bwd",
        {
            "tokens folded into batch (transposes)": fwd_bwd(folded, x, w_qkv, w_out),
            "along the frames axis in place": fwd_bwd(in_place, x, w_qkv, w_out),
        },
        reps,
    )


# ---------------------------------------------------------------------------- step
def reference_math(norms: tuple[str, ...] = ("pre", "post")):
    """Patches the pre-issue-16 math back in for the sandwich's `norms`: pre (LayerNorm then
    modulate, autodiff backward; session 4's change undone) and post (x + gate·LayerNorm(y),
    autodiff backward; session 22's); returns an undo function."""
    from stiv_jax.model import block as block_mod
    from stiv_jax.model import layers
    from stiv_jax.model import stiv as stiv_mod

    saved = []
    if "pre" in norms:
        saved += [
            (block_mod, "layer_norm_modulate", layers.layer_norm_modulate_reference),
            (stiv_mod, "layer_norm_modulate", layers.layer_norm_modulate_reference),
        ]
    if "post" in norms:
        saved += [(block_mod, "add_gated_layer_norm", layers.add_gated_layer_norm_reference)]
    old = [(m, n, getattr(m, n)) for m, n, _ in saved]
    for m, n, f in saved:
        setattr(m, n, f)
    return lambda: [setattr(m, n, f) for m, n, f in old]


def step_levers(reps: int, variant: str = "S", overrides: dict | None = None) -> None:
    from configs.stiv import get_config
    from stiv_jax.data.pipeline import make_dataset
    from stiv_jax.optim import make_optimizer
    from stiv_jax.runtime import Components, fill_train_grid
    from stiv_jax.train import init_state, make_train_step, prepare_batch

    config = get_config(f"variant={variant}")
    with config.unlocked():
        for k, v in (overrides or {}).items():
            sec, name = k.split(".")
            config[sec][name] = v
    fill_train_grid(config)
    comps = Components(config)
    tx = make_optimizer(config.optim, int(config.train.steps))
    batch = prepare_batch(
        next(iter(make_dataset(config, latent_frames=comps.latent_shape[0]))), comps
    )
    key = jax.random.key(0)

    def build(norms: tuple[str, ...]):
        undo = reference_math(norms)
        try:
            graphdef, state = init_state(comps.model(0), tx)
            fn = jax.jit(make_train_step(config, graphdef, tx, comps.null_text))
            compiled = fn.lower(state, batch, key).compile()
        finally:
            undo()
        return lambda: jax.block_until_ready(compiled(state, batch, key))

    race(
        f"train step {variant} {overrides or ''} (fwd+bwd+AdaFactor+EMA)",
        {
            "reference math (before issue 16)": build(("pre", "post")),
            "fused pre-norm only (before session 22)": build(("post",)),
            "current code": build(()),
        },
        reps,
    )


# ---------------------------------------------------------------------------- gemms
def gemm_ceiling(reps: int) -> None:
    """GFLOP/s of the step's own GEMM shapes (fwd + both grads) vs a 2048³ square GEMM:
    the ceiling XLA:CPU puts on the step's roofline fraction at this width."""
    tokens = B * FP * S  # 2048 rows
    shapes = {"2048³ square": (2048, 2048, 2048)}
    for d in (128, 512):
        shapes[f"D={d}: qkv [{tokens},{d}]@[{d},{3 * d}]"] = (tokens, d, 3 * d)
        shapes[f"D={d}: mlp fc1 [{tokens},{d}]@[{d},{4 * d}]"] = (tokens, d, 4 * d)
        shapes[f"D={d}: mlp fc2 [{tokens},{4 * d}]@[{4 * d},{d}]"] = (tokens, 4 * d, d)
    runs, flops = {}, {}
    for name, (m, k, n) in shapes.items():
        a, w = rand(m, k, seed=1), rand(k, n, seed=2)
        runs[name] = fwd_bwd(lambda a, w: a @ w, a, w)
        flops[name] = 3 * 2 * m * k * n  # forward, d(a), d(w)
    times = {}
    for f in runs.values():
        f()
    for _ in range(reps):
        for name, f in runs.items():
            t0 = time.perf_counter()
            f()
            times.setdefault(name, []).append(time.perf_counter() - t0)
    print(f"GEMM ceiling, fwd+bwd (load average {' '.join(f'{x:.2f}' for x in os.getloadavg())})")
    best = {name: flops[name] / min(ts) / 1e9 for name, ts in times.items()}
    top = best["2048³ square"]
    for name, g in best.items():
        print(f"  {name:<40} {g:7.1f} GFLOP/s  ({100 * g / top:.0f}% of the square GEMM)")


LEVERS = {
    "gemm": gemm_ceiling,
    "attention": attention_levers,
    "rope": rope_levers,
    "norm": norm_levers,
    "layout": layout_levers,
    "temporal": temporal_layout_levers,
    "step": step_levers,
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--only", default=",".join(LEVERS), help=f"comma list of {list(LEVERS)}")
    args = ap.parse_args()
    names = args.only.split(",")
    if any(n not in LEVERS for n in names) or args.reps < 1:
        raise SystemExit(f"--only={args.only} must name {list(LEVERS)}; --reps >= 1")
    print(f"{jax.devices()[0].device_kind}, {os.cpu_count()} cores", flush=True)
    for n in names:
        LEVERS[n](args.reps)


if __name__ == "__main__":
    main()
