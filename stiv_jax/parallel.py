"""Scale-out: device mesh, logical-axis rules, shardings, global batches, multi-host helpers.

Shapes: B batch, F frames (after temporal patching), S spatial tokens, L text tokens,
D width, N heads, H head dim.

Mesh axes `("data", "fsdp", "context", "tensor")`, sizes from `config.mesh` (-1 fills).
One rules table maps the logical names that parameters carry (`nnx.with_partitioning`:
embed, mlp, heads) and that activations are constrained with (batch, frames, tokens) to
mesh axes. Context parallelism is made for factorized attention: the block input
`x [B, F, S, D]` is constrained to frames-on-`context` before spatial attention (each
shard holds whole frames, attention over S is local) and to tokens-on-`context` before
temporal attention (each shard holds all frames of some tokens, attention over F is
local); XLA inserts the all-to-all between the two layouts.

Host data: the global batch of a step is the concatenation of `num_shards` data shards
(Grain pipelines `make_dataset(process_index=v, process_count=num_shards)`), fixed when a
run starts. Each process runs the shards that cover the batch rows its devices hold, so a
run resumes on another host count or mesh with the same global batches (the shard
iterator states are merged from every process's checkpoint file).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

MESH_AXES = ("data", "fsdp", "context", "tensor")

# Logical name -> mesh axis (or axes, major to minor). Names absent here are replicated.
RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ("batch", ("data", "fsdp")),  # activations and inputs: batch over data × fsdp
    ("embed", "fsdp"),  # parameters: ZeRO-3 style, gathered per layer by XLA
    ("mlp", "tensor"),  # MLP hidden (Megatron column / row split)
    ("heads", "tensor"),  # attention heads
    ("frames", "context"),  # spatial-attention layout: whole frames per context shard
    ("tokens", "context"),  # temporal-attention layout: whole token columns per shard
)

# Activation layouts of the block input x [B, F, S, D] (see module docstring).
SPATIAL_LAYOUT = ("batch", "frames", None, None)
TEMPORAL_LAYOUT = ("batch", None, "tokens", None)


# ============================================================================ mesh


def mesh_shape(mesh_cfg: Any, num_devices: int) -> tuple[int, ...]:
    """config.mesh (data, fsdp, context, tensor; one may be -1) -> sizes multiplying to devices."""
    sizes = [int(mesh_cfg[a]) for a in MESH_AXES]
    fill = [i for i, s in enumerate(sizes) if s == -1]
    if len(fill) > 1 or any(s == 0 or s < -1 for s in sizes):
        raise ValueError(
            f"mesh sizes {dict(zip(MESH_AXES, sizes))} must be positive with at most one -1"
        )
    known = math.prod(s for s in sizes if s != -1)
    if fill:
        if num_devices % known:
            raise ValueError(
                f"mesh {dict(zip(MESH_AXES, sizes))}: {num_devices} devices are not divisible "
                f"by the fixed axes' product {known}"
            )
        sizes[fill[0]] = num_devices // known
    if math.prod(sizes) != num_devices:
        raise ValueError(
            f"mesh {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices; "
            f"there are {num_devices}"
        )
    return tuple(sizes)


def make_mesh(mesh_cfg: Any, devices: Sequence[Any] | None = None) -> Mesh:
    """Mesh over `devices` (default all) with axes MESH_AXES, Auto (GSPMD) axis types.

    Multi-slice TPU (devices with several `slice_index` values): the data axis spans the
    slices over DCN (`mesh_cfg.dcn_data` slices, default all), the rest stays inside a
    slice. Otherwise TPU devices are laid out by their physical coordinates and other
    devices in process-major order (each host's batch rows are then contiguous).
    """
    devices = list(jax.devices() if devices is None else devices)
    shape = mesh_shape(mesh_cfg, len(devices))
    slices = {getattr(d, "slice_index", 0) for d in devices}
    types = (AxisType.Auto,) * len(MESH_AXES)
    if len(slices) > 1:
        from jax.experimental import mesh_utils

        dcn_data = int(mesh_cfg.get("dcn_data", -1))
        dcn_data = len(slices) if dcn_data == -1 else dcn_data  # -1: every slice
        if shape[0] % dcn_data or dcn_data != len(slices):
            raise ValueError(
                f"mesh.data={shape[0]} must be a multiple of the {len(slices)} slices "
                f"(mesh.dcn_data={dcn_data})"
            )
        ici = (shape[0] // dcn_data, *shape[1:])
        arr = mesh_utils.create_hybrid_device_mesh(ici, (dcn_data, 1, 1, 1), devices)
    elif devices[0].platform == "tpu":
        from jax.experimental import mesh_utils

        arr = mesh_utils.create_device_mesh(shape, devices, allow_split_physical_axes=True)
    else:
        devices.sort(key=lambda d: (d.process_index, d.id))
        arr = np.array(devices, dtype=object).reshape(shape)
    return Mesh(arr, MESH_AXES, axis_types=types)


# ============================================================================ rules


def _axis_sizes(mesh) -> dict[str, int]:
    return dict(zip(mesh.axis_names, mesh.axis_sizes))


def logical_to_spec(
    names: Sequence[str | None], shape: Sequence[int] | None = None, mesh=None, rules=RULES
) -> P:
    """Logical names per dim -> PartitionSpec. With `shape` and `mesh`, mesh axes of size 1,
    axes already used by an earlier dim and axes that do not divide the dim are dropped
    (uneven shards are not worth their padding at our sizes)."""
    table = dict(rules)
    sizes = _axis_sizes(mesh) if mesh is not None else None
    used: set[str] = set()
    out = []
    for i, name in enumerate(names):
        target = table.get(name) if name is not None else None
        axes = (target,) if isinstance(target, str) else tuple(target or ())
        chosen: list[str] = []
        for a in axes:
            if a in used:
                continue
            if sizes is not None:
                if sizes.get(a, 1) == 1:
                    continue
                if shape is not None and shape[i] % (
                    math.prod(sizes[c] for c in chosen) * sizes[a]
                ):
                    continue
            chosen.append(a)
        used.update(chosen)
        out.append(None if not chosen else chosen[0] if len(chosen) == 1 else tuple(chosen))
    while out and out[-1] is None:
        out.pop()
    return P(*out)


def constrain(x: jax.Array, names: Sequence[str | None]) -> jax.Array:
    """`with_sharding_constraint` by logical names; a no-op without an active mesh.

    The model calls this at block boundaries; tracing it under `jax.set_mesh(mesh)` (see
    `in_mesh`) turns the constraints on, everything else (tests, CPU runs) is unchanged.
    """
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or all(s == 1 for s in mesh.axis_sizes):
        return x
    if set(MESH_AXES) - set(mesh.axis_names):
        return x  # some other mesh (e.g. a user's), our rules do not apply
    spec = logical_to_spec(names, x.shape, mesh)
    return jax.lax.with_sharding_constraint(x, spec)


def in_mesh(fn, mesh: Mesh):
    """fn called (and so traced, when jitted) under `jax.set_mesh(mesh)`."""

    def wrapped(*args, **kwargs):
        with jax.set_mesh(mesh):
            return fn(*args, **kwargs)

    return wrapped


# ============================================================================ parameters


def _names_of(variable) -> tuple | None:
    meta = variable.get_metadata()
    for key in ("out_sharding", "sharding_names", "sharding"):
        if meta.get(key) is not None:
            return tuple(meta[key])
    return None


def param_specs(params: nnx.State, mesh: Mesh) -> dict:
    """nnx.State of Params (abstract or real) -> pure dict of PartitionSpecs.

    Names come from the partitioning metadata; stacked (scanned) layers have more dims
    than names, and the extra leading dims (the layer stack) are replicated.
    """

    def one(variable):
        shape = tuple(variable.shape)
        names = _names_of(variable) or ()
        names = (None,) * (len(shape) - len(names)) + tuple(names)
        return logical_to_spec(names, shape, mesh)

    return nnx.to_pure_dict(
        jax.tree.map(one, params, is_leaf=lambda v: isinstance(v, nnx.Variable))
    )


def _path_key(path) -> tuple:
    return tuple(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))) for k in path)


def state_specs(abstract_state: dict, p_specs: dict) -> dict:
    """Train state {step, params, ema, opt} -> PartitionSpecs.

    params and ema follow the parameters; optimizer leaves whose path ends with a
    parameter's path follow that parameter when they have its shape, its shape minus the
    last dim (AdaFactor row statistics) or minus the second-to-last dim (column
    statistics); everything else (counts, unfactored placeholders) is replicated.
    """
    flat = {_path_key(p): s for p, s in jax.tree_util.tree_flatten_with_path(p_specs)[0]}
    shapes = {
        _path_key(p): tuple(x.shape)
        for p, x in jax.tree_util.tree_flatten_with_path(abstract_state["params"])[0]
    }

    def opt_spec(path, leaf):
        key = _path_key(path)
        for n in range(len(key)):
            pkey = key[n:]
            if pkey in flat:
                spec, shape = tuple(flat[pkey]), shapes[pkey]
                spec = spec + (None,) * (len(shape) - len(spec))
                if tuple(leaf.shape) == shape:
                    return P(*spec)
                if len(shape) >= 2 and tuple(leaf.shape) == shape[:-1]:
                    return P(*spec[:-1])
                if len(shape) >= 2 and tuple(leaf.shape) == shape[:-2] + shape[-1:]:
                    return P(*spec[:-2], spec[-1])
                return P()
        return P()

    return {
        "step": P(),
        "params": p_specs,
        "ema": p_specs,
        "opt": jax.tree_util.tree_map_with_path(opt_spec, abstract_state["opt"]),
    }


def named(specs: Any, mesh: Mesh) -> Any:
    return jax.tree.map(lambda s: NamedSharding(mesh, s), specs, is_leaf=lambda s: isinstance(s, P))


def abstract_with_shardings(abstract: Any, shardings: Any) -> Any:
    """ShapeDtypeStructs carrying the current mesh's shardings (Orbax restores onto them)."""
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract, shardings
    )


# ============================================================================ batches


def batch_sharding(mesh: Mesh, shape: Sequence[int]) -> NamedSharding:
    """Leading dim over (data, fsdp), the rest replicated."""
    return NamedSharding(mesh, logical_to_spec(("batch",), shape[:1], mesh))


def batch_shardings(mesh: Mesh, shapes: dict[str, Sequence[int]]) -> dict[str, NamedSharding]:
    return {k: batch_sharding(mesh, s) for k, s in shapes.items()}


def process_rows(mesh: Mesh, global_batch: int) -> np.ndarray:
    """Sorted global batch rows held by this process's devices (what it must load)."""
    sharding = batch_sharding(mesh, (global_batch,))
    rows: set[int] = set()
    for dev, idx in sharding.devices_indices_map((global_batch,)).items():
        if dev.process_index == jax.process_index():
            rows.update(range(*idx[0].indices(global_batch)))
    return np.array(sorted(rows), np.int64)


def global_batch(local: dict[str, Any], mesh: Mesh, global_size: int) -> dict[str, jax.Array]:
    """Host-local rows (those of `process_rows`) -> global arrays sharded on the batch."""
    out = {}
    for k, v in local.items():
        v = np.asarray(v)
        shape = (global_size, *v.shape[1:])
        out[k] = jax.make_array_from_process_local_data(batch_sharding(mesh, shape), v, shape)
    return out


class HostData:
    """This process's rows of the global batch, built from `num_shards` Grain shards.

    Shard v yields rows [v·b, (v+1)·b) of every global batch (b = B / num_shards). The
    process runs the shards its rows touch and returns its rows in global order. Its
    checkpoint state (bytes, as Grain's Orbax handler expects) holds the state of every
    shard it runs, keyed by shard, so any later process layout can pick its shards up.
    """

    def __init__(self, make_shard, *, num_shards: int, global_size: int, rows: np.ndarray):
        if num_shards < 1 or global_size % num_shards:
            raise ValueError(
                f"data.batch_size={global_size} must be a positive multiple of the "
                f"{num_shards} data shards of this run"
            )
        self.num_shards, self.global_size = num_shards, global_size
        self.per_shard = global_size // num_shards
        self.rows = np.asarray(rows, np.int64)
        needed = sorted({int(r) // self.per_shard for r in self.rows})
        self.iters = {v: iter(make_shard(v, num_shards)) for v in needed}

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        order = sorted(self.iters)
        parts = [next(self.iters[v]) for v in order]
        full = {k: np.concatenate([np.asarray(p[k]) for p in parts]) for k in parts[0]}
        # global row r sits at (rank of its shard among ours) * b + r % b in `full`
        rank = {v: i for i, v in enumerate(order)}
        take = np.array(
            [
                rank[int(r) // self.per_shard] * self.per_shard + int(r) % self.per_shard
                for r in self.rows
            ],
            np.int64,
        )
        if len(take) == len(parts) * self.per_shard and np.all(take == np.arange(len(take))):
            return full
        return {k: v[take] for k, v in full.items()}

    # Grain's Orbax handler calls get_state() -> bytes and set_state(bytes), start_prefetch().
    def get_state(self) -> bytes:
        states = {str(v): it.get_state() for v, it in self.iters.items()}
        return json.dumps({"num_shards": self.num_shards, "shards": states}).encode()

    def set_state(self, state: bytes | dict) -> None:
        state = json.loads(state) if isinstance(state, bytes | str) else state
        if int(state["num_shards"]) != self.num_shards:
            raise ValueError(
                f"checkpoint has {state['num_shards']} data shards; this run has {self.num_shards}"
            )
        for v, it in self.iters.items():
            if str(v) not in state["shards"]:
                raise ValueError(f"data shard {v} is missing from the checkpoint's iterator states")
            it.set_state(state["shards"][str(v)])

    def start_prefetch(self) -> None:
        for it in self.iters.values():
            if hasattr(it, "start_prefetch"):
                it.start_prefetch()


def read_data_states(data_dir: str) -> dict | None:
    """Merged HostData state from all `process_<i>-of-<n>.json` files of a checkpoint."""
    from etils import epath

    path = epath.Path(data_dir)
    if not path.exists():
        return None
    merged: dict[str, Any] = {"num_shards": None, "shards": {}}
    for f in sorted(path.glob("process_*-of-*.json")):
        state = json.loads(f.read_text())
        if "num_shards" not in state:
            return None  # written by a plain Grain iterator, not HostData
        merged["num_shards"] = int(state["num_shards"])
        merged["shards"].update(state["shards"])
    return merged if merged["num_shards"] else None


# ============================================================================ multi-host


def initialize_distributed() -> None:
    """`jax.distributed.initialize` when this is one of several processes.

    Explicit: JAX_COORDINATOR_ADDRESS + JAX_NUM_PROCESSES + JAX_PROCESS_ID (local
    multi-process runs, tests). TPU VM pods: STIV_DISTRIBUTED=1 (set by tpu_scripts) or
    MEGASCALE_COORDINATOR_ADDRESS (multi-slice); jax then detects the rest itself from
    the TPU metadata. CPU processes talk through gloo.
    """
    if jax.distributed.is_initialized():
        return
    env = os.environ
    if env.get("JAX_COORDINATOR_ADDRESS") and env.get("JAX_NUM_PROCESSES"):
        if env.get("JAX_PLATFORMS", "").startswith("cpu"):
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            coordinator_address=env["JAX_COORDINATOR_ADDRESS"],
            num_processes=int(env["JAX_NUM_PROCESSES"]),
            process_id=int(env.get("JAX_PROCESS_ID", "0")),
        )
    elif env.get("STIV_DISTRIBUTED") == "1" or env.get("MEGASCALE_COORDINATOR_ADDRESS"):
        jax.distributed.initialize()
    else:
        return
    logging.info("process %d of %d", jax.process_index(), jax.process_count())


def any_process(flag: bool) -> bool:
    """True on every process when `flag` is True on any (a tiny all-reduce; local if 1 process)."""
    if jax.process_count() == 1:
        return bool(flag)
    from jax.experimental import multihost_utils

    flags = multihost_utils.process_allgather(np.array([int(flag)], np.int32))
    return bool(np.asarray(flags).any())


def data_shards_of(ckpt_dir: str, step: int | None) -> int | None:
    """Number of data shards recorded in checkpoint `step` (None: no HostData state)."""
    if step is None:
        return None
    state = read_data_states(os.path.join(ckpt_dir, str(step), "data"))
    return None if state is None else state["num_shards"]


# ============================================================================ train state


def sharded_init(model_fn, init_fn, mesh: Mesh):
    """Abstract train state and its shardings, plus `init()` that builds it on the mesh.

    model_fn() -> STIV; init_fn(model) -> (graphdef, state). Nothing is allocated until
    `init()` runs, and then each device only allocates its shards (init is jitted with the
    state's out_shardings), so a model larger than one device initialises.
    Returns (graphdef, abstract_state, state_shardings, init).
    """
    abstract_model = nnx.eval_shape(model_fn)
    graphdef, abstract_params = nnx.split(abstract_model, nnx.Param)
    p_specs = param_specs(abstract_params, mesh)
    abstract = jax.eval_shape(lambda: init_fn(model_fn())[1])
    shardings = named(state_specs(abstract, p_specs), mesh)
    init = jax.jit(lambda: init_fn(model_fn())[1], out_shardings=shardings)
    return graphdef, abstract, shardings, in_mesh(init, mesh)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())
