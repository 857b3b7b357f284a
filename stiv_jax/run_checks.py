"""Checks a training run makes before it does any work: config values and the resumed model.

Shapes: F latent frames, h/w latent size (only to check patch divisibility).

`validate_train_config` runs before any directory is created, so a bad value costs one
line and leaves nothing behind. `model_diff` compares a checkpoint's saved model config
with the requested one: a run must not silently resume different weights' semantics
(e.g. `causal_temporal`, `rope_theta`), which keep every shape and would restore cleanly.
"""

from __future__ import annotations

import json
import os

from stiv_jax.candidates import t2v_candidates, ti2v_candidates
from stiv_jax.diffusion import check_interval
from stiv_jax.runtime import latent_shape

NONFINITE_POLICIES = ("abort", "skip")
# How the model is computed, not what it computes: free to change on resume.
RUNTIME_MODEL_KEYS = ("attention_impl", "remat")


def _positive_int(name: str, value, *, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}={value!r}; expected an integer >= {minimum}")


def validate_train_config(config, workdir: str) -> None:
    """One-line ValueError for the first value that cannot train (nothing is created)."""
    t, d, m = config.train, config.data, config.model
    for name, value in (
        ("train.steps", t.steps),
        ("data.batch_size", d.batch_size),
        ("train.log_every", t.log_every),
        ("train.ckpt_every", t.ckpt_every),
        ("train.max_to_keep", t.max_to_keep),
    ):
        _positive_int(name, value)
    _positive_int("train.sample_every", t.sample_every, minimum=0)
    _positive_int("train.unmasked_steps", t.unmasked_steps, minimum=0)
    if t.nonfinite not in NONFINITE_POLICIES:
        raise ValueError(f"train.nonfinite={t.nonfinite!r}; expected one of {NONFINITE_POLICIES}")
    for key in ("motion_weight", "input_perturb"):
        v = config.diffusion.get(key, 0.0)
        if not (isinstance(v, (int, float)) and v >= 0):
            raise ValueError(f"diffusion.{key}={v!r}; expected a number >= 0 (0 = off)")
    states_drop = config.diffusion.get("states_drop", 0.0)
    if not (isinstance(states_drop, (int, float)) and 0 <= states_drop <= 1) or (
        states_drop > 0 and not int(m.get("word_pieces", 0))
    ):
        raise ValueError(
            f"diffusion.states_drop={states_drop!r} with model.word_pieces="
            f"{m.get('word_pieces', 0)}; expected a value in [0, 1], above 0 only with word pieces"
        )
    t2v = float(d.shapes.get("drill_t2v", 0.0))  # set by stages.apply_stage in a prelude
    if d.shapes.get("drill", False) and t2v > 0 and float(d.task_probs.get("t2v", 0.0)) != t2v:
        raise ValueError(
            f"data.shapes.drill_t2v={t2v} reaches a prelude's drill only; a whole stage=drill "
            "run takes its share from data.task_probs.t2v (and .ti2v)"
        )
    # The run samples at its end (and every train.sample_every): a bad sampler value fails now.
    check_interval(config.sample.get("cfg_interval", (0.0, 1.0)), "sample.cfg_interval")
    t2v_candidates(config)
    ti2v_candidates(config)
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise ValueError(f"workdir {workdir!r} is a file; expected a directory (new or a run's)")
    _positive_int("data.res", d.res)
    _positive_int("data.frames", d.frames)
    f, h, w, _ = latent_shape(config)
    if h % m.patch_size or w % m.patch_size:
        raise ValueError(
            f"data.res={d.res} gives a {h}x{w} latent, not divisible by "
            f"model.patch_size={m.patch_size}"
        )
    if f % m.temporal_patch:
        raise ValueError(
            f"data.frames={d.frames} gives {f} latent frames, not divisible by "
            f"model.temporal_patch={m.temporal_patch}"
        )
    if d.source == "shapes":  # the source checks its own shares; building it renders nothing
        from stiv_jax.data.shapes import ShapesSource, config_kwargs

        s = d.shapes
        try:
            ShapesSource(
                1,
                drill_share=float(s.get("drill_share", 0.0)),
                bg_drop=float(s.get("bg_drop", 0.0)),
                bg_drop_tasks=str(s.get("bg_drop_tasks", "all")),
                speed_binding=float(s.get("speed_binding", 0.0)),
                **config_kwargs(config),
            )
        except ValueError as e:
            raise ValueError(f"data.shapes: {e}") from None


def _plain(model_cfg) -> dict:
    """A model ConfigDict (or the JSON dict saved with a checkpoint) as plain JSON values."""
    if hasattr(model_cfg, "to_json_best_effort"):
        return json.loads(model_cfg.to_json_best_effort())
    return json.loads(json.dumps(model_cfg))


def model_diff(saved_model, requested_model) -> list[str]:
    """`model.<key>: checkpoint A, requested B` for every architecture key that differs."""
    from stiv_jax.model.stiv import LEGACY_DEFAULTS

    a, b = _plain(saved_model), _plain(requested_model)
    a = {**LEGACY_DEFAULTS, **a}  # a key the checkpoint predates: the model it then had
    missing = "(absent)"
    return [
        f"model.{k}: checkpoint {a.get(k, missing)!r}, requested {b.get(k, missing)!r}"
        for k in sorted(set(a) | set(b))
        if k not in RUNTIME_MODEL_KEYS and a.get(k, missing) != b.get(k, missing)
    ]
