"""Orbax checkpoints: `workdir/checkpoints/<step>/{state, data, config}`.

state   params, EMA params, optimizer state, step (arrays; restored onto the shardings
        of the abstract target, so a run resumes on another mesh; `restore_params` reads
        only the params or EMA subtree, for inference)
data    the Grain iterator state of this host (`process_<i>-of-<n>.json`)
config  the run's ConfigDict as JSON
log     the trainer's open metrics window (losses since the last logged step), so a
        resumed run logs the same `loss_avg` as one that never stopped

`restore_newest` resumes from the newest step that restores, moving damaged steps aside.

Saves are async (Orbax writes into a temporary directory and renames it on commit, so a
process killed mid-save leaves no half checkpoint that a restore would pick up).
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import grain
import ml_collections
import orbax.checkpoint as ocp


def require_filesystem_path(path: str, what: str) -> str:
    """`path` unchanged, or a one-line ValueError for a URL (gs://, s3://, ...).

    Metrics, videos and JSON files are written with plain file I/O, and Orbax needs one
    directory that every host sees: on a TPU pod mount the bucket on every worker
    (`gcsfuse --implicit-dirs BUCKET /gcs/BUCKET`, see docs/scale_out.md) and pass its path.
    """
    if "://" in str(path):
        scheme = str(path).split("://", 1)[0]
        raise ValueError(
            f"{what} {path!r} is a {scheme}:// URL; expected a filesystem path shared by all "
            f"hosts (mount the bucket, e.g. gcsfuse BUCKET /gcs/BUCKET, and pass /gcs/...)"
        )
    return path


ITEMS = ("state", "data", "config", "log")


def manager(
    workdir: str, *, max_to_keep: int, async_save: bool = True, create: bool = True
) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=create, enable_async_checkpointing=async_save
    )
    return ocp.CheckpointManager(
        os.path.join(os.path.abspath(workdir), "checkpoints"),
        options=options,
        item_names=ITEMS,
    )


def _reader(workdir: str) -> ocp.CheckpointManager:
    """A manager that only reads: a missing (e.g. mistyped) workdir is a one-line
    FileNotFoundError naming it, and no directory is created."""
    ckpts = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(workdir):
        raise FileNotFoundError(f"workdir {workdir!r} does not exist")
    if not os.path.isdir(ckpts):
        raise FileNotFoundError(f"no checkpoints in workdir {workdir!r} (no {ckpts!r})")
    return manager(workdir, max_to_keep=1_000_000, async_save=False, create=False)


def available_steps(workdir: str) -> list[int]:
    """The steps of `workdir`'s complete checkpoints, ascending."""
    return sorted(_reader(workdir).all_steps())


def _pick_step(mngr: ocp.CheckpointManager, workdir: str, step: int | None) -> int:
    steps = sorted(mngr.all_steps())
    if not steps:
        raise FileNotFoundError(f"no checkpoint under {os.path.join(workdir, 'checkpoints')!r}")
    if step is None:
        return steps[-1]
    if int(step) not in steps:
        raise ValueError(f"step {step} has no checkpoint in {workdir!r}; available: {steps}")
    return int(step)


def config_to_json(config: ml_collections.ConfigDict) -> dict:
    return json.loads(config.to_json_best_effort())


def save(
    mngr: ocp.CheckpointManager, step: int, state: Any, data_iter, config, *, log=None, force=False
):
    items = dict(
        state=ocp.args.StandardSave(state), config=ocp.args.JsonSave(config_to_json(config))
    )
    if data_iter is not None:
        items["data"] = grain.checkpoint.CheckpointSave(data_iter)
    if log is not None:
        items["log"] = ocp.args.JsonSave(log)
    return mngr.save(step, args=ocp.args.Composite(**items), force=force)


def restore(mngr: ocp.CheckpointManager, step: int, abstract_state: Any, data_iter=None):
    """Restores `state` (onto abstract_state's shapes/shardings) and the iterator in place."""
    items = dict(state=ocp.args.StandardRestore(abstract_state))
    if data_iter is not None:
        items["data"] = grain.checkpoint.CheckpointRestore(data_iter)
    return mngr.restore(step, args=ocp.args.Composite(**items))["state"]


def restore_log(mngr: ocp.CheckpointManager, step: int) -> dict | None:
    """The `log` item of a step (None for checkpoints written before it existed)."""
    if not os.path.isdir(os.path.join(str(mngr.directory), str(step), "log")):
        return None
    return mngr.restore(step, args=ocp.args.Composite(log=ocp.args.JsonRestore()))["log"]


def saved_config(mngr: ocp.CheckpointManager, step: int) -> ml_collections.ConfigDict:
    """The config item of one step (raises if it is missing or not a JSON object)."""
    cfg = mngr.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]
    if not isinstance(cfg, dict):
        raise ValueError(f"config item of step {step} is {type(cfg).__name__}, not an object")
    return ml_collections.ConfigDict(cfg)


class Refusal(ValueError):
    """A checkpoint that restores but must not be resumed (raised by `restore_step`)."""


def restore_newest(workdir: str, mngr: ocp.CheckpointManager, restore_step):
    """`(step, restore_step(step))` for the newest step whose restore succeeds.

    A step whose restore raises (truncated array file, missing `state/`, garbage metadata)
    is moved to `workdir/checkpoints_damaged/<step>` with one warning line, and the next
    older step is tried; a `Refusal` from `restore_step` is a refusal (e.g. another model),
    not damage, and propagates. Raises ValueError when steps exist but none restores: a
    run never silently starts from scratch over damaged checkpoints. Returns (None, None)
    for a workdir without checkpoints.
    """
    steps = sorted(mngr.all_steps(), reverse=True)
    damaged = []
    for step in steps:
        try:
            return step, restore_step(step)
        except Refusal:
            raise
        except Exception as e:  # any damage: the next older step may be intact
            text = str(e).strip().split(" See full TensorStore")[0]  # one short line
            reason = f"{type(e).__name__}: {text.splitlines()[0][:200] if text else ''}"
            dest = _move_aside(workdir, mngr, step)
            logging.warning(
                "checkpoint step %d is damaged (%s); moved to %s, trying an older step",
                step, reason, dest,
            )  # fmt: skip
            damaged.append(step)
    if damaged:
        raise ValueError(
            f"no restorable checkpoint in {mngr.directory} (damaged steps {damaged}, moved to "
            f"{os.path.join(workdir, 'checkpoints_damaged')}); refusing to start from scratch"
        )
    return None, None


def _move_aside(workdir: str, mngr: ocp.CheckpointManager, step: int) -> str:
    src = os.path.join(str(mngr.directory), str(step))
    root = os.path.join(os.path.abspath(workdir), "checkpoints_damaged")
    os.makedirs(root, exist_ok=True)
    dest, n = os.path.join(root, str(step)), 1
    while os.path.exists(dest):
        dest, n = os.path.join(root, f"{step}.{n}"), n + 1
    try:
        os.replace(src, dest)
    except FileNotFoundError:  # another process of this run moved it first
        pass
    mngr.reload()  # forget the moved step (latest_step, rotation)
    return dest


def restore_params(
    workdir: str, abstract_params: Any, *, step: int | None = None, ema: bool = True
) -> tuple[Any, int]:
    """(params, step): only `state/ema` (or `state/params`) of a checkpoint, for inference.

    A partial restore: the optimizer state, step and data iterators are not read, so no
    optimizer has to be built to shape a target. `abstract_params` (ShapeDtypeStructs with
    shardings) gives shapes, dtypes and placement; latest step when `step` is None.
    """
    mngr = _reader(workdir)
    step = _pick_step(mngr, workdir, step)
    key = "ema" if ema else "params"
    target = {key: abstract_params}
    args = ocp.args.PyTreeRestore(
        item=target,
        restore_args=ocp.checkpoint_utils.construct_restore_args(target),
        partial_restore=True,
    )
    state = mngr.restore(step, args=ocp.args.Composite(state=args))["state"]
    return state[key], int(step)


def restore_config(workdir: str, step: int | None = None) -> ml_collections.ConfigDict:
    """The config saved with a checkpoint (latest when step is None)."""
    mngr = _reader(workdir)
    step = _pick_step(mngr, workdir, step)
    cfg = mngr.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]
    return ml_collections.ConfigDict(cfg)
