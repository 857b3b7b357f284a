"""`shard_over_batch`: the Pallas kernel per shard on a 4-device CPU mesh equals the reference.

Shapes: B batch (sharded on data), L = M tokens, N heads (sharded on tensor), H head dim.
Runs in a subprocess because the fake device count must be set before JAX starts.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import NamedSharding, PartitionSpec as P
    from kernel_inputs import make_inputs, rope_1d
    from stiv_jax.kernels import attention

    mesh = jax.make_mesh((2, 1, 1, 2), ("data", "fsdp", "context", "tensor"))
    q, k, v, qs, ks = make_inputs(0, 4, 16, 16, 2, 32, jnp.float32)
    rope = rope_1d(16, 32)
    shard = NamedSharding(mesh, P("data", None, "tensor", None))
    q, k, v = (jax.device_put(x, shard) for x in (q, k, v))

    def loss(impl, q, k, v, qs, ks):
        out = attention(q, k, v, q_norm_scale=qs, k_norm_scale=ks, rope=rope, impl=impl)
        return jnp.sum(out * jnp.sin(jnp.arange(out.size).reshape(out.shape)))

    results = {}
    with jax.set_mesh(mesh):
        for impl in ("xla", "pallas"):
            fn = jax.jit(jax.value_and_grad(lambda *a, i=impl: loss(i, *a), range(5)))
            results[impl] = fn(q, k, v, qs, ks)
            if impl == "pallas":
                hlo = fn.lower(q, k, v, qs, ks).as_text()
                assert "shard_map" in hlo or "sdy.manual_computation" in hlo, "no shard_map"
    (lw, gw), (lp, gp) = results["xla"], results["pallas"]
    assert abs(float(lw) - float(lp)) <= 1e-4 * abs(float(lw)), (lw, lp)
    for name, a, b in zip(("dq", "dk", "dv", "dq_scale", "dk_scale"), gp, gw):
        err = float(jnp.max(jnp.abs(a - b)))
        assert err <= 2e-5 * float(jnp.max(jnp.abs(b))), (name, err)
    print("SHARDED_OK")
    """
)


def test_pallas_under_shard_map_matches_reference_on_4_devices():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    env["JAX_PLATFORMS"] = "cpu"
    here = os.path.dirname(__file__)
    env["PYTHONPATH"] = os.pathsep.join([here, env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600
    )
    assert "SHARDED_OK" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-4000:]
