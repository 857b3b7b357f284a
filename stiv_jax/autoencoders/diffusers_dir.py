"""Reading a diffusers VAE directory (config.json + safetensors) and shared latent helpers.

Shapes: B batch, F latent frames, H/W latent height/width, C latent channels.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from stiv_jax.weights import WeightLoadError, load_safetensors


def resolve_dir(path: str) -> str:
    """`path` itself, or its `vae/` subfolder when given a whole pipeline directory."""
    if not path:
        raise ValueError("autoencoder.path is empty; expected a diffusers VAE directory")
    if os.path.isfile(os.path.join(path, "config.json")):
        return path
    sub = os.path.join(path, "vae")
    if os.path.isfile(os.path.join(sub, "config.json")):
        return sub
    raise FileNotFoundError(
        f"autoencoder.path={path!r} has no config.json (nor vae/config.json); expected a "
        "diffusers VAE directory with config.json and diffusion_pytorch_model.safetensors"
    )


def read_config(path: str, class_name: str) -> dict:
    """The directory's config.json, checked to describe a diffusers `class_name`."""
    file = os.path.join(path, "config.json")
    try:
        with open(file) as f:
            cfg = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{file}: not valid JSON ({e})") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"{file}: expected a JSON object, got {type(cfg).__name__}")
    found = cfg.get("_class_name")
    if found != class_name:
        raise ValueError(f"{file}: _class_name={found!r}, expected {class_name!r}")
    return cfg


def read_weights(path: str) -> dict[str, np.ndarray]:
    """The directory's safetensors weights (a .bin-only directory is refused: no torch here)."""
    try:
        return load_safetensors(path)
    except WeightLoadError as e:
        raise WeightLoadError(
            f"{e} (convert .bin weights with diffusers' save_pretrained(..., "
            "safe_serialization=True))"
        ) from None


def posterior(moments: jax.Array, rng: jax.Array | None) -> jax.Array:
    """Mean of the diagonal Gaussian `[..., 2C] = (mean, logvar)`, or a sample when `rng`.

    diffusers' DiagonalGaussianDistribution: logvar clipped to [-30, 20].
    """
    mean, logvar = jnp.split(moments, 2, axis=-1)
    if rng is None:
        return mean
    std = jnp.exp(0.5 * jnp.clip(logvar.astype(jnp.float32), -30.0, 20.0)).astype(mean.dtype)
    return mean + std * jax.random.normal(rng, mean.shape, mean.dtype)


def check_video(video: jax.Array, spatial_factor: int, name: str) -> None:
    """One-line errors for a video that is not `[B, T, H, W, 3]` with H, W multiples."""
    if video.ndim != 5 or video.shape[-1] != 3:
        raise ValueError(f"{name}.encode: video shape {video.shape}, expected [B, T, H, W, 3]")
    h, w = video.shape[2:4]
    if h % spatial_factor or w % spatial_factor:
        raise ValueError(
            f"{name}.encode: frame size {h}x{w} must be a multiple of {spatial_factor}"
        )


def build_abstract(ctor: Callable[[], nnx.Module]) -> nnx.Module:
    """The module with shape-only params: eager random init of a VAE costs minutes on CPU."""
    return nnx.eval_shape(ctor)


def random_fill(module: nnx.Module, seed: int, param_dtype) -> None:
    """Fills every param from numpy on the host: kernels N(0, 1/fan_in), norms 1, biases 0.

    Stands in for real weights in benchmarks (realistic shapes, activations of unit scale).
    """
    rs = np.random.default_rng(seed)
    for path, var in nnx.to_flat_state(nnx.state(module, nnx.Param)):
        shape = tuple(var.get_value().shape)
        name = str(path[-1])
        if name == "kernel":
            fan_in = int(np.prod(shape[:-1]))
            value = rs.standard_normal(shape, np.float32) / np.sqrt(fan_in)
        elif name in ("scale", "gamma"):
            value = np.ones(shape, np.float32)
        else:
            value = np.zeros(shape, np.float32)
        var.set_value(jnp.asarray(value, param_dtype))
