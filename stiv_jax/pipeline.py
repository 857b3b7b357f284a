"""Text/image-to-video generation from a trained run: the Python API and the sampler core.

  from stiv_jax.pipeline import STIVPipeline
  pipe = STIVPipeline.from_workdir("runs/stiv_s")
  video = pipe("a red circle moves left", image="first.png", seed=0)   # uint8 [T, H, W, 3]
  video = pipe("...", conditions=[(0, "a.png"), (7, "b.png")])         # interpolation
  video = pipe("...", conditions=[Condition(0, "ctx.mp4", last=3)])    # prediction
  video = pipe("...", negative_prompt="blurry", video="in.mp4", strength=0.6)  # V2V
  video = pipe("...", frames=64, long_mode="extend")                   # long video

Shapes: B batch, T pixel frames, F latent frames, H/W latent size, C channels.

`make_sample_fn` is the jitted sampler (all ODE steps, JIT-CFG in one batched forward, the
image-cond method's post-step); `generate` runs it for a batch of `Request`s. The sample
CLI (`stiv_jax.sample`), the evaluator and the trainer's periodic samples all use these.
"""

from __future__ import annotations

import json
import logging
import os
import zlib
from dataclasses import dataclass, field, replace
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from stiv_jax import checkpoint as ckpt
from stiv_jax.atomic import atomic_write
from stiv_jax.autoencoders import latent_geometry
from stiv_jax.candidates import (
    candidate_noise,
    make_score_fn,
    score_levels,
    score_noise,
    t2v_candidates,
    ti2v_candidates,
)
from stiv_jax.cond_media import (
    Condition,
    Placed,
    as_condition,
    encode_given,
    fit_frame,
    load_condition,
    place,
)
from stiv_jax.conditioning import drop_text, get_image_cond, make_conditions, null_conditions
from stiv_jax.data.schema import normalize_uint8
from stiv_jax.diffusion import (
    check_interval,
    make_guided_fn,
    make_self_conditioned_fn,
    make_stateful_guided_fn,
    sample_ode,
    to_velocity,
)
from stiv_jax.runtime import Components, build_model, video_latent_shape
from stiv_jax.video import load_image, read_mp4, to_uint8, write_mp4

__all__ = ["Condition", "Request", "STIVPipeline", "generate", "make_sample_fn"]

LONG_MODES = ("extend", "hierarchical")
SAMPLING_PARAM_DTYPES = ("auto", "float32", "bfloat16", "float16")


def default_seed(rid: str) -> int:
    """The seed of a request that gives none: crc32 of its id (stable across runs and hosts)."""
    return zlib.crc32(str(rid).encode())


@dataclass
class Request:
    """One video to generate. Media fields hold paths until `prepare_request` loads them.
    The defaults are the sample CLI's for a prompts line without the field: seed = crc32(id),
    motion_score = config.sample's, cfg_scale = `guidance_scale` (filled by `with_defaults`)."""

    id: str
    prompt: str
    image: str | None = None  # shorthand: this image at each latent frame of `cond_frames`
    cond_frames: list[int] = field(default_factory=list)
    motion_score: float | None = None  # None: config.sample.motion_score
    seed: int | None = None  # None: default_seed(id)
    cfg_scale: float | None = None  # None: `guidance_scale(config, given)`
    first_frame: np.ndarray | None = None  # float [-1,1] [H, W, 3], set by the caller/loader
    conditions: list[Condition] = field(default_factory=list)  # media at pixel frames
    negative_prompt: str | None = None  # text of CFG's unconditional branch ("" = none)
    video: str | np.ndarray | None = None  # V2V input (path, or [T, H, W, 3])
    strength: float = 1.0  # V2V: 0 returns the input, 1 ignores it (plain generation)
    frames: int | None = None  # pixel frames T (default data.frames)
    height: int | None = None  # pixels (default data.res)
    width: int | None = None
    long_mode: str | None = None  # extend | hierarchical (frames beyond one chunk)
    frame_stride: int | None = None  # micro-condition (default data.frame_stride)
    source: str = ""  # where the request came from ("prompts.jsonl:12"), for error lines

    def __post_init__(self):
        if self.seed is None:
            self.seed = default_seed(self.id)

    @property
    def gives_frames(self) -> bool:
        """Whether frames are given (TI2V, prediction, interpolation, keyframes; not V2V)."""
        has_image = self.image is not None or self.first_frame is not None
        return bool(self.conditions) or (has_image and bool(self.cond_frames))

    def with_defaults(self, config) -> Request:
        """This request with the fields left at None filled from `config.sample`."""
        s = config.sample
        scale = guidance_scale(config, self.gives_frames)
        return replace(
            self,
            motion_score=float(s.motion_score if self.motion_score is None else self.motion_score),
            cfg_scale=float(scale if self.cfg_scale is None else self.cfg_scale),
        )


def guidance_scale(config, given: bool) -> float:
    """The default guidance scale: `sample.cfg_scale_given` for requests that give frames when
    it is set (>= 0), else `sample.cfg_scale` (docs/quality.md §23)."""
    s = config.sample
    given_scale = float(s.get("cfg_scale_given", -1.0))
    return given_scale if given and given_scale >= 0.0 else float(s.cfg_scale)


def request_shape(config, r: Request) -> tuple[int, int, int]:
    """(T, H, W) pixel shape a (non-long) request is sampled at."""
    res = int(config.data.res)
    t = int(config.data.frames if r.frames is None or r.long_mode else r.frames)
    return t, int(r.height or res), int(r.width or res)


def _fit_video(video, t: int, size: tuple[int, int], name: str) -> np.ndarray:
    """A video path or array -> float [-1, 1] [t, H, W, 3] (its first t frames)."""
    if isinstance(video, str):
        if not os.path.isfile(video):
            raise FileNotFoundError(f"{name} {video!r} does not exist")
        video = read_mp4(video)
    video = np.asarray(video)
    if video.ndim != 4 or video.shape[-1] != 3 or len(video) < t:
        raise ValueError(f"{name} has shape {video.shape}; expected [>= {t}, H, W, 3]")
    return np.stack([fit_frame(f, size, name) for f in video[:t]])


def prepare_request(config, r: Request, base_dir: str = "") -> Request:
    """Load `r`'s media (paths relative to `base_dir`) and check everything a user can get
    wrong, in one clear line (ValueError / FileNotFoundError). Returns `r`, loaded in place."""

    def path(x):
        return os.path.join(base_dir, x) if isinstance(x, str) and not os.path.isabs(x) else x

    if r.long_mode is not None and r.long_mode not in LONG_MODES:
        raise ValueError(f"long_mode {r.long_mode!r} is unknown; expected one of {LONG_MODES}")
    if not 0.0 <= float(r.strength) <= 1.0:
        raise ValueError(f"strength {r.strength!r} must be in [0, 1]")
    if r.negative_prompt is not None and not isinstance(r.negative_prompt, str):
        raise ValueError(f"negative_prompt {r.negative_prompt!r} must be a string")
    t, h, w = request_shape(config, r)
    f = video_latent_shape(config, t, h, w)[0]
    if r.image is not None and r.first_frame is None:
        r.first_frame = load_image(path(r.image), (h, w))
    if r.first_frame is not None and np.shape(r.first_frame) != (h, w, 3):
        r.first_frame = fit_frame(np.asarray(r.first_frame), (h, w), "condition image")
    if r.cond_frames and r.first_frame is None:
        raise ValueError(f"cond_frames {r.cond_frames} given without an image")
    if not all(isinstance(k, (int, np.integer)) and 0 <= k < f for k in r.cond_frames):
        raise ValueError(f"cond_frames {r.cond_frames!r} must be latent frame indices in [0, {f})")
    loaded = []
    for c in r.conditions:
        c = as_condition(c)
        p = load_condition(Condition(c.frame, path(c.media), c.last), (h, w))
        loaded.append(Condition(p.frame, p.frames[0] if p.still else p.frames))
    r.conditions = loaded
    if r.video is not None and float(r.strength) < 1.0:
        r.video = _fit_video(path(r.video), t, (h, w), "V2V input video")
    if r.long_mode:
        from stiv_jax import long_video

        long_video.check_request(config, r)
    else:
        place(placed_conditions(config, r), latent_geometry(config.autoencoder), t)
    return r


def _int(obj: dict, key: str, lo: int = 1) -> int | None:
    v = obj.get(key)
    if v is None:
        return None
    if not isinstance(v, int) or isinstance(v, bool) or v < lo:
        raise ValueError(f"{key} {v!r} must be an integer >= {lo}")
    return v


def _condition_item(item) -> Condition:
    """One `conditions` entry of a prompt line -> `Condition` (paths not yet loaded)."""
    if not isinstance(item, dict) or ("image" in item) == ("video" in item):
        raise ValueError(
            f"condition {item!r} must be an object with one of image (+ frame) or video "
            f"(+ frames [first, last] or frame)"
        )
    unknown = sorted(set(item) - {"image", "video", "frame", "frames"})
    if unknown:
        raise ValueError(f"condition {item!r} has unknown keys {unknown}")
    if "image" in item:
        frame = _int(item, "frame", 0)
        if frame is None or "frames" in item:
            raise ValueError(f"image condition {item!r} needs one integer pixel frame 'frame'")
        return Condition(frame, str(item["image"]))
    span = item.get("frames")
    if span is not None:
        if (
            not isinstance(span, list)
            or len(span) != 2
            or not all(isinstance(k, int) and k >= 0 for k in span)
            or span[1] < span[0]
        ):
            raise ValueError(f"video condition frames {span!r} must be [first, last] pixel frames")
        return Condition(span[0], str(item["video"]), span[1])
    frame = _int(item, "frame", 0)
    return Condition(0 if frame is None else frame, str(item["video"]))


def request_fields(obj: dict) -> dict:
    """The application fields of one prompts-file line (a JSON object) as `Request` kwargs:

    conditions       [{"image": "a.png", "frame": 0}, {"video": "ctx.mp4", "frames": [0, 3]}]
                     pixel frames; a clip's frames fill [first, last] (or start at "frame")
    negative_prompt  text of the unconditional CFG branch
    video, strength  V2V input and how much of it to redo (0 = keep, 1 = ignore)
    frames, height, width   pixel shape of this request
    long_mode        extend | hierarchical: `frames` beyond one chunk (stiv_jax.long_video)
    """
    out: dict = {}
    conds = obj.get("conditions", [])
    if not isinstance(conds, list):
        raise ValueError(f"conditions {conds!r} must be a list of objects")
    out["conditions"] = [_condition_item(c) for c in conds]
    for key in ("negative_prompt", "video", "long_mode"):
        if obj.get(key) is not None:
            if not isinstance(obj[key], str):
                raise ValueError(f"{key} {obj[key]!r} must be a string")
            out[key] = obj[key]
    if "strength" in obj:
        st = obj["strength"]
        if isinstance(st, bool) or not isinstance(st, (int, float)) or not 0 <= st <= 1:
            raise ValueError(f"strength {st!r} must be a number in [0, 1]")
        if "video" not in obj:
            raise ValueError(f"strength {st!r} given without a video")
        out["strength"] = float(st)
    elif "video" in obj:
        out["strength"] = 0.6  # a usual SDEdit default: keep the layout, redo the details
    for key in ("frames", "height", "width"):
        if (v := _int(obj, key)) is not None:
            out[key] = v
    return out


def placed_conditions(config, r: Request) -> list[Placed]:
    """Every condition of a loaded request, the `image`+`cond_frames` shorthand included
    (latent frame k -> its first pixel frame; on a temporal VAE the image fills the latent)."""
    geo = latent_geometry(config.autoencoder)
    out = []
    if r.first_frame is not None:
        first = np.asarray(r.first_frame, np.float32)
        out += [Placed(geo.pixel_span(int(k))[0], first[None], True) for k in r.cond_frames]
    for c in r.conditions:
        media = np.asarray(c.media, np.float32)
        out.append(Placed(int(c.frame), media[None] if media.ndim == 3 else media, media.ndim == 3))
    return out


# ============================================================================ sampling core


def make_sample_fn(config, graphdef, *, mesh=None, with_stats: bool = False):
    """Jitted (params, x0, cond, null_text, scale [B], t_start [B] | None) -> latents
    [B, F, H, W, C]. `null_text` leaves are one encoding ([L, D], ...) or one per sample
    ([B, L, D], ...: negative prompts); jit keeps one compiled sampler per input shape.

    `sample.step_cache` on: the model calls go through `stiv_jax.step_cache` (threshold
    `sample.cache_threshold`); `with_stats` returns (latents, `CacheState`) instead, for
    block-evaluation counts (`step_cache.stats`). An optional last argument `threshold`
    (an array) overrides the config's as a traced value: one compile serves every
    threshold (benchmarks/step_cache.py). `mesh`: traced under it (the model's
    sharding constraints apply) with replicated outputs, for params sharded over it
    (`restore_for_sampling` with `sample.shard_params`) and inputs from `place_inputs`."""
    from stiv_jax import step_cache

    s = config.sample
    image_cond = get_image_cond(config.model.image_cond)
    cached = bool(s.get("step_cache", False))
    threshold = float(s.get("cache_threshold", 0.0))
    interval = check_interval(s.get("cfg_interval", (0.0, 1.0)), "sample.cfg_interval")
    interval = None if interval == (0.0, 1.0) else interval  # every step: the plain formula
    prediction = config.model.get("prediction", "velocity")  # older checkpoints: velocity
    if with_stats and not cached:
        raise ValueError("make_sample_fn: with_stats needs sample.step_cache=True")
    self_cond = bool(config.model.get("self_cond", False))
    if self_cond and cached:
        raise ValueError(
            "sample.step_cache=True with model.self_cond=True: the step cache does not carry "
            "self-conditioning's estimate; expected sample.step_cache=False"
        )

    def run(params, x0, cond, null_text, scale, t_start=None, threshold=threshold):
        # The model is rebuilt inside every call (in the ODE loop's trace): an nnx module
        # built outside a fori_loop cannot run its nnx.scan (stacked blocks) inside it.
        def model():
            return nnx.merge(graphdef, params)

        branches = (cond, null_conditions(cond, null_text))
        kw = dict(
            mode=s.cfg_mode,
            renorm=s.cfg_renorm,
            renorm_mode=s.get("cfg_renorm_mode", "scale_down"),
            interval=interval,
        )
        sc = scale[:, None, None, None, None]
        if s.cfg_mode == "separate":
            image_only = drop_text(cond, jnp.ones(x0.shape[:1], bool), null_text)
            branches = (cond, image_only, branches[1])
            kw.update(
                text_scale=s.cfg_text * sc / s.cfg_scale, image_scale=s.cfg_image * sc / s.cfg_scale
            )
        else:
            kw.update(scale=sc)
        post = image_cond.post_step(cond)
        ode = dict(steps=s.steps, solver=s.solver, shift=s.shift, post_step=post, t_start=t_start)
        if self_cond:  # every branch row sees its own previous x̂1 (zeros at first)
            velocity = make_self_conditioned_fn(lambda x, t, c: model()(x, t, c), branches,
                                                prediction, **kw)  # fmt: skip
            est = jnp.zeros((len(branches) * x0.shape[0], *x0.shape[1:]), jnp.float32)
            return sample_ode(velocity, x0, state=est, **ode)[0]
        if not cached:
            velocity = make_guided_fn(
                lambda x, t, c: to_velocity(model()(x, t, c), x, t, prediction), branches, **kw
            )
            # sample_ode applies the post-step after the last step too (given frames exact).
            return sample_ode(velocity, x0, **ode)

        def cached_model(xa, ta, c, state):
            out, state = step_cache.cached_call(model(), xa, ta, c, state, threshold)
            return to_velocity(out, xa, ta, prediction), state

        cached_velocity = make_stateful_guided_fn(cached_model, branches, **kw)
        k = len(branches)
        state = step_cache.init_state(config.model, (k * x0.shape[0], *x0.shape[1:]))
        x1, state = sample_ode(cached_velocity, x0, state=state, **ode)
        return (x1, state) if with_stats else x1

    if mesh is None:
        return jax.jit(run)
    from stiv_jax.parallel.rules import in_mesh

    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    jitted = jax.jit(run, out_shardings=replicated)
    fn = in_mesh(jitted, mesh)  # set_mesh must wrap the jitted call, not run inside it
    fn.lower = in_mesh(jitted.lower, mesh)  # AOT (tpu_scripts.aot_compile)
    return fn


def place_inputs(mesh, batch: int, *trees):
    """Host inputs of one sampler call -> global arrays on `mesh`: leaves with leading dim
    `batch` sharded over the batch axes (data, fsdp), the rest replicated. Every process
    passes the same values (the whole batch), so this also serves several hosts."""
    from stiv_jax.parallel.host_data import batch_sharding

    def one(leaf):
        if leaf is None:
            return None
        value = np.asarray(leaf)
        if value.ndim and value.shape[0] == batch:
            sharding = batch_sharding(mesh, value.shape)
        else:
            sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
        return jax.make_array_from_callback(value.shape, sharding, lambda idx: value[idx])

    return tuple(jax.tree.map(one, t) for t in trees)


def initial_noise(seeds: list[int], shape: tuple[int, ...]) -> jax.Array:
    """Per-sample noise from each sample's own seed (independent of batch composition)."""
    return jnp.stack([jax.random.normal(jax.random.key(s), shape, jnp.float32) for s in seeds])


def build_conditions(config, comps, reqs: list[Request], frames: int | None = None):
    """Loaded requests of one shape -> (Conditions, x0 noise [B, F, h, w, C]).

    `frames` overrides every request's pixel frames (all requests must share (T, H, W))."""
    reqs = [r.with_defaults(config) for r in reqs]
    shapes = {request_shape(config, r) for r in reqs}
    if len(shapes) != 1:
        raise ValueError(f"one batch needs one video shape, got {sorted(shapes)}")
    t, hp, wp = shapes.pop()
    t = t if frames is None else int(frames)
    f, h, w, c = video_latent_shape(config, t, hp, wp)
    geo = latent_geometry(config.autoencoder)
    emb = comps.text_encoder.encode([r.prompt for r in reqs])
    latents = np.zeros((len(reqs), f, h, w, c), np.float32)
    mask = np.zeros((len(reqs), f), bool)
    for i, r in enumerate(reqs):
        canvas, mask[i], n = place(placed_conditions(config, r), geo, t)
        lat = encode_given(comps.autoencoder, canvas, mask[i], n)
        if lat is not None:
            latents[i] = lat
    micro = np.array(
        [[hp, wp, 0, 0, r.frame_stride or config.data.frame_stride] for r in reqs], np.float32
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


def start_state(comps, reqs: list[Request], x0: jax.Array):
    """(x_start, t_start [B] | None): V2V requests start at t = 1 − strength from their
    input's latents, noised with their own x0 (flow: x_t = t·x1 + (1 − t)·ε)."""
    if not any(r.video is not None and r.strength < 1.0 for r in reqs):
        return x0, None
    t_start = np.zeros(len(reqs), np.float32)
    xs = []
    for i, r in enumerate(reqs):
        if r.video is None or r.strength >= 1.0:
            xs.append(x0[i])
            continue
        x1 = comps.autoencoder.encode(jnp.asarray(r.video, jnp.float32)[None])[0]
        t_start[i] = 1.0 - float(r.strength)
        xs.append(t_start[i] * x1.astype(jnp.float32) + (1.0 - t_start[i]) * x0[i])
    return jnp.stack(xs), jnp.asarray(t_start)


def negative_text(comps, reqs: list[Request]):
    """CFG's unconditional text: the null prompt, or per sample ([B, ...]) the requests'
    negative prompts ("" where a request has none)."""
    if not any(r.negative_prompt for r in reqs):
        return comps.null_text
    emb = comps.text_encoder.encode([r.negative_prompt or "" for r in reqs])
    return {"tokens": jnp.asarray(emb.tokens), "mask": jnp.asarray(emb.mask),
            "pooled": jnp.asarray(emb.pooled)}  # fmt: skip


def generate(
    config, comps, sample_fn, params, reqs: list[Request], frames=None, mesh=None, score_fn=None
) -> np.ndarray:
    """Loaded requests of one shape -> videos float [-1, 1] [B, T, H, W, 3] (the decoder's
    output, clipped to that range). `motion_score` / `cfg_scale` left at None take
    config.sample's values (`guidance_scale`). `mesh`: the sampler's (`make_sample_fn(..., mesh=mesh)`); the
    inputs are placed on it with the batch over the data axes (every process of a
    multi-host mesh must make the same call). With `sample.t2v_image_first` the text-only
    requests are sampled twice: latent frame 0 of the first pass is given to the second, as
    a TI2V request's image is, at that request's guidance (`image_first_rows`); a batch
    that holds one runs the sampler twice (one compiled shape). With
    `sample.t2v_candidates` N > 1 the first pass runs N times and each text-only row keeps
    the candidate of highest caption score (`stiv_jax.candidates`; `score_fn` is
    `candidates.make_score_fn`'s); with `sample.ti2v_candidates` N > 1 each request that
    gives frames (not V2V) keeps the best of N samples by the caption score of the frames it
    does not give."""
    first = image_first_rows(config, reqs)
    n_cand = t2v_candidates(config) if first else 1
    given = [i for i, r in enumerate(reqs) if r.gives_frames and r.video is None]
    n_given = ti2v_candidates(config) if given else 1
    for name, n in (("t2v_candidates", n_cand), ("ti2v_candidates", n_given)):
        if n > 1 and score_fn is None:
            raise ValueError(
                f"generate: sample.{name}={n} needs score_fn (stiv_jax.candidates.make_score_fn)"
            )
    given_scale = [r.cfg_scale if r.cfg_scale is not None else guidance_scale(config, True)
                   for r in reqs]  # fmt: skip
    reqs = [r.with_defaults(config) for r in reqs]
    cond, x0 = build_conditions(config, comps, reqs, frames)
    x0, t_start = start_state(comps, reqs, x0)
    scale = np.asarray([r.cfg_scale for r in reqs], np.float32)
    null = negative_text(comps, reqs)

    def local(out):  # replicated over several hosts: the local copy
        return out if out.is_fully_addressable else out.addressable_shards[0].data

    def run(cond, scale, x0=x0):
        args = (x0, cond, null, jnp.asarray(scale), t_start)
        if mesh is not None:
            args = place_inputs(mesh, len(reqs), *args)
        return local(sample_fn(params, *args))

    seeds = [r.seed for r in reqs]
    noise = []  # the caption score's, drawn once per call (from the requests' seeds)

    def score(x):
        if not noise:
            noise.append(score_noise(seeds, x.shape[1:], len(score_levels(config))))
        args = (jnp.asarray(x), cond, null, noise[0])
        if mesh is not None:
            args = place_inputs(mesh, len(reqs), *args)
        return np.asarray(local(score_fn(params, *args)))

    def best_of(latents, rows, n):
        """`latents` with each of `rows` the best by caption score of its sample and n − 1
        more from candidate noise (the other rows' new samples are dropped); `cond` and
        `scale` as they stand when it is called."""
        best = np.array(score(latents))
        for m in range(1, n):
            xm = np.array(x0, np.float32)
            xm[rows] = np.asarray(candidate_noise(seeds, m, x0.shape[1:]))[rows]
            cand = np.array(run(cond, scale, jnp.asarray(xm)), np.float32)
            s = score(cand)
            better = np.zeros(len(reqs), bool)
            better[rows] = s[rows] > best[rows]
            latents[better], best[better] = cand[better], s[better]
        return latents

    latents = run(cond, scale)
    if first or n_given > 1:
        latents = np.array(latents, np.float32)  # a writable host copy
    if first:  # sample.t2v_image_first: the first pass's frame 0 given to a second pass
        if n_cand > 1:  # the first pass's candidates: keep each row's best by caption score
            latents = best_of(latents, first, n_cand)
        cond = given_first_frame(cond, latents, first)
        scale[first] = np.asarray(given_scale, np.float32)[first]
        latents[first] = np.asarray(run(cond, scale), np.float32)[first]
    if n_given > 1:  # sample.ti2v_candidates: frame-giving rows, the best of n_given
        latents = best_of(latents, given, n_given)
    return np.clip(np.asarray(comps.autoencoder.decode(latents), np.float32), -1.0, 1.0)


def score_fn_for(config, graphdef, mesh=None):
    """`candidates.make_score_fn`'s when `sample.t2v_candidates` or `ti2v_candidates` > 1,
    else None."""
    if t2v_candidates(config) > 1 or ti2v_candidates(config) > 1:
        return make_score_fn(config, graphdef, mesh=mesh)
    return None


def image_first_rows(config, reqs: list[Request]) -> list[int]:
    """Rows that `sample.t2v_image_first` samples twice: text-only requests (no given frame,
    no V2V input) of a video with more than one latent frame; [] when it is off."""
    if not bool(config.sample.get("t2v_image_first", False)):
        return []
    return [
        i
        for i, r in enumerate(reqs)
        if not r.gives_frames
        and r.video is None
        and video_latent_shape(config, *request_shape(config, r))[0] > 1
    ]


def given_first_frame(cond, latents: np.ndarray, rows: list[int]):
    """`cond` with latent frame 0 of `latents` [B, F, H, W, C] given (as a TI2V request's
    first frame is) in `rows`; the other rows unchanged."""
    mask = np.asarray(cond["cond_mask"]).copy()
    given = np.asarray(cond["cond_latents"], np.float32).copy()
    mask[rows, 0] = True
    given[rows, 0] = latents[rows, 0]
    return {**cond, "cond_mask": jnp.asarray(mask), "cond_latents": jnp.asarray(given)}


def generate_cases(
    config, comps, graphdef, params, cases: list[dict], out: str
) -> tuple[list[str], np.ndarray]:
    """Held-out ShapesBench cases (TI2V from their first frame) -> (MP4 paths, videos float
    [B, T, H, W, 3]); under `out`: <i>.mp4 with its GIF and frame strip (stiv_jax.previews),
    contact_sheet.png and captions.json."""
    from stiv_jax import previews

    reqs = [
        Request(
            id=f"{i:03d}",
            prompt=case["caption"],
            cond_frames=[0],
            motion_score=float(case["motion_score"]),
            seed=i,
            first_frame=normalize_uint8(case["video"][0]),
        )
        for i, case in enumerate(cases)
    ]
    sample_fn = make_sample_fn(config, graphdef)
    videos = generate(
        config, comps, sample_fn, params, reqs, score_fn=score_fn_for(config, graphdef)
    )
    paths = []
    for r, v in zip(reqs, videos):
        paths.append(write_mp4(os.path.join(out, f"{r.id}.mp4"), v, config.sample.fps))
        previews.write_previews(paths[-1], v, config.sample.fps)
    previews.write_contact_sheet(
        os.path.join(out, "contact_sheet.png"),
        [os.path.join(out, f"{r.id}.png") for r in reqs],
        [f"{r.id}: {r.prompt}" for r in reqs],
    )
    with atomic_write(os.path.join(out, "captions.json")) as fh:
        json.dump({r.id: r.prompt for r in reqs}, fh, indent=1)
    return paths, videos


# ============================================================================ restore


def sampling_param_dtypes(config, abstract: dict) -> dict:
    """Dtype per parameter for sampling (pure dict of ShapeDtypeStructs -> same, new dtypes).

    `sample.param_dtype`: "auto" stores every Linear kernel (leaf named `kernel`) in
    `model.dtype`, the compute dtype (bfloat16 for the paper variants, float32 for tiny/S):
    Flax's Linear casts its kernel to that dtype before each matmul, so the samples are
    bit-identical while the weights take half the memory. Biases, norm scales, tables and
    the mask token stay as stored (small; some feed float32 math). A dtype name
    ("float32", "bfloat16") stores the kernels in it instead.
    """
    name = str(config.sample.get("param_dtype", "auto"))
    if name not in SAMPLING_PARAM_DTYPES:
        raise ValueError(
            f"sample.param_dtype {name!r} is unknown; expected {SAMPLING_PARAM_DTYPES}"
        )
    dtype = jnp.dtype(config.model.dtype if name == "auto" else name)

    def one(path, a):
        key = getattr(path[-1], "key", None)
        if key == "kernel" and jnp.issubdtype(a.dtype, jnp.floating):
            return jax.ShapeDtypeStruct(a.shape, dtype, sharding=getattr(a, "sharding", None))
        return a

    return jax.tree_util.tree_map_with_path(one, abstract)


def sampling_mesh(config):
    """The mesh a `sample.shard_params` sampler runs on: `config.mesh` over every device (as
    the trainer's), or None when params are not sharded (one copy per process)."""
    if not config.sample.get("shard_params", False):
        return None
    from stiv_jax.parallel.mesh import make_mesh

    return make_mesh(config.mesh)


def restore_for_sampling(config: Any, workdir: str, step: int | None = None, *, mesh=None):
    """(comps, graphdef, params, step) from `workdir`'s checkpoint, for sampling jobs.

    The architecture and encoders are the checkpoint's (its saved config); params are the
    EMA weights when `config.sample.use_ema`. Only those weights are read: no optimizer is
    built and no optimizer state is restored. Kernels are stored in `sample.param_dtype`
    (`sampling_param_dtypes`; Orbax casts while reading).

    Without `mesh` every process restores a full copy onto its first device. With `mesh`
    (`sampling_mesh`) the params are sharded over it by the trainer's rules (FSDP over
    `fsdp`, heads/MLP over `tensor`): each device reads only its shards, so a model larger
    than one chip samples; every process must then run the sampler in lockstep.
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
    if mesh is not None:
        from stiv_jax.parallel.mesh import named, param_specs

        shardings = named(param_specs(abstract, mesh), mesh)
        abstract = nnx.to_pure_dict(abstract)
    else:
        abstract = nnx.to_pure_dict(abstract)
        if jax.process_count() > 1:
            # Every process restores a full copy (replicated over the global devices) and
            # samples its share of the prompts on its own first device: no collectives.
            all_devices = jax.sharding.Mesh(np.asarray(jax.devices()), ("all",))
            one = jax.sharding.NamedSharding(all_devices, jax.sharding.PartitionSpec())
        else:
            one = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        shardings = jax.tree.map(lambda _: one, abstract)
    abstract = jax.tree.map(
        lambda a, sh: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh), abstract, shardings
    )
    abstract = sampling_param_dtypes(config, abstract)
    params, step = ckpt.restore_params(workdir, abstract, step=step, ema=config.sample.use_ema)
    if mesh is None and jax.process_count() > 1:
        params = jax.tree.map(lambda a: a.addressable_shards[0].data, params)
    return comps, graphdef, params, int(step)


# ============================================================================ Python API


class STIVPipeline:
    """A trained STIV with its encoders: prompt (+ image) -> uint8 video [T, H, W, 3]."""

    def __init__(
        self, config, comps: Components, graphdef, params, step: int | None = None, mesh=None
    ):
        """`mesh`: the one `params` are sharded over (`sampling_mesh`), else None."""
        self.config, self.comps, self.graphdef, self.params = config, comps, graphdef, params
        self.step, self.mesh = step, mesh
        self._sample_fn = self._score_fn = None

    @classmethod
    def from_workdir(
        cls, workdir: str, config=None, *, step: int | None = None, use_ema: bool | None = None
    ) -> STIVPipeline:
        """The run in `workdir` (its latest checkpoint unless `step`), with its saved config
        unless `config` is given (sampling settings and data.res/frames come from it).
        With `sample.shard_params` the params are sharded over `config.mesh`."""
        config = ckpt.restore_config(workdir, step) if config is None else config
        if use_ema is not None:
            with config.unlocked():
                config.sample.use_ema = bool(use_ema)
        mesh = sampling_mesh(config)
        return cls(config, *restore_for_sampling(config, workdir, step, mesh=mesh), mesh=mesh)

    @property
    def sample_fn(self):
        if self._sample_fn is None:
            self._sample_fn = make_sample_fn(self.config, self.graphdef, mesh=self.mesh)
        return self._sample_fn

    @property
    def score_fn(self):
        """The caption score of `sample.t2v_candidates` / `ti2v_candidates` > 1
        (`stiv_jax.candidates`), else None."""
        if self._score_fn is None:
            self._score_fn = score_fn_for(self.config, self.graphdef, self.mesh)
        return self._score_fn

    def generate(self, reqs: list[Request], frames: int | None = None) -> list[np.ndarray]:
        """Requests -> one float video [-1, 1] [T, H, W, 3] each, in order.

        Requests are loaded (`prepare_request`), grouped by shape (one compiled sampler per
        shape, kept by jit) and long-video requests go through `stiv_jax.long_video`."""
        from stiv_jax import long_video

        out: list[np.ndarray | None] = [None] * len(reqs)
        groups: dict[tuple, list[int]] = {}
        for i, r in enumerate(reqs):
            prepare_request(self.config, r)
            if r.long_mode:
                out[i] = long_video.generate_long(self, r)
            else:
                groups.setdefault(request_shape(self.config, r), []).append(i)
        for idx in groups.values():
            batch = [reqs[i] for i in idx]
            videos = generate(
                self.config, self.comps, self.sample_fn, self.params, batch, frames, self.mesh,
                score_fn=self.score_fn,
            )  # fmt: skip
            for i, v in zip(idx, videos):
                out[i] = v
        return out

    def __call__(
        self,
        prompt: str,
        *,
        image: str | np.ndarray | None = None,
        frames: int | None = None,
        cond_frames: list[int] | None = None,
        conditions: list | None = None,
        negative_prompt: str | None = None,
        video: str | np.ndarray | None = None,
        strength: float = 1.0,
        height: int | None = None,
        width: int | None = None,
        long_mode: str | None = None,
        seed: int = 0,
        motion_score: float | None = None,
        cfg_scale: float | None = None,
    ) -> np.ndarray:
        """One video, uint8 [T, H, W, 3].

        image: a path or an array [H, W, 3] (uint8, or float in [-1, 1]), resized and
        center-cropped to the video size; given at latent frames `cond_frames` (default [0]).
        conditions: `Condition`s or (pixel frame, image or clip[, last]) tuples, at any
        frames (see `stiv_jax.cond_media`). negative_prompt: CFG's unconditional text.
        video + strength: video-to-video (strength 0 returns the input, 1 ignores it).
        frames/height/width: pixel shape (default data.frames, data.res; other sizes use
        RoPE position interpolation); frames beyond one chunk need `long_mode`.
        """
        s = self.config.sample
        req = Request(
            id="0",
            prompt=prompt,
            image=image if isinstance(image, str) else None,
            first_frame=None if image is None or isinstance(image, str) else image,
            cond_frames=([0] if cond_frames is None else list(cond_frames))
            if image is not None
            else [],
            conditions=list(conditions or []),
            negative_prompt=negative_prompt,
            video=video,
            strength=float(strength),
            frames=frames,
            height=height,
            width=width,
            long_mode=long_mode,
            motion_score=float(s.motion_score if motion_score is None else motion_score),
            seed=int(seed),
            cfg_scale=cfg_scale,  # None: `guidance_scale` (with_defaults)
        )
        if req.first_frame is not None:
            t, h, w = request_shape(self.config, req)
            req.first_frame = fit_frame(np.asarray(req.first_frame), (h, w), "condition image")
        return to_uint8(self.generate([req])[0])
