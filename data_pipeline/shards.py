"""ArrayRecord writing: per-video work files and the final balanced shards.

Shapes: index arrays are int32 [N, 3] = (stored height, width, num_frames) per record.
Every file is written under a temporary name in the same folder and renamed when complete,
so a crash never leaves a half-written file under a final name.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from array_record.python import array_record_module as ar

from stiv_jax.atomic import atomic_path, temp_name

# group_size:1 makes every record its own chunk: random access without reading neighbours.
WRITER_OPTIONS = "group_size:1"


def shard_name(split: str, i: int, n: int) -> str:
    return f"{split}-{i:05d}-of-{n:05d}.array_record"


def write_records(path: str, records: Sequence[bytes]) -> None:
    """One ArrayRecord file of `records`, written atomically."""
    with atomic_path(path) as tmp:
        writer = ar.ArrayRecordWriter(tmp, WRITER_OPTIONS)
        for r in records:
            writer.write(r)
        writer.close()


class ShardWriters:
    """Writers for several shards at once, on temp names renamed together on success."""

    def __init__(self, paths: Sequence[str]):
        self.paths = list(paths)
        self.tmps = [temp_name(p) for p in self.paths]
        self.writers = []

    def __enter__(self) -> ShardWriters:
        self.writers = [ar.ArrayRecordWriter(t, WRITER_OPTIONS) for t in self.tmps]
        return self

    def write(self, shard: int, record: bytes) -> None:
        self.writers[shard].write(record)

    def __exit__(self, exc_type, exc, tb) -> None:
        for w in self.writers:
            w.close()
        for tmp, path in zip(self.tmps, self.paths):
            if exc_type is None:
                os.replace(tmp, path)
            elif os.path.exists(tmp):
                os.remove(tmp)


def read_records(path: str) -> list[bytes]:
    reader = ar.ArrayRecordReader(path)
    try:
        return list(reader.read(0, reader.num_records())) if reader.num_records() else []
    finally:
        reader.close()


def write_index(path: str, rows: Sequence[Sequence[int]]) -> None:
    arr = np.asarray(rows, np.int32).reshape(-1, 3)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, arr, allow_pickle=False)


def num_shards(num_records: int, hosts: int, records_per_shard: int) -> int:
    """At least `hosts` shards and a multiple of it, so every host reads as many shards."""
    if hosts < 1 or records_per_shard < 1:
        raise ValueError(f"hosts={hosts} and records_per_shard={records_per_shard} must be >= 1")
    n = max(hosts, -(-num_records // records_per_shard))
    return -(-n // hosts) * hosts
