"""Host data: this process's rows of the global batch, from Grain data shards.

Shapes: B global batch, b = B / num_shards rows per data shard.

The global batch of a step is the concatenation of `num_shards` data shards (Grain
pipelines `make_dataset(process_index=v, process_count=num_shards)`), fixed when a run
starts. Each process runs the shards that cover the batch rows its devices hold, so a run
resumes on another host count or mesh with the same global batches (the shard iterator
states are merged from every process's checkpoint file).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding

from stiv_jax.parallel.rules import logical_to_spec


def batch_sharding(mesh: Mesh, shape: Sequence[int]) -> NamedSharding:
    """Leading dim over (data, fsdp), the rest replicated."""
    return NamedSharding(mesh, logical_to_spec(("batch",), shape[:1], mesh))


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


def data_shards_of(ckpt_dir: str, step: int | None) -> int | None:
    """Number of data shards recorded in checkpoint `step` (None: no HostData state)."""
    if step is None:
        return None
    state = read_data_states(os.path.join(ckpt_dir, str(step), "data"))
    return None if state is None else state["num_shards"]
