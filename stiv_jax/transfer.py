"""Progressive training and fine-tuning: start a run from another run's weights.

  train.init_from = <workdir | workdir/checkpoints/<step>>[:params|ema]   (default: ema)

Shapes: p spatial patch, pt/ps temporal patch of the target/source, C latent channels,
m·C patch-embedding input channels (m = 2 for channel concat), D width.

Transfer rules, one per parameter of the new model (STIV's T2I -> T2V -> TI2V recipe):
  same path, same shape      copied (spatial attention, cross attention, MLPs, AdaLN, ...)
  temporal attention         copied only when the source trained on more than one temporal
                             token (a T2V/TI2V run); from a T2I run (frames = 1) it stays
                             freshly initialised: one frame never taught it anything
  patch embedding            inflated: [ps·p·p·C, D] -> [pt·p·p·m·C, D]. Temporal: every
                             target sub-frame gets the source's sum over its sub-frames / pt
                             (a still video embeds as the source's image); channels: the
                             source's C rows, the new concat half zero (the given latents
                             start with no effect)
  output layer               temporal patch change: every target sub-frame predicts what
                             the source's sub-frames predicted on average
  absent from the source     freshly initialised (e.g. motion embedder), listed in the log
  anything else that differs one ValueError naming the parameter and both shapes
The step counter and the optimizer start fresh (a new run, not a resume); EMA starts at the
transferred weights. `inherit_train_grid` keeps RoPE positions in the source's range when a
stage trains on a larger grid (STIV's RoPE interpolation between stages).
"""

from __future__ import annotations

import logging
import os
import re

import jax
import numpy as np
from flax import nnx

_TEMPORAL = re.compile(r"\['temporal'\]")


def parse_init_from(spec: str) -> tuple[str, int | None, bool]:
    """'<workdir | workdir/checkpoints/N>[:params|ema]' -> (workdir, step | None, ema)."""
    path, ema = spec, True
    head, sep, tail = spec.rpartition(":")
    if sep and tail in ("params", "ema"):
        path, ema = head, tail == "ema"
    path = path.rstrip("/")
    base, name = os.path.split(path)
    if name.isdigit() and os.path.basename(base) == "checkpoints":
        return os.path.dirname(base), int(name), ema
    if not os.path.isdir(os.path.join(path, "checkpoints")):
        raise FileNotFoundError(
            f"train.init_from={spec!r}: {path!r} is not a workdir with checkpoints/ nor a "
            f"workdir/checkpoints/<step> directory"
        )
    return path, None, ema


def _temporal_tokens(cfg) -> int:
    from stiv_jax.runtime import latent_shape

    return latent_shape(cfg)[0] // int(cfg.model.temporal_patch)


def inherit_train_grid(config) -> None:
    """RoPE interpolation between stages: an unset `model.train_grid` takes the source run's
    grid on every axis where the source saw more than one position."""
    from stiv_jax import checkpoint as ckpt

    if not config.train.get("init_from") or tuple(config.model.train_grid) != (0, 0, 0):
        return
    workdir, step, _ = parse_init_from(config.train.init_from)
    src = ckpt.restore_config(workdir, step)
    from stiv_jax.runtime import fill_train_grid

    fill_train_grid(config)
    own, theirs = tuple(config.model.train_grid), tuple(src.model.train_grid)
    grid = tuple(s if s > 1 else o for o, s in zip(own, theirs))
    with config.unlocked():
        config.model.train_grid = grid
    if grid != own:
        logging.info("init_from: RoPE grid %s of the source (this run's is %s)", grid, own)


def load_source(spec: str):
    """(source config, source params as a pure dict of numpy arrays, step) of `spec`."""
    from stiv_jax import checkpoint as ckpt
    from stiv_jax.runtime import build_model

    workdir, step, ema = parse_init_from(spec)
    src = ckpt.restore_config(workdir, step)
    _, abstract = nnx.split(nnx.eval_shape(lambda: build_model(src, 0)), nnx.Param)
    sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding),
        nnx.to_pure_dict(abstract),
    )
    params, step = ckpt.restore_params(workdir, abstract, step=step, ema=ema)
    return src, jax.tree.map(np.asarray, params), step


def _flat(tree) -> dict[str, np.ndarray]:
    return {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _patch_embed(src: np.ndarray, dst_shape, ps: int, pt: int, p: int, c: int) -> np.ndarray:
    """[ps·p·p·C, D] -> [pt·p·p·m·C, D] (see the module docstring)."""
    d = src.shape[-1]
    cs = src.shape[0] // (ps * p * p)
    ct = dst_shape[0] // (pt * p * p)
    if cs != c or ct % c or dst_shape[1] != d:
        raise ValueError(f"patch embedding {src.shape} -> {tuple(dst_shape)}")
    w = src.reshape(ps, p, p, cs, d)
    if ps != pt:  # [pt, p, p, C, D]: each sub-frame the source's sub-frame sum / pt
        w = np.repeat(w.sum(0, keepdims=True) / pt, pt, axis=0)
    out = np.zeros((pt, p, p, ct, d), src.dtype)
    out[..., :c, :] = w
    return out.reshape(dst_shape)


def _final(src: np.ndarray, dst_shape, ps: int, pt: int) -> np.ndarray:
    """Output kernel [D, ps·p·p·C] / bias [ps·p·p·C] -> pt sub-frames (source mean each)."""
    lead = src.shape[:-1]
    w = src.reshape(*lead, ps, -1).mean(-2, keepdims=True)
    out = np.repeat(w, pt, axis=-2).reshape(*lead, -1)
    if out.shape != tuple(dst_shape):
        raise ValueError(f"output layer {src.shape} -> {tuple(dst_shape)}")
    return out


def transfer_params(target, src_params, src_config, config, *, source: str = "source"):
    """`target` (pure dict of the new model's initial params, any array type) with the
    source's weights put in by the rules of the module docstring -> (params, report {copied,
    inflated, fresh, unused}); transferred leaves are numpy, fresh ones are `target`'s own.
    Raises ValueError naming the first untransferable parameter."""
    src = _flat(src_params)
    m, ms = config.model, src_config.model
    ps, pt, p = int(ms.temporal_patch), int(m.temporal_patch), int(m.patch_size)
    if int(ms.patch_size) != p:
        raise ValueError(
            f"init_from {source}: spatial patch {ms.patch_size} but this run's is {p}; "
            f"a spatial patch change cannot be transferred"
        )
    temporal_ok = _temporal_tokens(src_config) > 1
    report = {"copied": [], "inflated": [], "fresh": [], "unused": []}
    leaves, treedef = jax.tree_util.tree_flatten_with_path(target)
    out = []
    for path, leaf in leaves:
        key = jax.tree_util.keystr(path)
        shape = tuple(np.shape(leaf))
        if key not in src or (_TEMPORAL.search(key) and not temporal_ok):
            report["fresh"].append(key)
            out.append(leaf)
            continue
        s = src[key]
        try:
            if s.shape == shape:
                new, kind = s, "copied"
            elif key == "['patch_embed']['kernel']":
                new, kind = _patch_embed(s, shape, ps, pt, p, int(m.in_channels)), "inflated"
            elif key in ("['final']['kernel']", "['final']['bias']") and ps != pt:
                new, kind = _final(s, shape, ps, pt), "inflated"
            else:
                raise ValueError("shapes differ")
        except ValueError:
            raise ValueError(
                f"init_from {source}: parameter {key} has shape {s.shape} there but {shape} "
                f"here and cannot be transferred (only the patch embedding and output layer "
                f"inflate, for temporal patch and channel-concat changes)"
            ) from None
        report[kind].append(key)
        out.append(np.asarray(new, leaf.dtype))
    used = {jax.tree_util.keystr(p) for p, _ in leaves}
    report["unused"] = sorted(set(src) - used)
    return jax.tree_util.tree_unflatten(treedef, out), report


def init_state_from(config, state: dict, shardings: dict) -> dict:
    """A fresh train state whose params and EMA are `train.init_from`'s weights."""
    spec = config.train.init_from
    src_config, src_params, step = load_source(spec)
    params, report = transfer_params(state["params"], src_params, src_config, config, source=spec)
    logging.info(
        "init_from %s (step %d): %d copied, %d inflated %s, %d fresh %s, %d unused",
        spec, step, len(report["copied"]), len(report["inflated"]), report["inflated"],
        len(report["fresh"]), _summary(report["fresh"]), len(report["unused"]),
    )  # fmt: skip

    def put(x, sharding):  # numpy (transferred) -> a global array on the state's sharding
        if not isinstance(x, np.ndarray):
            return x
        return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])

    params = jax.tree.map(put, params, shardings["params"])
    ema = jax.tree.map(lambda x, s: jax.device_put(jax.numpy.copy(x), s), params, shardings["ema"])
    out = {**state, "params": params, "ema": ema}
    if "base" in state:  # LoRA: the transferred weights are the frozen base
        out["base"] = jax.tree.map(
            lambda x, s: jax.device_put(jax.numpy.copy(x), s), params, shardings["base"]
        )
    return out


def _summary(keys: list[str]) -> str:
    groups = sorted({re.sub(r"\[\d+\]", "[*]", k) for k in keys})
    return "[" + ", ".join(groups[:6]) + (", ..." if len(groups) > 6 else "") + "]"
