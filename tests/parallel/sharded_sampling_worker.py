"""Worker of tests/parallel/test_sharded_sampling.py (8 simulated CPU devices, set by the
caller's XLA_FLAGS before JAX starts): sample a tiny checkpoint with params on one device and
sharded over a (data=2, fsdp=2, tensor=2) mesh; print shardings and the videos' difference.

  python tests/parallel/sharded_sampling_worker.py WORKDIR
"""

from __future__ import annotations

import json
import os
import sys

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from configs.stiv import get_config  # noqa: E402
from stiv_jax.pipeline import Request, STIVPipeline  # noqa: E402


def config(sharded: bool, candidates: int = 1):
    c = get_config("variant=tiny")
    c.data.res, c.data.frames, c.sample.steps = 16, 4, 2
    c.sample.shard_params = sharded
    # the best of N first passes (stiv_jax.candidates): its caption score runs on the mesh too
    c.sample.t2v_image_first, c.sample.t2v_candidates = candidates > 1, candidates
    c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 2, 2, 2
    return c


def main(workdir: str) -> None:
    reqs = lambda: [Request(id=str(i), prompt=f"a red circle moves left {i}", seed=i)
                    for i in range(4)]  # fmt: skip
    one = STIVPipeline.from_workdir(workdir, config(False))
    sharded = STIVPipeline.from_workdir(workdir, config(True))
    kernel = sharded.params["blocks"][0]["mlp"]["fc1"]["kernel"]
    video_one = np.stack(one.generate(reqs()))
    video_sharded = np.stack(sharded.generate(reqs()))
    best = [np.stack(STIVPipeline.from_workdir(workdir, config(sh, 3)).generate(reqs()))
            for sh in (False, True)]  # fmt: skip
    print(json.dumps({
        "devices": jax.device_count(),
        "mesh": dict(zip(sharded.mesh.axis_names, sharded.mesh.axis_sizes)),
        "kernel_shape": list(kernel.shape),
        "kernel_spec": [str(a) for a in kernel.sharding.spec],
        "kernel_shard_shape": list(kernel.addressable_shards[0].data.shape),
        "kernel_devices": len(kernel.sharding.device_set),
        "one_devices": len(one.params["blocks"][0]["mlp"]["fc1"]["kernel"].sharding.device_set),
        "max_abs_diff": float(np.abs(video_one - video_sharded).max()),
        "video_std": float(video_one.std()),
        "candidates_max_abs_diff": float(np.abs(best[0] - best[1]).max()),
        "candidates_change_the_video": float(np.abs(best[0] - video_one).max()),
    }))  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1])
