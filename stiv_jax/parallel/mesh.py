"""Device mesh from config, parameter / train-state shardings, sharded init, multi-host.

Shapes: B batch.

Mesh axes `rules.MESH_AXES`, sizes from `config.mesh` (-1 fills). Shardings of parameters
follow their logical names through `rules.RULES`; optimizer state follows the parameters.
"""

from __future__ import annotations

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

from stiv_jax.parallel.rules import MESH_AXES, in_mesh, logical_to_spec

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


def state_specs(abstract_state: dict, p_specs: dict, *, params_key: str = "params") -> dict:
    """Train state (a dict holding the parameters under `params_key`) -> PartitionSpecs.

    Any entry with the parameters' tree structure (EMA, ...) follows the parameters; in the
    others a leaf whose path ends with a parameter's path follows that parameter when it has
    its shape, its shape minus the last dim (AdaFactor row statistics) or minus the
    second-to-last dim (column statistics); everything else (step, counts, unfactored
    placeholders) is replicated.
    """
    params = abstract_state[params_key]
    flat = {_path_key(p): s for p, s in jax.tree_util.tree_flatten_with_path(p_specs)[0]}
    shapes = {
        _path_key(p): tuple(x.shape) for p, x in jax.tree_util.tree_flatten_with_path(params)[0]
    }

    def follow(path, leaf):
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

    structure = jax.tree.structure(params)
    return {
        k: p_specs if jax.tree.structure(sub) == structure
        else jax.tree_util.tree_map_with_path(follow, sub)
        for k, sub in abstract_state.items()
    }  # fmt: skip


def named(specs: Any, mesh: Mesh) -> Any:
    return jax.tree.map(lambda s: NamedSharding(mesh, s), specs, is_leaf=lambda s: isinstance(s, P))


def abstract_with_shardings(abstract: Any, shardings: Any) -> Any:
    """ShapeDtypeStructs carrying the current mesh's shardings (Orbax restores onto them)."""
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract, shardings
    )


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
