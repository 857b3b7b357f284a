"""Batch sampling job: prompts JSONL -> OUT/<id>.{mp4,gif,png} + OUT/results.jsonl (resumable).

  python -m stiv_jax.sample --config configs/stiv.py:variant=S --workdir runs/stiv_s \
      --prompts docs/examples/prompts.jsonl --out runs/stiv_s/prompted [--step N]
  python -m stiv_jax.sample --workdir runs/stiv_s --list     # the checkpoint steps to pick from

Each prompts line is a JSON object: `id` (letters, digits, -_.), `prompt` (non-empty),
optional `image` (path of the condition image; resized + center-cropped to the generation
size) with `cond_frames` (latent frame indices the image is given at; default [0] with an
image, [] without: the shorthand of `conditions`), `motion_score`, `seed`, `cfg_scale`,
and the application fields of `stiv_jax.pipeline.request_fields`: `conditions` (images /
clips at pixel frames), `negative_prompt`, `video` + `strength` (V2V), `frames`, `height`,
`width`, `long_mode`. Media paths are relative to the prompts file. A bad line is reported
with its line number and skipped; the rest still run. Ids already in OUT/results*.jsonl with their
MP4 present are skipped, so a killed job resumes where it stopped. Several processes (every
worker of a TPU pod, `jax.distributed`) split the prompts between them (`run_job`).

Outputs per id: `<id>.mp4`, `<id>.gif` (animated) and `<id>.png` (frame strip), both
nearest-upscaled so a 32×32 video is visible (stiv_jax.previews); per job:
`contact_sheet.png` (the frame strips of the first 64 ids, labelled). The paths in
results.jsonl (`path`, `gif`, `strip`) are relative to OUT.

Built on `stiv_jax.pipeline.STIVPipeline` (restore, sampler, decode); this file is the
prompts file and the job around it. Shapes: B batch, F latent frames, T pixel frames.
"""

from __future__ import annotations

import json
import logging
import os
import re

import jax

from stiv_jax import console, previews
from stiv_jax.pipeline import Request, STIVPipeline, default_seed, prepare_request, request_fields
from stiv_jax.runtime import latent_shape
from stiv_jax.video import load_image, write_mp4

_ID = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


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
            f = f or latent_shape(config)[0]
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
                seed=int(obj.get("seed", default_seed(rid))),
                cfg_scale=float(obj.get("cfg_scale", config.sample.cfg_scale)),
                **request_fields(obj),
            )
            if image:
                res = config.data.res
                req.first_frame = load_image(
                    image
                    if os.path.isabs(image)
                    else os.path.join(os.path.dirname(os.path.abspath(path)), image),
                    (res, res),
                )
            prepare_request(config, req, os.path.dirname(os.path.abspath(path)))
        except (ValueError, TypeError, FileNotFoundError, json.JSONDecodeError) as e:
            errors.append(f"{path}:{n}: {e}; skipped")
            continue
        seen.add(rid)
        reqs.append(req)
    return reqs, errors


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


SHEET_ROWS = 64  # videos on a job's contact sheet


def _write_contact_sheet(out: str) -> str | None:
    """OUT/contact_sheet.png from the frame strips of the ids in OUT's results files (every
    process writes it when done, atomically, so the last one to finish leaves the full one)."""
    rows = {}
    for name in sorted(os.listdir(out)):
        if name.startswith("results") and name.endswith(".jsonl"):
            with open(os.path.join(out, name)) as fh:
                for line in fh:
                    try:
                        rec = json.loads(line)
                        rows.setdefault(rec["id"], rec["prompt"])
                    except (json.JSONDecodeError, KeyError, TypeError):
                        continue
    rows = [(i, p) for i, p in rows.items() if os.path.exists(os.path.join(out, f"{i}.png"))]
    if not rows:
        return None
    if len(rows) > SHEET_ROWS:
        logging.info("contact sheet: the first %d of %d videos", SHEET_ROWS, len(rows))
    rows = rows[:SHEET_ROWS]
    return previews.write_contact_sheet(
        os.path.join(out, "contact_sheet.png"),
        [os.path.join(out, f"{i}.png") for i, _ in rows],
        [f"{i}: {p}" for i, p in rows],
    )


def run_job(config, workdir: str, prompts: str, out: str, *, step: int | None = None) -> dict:
    """The sampling job from `workdir`'s checkpoint `step` (latest when None); returns this
    process's counts {generated, skipped_done, bad_lines}.

    With several processes (`jax.distributed`, e.g. every worker of a TPU pod), process i of
    n samples the not-yet-done prompts i, i + n, ... into the shared OUT and logs them in its
    own results file; a rerun on any number of processes skips what any of them finished.
    Every batch has the same size (the last one is padded with copies of its last request,
    whose videos are dropped), so the sampler compiles once.
    """
    from stiv_jax.checkpoint import require_filesystem_path

    for path, what in ((workdir, "workdir"), (prompts, "prompts"), (out, "out")):
        require_filesystem_path(path, what)
    pipe = STIVPipeline.from_workdir(workdir, config, step=step)
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
        bs = min(config.sample.batch_size, len(todo))
        fps = config.sample.fps
        logging.info("sampling %d videos (step %d) → %s", len(todo), pipe.step, out)
        for i in console.progress(range(0, len(todo), bs), desc="sample", unit="batch"):
            batch = todo[i : i + bs]
            videos = pipe.generate(batch + [batch[-1]] * (bs - len(batch)))[: len(batch)]
            for r, v in zip(batch, videos):
                mp4 = write_mp4(os.path.join(out, f"{r.id}.mp4"), v, fps)
                pv = previews.write_previews(mp4, v, fps)
                rec = {"id": r.id, "prompt": r.prompt, "path": os.path.basename(mp4),
                       "gif": os.path.basename(pv["gif"]), "strip": os.path.basename(pv["strip"]),
                       "image": r.image, "cond_frames": r.cond_frames,
                       "motion_score": r.motion_score, "seed": r.seed, "cfg_scale": r.cfg_scale,
                       "step": pipe.step}  # fmt: skip
                with open(results_path(out, index, count), "a") as fh:
                    fh.write(json.dumps(rec) + "\n")
                counts["generated"] += 1
    sheet = _write_contact_sheet(out)
    if sheet and index == 0:
        logging.info("contact sheet: %s", sheet)
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
    out = flags.DEFINE_string("out", None, "Output directory (MP4s, GIFs, frame strips, results).")
    step = flags.DEFINE_integer("step", None, "Checkpoint step to sample from (default: latest).")
    list_steps = flags.DEFINE_bool("list", False, "Print the workdir's checkpoint steps and exit.")
    flags.mark_flags_as_required(["workdir"])

    def run(_):
        from stiv_jax.checkpoint import available_steps
        from stiv_jax.parallel.mesh import initialize_distributed

        console.setup(flags.FLAGS.verbosity)
        try:
            if list_steps.value:
                print("\n".join(str(s) for s in available_steps(wd.value)))
                return
            missing = [f"--{n}" for n, f in (("config", cfg_flag), ("prompts", pr), ("out", out))
                       if f.value is None]  # fmt: skip
            if missing:
                raise ValueError(f"{' and '.join(missing)} required (or --list)")
            initialize_distributed()  # several processes split the prompts (see run_job)
            run_job(cfg_flag.value, wd.value, pr.value, out.value, step=step.value)
        except (ValueError, FileNotFoundError) as e:  # user errors: one line, no traceback
            raise SystemExit(f"error: {e}") from None

    console.help_for(__name__)
    app.run(run, argv)


if __name__ == "__main__":
    main()
