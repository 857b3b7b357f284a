"""Compile the real train step (and sampler) of a config for a TPU topology, ahead of time.

  python -m tpu_scripts.aot_compile --config configs/stiv.py:variant=M/2 --topology v5p:4x4x4 \
      [--config.mesh.fsdp=-1 ...] [--sample [--notrain]] [--json out.json]

Shapes: B global batch, F latent frames, H/W latent size, C latent channels, L text tokens,
Dt/Dp text widths.

Nothing is allocated: the train state is `jax.eval_shape` of the model init, the batch is
ShapeDtypeStructs [B, F, H, W, C] (+ text, micro-conditions) with the mesh's NamedShardings,
and `jax.jit(step).lower(...).compile()` runs against the devices of
`jax.experimental.topologies.get_topology_desc("tpu", topology)` (libtpu, no TPU needed).

Prints per-chip memory (arguments, outputs, temporaries, total) against the chip's HBM,
FLOPs per step (XLA's cost analysis of the partitioned program, × chips), and the
roofline bound: step time >= max(FLOPs / peak, HBM bytes / bandwidth) per chip, so
MFU <= model FLOPs / (time · chips · peak). Collectives over ICI are not in the bound.

XLA's cost analysis counts a while-loop body once. With `model.scan_blocks` the main blocks
are such a loop, so the figures are corrected: the same step is compiled (cost only) with 1
and 2 unrolled main blocks, c(D) = c(1) + (D − 1)·(c(2) − c(1)) for FLOPs and HBM bytes.
`--sample` compiles ONE guided ODE step of the sampler (CFG batched, params sharded over the
mesh in their sampling dtype, as `sample.shard_params` restores them; `--notrain` skips the
train step): its memory is the whole sampler's, its cost that of one of the `sample.steps`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
from typing import Any

import jax
import jax.numpy as jnp

from stiv_jax.atomic import atomic_write
from stiv_jax.model.stiv import token_width
from stiv_jax.runtime import fill_train_grid, latent_shape

# Per chip: bf16 dense peak FLOP/s, HBM bytes, HBM bandwidth bytes/s (Cloud TPU docs).
CHIPS = {
    "v4": (275e12, 32 * 2**30, 1228e9),
    "v5e": (197e12, 16 * 2**30, 819e9),
    "v5p": (459e12, 95 * 2**30, 2765e9),
    "v6e": (918e12, 32 * 2**30, 1640e9),
}
ALIASES = {"v5litepod": "v5e", "v5lite": "v5e", "v6lite": "v6e"}


@dataclasses.dataclass
class Report:
    what: str
    topology: str
    chips: int
    mesh: dict[str, int]
    argument_gib: float
    output_gib: float
    temp_gib: float
    total_gib: float
    hbm_gib: float
    fits: bool
    flops_per_step: float
    model_flops_per_step: float
    bytes_per_chip: float
    roofline_s: float
    roofline_mfu: float
    roofline_hfu: float
    compile_s: float
    xla_flops_loop_once: float = 0.0
    cost_method: str = "XLA cost analysis"
    param_gib: float = 0.0  # sampler: the whole parameter set as stored (unsharded)

    def lines(self) -> list[str]:
        params = (
            [f"  params as stored for sampling: {self.param_gib:.2f} GiB unsharded"]
            if self.param_gib
            else []
        )
        return [
            f"{self.what} on {self.topology} ({self.chips} chips, mesh {self.mesh})",
            *params,
            f"  per chip: arguments {self.argument_gib:.2f} GiB, outputs {self.output_gib:.2f} GiB"
            f", temporaries {self.temp_gib:.2f} GiB, total {self.total_gib:.2f} GiB of "
            f"{self.hbm_gib:.0f} GiB HBM -> {'fits' if self.fits else 'DOES NOT FIT'}",
            f"  FLOPs/step {self.flops_per_step:.3e} ({self.flops_per_step / self.chips:.3e} "
            f"per chip; {self.cost_method}), model FLOPs/step "
            f"{self.model_flops_per_step:.3e}, HBM traffic {self.bytes_per_chip / 2**30:.1f} "
            "GiB per chip",
            (
                f"  roofline step time {self.roofline_s * 1e3:.1f} ms, MFU <= "
                f"{100 * self.roofline_mfu:.1f}% (hardware FLOPs {100 * self.roofline_hfu:.1f}%; "
                f"compiled in {self.compile_s:.1f} s)"
                if not math.isnan(self.roofline_mfu)
                else f"  no roofline/MFU: scanned blocks counted once (drop --exact_cost=False); "
                f"compiled in {self.compile_s:.1f} s"
            ),
        ]


def chip_specs(topology: str) -> tuple[float, float, float]:
    family = topology.split(":")[0].lower()
    family = ALIASES.get(family, family)
    if family not in CHIPS:
        raise ValueError(
            f"topology {topology!r}: unknown chip {family!r}; expected {sorted(CHIPS)}"
        )
    return CHIPS[family]


def topology_devices(topology: str) -> list[Any]:
    """Devices of a named topology such as `v5p:2x2x1` (needs libtpu, not a TPU)."""
    from jax.experimental import topologies

    # Compiling needs no chip; without this, a second process (tests, a parallel compile)
    # fails on libtpu's single-process lockfile.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    if ":" not in topology:
        raise ValueError(f"topology {topology!r} must look like v5p:2x2x1 or v6e:4x4")
    try:
        desc = topologies.get_topology_desc(platform="tpu", topology_name=topology)
    except Exception as e:  # libtpu raises assorted types for unknown names
        raise ValueError(f"topology {topology!r} is not known to libtpu: {e}") from None
    return list(desc.devices)


def model_flops(config, latent: tuple[int, ...], batch: int) -> float:
    """Analytic matmul FLOPs of one train step (forward + backward = 3 x forward).

    XLA's cost analysis counts a scanned (while-loop) body once, so with
    `model.scan_blocks` its FLOPs are a lower bound; this count is the reference.
    Per block with T query tokens: spatial and temporal self-attention 8·T·D² each
    (qkv + out) plus 4·T·n·D for scores over n keys, cross-attention 4·T·D² + 4·L·D² +
    4·T·L·D, MLP 4·r·T·D². Main blocks see the MaskDiT-kept tokens, decoder blocks all.
    """
    m = config.model
    fp = latent[0] // m.temporal_patch
    s = (latent[1] // m.patch_size) * (latent[2] // m.patch_size)
    keep = max(1, round(s * (1.0 - m.mask_ratio)))
    d, length, r = m.width, int(config.text_encoder.max_length), m.mlp_ratio

    def block(k: int) -> float:
        t = fp * k
        attn = 8 * t * d * d + 4 * t * k * d + 8 * t * d * d + 4 * t * fp * d
        cross = 4 * t * d * d + 4 * length * d * d + 4 * t * length * d
        return attn + cross + 4 * r * t * d * d

    forward = m.depth * block(keep) + m.decoder_depth * block(s)
    return 3.0 * batch * forward


def _abstract(shape, dtype, sharding) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(tuple(shape), jnp.dtype(dtype), sharding=sharding)


def abstract_batch(config, mesh, latent: tuple[int, ...]) -> dict[str, jax.ShapeDtypeStruct]:
    """The train step's batch (`stiv_jax.data.schema.MODEL_BATCH`) as sharded abstract arrays."""
    from stiv_jax.data.schema import model_batch_shapes
    from stiv_jax.parallel.host_data import batch_sharding

    m = config.model
    shapes = model_batch_shapes(
        int(config.data.batch_size),
        latent,
        text_len=int(config.text_encoder.max_length),
        text_dim=token_width(m),
        pooled_dim=m.pooled_dim,
    )
    return {k: _abstract(s, d, batch_sharding(mesh, s)) for k, (s, d) in shapes.items()}


def null_text(config) -> dict[str, jax.Array]:
    """Stand-in for the empty-prompt encoding: only shapes matter to the compiler."""
    length, m = int(config.text_encoder.max_length), config.model
    return {
        "tokens": jnp.zeros((length, token_width(m)), jnp.float32),
        "mask": jnp.zeros((length,), bool),
        "pooled": jnp.zeros((m.pooled_dim,), jnp.float32),
    }


def does_not_fit(error: Exception, what: str, topology: str, mesh) -> dict | None:
    """A compile refused for HBM (libtpu's RESOURCE_EXHAUSTED) as a JSON-able record, else None.

    libtpu will not finish a program whose buffers exceed the chip's HBM; its message names
    the bytes required, which is the answer to "does it fit" that the user asked for.
    """
    import re

    msg = str(error)
    if "RESOURCE_EXHAUSTED" not in msg:
        return None
    sizes = [float(x) for x in re.findall(r"\(([\d.]+)G\)", msg)]
    return {
        "what": what,
        "topology": topology,
        "chips": int(mesh.devices.size),
        "mesh": dict(zip(mesh.axis_names, mesh.axis_sizes)),
        "fits": False,
        "required_gib": sizes[0] if sizes else None,
        "hbm_gib": sizes[1] if len(sizes) > 1 else chip_specs(topology)[1] / 2**30,
        "error": msg.strip().splitlines()[0][:300],
    }


def _compile_or_record(lower, what: str, topology: str, mesh):
    """(compiled, seconds), or (does_not_fit record, 0.0) when libtpu refuses it for HBM."""
    import time

    tick = time.time()
    try:
        return lower(), time.time() - tick
    except jax.errors.JaxRuntimeError as e:
        record = does_not_fit(e, what, topology, mesh)
        if record is None:
            raise
        return record, 0.0


def xla_cost(compiled) -> tuple[float, float]:
    """(FLOPs, HBM bytes accessed) per chip from XLA's cost analysis (loop bodies once)."""
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else cost
    return float(cost.get("flops", 0.0)), float(cost.get("bytes accessed", 0.0))


def scan_corrected_cost(config, lower_fn) -> tuple[float, float] | None:
    """Per-chip (FLOPs, bytes) of `lower_fn(config)` with every main block counted.

    `lower_fn(cfg) -> compiled`. Compiles cfg with 1 and 2 unrolled main blocks and
    extrapolates linearly to `model.depth` (the blocks are identical, so the cost is affine
    in depth). None when the model is not scanned (XLA's count is already complete).
    """
    import copy

    m = config.model
    if not m.scan_blocks or m.depth < 2:
        return None
    costs = []
    for depth in (1, 2):
        cfg = copy.deepcopy(config)
        with cfg.unlocked():
            cfg.model.depth, cfg.model.scan_blocks = depth, False
        costs.append(xla_cost(lower_fn(cfg)))
    (f1, b1), (f2, b2) = costs
    return f1 + (m.depth - 1) * (f2 - f1), b1 + (m.depth - 1) * (b2 - b1)


def _report(
    what, compiled, topology, mesh, compile_s, model_flops_step=0.0, cost=None, repeat=1,
    loop_once=False,
) -> Report:  # fmt: skip
    """`cost`: corrected per-chip (FLOPs, bytes) replacing XLA's count of `compiled`;
    `repeat`: times the counted program runs per step (ODE steps of the sampler loop)."""
    peak, hbm, bw = chip_specs(topology)
    mem = compiled.memory_analysis()
    raw_flops, raw_bytes = xla_cost(compiled)
    flops_chip, bytes_chip = cost if cost is not None else (raw_flops, raw_bytes)
    flops_chip, bytes_chip = flops_chip * repeat, bytes_chip * repeat
    if cost is not None:
        method = "XLA, main blocks extrapolated from 1- and 2-block compiles"
    elif loop_once:
        method = "XLA cost analysis, scanned blocks counted ONCE"
    else:
        method = "XLA cost analysis"
    if repeat > 1:
        method += f", x{repeat} loop steps"
    chips = mesh.devices.size
    gib = 2.0**30
    arg, out = mem.argument_size_in_bytes, mem.output_size_in_bytes
    temp, alias = mem.temp_size_in_bytes, mem.alias_size_in_bytes
    total = arg + out - alias + temp + mem.generated_code_size_in_bytes
    step_s = max(flops_chip / peak, bytes_chip / bw, 1e-12)
    useful = model_flops_step / chips if model_flops_step else flops_chip
    return Report(
        what=what,
        topology=topology,
        chips=chips,
        mesh=dict(zip(mesh.axis_names, mesh.axis_sizes)),
        argument_gib=arg / gib,
        output_gib=out / gib,
        temp_gib=temp / gib,
        total_gib=total / gib,
        hbm_gib=hbm / gib,
        fits=total <= hbm,
        flops_per_step=flops_chip * chips,
        model_flops_per_step=model_flops_step,
        bytes_per_chip=bytes_chip,
        roofline_s=step_s,
        # Counted once, the FLOPs are far too low: no MFU rather than a wrong one.
        roofline_mfu=math.nan if loop_once else useful / (step_s * peak),
        roofline_hfu=math.nan if loop_once else flops_chip / (step_s * peak),
        compile_s=compile_s,
        xla_flops_loop_once=raw_flops * chips,
        cost_method=method,
    )


def _lower_train_step(config, mesh):
    """The jitted train step of `config`, compiled for `mesh` from abstract inputs."""
    from stiv_jax import parallel
    from stiv_jax.optim import make_optimizer
    from stiv_jax.runtime import build_model
    from stiv_jax.train import init_state, make_train_step

    latent = latent_shape(config)
    tx = make_optimizer(config.optim, int(config.train.steps))
    graphdef, abstract, shardings, _ = parallel.sharded_init(
        lambda: build_model(config, 0), lambda model: init_state(model, tx), mesh
    )
    state = parallel.abstract_with_shardings(abstract, shardings)
    batch = abstract_batch(config, mesh, latent)
    rep = parallel.replicated(mesh)
    key = jax.ShapeDtypeStruct((), jax.eval_shape(lambda: jax.random.key(0)).dtype, sharding=rep)
    step = make_train_step(config, graphdef, tx, null_text(config))
    jitted = jax.jit(step, out_shardings=(shardings, rep), donate_argnums=0)
    with jax.set_mesh(mesh):
        return jitted.lower(state, batch, key).compile()


def compile_train_step(
    config, topology: str, devices=None, *, exact_cost: bool = True
) -> Report | dict:
    """AOT-compiles stiv_jax.train's step for `topology` with abstract, sharded inputs.

    `exact_cost`: for a scanned model, two extra small compiles count every block (see the
    module docstring); off, the FLOPs/bytes are XLA's (the scanned block once).
    A program libtpu refuses for HBM comes back as a `does_not_fit` record (a dict).
    """

    from stiv_jax import parallel

    devices = devices if devices is not None else topology_devices(topology)
    mesh = parallel.make_mesh(config.mesh, devices)
    latent = latent_shape(config)
    fill_train_grid(config)
    compiled, seconds = _compile_or_record(
        lambda: _lower_train_step(config, mesh), "train step", topology, mesh
    )
    if isinstance(compiled, dict):
        return compiled
    lower = lambda cfg: _lower_train_step(cfg, mesh)
    cost = scan_corrected_cost(config, lower) if exact_cost else None
    flops = model_flops(config, latent, int(config.data.batch_size))
    loop_once = cost is None and config.model.scan_blocks and config.model.depth > 1
    return _report(
        "train step", compiled, topology, mesh, seconds, flops, cost=cost, loop_once=loop_once
    )


def abstract_sampling_params(config, mesh):
    """(graphdef, params as ShapeDtypeStructs): sharded over `mesh` by the trainer's rules,
    kernels in the sampling dtype (`stiv_jax.pipeline.sampling_param_dtypes`), exactly what
    `restore_for_sampling` restores with `sample.shard_params`."""
    from flax import nnx

    from stiv_jax import parallel
    from stiv_jax.pipeline import sampling_param_dtypes
    from stiv_jax.runtime import build_model

    graphdef, params = nnx.split(nnx.eval_shape(lambda: build_model(config, 0)), nnx.Param)
    p_sh = parallel.named(parallel.param_specs(params, mesh), mesh)
    params = parallel.abstract_with_shardings(nnx.to_pure_dict(params), p_sh)
    return graphdef, sampling_param_dtypes(config, params)


def _lower_sampler(config, mesh):
    """The jitted sampler of `config` (`sample.steps` guided ODE steps, CFG batched), with
    sharded params and the prompts on the batch axes, compiled for `mesh`."""
    from stiv_jax import parallel
    from stiv_jax.conditioning import batch_conditions
    from stiv_jax.pipeline import make_sample_fn

    latent = latent_shape(config)
    graphdef, params = abstract_sampling_params(config, mesh)
    batch = abstract_batch(config, mesh, latent)
    cond = jax.eval_shape(batch_conditions, batch)
    cond = {
        k: _abstract(v.shape, v.dtype, parallel.batch_sharding(mesh, v.shape))
        for k, v in cond.items()
    }
    rep = parallel.replicated(mesh)
    nulls = {k: _abstract(v.shape, v.dtype, rep) for k, v in null_text(config).items()}
    b = int(config.data.batch_size)
    scale = _abstract((b,), jnp.float32, parallel.batch_sharding(mesh, (b,)))
    sample_fn = make_sample_fn(config, graphdef, mesh=mesh)
    return sample_fn.lower(params, batch["latents"], cond, nulls, scale).compile()


def param_gib(config) -> float:
    """GiB of the whole parameter set as the sampler stores it (one unsharded copy)."""
    from flax import nnx

    from stiv_jax.pipeline import sampling_param_dtypes
    from stiv_jax.runtime import build_model

    model = nnx.eval_shape(lambda: build_model(config, 0))
    params = sampling_param_dtypes(config, nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    return sum(x.size * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(params)) / 2**30


def compile_sampler(
    config, topology: str, devices=None, *, exact_cost: bool = True
) -> Report | dict:
    """AOT-compiles ONE guided ODE step of stiv_jax.pipeline's sampler: `sample.batch_size`
    prompts, CFG batched (2x), params sharded over the mesh as `restore_for_sampling` does
    with `sample.shard_params` (kernels in `sample.param_dtype`), prompts over the batch
    axes. Memory per chip is the whole sampler's (the ODE loop carries only the latents);
    FLOPs and bytes are per ODE step (scanned blocks corrected as for the train step).
    """
    from stiv_jax import parallel

    devices = devices if devices is not None else topology_devices(topology)
    mesh = parallel.make_mesh(config.mesh, devices)
    fill_train_grid(config)
    b = int(config.sample.batch_size)
    with config.unlocked():
        config.data.batch_size = b
        config.sample.steps = 1
    what = f"sampler: one guided ODE step (batch {b}, CFG {2 * b})"
    compiled, seconds = _compile_or_record(
        lambda: _lower_sampler(config, mesh), what, topology, mesh
    )
    if isinstance(compiled, dict):
        return compiled
    lower = lambda cfg: _lower_sampler(cfg, mesh)
    cost = scan_corrected_cost(config, lower) if exact_cost else None
    loop_once = cost is None and config.model.scan_blocks and config.model.depth > 1
    report = _report(what, compiled, topology, mesh, seconds, cost=cost, loop_once=loop_once)
    report.param_gib = param_gib(config)
    return report


def main(argv=None) -> None:
    from absl import app, flags
    from ml_collections import config_flags

    cfg_flag = config_flags.DEFINE_config_file(
        "config", None, "configs/stiv.py:ARG", lock_config=True
    )
    topo = flags.DEFINE_string("topology", None, "TPU topology, e.g. v5p:4x4x4, v6e:4x4")
    sample = flags.DEFINE_bool("sample", False, "also compile one guided ODE step of the sampler")
    train = flags.DEFINE_bool("train", True, "compile the train step (--notrain: sampler only)")
    out = flags.DEFINE_string("json", "", "write the reports here as JSON")
    exact = flags.DEFINE_bool(
        "exact_cost", True, "count every scanned block (two extra small compiles per report)"
    )
    flags.mark_flags_as_required(["config", "topology"])

    def run(_):
        try:
            reports = []
            if train.value:
                reports.append(
                    compile_train_step(cfg_flag.value, topo.value, exact_cost=exact.value)
                )
            if sample.value:
                reports.append(compile_sampler(cfg_flag.value, topo.value, exact_cost=exact.value))
            if not reports:
                raise ValueError("--notrain without --sample compiles nothing")
        except ValueError as e:  # user errors: one line
            raise SystemExit(f"error: {e}") from None
        for r in reports:
            if isinstance(r, dict):  # refused by the compiler: does not fit
                print(
                    f"{r['what']} on {r['topology']} ({r['chips']} chips, mesh {r['mesh']})\n"
                    f"  DOES NOT FIT: {r['error']}",
                    flush=True,
                )
            else:
                print("\n".join(r.lines()), flush=True)
        if out.value:
            with atomic_write(out.value) as fh:
                json.dump(
                    [r if isinstance(r, dict) else dataclasses.asdict(r) for r in reports],
                    fh,
                    indent=1,
                )

    app.run(run, argv)


if __name__ == "__main__":
    sys.exit(main())
