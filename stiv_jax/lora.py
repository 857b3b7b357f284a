"""LoRA adapters for fine-tuning a big model: rank-r updates of attention and MLP kernels.

Shapes: Din/Dout a kernel's input/output width, r the rank, a leading [depth] axis on
scanned blocks (`model.scan_blocks`).

  kernel' = kernel + (alpha / r) · A @ B      A [..., Din, r] ~ N(0, 1/Din), B [..., r, Dout] = 0

so a fresh adapter changes nothing. With `train.lora_rank = r > 0` the trainer keeps the
base weights frozen in `state["base"]`, trains only `state["lora"]` (the optimizer state is
the adapters'), and stores `state["params"] = merge(base, lora)` and its EMA: every
checkpoint is already merged (merge-on-export), so sampling, evaluation and `init_from`
read it like any other run; the adapters alone are `state["lora"]`.
`train.lora_targets`: `attention` (qkv, q, kv, out of spatial, temporal and cross
attention) and/or `mlp` (fc1, fc2).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

TARGETS = {"attention": ("qkv", "q", "kv", "out"), "mlp": ("fc1", "fc2")}


def target_names(targets: str) -> tuple[str, ...]:
    """'attention,mlp' -> the layer names adapted (one line for an unknown group)."""
    groups = [g.strip() for g in str(targets).split(",") if g.strip()]
    bad = [g for g in groups if g not in TARGETS]
    if bad or not groups:
        raise ValueError(
            f"train.lora_targets={targets!r} must name some of {tuple(TARGETS)} (comma-separated)"
        )
    return tuple(n for g in groups for n in TARGETS[g])


def _is_target(path, names: tuple[str, ...]) -> bool:
    keys = [getattr(p, "key", getattr(p, "idx", None)) for p in path]
    return len(keys) >= 2 and keys[-1] == "kernel" and keys[-2] in names


def init(params, rank: int, targets: str, key: jax.Array) -> dict:
    """Adapters {keystr(path): {"a", "b"}} for every target kernel of `params` (pure dict)."""
    if rank < 1:
        raise ValueError(f"train.lora_rank={rank} must be >= 1 for adapters")
    names = target_names(targets)
    leaves = [
        (p, x) for p, x in jax.tree_util.tree_flatten_with_path(params)[0] if _is_target(p, names)
    ]
    keys = jax.random.split(key, max(1, len(leaves)))
    out = {}
    for k, (path, w) in zip(keys, leaves):
        *lead, din, dout = w.shape
        a = jax.random.normal(k, (*lead, din, rank), jnp.float32) / jnp.sqrt(float(din))
        out[jax.tree_util.keystr(path)] = {
            "a": a.astype(w.dtype),
            "b": jnp.zeros((*lead, rank, dout), w.dtype),
        }
    return out


def merge(params, lora: dict, scale: float):
    """`params` with kernel + scale · A @ B at every adapted path (a pure function)."""

    def one(path, w):
        ad = lora.get(jax.tree_util.keystr(path))
        if ad is None:
            return w
        delta = jnp.einsum("...ir,...ro->...io", ad["a"], ad["b"])
        return (w + scale * delta).astype(w.dtype)

    return jax.tree_util.tree_map_with_path(one, params)


def scale_of(train_cfg) -> float:
    """alpha / r (alpha = 0 means alpha = r: scale 1)."""
    r = int(train_cfg.lora_rank)
    alpha = float(train_cfg.get("lora_alpha", 0.0)) or float(r)
    return alpha / r
