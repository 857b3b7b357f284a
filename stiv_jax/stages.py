"""Training stages as edits of a config, and `train.prelude` (stages run before the main run).

STIV trains progressively (T2I → T2V → TI2V), each stage starting from the weights of the
one before (`train.init_from`, stiv_jax.transfer). The S main job adds one stage in front:
the direction drill (docs/quality.md §9–10), which teaches the model to read the caption's
direction words before the full task mix. A stage is reached two ways, with the same rules
(`apply_stage`, the one place they live):

  configs/stiv.py:variant=S,stage=drill          a whole run of that stage
  --config.train.prelude='("drill:400",)'         "stage:steps" entries, run in order into
                                                  <workdir>/prelude/<i>-<stage> before the
                                                  main run, which then starts from the last
                                                  one's EMA weights; one command in all
"""

from __future__ import annotations

import logging
import os

import ml_collections

STAGES = ("t2i", "t2v", "ti2v", "drill")
DRILL_STEPS = 1500  # a whole `stage=drill` run (docs/quality.md §9)
DRILL_LAW = (-2.5, 0.5)  # drill noise law: logit-normal (mean, std), mostly noise


def apply_stage(c: ml_collections.ConfigDict, stage: str, *, frames: int = 1) -> None:
    """Edits config `c` in place for `stage` (t2i takes `frames` image frames)."""
    if stage not in STAGES:
        raise ValueError(f"stage={stage!r} is unknown; expected one of {STAGES}")
    d, t, f = c.data, c.train, c.diffusion
    if stage == "t2i":  # images: one frame, so one temporal token per patch
        d.frames, c.model.temporal_patch = int(frames), 1
        d.buckets.shapes = (f"{d.frames}x{d.res}x{d.res}",)
    if stage in ("t2i", "t2v"):  # text only: nothing given, no image condition to drop
        d.task_probs = ml_collections.ConfigDict({"t2v": 1.0})
    if stage == "drill":  # TI2V on drill clips, noise-heavy law: the caption is all there is
        d.shapes.drill, t.steps, t.ckpt_every = True, DRILL_STEPS, 250
        # data.shapes.drill_t2v: a share of text-only drill clips (no frame to start from:
        # the caption alone places and moves the objects); a prelude's drill takes it too.
        t2v = float(d.shapes.get("drill_t2v", 0.0))
        if not 0.0 <= t2v < 1.0:
            raise ValueError(f"data.shapes.drill_t2v={t2v} is not a share; expected 0 <= share < 1")
        d.task_probs = ml_collections.ConfigDict({"t2v": t2v, "ti2v": 1.0 - t2v})
        f.logit_mean, f.logit_std = DRILL_LAW


def parse_prelude(entries) -> list[tuple[str, int]]:
    """("stage:steps", ...) -> [(stage, steps)], with one-line errors naming the entry."""
    if isinstance(entries, str):
        entries = [e for e in entries.split(",") if e.strip()]
    out = []
    for entry in entries:
        stage, sep, steps = str(entry).strip().partition(":")
        if not sep or not steps.strip().isdigit() or int(steps) < 1:
            raise ValueError(
                f"train.prelude entry {entry!r}; expected 'stage:steps' with steps >= 1"
            )
        if stage not in STAGES or stage == "t2i":
            raise ValueError(
                f"train.prelude stage {stage!r} is not a prelude stage; expected one of "
                f"{STAGES[1:]} (t2i changes the frame count: run it as its own stage)"
            )
        out.append((stage, int(steps)))
    return out


def stage_config(config, stage: str, steps: int, init_from: str) -> ml_collections.ConfigDict:
    """The main run's config (every override kept) turned into `steps` of `stage`."""
    c = config.copy_and_resolve_references()
    apply_stage(c, stage)
    c.train.steps, c.train.ckpt_every = steps, min(int(c.train.ckpt_every), steps)
    c.train.prelude, c.train.init_from = (), init_from
    c.optim.decay_steps = 0  # the cool-down belongs to the end of the main run
    c.train.unmasked_steps = min(int(c.train.get("unmasked_steps", 0)), steps)
    c.sample.num_train_samples = 0  # the main run writes the samples
    return c


def run_prelude(config, workdir: str, train_loop) -> bool:
    """Runs `config.train.prelude`'s stages (each resumes where it stopped; a finished one is
    skipped) and points `config.train.init_from` at the last one's EMA weights. A main run
    that has already checkpointed resumes as is, so nothing runs then. Returns False when a
    stage stopped before its last step (SIGTERM or Ctrl-C: it saved), so the caller must not
    start the next run; rerunning the command resumes that stage. After a binding drill
    (two objects per clip) it checks the binding (stiv_jax.binding.check_drill) and raises
    ValueError when the swap effect is under `train.bind_min` (<= 0: no check)."""
    from stiv_jax import binding

    bind_min = float(config.train.get("bind_min", 0.0))
    entries = parse_prelude(config.train.get("prelude", ()))
    if not entries:
        return True
    if saved_steps(workdir):
        config.train.init_from = _stage_dir(workdir, len(entries) - 1, entries[-1][0]) + ":ema"
        return True
    source = config.train.get("init_from", "")
    for i, (stage, steps) in enumerate(entries):
        sub_dir = _stage_dir(workdir, i, stage)
        if steps in saved_steps(sub_dir):
            logging.info("prelude %d (%s) already at step %d in %s", i, stage, steps, sub_dir)
        else:
            logging.info("prelude %d: %d steps of %s → %s", i, steps, stage, sub_dir)
            train_loop(stage_config(config, stage, steps, source), sub_dir)
            if steps not in saved_steps(sub_dir):  # stopped early by a signal; it saved
                logging.warning(
                    "prelude %d (%s) stopped before step %d; run the same command to resume",
                    i, stage, steps,
                )  # fmt: skip
                return False
        if stage == "drill" and bind_min > 0 and binding.is_binding_drill(config):
            binding.check_drill(sub_dir, steps, bind_min)  # ValueError: not bound
        source = f"{sub_dir}:ema"
    config.train.init_from = source
    return True


def _stage_dir(workdir: str, i: int, stage: str) -> str:
    return os.path.join(workdir, "prelude", f"{i}-{stage}")


def saved_steps(workdir: str) -> list[int]:
    """The steps of `workdir`'s complete checkpoints, ascending; [] before its first save."""
    from stiv_jax import checkpoint as ckpt

    if not os.path.isdir(os.path.join(workdir, "checkpoints")):
        return []
    return ckpt.available_steps(workdir)
