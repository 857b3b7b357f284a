"""Device temp memory of attention on a TPU topology, compiled ahead of time on this CPU.

Shapes: B sequences, L = M sequence length, N heads, H head dim (XL/2: N=18, H=64, bf16).
Spatial attention: B·F' sequences of S tokens; temporal: B·S sequences of F' frames.

For each shape and implementation, `jax.jit(f).lower(abstract sharded args).compile()` for
a v5p topology (libtpu, no TPU needed) and read `memory_analysis().temp_size_in_bytes`,
for the forward alone and for forward + backward (gradients w.r.t. q, k, v and both norm
scales), with the batch sharded over `data` and the Mosaic kernels run under `shard_map`.

    python benchmarks/attention_memory.py [--topology v5p:2x2x1] [--impls pallas,xla,splash]
        [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import time

# Other engineers may hold libtpu's lock file; compiling needs no exclusive TPU access.
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.experimental import topologies  # noqa: E402
from jax.sharding import Mesh, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

from stiv_jax.atomic import atomic_write  # noqa: E402
from stiv_jax.kernels import attention  # noqa: E402

HEADS, HEAD_DIM = 18, 64  # XL/2 width 1152
# (name, sequences per device, length): spatial S = h·w tokens; temporal F' frames with
# B·S sequences (S = 1024 tokens of a 256² video at patch 2 after an 8x VAE -> per device).
CASES = (
    ("spatial S=256", 4, 256),
    ("spatial S=1024", 4, 1024),
    ("spatial S=4096", 4, 4096),
    ("temporal F'=10", 1024, 10),
    ("temporal F'=51", 1024, 51),
)


def tpu_mesh(topology: str) -> Mesh:
    """All devices of `topology` on the `data` axis of the project's 4-axis mesh."""
    devices = topologies.get_topology_desc(platform="tpu", topology_name=topology).devices
    return Mesh(np.array(devices).reshape(-1, 1, 1, 1), ("data", "fsdp", "context", "tensor"))


def abstract_args(mesh: Mesh, batch: int, length: int):
    """ShapeDtypeStructs with NamedShardings: q, k, v, q/k norm scales, cos, sin."""
    batch_sharded = NamedSharding(mesh, P("data"))
    replicated = NamedSharding(mesh, P())
    qkv = jax.ShapeDtypeStruct(
        (batch, length, HEADS, HEAD_DIM), jnp.bfloat16, sharding=batch_sharded
    )
    scale = jax.ShapeDtypeStruct((HEAD_DIM,), jnp.float32, sharding=replicated)
    table = jax.ShapeDtypeStruct((length, HEAD_DIM // 2), jnp.float32, sharding=replicated)
    return qkv, qkv, qkv, scale, scale, table, table


def compile_attention(mesh: Mesh, impl: str, batch: int, length: int, *, grad: bool):
    """AOT-compiled forward (or loss gradient) of `attention` for the TPU mesh."""

    def loss(q, k, v, q_scale, k_scale, cos, sin):
        out = attention(
            q,
            k,
            v,
            q_norm_scale=q_scale,
            k_norm_scale=k_scale,
            rope=(cos, sin),
            impl=impl,
            interpret=False,
            mesh=mesh,
        )
        return out if not grad else jnp.sum(out.astype(jnp.float32))

    fn = jax.grad(loss, argnums=(0, 1, 2, 3, 4)) if grad else loss
    return jax.jit(fn).lower(*abstract_args(mesh, batch, length)).compile()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--topology", default="v5p:2x2x1")
    parser.add_argument("--impls", default="pallas,xla")
    parser.add_argument("--json", default=None, help="also write the rows here")
    args = parser.parse_args()
    mesh = tpu_mesh(args.topology)
    impls = args.impls.split(",")
    ndev = mesh.devices.size
    rows = []
    print(
        f"topology {args.topology} ({ndev} devices), N={HEADS}, H={HEAD_DIM}, bf16, batch on 'data'"
    )
    header = f"{'case':16s} {'pass':8s}" + "".join(f"{impl + ' MiB':>12s}" for impl in impls)
    print(header + f"{'xla/pallas':>12s}{'pallas B/token':>16s}")
    for name, per_device, length in CASES:
        batch = per_device * ndev
        for grad in (False, True):
            temp = {}
            for impl in impls:
                start = time.time()
                compiled = compile_attention(mesh, impl, batch, length, grad=grad)
                temp[impl] = compiled.memory_analysis().temp_size_in_bytes
                rows.append(
                    dict(
                        case=name,
                        impl=impl,
                        grad=grad,
                        batch_per_device=per_device,
                        length=length,
                        temp_bytes=temp[impl],
                        compile_s=round(time.time() - start, 1),
                    )
                )
            line = f"{name:16s} {'fwd+bwd' if grad else 'fwd':8s}"
            line += "".join(f"{temp[impl] / 2**20:12.1f}" for impl in impls)
            if "pallas" in temp and "xla" in temp:
                line += f"{temp['xla'] / max(temp['pallas'], 1):12.1f}"
                line += f"{temp['pallas'] / (per_device * length):16.0f}"
            print(line, flush=True)
    if args.json:
        with atomic_write(args.json) as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
