"""Batch sampling job: prompts JSONL -> OUT/<id>.mp4 + OUT/results.jsonl (resumable).

  python -m stiv_jax.sample --config configs/stiv.py:variant=S --workdir runs/stiv_s \
      --prompts prompts.jsonl --out samples/

Each prompts line is a JSON object: `id` (letters, digits, -_.), `prompt` (non-empty),
optional `image` (path of the condition image; resized + center-cropped to the generation
size), `cond_frames` (latent frame indices the image is given at; default [0] with an
image, [] without), `motion_score`, `seed`, `cfg_scale`. A bad line is reported with its
line number and skipped; the rest still run. Ids already in OUT/results*.jsonl with their
MP4 present are skipped, so a killed job resumes where it stopped. Several processes (every
worker of a TPU pod, `jax.distributed`) split the prompts between them (`run_job`).

Shapes: B batch, F latent frames, H/W latent size, C channels.
"""

from __future__ import annotations

import json
import logging
import os
import re
import zlib
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from stiv_jax.conditioning import drop_text, make_conditions, null_conditions
from stiv_jax.diffusion import make_guided_fn, sample_ode, to_velocity
from stiv_jax.video import load_image, write_mp4

_ID = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


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


# ============================================================================ sampling core


def make_sample_fn(config, graphdef):
    """Jitted (params, x0, cond, null_text, scale [B]) -> latents [B, F, H, W, C]."""
    s, m = config.sample, config.model

    def model_fn(params):
        model = nnx.merge(graphdef, params)
        return lambda x, t, cond: to_velocity(
            model(x, t, cond), x, t, m.get("prediction", "velocity")
        )

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
        given = cond["cond_mask"][:, :, None, None, None]

        def post_step(x, t):  # STIV frame replacement: given frames stay clean
            return jnp.where(given, cond["cond_latents"], x)

        post = post_step if m.image_cond == "frame_replace" else None
        x1 = sample_ode(velocity, x0, steps=s.steps, solver=s.solver, shift=s.shift, post_step=post)
        return x1  # sample_ode already re-imposed the given frames after the last step

    return jax.jit(run)


def initial_noise(seeds: list[int], shape: tuple[int, ...]) -> jax.Array:
    """Per-sample noise from each sample's own seed (independent of batch composition)."""
    return jnp.stack([jax.random.normal(jax.random.key(s), shape, jnp.float32) for s in seeds])


def build_conditions(config, comps, reqs: list[Request]):
    """Requests -> (Conditions, x0 noise) for one batch."""
    f, h, w, c = comps.latent_shape
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


def generate(config, comps, sample_fn, params, reqs: list[Request]) -> np.ndarray:
    """-> videos float [-1, 1] [B, T, H, W, 3]."""
    cond, x0 = build_conditions(config, comps, reqs)
    scale = jnp.asarray([r.cfg_scale for r in reqs], jnp.float32)
    latents = sample_fn(params, x0, cond, comps.null_text, scale)
    return np.asarray(comps.autoencoder.decode(latents))


def generate_cases(config, comps, graphdef, params, cases: list[dict], out: str) -> list[str]:
    """Held-out ShapesBench cases (TI2V from their first frame) -> MP4s under `out`."""
    reqs = []
    for i, case in enumerate(cases):
        frame0 = case["video"][0].astype(np.float32) / 127.5 - 1.0
        reqs.append(
            Request(
                id=f"{i:03d}",
                prompt=case["caption"],
                cond_frames=[0],
                motion_score=float(case["motion_score"]),
                seed=i,
                cfg_scale=config.sample.cfg_scale,
                first_frame=frame0,
            )
        )
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
    """(comps, graphdef, params, step) from `workdir`'s checkpoint, for `run_job` and the evaluator.

    The architecture, encoders and optimizer layout are the checkpoint's (its saved config);
    params are the EMA weights when `config.sample.use_ema`.
    """
    import jax
    from flax import nnx

    from stiv_jax import checkpoint as ckpt
    from stiv_jax.optim import make_optimizer
    from stiv_jax.train import Components, init_state

    saved = ckpt.restore_config(workdir, step)
    with config.unlocked():
        impl = config.model.attention_impl
        for key in ("model", "optim", "text_encoder", "autoencoder"):
            config[key] = saved[key]
        config.model.attention_impl = impl
    for key in ("res", "frames", "frame_stride"):
        if config.data[key] != saved.data[key]:
            logging.warning(
                "evaluating at data.%s=%s but the checkpoint trained at %s",
                key, config.data[key], saved.data[key],
            )  # fmt: skip
    comps = Components(config)
    tx = make_optimizer(config.optim)
    # Shapes only: random weights that the restore would overwrite are never materialised.
    graphdef, _ = nnx.split(nnx.eval_shape(lambda: comps.model(0)), nnx.Param)
    abstract = jax.eval_shape(lambda: init_state(comps.model(0), tx)[1])
    mngr = ckpt.manager(workdir, max_to_keep=1_000_000, async_save=False)
    step = mngr.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(f"no checkpoint under {os.path.join(workdir, 'checkpoints')}")
    if jax.process_count() > 1:
        # Every process restores a full copy (replicated over the global devices) and samples
        # its share of the prompts on its own first device: no collectives while sampling.
        mesh = jax.sharding.Mesh(np.asarray(jax.devices()), ("all",))
        rep = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
        abstract = jax.tree.map(
            lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=rep), abstract
        )
    state = ckpt.restore(mngr, step, abstract)
    params = state["ema"] if config.sample.use_ema else state["params"]
    if jax.process_count() > 1:
        params = jax.tree.map(lambda a: a.addressable_shards[0].data, params)
    return comps, graphdef, params, int(step)


# ============================================================================ prompts file


def parse_prompts(path: str, config) -> tuple[list[Request], list[str]]:
    """-> (requests, errors); each error names the line number and the bad value."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"prompts file {path!r} does not exist")
    reqs, errors, seen = [], [], set()
    f = None
    with open(path, encoding="utf-8") as fh:
        lines = fh.read().splitlines()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            if not isinstance(obj, dict):
                raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
            rid = str(obj.get("id", ""))
            if not _ID.match(rid):
                raise ValueError(f"id {rid!r} must be 1-128 characters of letters, digits, -_.")
            if rid in seen:
                raise ValueError(f"id {rid!r} appears twice")
            prompt = obj.get("prompt")
            if not isinstance(prompt, str) or not prompt.strip():
                raise ValueError(f"prompt {prompt!r} must be a non-empty string")
            image = obj.get("image")
            frames = obj.get("cond_frames", [0] if image else [])
            f = f or _latent_frames(config)
            if not isinstance(frames, list) or not all(
                isinstance(k, int) and 0 <= k < f for k in frames
            ):
                raise ValueError(f"cond_frames {frames!r} must be a list of ints in [0, {f})")
            if frames and not image:
                raise ValueError(f"cond_frames {frames!r} given without an image")
            req = Request(
                id=rid,
                prompt=prompt,
                image=image,
                cond_frames=frames,
                motion_score=float(obj.get("motion_score", config.sample.motion_score)),
                seed=int(obj.get("seed", zlib.crc32(rid.encode()))),
                cfg_scale=float(obj.get("cfg_scale", config.sample.cfg_scale)),
            )
            if image:
                res = config.data.res
                req.first_frame = load_image(
                    image
                    if os.path.isabs(image)
                    else os.path.join(os.path.dirname(os.path.abspath(path)), image),
                    (res, res),
                )
        except (ValueError, TypeError, FileNotFoundError, json.JSONDecodeError) as e:
            errors.append(f"{path}:{n}: {e}; skipped")
            continue
        seen.add(rid)
        reqs.append(req)
    return reqs, errors


def _latent_frames(config) -> int:
    from stiv_jax.autoencoders import get_autoencoder

    return get_autoencoder(config.autoencoder).latent_shape(
        config.data.frames, config.data.res, config.data.res
    )[0]


def results_path(out: str, index: int = 0, count: int = 1) -> str:
    """OUT/results.jsonl, or one file per process (results.00001-of-00004.jsonl) when several
    processes share OUT, so that no two processes append to the same file."""
    name = "results.jsonl" if count == 1 else f"results.{index:05d}-of-{count:05d}.jsonl"
    return os.path.join(out, name)


def _done_ids(out: str) -> set[str]:
    """Ids in any OUT/results*.jsonl whose MP4 exists (written by any process, any run)."""
    done = set()
    for name in sorted(os.listdir(out)):
        if not (name.startswith("results") and name.endswith(".jsonl")):
            continue
        with open(os.path.join(out, name)) as fh:
            for line in fh:
                try:
                    rid = json.loads(line)["id"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue
                if os.path.exists(os.path.join(out, f"{rid}.mp4")):
                    done.add(rid)
    return done


def run_job(config, workdir: str, prompts: str, out: str) -> dict:
    """The sampling job; returns this process's counts {generated, skipped_done, bad_lines}.

    With several processes (`jax.distributed`, e.g. every worker of a TPU pod), process i of
    n samples the not-yet-done prompts i, i + n, ... into the shared OUT and logs them in its
    own results file; a rerun on any number of processes skips what any of them finished.
    """
    from tqdm import tqdm

    from stiv_jax.checkpoint import require_filesystem_path

    for path, what in ((workdir, "workdir"), (prompts, "prompts"), (out, "out")):
        require_filesystem_path(path, what)
    comps, graphdef, params, _ = restore_for_sampling(config, workdir)
    reqs, errors = parse_prompts(prompts, config)
    index, count = jax.process_index(), jax.process_count()
    if index == 0:
        for e in errors:
            logging.error(e)
    os.makedirs(out, exist_ok=True)
    done = _done_ids(out)
    todo = [r for r in reqs if r.id not in done]
    skipped = len(reqs) - len(todo)
    todo = todo[index::count]
    counts = {"generated": 0, "skipped_done": skipped, "bad_lines": len(errors)}
    if todo:
        sample_fn = make_sample_fn(config, graphdef)
        bs = config.sample.batch_size
        for i in tqdm(range(0, len(todo), bs), desc="sample"):
            batch = todo[i : i + bs]
            videos = generate(config, comps, sample_fn, params, batch)
            for r, v in zip(batch, videos):
                path = write_mp4(os.path.join(out, f"{r.id}.mp4"), v, config.sample.fps)
                rec = {"id": r.id, "prompt": r.prompt, "path": path, "image": r.image,
                       "cond_frames": r.cond_frames, "motion_score": r.motion_score,
                       "seed": r.seed, "cfg_scale": r.cfg_scale}  # fmt: skip
                with open(results_path(out, index, count), "a") as fh:
                    fh.write(json.dumps(rec) + "\n")
                counts["generated"] += 1
    print(json.dumps(counts))
    return counts


def main(argv=None) -> None:
    from absl import app, flags
    from ml_collections import config_flags

    cfg_flag = config_flags.DEFINE_config_file(
        "config", None, "configs/stiv.py:ARG", lock_config=True
    )
    wd = flags.DEFINE_string("workdir", None, "Training run directory with checkpoints.")
    pr = flags.DEFINE_string("prompts", None, "Prompts JSONL file.")
    out = flags.DEFINE_string("out", None, "Output directory for MP4s and results.jsonl.")
    flags.mark_flags_as_required(["config", "workdir", "prompts", "out"])

    def run(_):
        from stiv_jax.parallel import initialize_distributed

        logging.getLogger().setLevel(logging.INFO)
        initialize_distributed()  # several processes split the prompts (see run_job)
        try:
            run_job(cfg_flag.value, wd.value, pr.value, out.value)
        except (ValueError, FileNotFoundError) as e:  # user errors: one line, no traceback
            raise SystemExit(f"error: {e}") from None

    app.run(run, argv)


if __name__ == "__main__":
    main()
