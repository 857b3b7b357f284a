"""Best of N first frames for text-only requests (`sample.t2v_candidates`).

With `sample.t2v_image_first` a text-only request is sampled twice: the first pass's frame 0
is given to a second pass (Emu Video's factorisation). With `t2v_candidates = N > 1` the first
pass is sampled N times (candidate 0 from the request's own noise, as with N = 1) and the
candidate the model itself finds best explained by the caption is kept: the caption score of
a candidate video x is the model's implicit classifier (Li et al. 2023, "Your Diffusion Model
is Secretly a Zero-Shot Classifier"; Ho & Salimans' CFG reads the same ratio),

    score(x, c) = sum over t in LEVELS of  E|x̂1(x_t, ∅) − x|² − E|x̂1(x_t, c) − x|²   (frame 0)

with x_t = t·x + (1 − t)·ε, one fixed ε per request and noise level (from its seed: the
choice does not depend on the batch), ∅ the null text, the mean over latent frame 0, which
is what the second pass is given. docs/quality.md §33.

LEVELS are `sample.t2v_score_levels` (default 0.2, 0.4, 0.6).

`sample.ti2v_candidates = N > 1` does the same for requests that give frames (TI2V,
prediction, interpolation, keyframes): N samples, candidate 0 from the request's own noise,
and the one kept is the one whose frames *not* given the caption explains best — the null
branch keeps the given frames, so the caption alone is scored, over the frames it decides.
docs/quality.md §35.3.

Shapes: B requests, K = len(LEVELS) noise levels, latents [B, F, H, W, C].
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from stiv_jax.conditioning import drop_text, null_conditions
from stiv_jax.diffusion import to_velocity

CANDIDATE_STREAM = 1_000  # fold_in base of candidate m's first-pass noise (m >= 1)
SCORE_STREAM = 2_000  # fold_in base of the score's noise at level k


def score_levels(config) -> tuple[float, ...]:
    """`sample.t2v_score_levels` checked: noise levels 0 <= t < 1 (t: 0 noise -> 1 data)."""
    levels = config.sample.get("t2v_score_levels", (0.2, 0.4, 0.6))
    try:
        ok = len(levels) > 0 and all(0.0 <= float(t) < 1.0 for t in levels)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(
            f"sample.t2v_score_levels={levels!r}; expected noise levels 0 <= t < 1, e.g. (0.2, 0.4, 0.6)"
        )
    return tuple(float(t) for t in levels)


def _count(config, field: str) -> int:
    """`sample.<field>` checked: an int >= 1 (`sample.t2v_score_levels` checked too)."""
    score_levels(config)
    n = config.sample.get(field, 1)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"sample.{field}={n!r}; expected an integer >= 1 (1 = off)")
    return n


def t2v_candidates(config) -> int:
    """`sample.t2v_candidates` checked: an int >= 1; > 1 needs `sample.t2v_image_first`
    (`sample.t2v_score_levels` checked too)."""
    n = _count(config, "t2v_candidates")
    if n > 1 and not bool(config.sample.get("t2v_image_first", False)):
        raise ValueError(
            f"sample.t2v_candidates={n} picks among first passes; expected "
            "sample.t2v_image_first=True (or t2v_candidates=1)"
        )
    return n


def ti2v_candidates(config) -> int:
    """`sample.ti2v_candidates` checked: an int >= 1 (`sample.t2v_score_levels` checked too)."""
    return _count(config, "ti2v_candidates")


def _noise(seeds: list[int], stream: int, shape: tuple[int, ...]) -> jax.Array:
    """[B, *shape]: per request, the normal draw of fold_in(key(seed), stream)."""
    return jnp.stack(
        [jax.random.normal(jax.random.fold_in(jax.random.key(s), stream), shape) for s in seeds]
    )


def candidate_noise(seeds: list[int], m: int, shape: tuple[int, ...]) -> jax.Array:
    """First-pass noise [B, *shape] of candidate m >= 1 (candidate 0 is the request's own)."""
    return _noise(seeds, CANDIDATE_STREAM + m, shape)


def score_noise(seeds: list[int], shape: tuple[int, ...], levels: int) -> jax.Array:
    """The caption score's noise [B, K, *shape], one draw per request and each of K levels."""
    return jnp.stack([_noise(seeds, SCORE_STREAM + k, shape) for k in range(levels)], 1)


def make_score_fn(config, graphdef, *, mesh=None):
    """Jitted (params, x [B, F, H, W, C], cond, null_text, noise [B, K, ...]) -> score [B]
    (higher: the caption explains the scored frames better than the null text does). `mesh`
    as `pipeline.make_sample_fn`'s.

    With `sample.ti2v_candidates` = 1 every row is scored as a text-only first pass: latent
    frame 0, the null branch without text and frames (`cond` is the text-only requests').
    With it > 1, per row: a row that gives frames is scored on the frames it does not give,
    its null branch keeping them; a row that gives none on frame 0 as above."""
    prediction = config.model.get("prediction", "velocity")
    levels = score_levels(config)
    per_row = ti2v_candidates(config) > 1

    def score(params, x, cond, null_text, noise):
        model = nnx.merge(graphdef, params)
        b = x.shape[0]
        if per_row:  # the caption alone: given frames stay in the null branch
            null = drop_text(cond, jnp.ones((b,), bool), null_text)
        else:
            null = null_conditions(cond, null_text)
        both = jax.tree.map(lambda a, c: jnp.concatenate([a, c]), cond, null)
        x = x.astype(jnp.float32)
        total = jnp.zeros(x.shape[:1], jnp.float32)
        if per_row:  # [2B, F] weights: the frames not given, or frame 0 where none is
            given = cond["cond_mask"]
            first = jnp.arange(x.shape[1])[None] == 0
            w = jnp.where(given.any(1, keepdims=True), ~given, first).astype(jnp.float32)
            w = jnp.concatenate([w / jnp.maximum(w.sum(1, keepdims=True), 1.0)] * 2)
            target = jnp.concatenate([x] * 2)  # what each branch's x̂1 is scored against
        else:
            frame0 = jnp.concatenate([x[:, :1]] * 2)  # the same, frame 0 only
        for k, t in enumerate(levels):
            xt = jnp.concatenate([t * x + (1.0 - t) * noise[:, k]] * 2)
            tt = jnp.full((2 * b,), t, jnp.float32)
            x1 = xt + (1.0 - t) * to_velocity(model(xt, tt, both), xt, tt, prediction)
            if per_row:
                err = jnp.sum(jnp.mean((x1 - target) ** 2, axis=(2, 3, 4)) * w, axis=1)
            else:
                err = jnp.mean((x1[:, :1] - frame0) ** 2, axis=(1, 2, 3, 4))
            total = total + err[b:] - err[:b]  # null's error minus the caption's
        return total

    if mesh is None:
        return jax.jit(score)
    from stiv_jax.parallel.rules import in_mesh

    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    return in_mesh(jax.jit(score, out_shardings=replicated), mesh)
