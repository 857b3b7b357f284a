"""Batch sampling job: prompts JSONL -> OUT/<id>.{mp4,gif,png} + OUT/results.jsonl (resumable).

  python -m stiv_jax.sample --config configs/stiv.py:variant=S --workdir runs/stiv_s \
      --prompts docs/examples/prompts.jsonl --out runs/stiv_s/prompted [--step N]
  python -m stiv_jax.sample --workdir runs/stiv_s --list     # the checkpoint steps to pick from

Each prompts line is a JSON object: `id` (letters, digits, -_.), `prompt` (non-empty),
optional `image` (path of the condition image; resized + center-cropped to the generation
size; under `sample.images_root` when that is set), `cond_frames` (latent frame indices
the image is given at; default [0] with an image, [] without), `motion_score`, `seed`,
`cfg_scale` (checked by `NUMBER_FIELDS`: finite, in range, integers where meant), and the
application fields of `stiv_jax.pipeline.request_fields`: `conditions` (images / clips at
pixel frames), `negative_prompt`, `video` + `strength` (V2V), `frames`, `height`, `width`,
`long_mode`. Media paths are relative to the prompts file (or under `sample.images_root`).
A bad line, or a prompt that fails while generating, is reported with its line number and
skipped; the rest still run, and the exit code is 1 if any failed. Ids already in
OUT/results*.jsonl with their MP4 present are skipped, so a killed job resumes where it
stopped; jobs sharing one OUT claim ids with file locks. Several processes (every
worker of a TPU pod, `jax.distributed`) split the prompts between them (`run_job`), or,
with `sample.shard_params` (a model sharded over all chips), run every batch together.

Outputs per id: `<id>.mp4`, `<id>.gif` (animated) and `<id>.png` (frame strip), both
nearest-upscaled so a 32×32 video is visible (stiv_jax.previews); per job:
`contact_sheet.png` (the frame strips of the first 64 ids, labelled). The paths in
results.jsonl (`path`, `gif`, `strip`) are relative to OUT.

Built on `stiv_jax.pipeline.STIVPipeline` (restore, sampler, decode); this file is the
prompts file and the job around it. Shapes: B batch, F latent frames, T pixel frames.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import os
import re

import jax
import numpy as np

from stiv_jax import console, host_memory, previews
from stiv_jax.pipeline import Request, STIVPipeline, default_seed, prepare_request, request_fields
from stiv_jax.runtime import latent_shape
from stiv_jax.video import load_image, write_mp4

# Ids name files in OUT: the whole id must match (no trailing newline), and no leading dot
# (no ".", "..", hidden files).
_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}")
# Numeric fields: (type, low, high). Integers must be JSON integers (no 1.7 -> 1, true -> 1);
# numbers must be finite (no NaN/Infinity, which guidance turns into black videos).
NUMBER_FIELDS = {
    "seed": (int, 0, 2**63 - 1),
    "motion_score": (float, 0.0, 1000.0),
    "cfg_scale": (float, 0.0, 100.0),
}


def _show(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:20]}...({len(text)} characters)"


def number_field(obj: dict, key: str, default):
    """obj[key] checked against NUMBER_FIELDS (default when absent); one-line ValueError."""
    if key not in obj:
        return default
    kind, low, high = NUMBER_FIELDS[key]
    value = obj[key]
    ok = not isinstance(value, bool) and isinstance(value, int if kind is int else (int, float))
    ok = ok and (isinstance(value, int) or math.isfinite(value)) and low <= value <= high
    if not ok:
        what = "an integer" if kind is int else "a finite number"
        raise ValueError(f"{key} {_show(value)} must be {what} in [{low}, {high}]")
    return kind(value)


def _image_path(image, prompts_path: str, images_root: str) -> str:
    """The condition image's path; with `images_root`, it must resolve (symlinks too) inside
    that directory, checked before the file is touched, so that errors do not tell whether a
    file outside it exists."""
    if not isinstance(image, str) or not image.strip():
        raise ValueError(f"image {_show(image)} must be a non-empty path string")
    if images_root:
        root = os.path.realpath(images_root)
        path = os.path.realpath(os.path.join(root, image))
        if os.path.commonpath([root, path]) != root:
            raise ValueError(f"image {_show(image)} is outside sample.images_root")
        return path
    base = os.path.dirname(os.path.abspath(prompts_path))
    return image if os.path.isabs(image) else os.path.join(base, image)


def _line_error(e: Exception) -> str:
    if isinstance(e, RecursionError):
        return "JSON nested too deeply"
    if isinstance(e, ValueError | TypeError | FileNotFoundError):
        return str(e)
    return f"{type(e).__name__}: {e}"


# ============================================================================ prompts file


def parse_prompts(path: str, config) -> tuple[list[Request], list[str]]:
    """-> (requests, errors); each error names the line number and the bad value."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"prompts file {path!r} does not exist")
    reqs, errors, seen = [], [], set()
    f = None
    images_root = config.sample.get("images_root", "")
    with open(path, encoding="utf-8", errors="replace") as fh:
        lines = fh.read().splitlines()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            if not isinstance(obj, dict):
                raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
            rid = obj.get("id", "")
            if not isinstance(rid, str) or not _ID.fullmatch(rid):
                raise ValueError(
                    f"id {_show(rid)} must be 1-128 characters of letters, digits, -_. "
                    "(not starting with '.')"
                )
            if rid in seen:
                raise ValueError(f"id {rid!r} appears twice")
            prompt = obj.get("prompt")
            if not isinstance(prompt, str) or not prompt.strip():
                raise ValueError(f"prompt {_show(prompt)} must be a non-empty string")
            image = obj.get("image")  # None = no image; anything else must be a path
            frames = obj.get("cond_frames", [0] if image is not None else [])
            f = f or latent_shape(config)[0]
            if not isinstance(frames, list) or not all(
                isinstance(k, int) and not isinstance(k, bool) and 0 <= k < f for k in frames
            ):
                raise ValueError(f"cond_frames {_show(frames)} must be a list of ints in [0, {f})")
            if frames and image is None:
                raise ValueError(f"cond_frames {frames!r} given without an image")
            req = Request(
                id=rid,
                prompt=prompt,
                image=image,
                cond_frames=frames,
                motion_score=number_field(obj, "motion_score", config.sample.motion_score),
                seed=number_field(obj, "seed", default_seed(rid)),
                cfg_scale=number_field(obj, "cfg_scale", None),  # None: guidance_scale
                source=f"{path}:{n}",
                **request_fields(obj),
            ).with_defaults(config)  # the guidance scale follows whether frames are given
            if image is not None:
                res = config.data.res
                req.first_frame = load_image(_image_path(image, path, images_root), (res, res))
            # every media path is resolved (and confined to images_root) the same way
            for c in req.conditions:
                c.media = _image_path(c.media, path, images_root)
            if isinstance(req.video, str):
                req.video = _image_path(req.video, path, images_root)
            prepare_request(config, req)
        except Exception as e:  # any bad line is reported and skipped; the rest still run
            errors.append(f"{path}:{n}: {_line_error(e)}; skipped")
            continue
        seen.add(rid)
        reqs.append(req)
    return reqs, errors


def results_path(out: str, index: int = 0, count: int = 1) -> str:
    """OUT/results.jsonl, or one file per process (results.00001-of-00004.jsonl) when several
    processes share OUT, so that no two processes append to the same file."""
    name = "results.jsonl" if count == 1 else f"results.{index:05d}-of-{count:05d}.jsonl"
    return os.path.join(out, name)


class _Done:
    """Ids with a line in any OUT/results*.jsonl (any process, any job, any run), read
    incrementally: `refresh` reads only what was appended since the last call."""

    def __init__(self, out: str):
        self.out, self.offsets, self.ids = out, {}, set()

    def refresh(self) -> None:
        for name in sorted(os.listdir(self.out)):
            if not (name.startswith("results") and name.endswith(".jsonl")):
                continue
            with open(os.path.join(self.out, name), "rb") as fh:
                fh.seek(self.offsets.get(name, 0))
                data = fh.read()
            end = data.rfind(b"\n") + 1  # a line still being written is read next time
            self.offsets[name] = self.offsets.get(name, 0) + end
            for line in data[:end].splitlines():
                try:
                    self.ids.add(str(json.loads(line)["id"]))
                except (ValueError, KeyError, TypeError):
                    continue

    def __contains__(self, rid: str) -> bool:
        return rid in self.ids and os.path.exists(os.path.join(self.out, f"{rid}.mp4"))


class _Locks:
    """Advisory locks (flock) so several jobs can share one OUT: a per-id claim held while
    the id is generated (released by the OS if the job dies: no stale claims) and a lock
    around the done-check + results append (no duplicate lines). Filesystems without flock
    (some FUSE mounts) fall back to no locking with one warning."""

    def __init__(self, out: str):
        self.dir = os.path.join(out, ".locks")
        os.makedirs(self.dir, exist_ok=True)
        self.works = True

    def _lock(self, name: str, *, wait: bool):
        fd = os.open(os.path.join(self.dir, name), os.O_CREAT | os.O_RDWR, 0o644)
        if not self.works:
            return fd
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return None
        except OSError as e:
            logging.warning(
                "no file locks in %s (%s); jobs sharing it may repeat work", self.dir, e
            )
            self.works = False
        return fd

    def claim(self, rid: str) -> int | None:
        """An open fd holding the claim on `rid`, or None if another live job holds it."""
        return self._lock(f"{rid}.claim", wait=False)

    @contextlib.contextmanager
    def results(self):
        fd = self._lock("results", wait=True)
        try:
            yield
        finally:
            os.close(fd)


def _generate_each(pipe, batch: list[Request], size: int):
    """[(request, video or the exception)]: the batch at once (padded to `size` with copies of
    its last request, so one sampler shape serves every batch), or one by one if it fails, so
    one bad request costs only itself."""
    try:
        padded = batch + [batch[-1]] * (size - len(batch))
        return list(zip(batch, pipe.generate(padded)[: len(batch)]))
    except Exception as e:
        if len(batch) == 1:
            return [(batch[0], e)]
    out = []
    for r in batch:
        try:
            out.append((r, pipe.generate([r])[0]))
        except Exception as e:  # reported with the request's line, the rest go on
            out.append((r, e))
    return out


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


def _from_process0(values: list[int], size: int) -> list[int]:
    """Process 0's list of at most `size` non-negative ints, on every process."""
    from jax.experimental import multihost_utils

    arr = np.full(size, -1, np.int64)
    arr[: len(values)] = values
    arr = np.asarray(multihost_utils.broadcast_one_to_all(arr))
    return [int(v) for v in arr if v >= 0]


def run_job(config, workdir: str, prompts: str, out: str, *, step: int | None = None) -> dict:
    """The sampling job from `workdir`'s checkpoint `step` (latest when None); returns this
    process's counts
    {generated, skipped_done, bad_lines, failed, claimed_elsewhere}.

    Every per-prompt failure (a bad line at parse time, an error while generating or
    writing) is logged with its line and skipped; the rest run. With several processes
    (`jax.distributed`, e.g. every worker of a TPU pod), process i of n samples the
    not-yet-done prompts i, i + n, ... into the shared OUT and logs them in its own results
    file; a rerun on any number of processes skips what any of them finished. Independent
    jobs sharing OUT claim ids (see `_Locks`), so no id is written twice to the results.
    Every batch has the same size (the last one is padded with copies of its last request,
    whose videos are dropped), so the sampler compiles once. With `sample.shard_params` on
    several processes the params span them, so every process runs every batch instead:
    process 0 picks and claims the ids and alone writes the videos and `results.jsonl`.
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
    done, locks = _Done(out), _Locks(out)
    done.refresh()
    todo = [r for r in reqs if r.id not in done]
    skipped = len(reqs) - len(todo)
    # Sharded params (sample.shard_params) span the processes: every one runs every batch
    # (in lockstep: process 0 decides what is done and claimed, and alone writes outputs).
    lockstep = pipe.mesh is not None and count > 1
    writer = index == 0 or not lockstep
    pos = {r.id: k for k, r in enumerate(reqs)}
    if lockstep:
        todo = [reqs[k] for k in _from_process0([pos[r.id] for r in todo], len(reqs))]
    else:
        todo = todo[index::count]
    counts = {"generated": 0, "skipped_done": skipped, "bad_lines": len(errors), "failed": 0}
    counts["claimed_elsewhere"] = 0
    bs = min(config.sample.batch_size, max(len(todo), 1))
    fps = config.sample.fps
    if todo:
        logging.info("sampling %d videos (step %d) → %s", len(todo), pipe.step, out)
    for i in console.progress(range(0, len(todo), bs), desc="sample", unit="batch"):
        claims, batch = {}, []
        with locks.results() if writer else contextlib.nullcontext():
            done.refresh()
            for r in todo[i : i + bs] if writer else []:
                if r.id in done:  # finished by another job since this one started
                    counts["skipped_done"] += 1
                elif (fd := locks.claim(r.id)) is None:
                    counts["claimed_elsewhere"] += 1
                else:
                    claims[r.id] = fd
                    batch.append(r)
        if lockstep:
            batch = [reqs[k] for k in _from_process0([pos[r.id] for r in batch], bs)]
        try:
            for r, v in _generate_each(pipe, batch, bs) if batch else []:
                if not writer:
                    continue
                try:
                    if isinstance(v, Exception):
                        raise v
                    mp4 = write_mp4(os.path.join(out, f"{r.id}.mp4"), v, fps)
                    pv = previews.write_previews(mp4, v, fps)
                except Exception as e:
                    logging.error("%s: id %r failed: %s; skipped", r.source, r.id, _line_error(e))
                    counts["failed"] += 1
                    continue
                rec = {"id": r.id, "prompt": r.prompt, "path": os.path.basename(mp4),
                       "gif": os.path.basename(pv["gif"]), "strip": os.path.basename(pv["strip"]),
                       "image": r.image, "cond_frames": r.cond_frames,
                       "motion_score": r.motion_score, "seed": r.seed, "cfg_scale": r.cfg_scale,
                       "step": pipe.step}  # fmt: skip
                with locks.results():
                    name = results_path(out) if lockstep else results_path(out, index, count)
                    with open(name, "a") as fh:
                        fh.write(json.dumps(rec) + "\n")
                counts["generated"] += 1
        finally:
            for fd in claims.values():
                os.close(fd)
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
            logging.debug("host malloc: %s", host_memory.configure())  # before JAX starts
            if list_steps.value:
                print("\n".join(str(s) for s in available_steps(wd.value)))
                return
            missing = [f"--{n}" for n, f in (("config", cfg_flag), ("prompts", pr), ("out", out))
                       if f.value is None]  # fmt: skip
            if missing:
                raise ValueError(f"{' and '.join(missing)} required (or --list)")
            initialize_distributed()  # several processes split the prompts (see run_job)
            counts = run_job(cfg_flag.value, wd.value, pr.value, out.value, step=step.value)
        except (ValueError, FileNotFoundError) as e:  # user errors: one line, no traceback
            raise SystemExit(f"error: {e}") from None
        if counts["bad_lines"] or counts["failed"]:  # the exit code says whether any failed
            raise SystemExit(
                f"error: {counts['bad_lines']} bad prompt lines and {counts['failed']} failed "
                "prompts (reported above with their line numbers); the others were generated"
            )

    console.help_for(__name__)
    app.run(run, argv)


if __name__ == "__main__":
    main()
