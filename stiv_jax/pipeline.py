"""Text/image-to-video generation from a trained run: the Python API and the sampler core.

  from stiv_jax.pipeline import STIVPipeline
  pipe = STIVPipeline.from_workdir("runs/stiv_s")
  video = pipe("a red circle moves left", image="first.png", seed=0)   # uint8 [T, H, W, 3]

Shapes: B batch, T pixel frames, F latent frames, H/W latent size, C channels.

`make_sample_fn` is the jitted sampler (all ODE steps, JIT-CFG in one batched forward, the
image-cond method's post-step); `generate` runs it for a batch of `Request`s. The sample
CLI (`stiv_jax.sample`), the evaluator and the trainer's periodic samples all use these.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from stiv_jax import checkpoint as ckpt
from stiv_jax.conditioning import drop_text, get_image_cond, make_conditions, null_conditions
from stiv_jax.data.schema import normalize_uint8
from stiv_jax.diffusion import make_guided_fn, sample_ode, to_velocity
from stiv_jax.runtime import Components, build_model, latent_shape
from stiv_jax.video import load_image, to_uint8, write_mp4


@dataclass
class Request:
    id: str
    prompt: str
    image: str | None = None
    cond_frames: list[int] = field(default_factory=list)
    motion_score: float = 1.0
    seed: int = 0
    cfg_scale: float = 4.0
    first_frame: np.ndarray | None = None  # float [-1,1] [H, W, 3], set by the caller/loader
    source: str = ""  # where the request came from ("prompts.jsonl:12"), for error lines


# ============================================================================ sampling core


def make_sample_fn(config, graphdef):
    """Jitted (params, x0, cond, null_text, scale [B]) -> latents [B, F, H, W, C]."""
    s = config.sample
    image_cond = get_image_cond(config.model.image_cond)

    def model_fn(params):
        model = nnx.merge(graphdef, params)
        prediction = config.model.get("prediction", "velocity")  # older checkpoints: velocity
        return lambda x, t, cond: to_velocity(model(x, t, cond), x, t, prediction)

    def run(params, x0, cond, null_text, scale):
        branches = (cond, null_conditions(cond, null_text))
        kw = dict(mode=s.cfg_mode, renorm=s.cfg_renorm)
        sc = scale[:, None, None, None, None]
        if s.cfg_mode == "separate":
            image_only = drop_text(cond, jnp.ones(x0.shape[:1], bool), null_text)
            branches = (cond, image_only, branches[1])
            kw.update(
                text_scale=s.cfg_text * sc / s.cfg_scale, image_scale=s.cfg_image * sc / s.cfg_scale
            )
        else:
            kw.update(scale=sc)
        velocity = make_guided_fn(model_fn(params), branches, **kw)
        post = image_cond.post_step(cond)
        # sample_ode applies the post-step after the last step too (given frames exact).
        return sample_ode(
            velocity, x0, steps=s.steps, solver=s.solver, shift=s.shift, post_step=post
        )

    return jax.jit(run)


def initial_noise(seeds: list[int], shape: tuple[int, ...]) -> jax.Array:
    """Per-sample noise from each sample's own seed (independent of batch composition)."""
    return jnp.stack([jax.random.normal(jax.random.key(s), shape, jnp.float32) for s in seeds])


def build_conditions(config, comps, reqs: list[Request], frames: int | None = None):
    """Requests -> (Conditions, x0 noise) for one batch of `frames` pixel frames."""
    f, h, w, c = comps.latent_shape if frames is None else latent_shape(config, frames)
    res = config.data.res
    emb = comps.text_encoder.encode([r.prompt for r in reqs])
    latents = np.zeros((len(reqs), f, h, w, c), np.float32)
    mask = np.zeros((len(reqs), f), bool)
    for i, r in enumerate(reqs):
        if r.first_frame is None or not r.cond_frames:
            continue
        img = jnp.asarray(r.first_frame, jnp.float32)[None, None]  # [1, 1, H, W, 3]
        lat = np.asarray(comps.autoencoder.encode(img))[0, 0]  # [h, w, C]
        for k in r.cond_frames:
            latents[i, k], mask[i, k] = lat, True
    micro = np.tile(
        np.array([res, res, 0, 0, config.data.frame_stride], np.float32), (len(reqs), 1)
    )
    cond = make_conditions(
        latents=jnp.asarray(latents),
        cond_mask=jnp.asarray(mask),
        text_tokens=jnp.asarray(emb.tokens),
        text_mask=jnp.asarray(emb.mask),
        text_pooled=jnp.asarray(emb.pooled),
        micro=jnp.asarray(micro),
        motion=jnp.asarray([r.motion_score for r in reqs], jnp.float32),
    )
    return cond, initial_noise([r.seed for r in reqs], (f, h, w, c))


def generate(config, comps, sample_fn, params, reqs: list[Request], frames=None) -> np.ndarray:
    """-> videos float [-1, 1] [B, T, H, W, 3]."""
    cond, x0 = build_conditions(config, comps, reqs, frames)
    scale = jnp.asarray([r.cfg_scale for r in reqs], jnp.float32)
    latents = sample_fn(params, x0, cond, comps.null_text, scale)
    return np.asarray(comps.autoencoder.decode(latents))


def generate_cases(config, comps, graphdef, params, cases: list[dict], out: str) -> list[str]:
    """Held-out ShapesBench cases (TI2V from their first frame) -> MP4s under `out`."""
    reqs = [
        Request(
            id=f"{i:03d}",
            prompt=case["caption"],
            cond_frames=[0],
            motion_score=float(case["motion_score"]),
            seed=i,
            cfg_scale=config.sample.cfg_scale,
            first_frame=normalize_uint8(case["video"][0]),
        )
        for i, case in enumerate(cases)
    ]
    sample_fn = make_sample_fn(config, graphdef)
    videos = generate(config, comps, sample_fn, params, reqs)
    paths = [
        write_mp4(os.path.join(out, f"{r.id}.mp4"), v, config.sample.fps)
        for r, v in zip(reqs, videos)
    ]
    with open(os.path.join(out, "captions.json.tmp"), "w") as fh:
        json.dump({r.id: r.prompt for r in reqs}, fh, indent=1)
    os.replace(os.path.join(out, "captions.json.tmp"), os.path.join(out, "captions.json"))
    return paths


# ============================================================================ restore


def restore_for_sampling(config: Any, workdir: str, step: int | None = None):
    """(comps, graphdef, params, step) from `workdir`'s checkpoint, for sampling jobs.

    The architecture and encoders are the checkpoint's (its saved config); params are the
    EMA weights when `config.sample.use_ema`. Only those weights are read: no optimizer is
    built and no optimizer state is restored.
    """
    saved = ckpt.restore_config(workdir, step)
    with config.unlocked():
        impl = config.model.attention_impl
        for key in ("model", "optim", "text_encoder", "autoencoder"):
            config[key] = saved[key]
        config.model.attention_impl = impl
    for key in ("res", "frames", "frame_stride"):
        if config.data[key] != saved.data[key]:
            logging.warning(
                "sampling at data.%s=%s but the checkpoint trained at %s",
                key, config.data[key], saved.data[key],
            )  # fmt: skip
    comps = Components(config)
    # Shapes only: random weights that the restore would overwrite are never materialised.
    graphdef, abstract = nnx.split(nnx.eval_shape(lambda: build_model(config, 0)), nnx.Param)
    abstract = nnx.to_pure_dict(abstract)
    if jax.process_count() > 1:
        # Every process restores a full copy (replicated over the global devices) and samples
        # its share of the prompts on its own first device: no collectives while sampling.
        mesh = jax.sharding.Mesh(np.asarray(jax.devices()), ("all",))
        sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    else:
        sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), abstract
    )
    params, step = ckpt.restore_params(workdir, abstract, step=step, ema=config.sample.use_ema)
    if jax.process_count() > 1:
        params = jax.tree.map(lambda a: a.addressable_shards[0].data, params)
    return comps, graphdef, params, int(step)


# ============================================================================ Python API


class STIVPipeline:
    """A trained STIV with its encoders: prompt (+ image) -> uint8 video [T, H, W, 3]."""

    def __init__(self, config, comps: Components, graphdef, params, step: int | None = None):
        self.config, self.comps, self.graphdef, self.params = config, comps, graphdef, params
        self.step = step
        self._sample_fn = None

    @classmethod
    def from_workdir(
        cls, workdir: str, config=None, *, step: int | None = None, use_ema: bool | None = None
    ) -> STIVPipeline:
        """The run in `workdir` (its latest checkpoint unless `step`), with its saved config
        unless `config` is given (sampling settings and data.res/frames come from it)."""
        config = ckpt.restore_config(workdir, step) if config is None else config
        if use_ema is not None:
            with config.unlocked():
                config.sample.use_ema = bool(use_ema)
        return cls(config, *restore_for_sampling(config, workdir, step))

    @property
    def sample_fn(self):
        if self._sample_fn is None:
            self._sample_fn = make_sample_fn(self.config, self.graphdef)
        return self._sample_fn

    def generate(self, reqs: list[Request], frames: int | None = None) -> np.ndarray:
        """A batch of requests -> float videos [-1, 1] [B, T, H, W, 3]."""
        return generate(self.config, self.comps, self.sample_fn, self.params, reqs, frames)

    def __call__(
        self,
        prompt: str,
        *,
        image: str | np.ndarray | None = None,
        frames: int | None = None,
        cond_frames: list[int] | None = None,
        seed: int = 0,
        motion_score: float | None = None,
        cfg_scale: float | None = None,
    ) -> np.ndarray:
        """One video, uint8 [T, H, W, 3].

        image: a path or an array [H, W, 3] (uint8, or float in [-1, 1]), resized and
        center-cropped to data.res; given at latent frames `cond_frames` (default [0]).
        frames: pixel frames T (default data.frames; the autoencoder's rules apply).
        """
        s, res = self.config.sample, int(self.config.data.res)
        first = None if image is None else load_image(image, (res, res))
        f = (self.comps.latent_shape if frames is None else latent_shape(self.config, frames))[0]
        if cond_frames is not None and not all(0 <= int(k) < f for k in cond_frames):
            raise ValueError(f"cond_frames {cond_frames} must be latent frame indices in [0, {f})")
        req = Request(
            id="0",
            prompt=prompt,
            cond_frames=([0] if cond_frames is None else list(cond_frames))
            if first is not None
            else [],
            motion_score=float(s.motion_score if motion_score is None else motion_score),
            seed=int(seed),
            cfg_scale=float(s.cfg_scale if cfg_scale is None else cfg_scale),
            first_frame=first,
        )
        return to_uint8(self.generate([req], frames)[0])
