"""Scale-out, in three parts (import the part you need):

  rules      logical axis names -> mesh axes (`RULES`), activation constraints; the model
             and the kernels import only this
  mesh       mesh from config, parameter / state shardings, sharded init, multi-host init
  host_data  Grain data shards -> this process's batch rows -> global arrays

This package namespace re-exports all three for scripts and tests.
"""

from stiv_jax.parallel.host_data import (
    HostData,
    batch_sharding,
    data_shards_of,
    global_batch,
    process_rows,
    read_data_states,
)
from stiv_jax.parallel.mesh import (
    abstract_with_shardings,
    any_process,
    initialize_distributed,
    make_mesh,
    mesh_shape,
    named,
    param_specs,
    replicated,
    sharded_init,
    state_specs,
)
from stiv_jax.parallel.rules import (
    MESH_AXES,
    RULES,
    SPATIAL_LAYOUT,
    TEMPORAL_LAYOUT,
    constrain,
    in_mesh,
    logical_to_spec,
    mesh_axes,
)

__all__ = [
    "MESH_AXES",
    "RULES",
    "SPATIAL_LAYOUT",
    "TEMPORAL_LAYOUT",
    "HostData",
    "abstract_with_shardings",
    "any_process",
    "batch_sharding",
    "constrain",
    "data_shards_of",
    "global_batch",
    "in_mesh",
    "initialize_distributed",
    "logical_to_spec",
    "make_mesh",
    "mesh_axes",
    "mesh_shape",
    "named",
    "param_specs",
    "process_rows",
    "read_data_states",
    "replicated",
    "sharded_init",
    "state_specs",
]
