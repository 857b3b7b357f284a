"""Quality probes behind docs/quality.md (issue 11). Prints figures; not timed tests.

python benchmarks/quality_probes.py spot
    captions vs truth and motion score vs speed over 150 held-out ShapesBench clips
python benchmarks/quality_probes.py memorise --workdir W [--steps 200] [--set a.b=v ...]
    train S on 4 fixed clips (TI2V only), sample them (EMA off/on, CFG 1 and 4), print the
    per-object mean centroid error (px) and the PSNR of frames 1..T-1
python benchmarks/quality_probes.py denoise --workdir W
    per-noise-level one-step x1 PSNR of W's checkpoint on its 4 training clips
python benchmarks/quality_probes.py heldout --workdir W [--step N] [--raw]
    the same on 16 held-out clips, beside the static floor, with the captions rolled by one,
    and with the clean input labelled t (also per case kind: pan, plain, textured)
python benchmarks/quality_probes.py direction --workdir W [--num 24] [--step N]
    does the model read the direction words? TI2V on held-out single-object clips moving at
    medium/fast speed (plain background, no pan), caption as is vs with the opposite
    direction: mean cosine between the measured object displacement and the TRUE direction
    for the one-step x1-hat at t = 0 / 0.2 / 0.4 and for full samples (default sampler);
    and at t = 0 with the tokens of one caption and the pooled vector (+ word bag) of the
    other: which path carries the direction, cross-attention or AdaLN
python benchmarks/quality_probes.py binding --workdir W [--num 24] [--step N] [--t2v] [--swappable]
    does each object take ITS direction? TI2V (T2V with --t2v: no first frame, so its start
    positions cannot hint) on held-out binding-drill clips (two fast
    objects, different directions, plain, `generate_clip(drill=True, drill_objects=2)`),
    caption as is vs with the two objects' directions swapped: per object, mean cosine of its
    sampled displacement with its own and with the other object's direction; `--swappable`:
    the clips' starts fit either assignment (`drill_swappable`), so the swapped caption
    describes an equally possible clip
python benchmarks/quality_probes.py axes --workdir W [--num 24] [--step N] [--swappable]
    where directions miss, on the drill's own clips: TI2V with the true caption on held-out
    binding-drill clips (as `binding`), each object's measured class and displacement
    (the evaluator's `metrics.score_clip`) split by axis as `eval_objects.py`'s `by axis`
    line: run on a drill's checkpoint and on the main run's to see whether a bias is there
    after the drill or comes with the mix (docs/quality.md §27)
python benchmarks/quality_probes.py crossattn --workdir W [--num 8]
    where does each object look among the words? TI2V on held-out binding-drill clips at
    t = 0.3: the cross-attention weight (heads and blocks averaged) from the object's
    first-frame video token to its own colour word, the other object's, the direction
    words only its own direction has and those only the other's has, per token, beside the
    uniform weight 1 / (real tokens); then whether the caption tokens the keys come from are
    distinct (mean pairwise cosine, share of their energy in the mean token)
python benchmarks/quality_probes.py background --workdir W [--num 3]
    where a still background's colour comes from: held-out cases 0..num-1, mean colour of a
    6x6 background corner over frames 1.., for the one-step x1-hat at t = 0 / 0.5 / 0.9 with
    the true caption, the empty one and "against a plain red background", then for samples
    (default sampler) at guidance 1 and 2 (docs/quality.md §13.3)
python benchmarks/quality_probes.py trajectory --workdir W [--num 16] [--scales 1,1.5]
    where the sampled video loses its still pixels: held-out TI2V cases 0..num-1 sampled with
    the default sampler (guidance at each scale), and at every ODE step the PSNR of the
    guided x1-hat (x + (1 - t)·v) on frames 1.. over all, still (within 8 levels of frame 0
    in the clip) and changing pixels (`heldout` gives the one-step figure on a true x_t):
    does the sampler's path lose what a one-step denoise keeps?
python benchmarks/quality_probes.py pan --workdir W [--num 16]
    does the model read the camera words? The one-step x1-hat at t = 0 and 0.2 on held-out
    textured clips: for clips without a pan, the PSNR on still pixels with the true
    caption, with ", the camera pans left quickly" appended and with the empty caption (a
    model that reads the words copies the background under its own caption and not under
    the pan one); for clips with a pan, the PSNR on all pixels with the true and the empty
    caption beside the static floor (docs/quality.md §18)
python benchmarks/quality_probes.py paths --workdir W
    where the caption acts: change one word (direction, colour, background, shape) in the
    token states only (cross-attention) or in the pooled vector only (AdaLN) and print the
    RMS change of the model output at t = 0 and 0.3 on one held-out clip
python benchmarks/quality_probes.py interpolate --workdir W --source S --alpha A --out DIR
        [--groups REGEX] [--tasks ti2v,t2v]
    which weights carry what the run before W had (WiSE-FT, Wortsman et al. 2022): evaluate
    (`stiv_jax.evaluate`, 16 cases) the EMA weights (1 - A)·W + A·S on the parameters whose
    path (`optim.param_path`, "blocks/0/cross/q/kernel") matches REGEX, W's elsewhere; S is
    a run W started from (its `init_from`, e.g. W/prelude/0-drill) (docs/quality.md §31)
python benchmarks/quality_probes.py switch --workdir W --source S --until T --out DIR [--tasks ti2v]
    the weights of the run before W (S, e.g. W/prelude/0-drill) at the noise end only:
    evaluate (`stiv_jax.evaluate`, 16 cases) with S's EMA weights for the sampler's steps
    at t < T (t: 0 noise -> 1 data) and W's after, as Wan 2.2's high-noise expert
    (docs/quality.md §37.2); the default sampler otherwise (joint guidance, no step cache)
python benchmarks/quality_probes.py distance --workdir W --source S [--groups NAME=REGEX,...]
    how far W's EMA weights are from S's, per parameter group: RMS of S's weights, RMS of
    W - S and their ratio over the parameters whose path matches each group's REGEX (the
    first match wins; the rest are "other"); default groups: text path, spatial and
    temporal attention, MLPs (docs/quality.md §32.1)
python benchmarks/quality_probes.py speed --workdir W [--num 12] [--step N]
    where fast objects lose their travel: held-out single-object clips (plain, no pan, one of
    the 8 directions), --num per speed; per speed, how far the object's mass centroid moves
    along the truth's own centroid track (sum model.truth / sum truth^2, last frame and per
    frame; and the shift's length over the truth's, its mean cosine with the true direction)
    in the one-step x1-hat at t = 0 / 0.2 / 0.4 / 0.6 / 0.8 (frame 0 given, the true
    caption and motion score; t = 0 is the model's mean guess from the first frame and the
    words alone) and in full samples (default sampler): does the regression already move fast
    objects short, or does sampling lose what the mean has? Then the t = 0 guess's shift (px)
    with the speed words, the motion score, or both, set to each speed's (docs/quality.md §33)
python benchmarks/quality_probes.py caption_score --workdir W [--num 16]
    does `sample.t2v_candidates`' caption score (stiv_jax/candidates.py, the run's
    `sample.t2v_score_levels`) read the caption? Held-out cases 0..num-1: every case's true
    video scored with every case's caption; how often a caption rates its own video first
    and the mean number of other videos it rates above its own (docs/quality.md §33.3)
python benchmarks/quality_probes.py phrasing --workdir W --out DIR [--templates 0,1] [--tasks ti2v,t2v]
    how much of the gap is the evaluator's unseen phrasing? `stiv_jax.evaluate` (16 cases)
    with the held-out scenes captioned in training templates (`captions.TRAIN_TEMPLATES` at
    the given indices, as many as the held-out split has, so its scenes are unchanged);
    compare with W's own evaluation (docs/quality.md §38.1)
"""

from __future__ import annotations

import argparse
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from stiv_jax.binding import object_cosine, opposite_direction, swap_directions  # noqa: E402


def spot() -> None:
    from scipy.stats import spearmanr

    from stiv_jax import metrics
    from stiv_jax.data.captions import DIRECTION_WORDS
    from stiv_jax.data.shapes import generate_clip

    ok = tot = named = 0
    speeds, scores = [], []
    for i in range(150):
        c = generate_clip(i, split="heldout", seed=1_000_003)
        s = metrics.score_clip(c["video"], c["truth"])
        for o, m in zip(c["truth"]["objects"], s["objects"]):
            if o["motion"] in DIRECTION_WORDS:
                tot += 1
                ok += m["direction"] == o["motion"]
                named += DIRECTION_WORDS[o["motion"]] in c["caption"] and o["color"] in c["caption"]
        objs = [np.hypot(*o["velocity"]) for o in c["truth"]["objects"]]
        speeds.append(max(objs + [c["truth"]["camera"]["rate"]]))
        scores.append(c["motion_score"])
    print(f"measured direction == truth: {ok}/{tot}; caption names it: {named}/{tot}")
    print(f"Spearman(speed, motion score) = {spearmanr(speeds, scores).statistic:.3f}")


def memorise_config(steps: int, overrides: list[str]):
    from configs.stiv import get_config

    c = get_config("variant=S,stage=ti2v")  # the mix alone: no drill prelude, no shares
    c.data.shapes.num_train = 4
    c.data.task_probs = {"t2v": 0.0, "ti2v": 1.0, "predict": 0.0, "interp": 0.0}
    c.train.steps, c.train.unmasked_steps, c.sample.num_train_samples = steps, 0, 0
    for kv in overrides:
        key, value = kv.split("=", 1)
        *path, last = key.split(".")
        node = c
        for p in path:
            node = node[p]
        node[last] = type(node[last])(value)
    return c


def clips(config):
    from stiv_jax.data.shapes import config_kwargs, generate_clip

    kw = config_kwargs(config)
    return [generate_clip(i, seed=config.data.seed, **kw) for i in range(4)]


def memorise(workdir: str, steps: int, overrides: list[str]) -> None:
    from stiv_jax import metrics
    from stiv_jax.pipeline import STIVPipeline
    from stiv_jax.train import train_loop

    config = memorise_config(steps, overrides)
    train_loop(config, workdir)
    cs = clips(config)
    for use_ema in (False, True):
        pipe = STIVPipeline.from_workdir(workdir, use_ema=use_ema)
        for cfg in (1.0, 4.0):
            errs, psnrs = [], []
            for i, c in enumerate(cs):
                v = pipe(c["caption"], image=c["video"][0], seed=100 + i,
                         motion_score=c["motion_score"], cfg_scale=cfg)  # fmt: skip
                psnrs.append(metrics.psnr(v[1:], c["video"][1:]))
                for o in c["truth"]["objects"]:
                    a, b = (
                        metrics.track_color(v, o["rgb"]),
                        metrics.track_color(c["video"], o["rgb"]),
                    )
                    errs.append(float(np.nanmean(np.hypot(a["x"] - b["x"], a["y"] - b["y"]))))
            print(f"ema={use_ema} cfg={cfg}: per-object mean error px {np.round(errs, 2)}, "
                  f"PSNR frames 1.. {np.mean(psnrs):.2f} dB")  # fmt: skip


def denoise(workdir: str, heldout: bool = False, step: int | None = None, ema: bool = True) -> None:
    """One-step x̂1 = x_t + (1 − t)·v̂ per noise level t on frames 1.. (frame 0 given, TI2V).

    heldout: 16 held-out ShapesBench clips (else the run's first 4 training clips), with the
    static floor (frame 0 repeated), the same with the captions rolled by one (does the
    text matter?) and the clean input labelled t (can the model reproduce its input?).
    """
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from stiv_jax.checkpoint import restore_config
    from stiv_jax.conditioning import make_conditions
    from stiv_jax.data.schema import normalize_uint8
    from stiv_jax.data.shapes import config_kwargs, generate_clip
    from stiv_jax.diffusion import to_velocity
    from stiv_jax.pipeline import restore_for_sampling

    config = restore_config(workdir, step)
    config.sample.use_ema = ema
    comps, graphdef, params, step = restore_for_sampling(config, workdir, step)
    model = nnx.merge(graphdef, params)
    if heldout:
        seed = config.data.shapes.heldout_seed
        cs = [
            generate_clip(i, split="heldout", seed=seed, **config_kwargs(config)) for i in range(16)
        ]
    else:
        cs = clips(config)
    x1 = comps.autoencoder.encode(jnp.asarray(normalize_uint8(np.stack([c["video"] for c in cs]))))
    emb = comps.text_encoder.encode([c["caption"] for c in cs])
    b, f = x1.shape[:2]
    mask = np.zeros((b, f), bool)
    mask[:, 0] = True
    res = config.data.res
    prediction = config.model.get("prediction", "velocity")

    def conditions(roll: int):
        tok, msk, pooled = (
            np.roll(np.asarray(a), roll, 0) for a in (emb.tokens, emb.mask, emb.pooled)
        )
        return make_conditions(
            latents=x1, cond_mask=jnp.asarray(mask), text_tokens=jnp.asarray(tok),
            text_mask=jnp.asarray(msk), text_pooled=jnp.asarray(pooled),
            micro=jnp.tile(jnp.asarray([res, res, 0, 0, 1.0], jnp.float32), (b, 1)),
            motion=jnp.asarray([c["motion_score"] for c in cs], jnp.float32),
        )  # fmt: skip

    def psnr(x):  # frames 1.., data range [-1, 1]
        mse = jnp.mean(jnp.square(x - x1)[:, 1:], axis=(1, 2, 3, 4))
        return float(jnp.mean(10 * jnp.log10(4 / mse)))

    def x1_hat(xt, t, cond):
        tt = jnp.full((b,), t)
        return xt + (1 - t) * to_velocity(model(xt, tt, cond), xt, tt, prediction)

    cond, rolled = conditions(0), conditions(1)
    given = jnp.asarray(mask)[:, :, None, None, None]
    print(f"step {step}, {'EMA' if ema else 'raw'} weights, {len(cs)} clips")
    if heldout:
        print(
            f"static floor (frame 0 repeated): {psnr(jnp.broadcast_to(x1[:, :1], x1.shape)):.2f} dB"
        )
    eps = jax.random.normal(jax.random.key(0), x1.shape)
    for t in (0.0, 0.2, 0.4, 0.6, 0.8, 0.9, 0.95, 0.98):
        xt = jnp.where(given, x1, t * x1 + (1 - t) * eps)
        row = f"t={t:.2f}  x1-hat PSNR {psnr(x1_hat(xt, t, cond)):.2f} dB"
        row += f" (x_t itself {psnr(xt):.2f})" if t > 0 else ""
        if heldout:
            row += f"  (captions rolled: {psnr(x1_hat(xt, t, rolled)):.2f}; "
            row += f"clean input labelled t: {psnr(x1_hat(x1, t, cond)):.2f})"
        print(row)
    if heldout:  # the clean-input ceiling per case kind (eval_objects.case_kind)
        from eval_objects import STILL_TOL, case_kind

        u8 = np.stack([c["video"] for c in cs]).astype(np.float64)
        still = (np.abs(u8 - u8[:, :1]).max(-1) <= STILL_TOL)[:, 1:]  # [B, T-1, H, W]
        kinds = [case_kind(c["truth"]) for c in cs]
        for t in (0.6, 0.8, 0.95):
            err = np.square(np.asarray(x1_hat(x1, t, cond)) - np.asarray(x1)).mean(-1)[:, 1:]
            parts = []
            for kind in ("pan", "plain", "textured"):
                sel = [err[i] if kind == "pan" else err[i][still[i]]
                       for i in range(b) if kinds[i] == kind]  # fmt: skip
                if sel:
                    mse = np.concatenate([e.ravel() for e in sel]).mean()
                    parts.append(f"{kind} {10 * np.log10(4 / mse):.2f}")
            print(f"clean input labelled t={t:.2f}, by case kind (pans: all pixels; plain and "
                  f"textured: still pixels): {', '.join(parts)} dB")  # fmt: skip


def frame0_conditions(comps, x1, captions: list[str], clips: list[dict], res: int):
    """TI2V `Conditions` for latents x1 [B, F, H, W, C]: frame 0 given, these captions, the
    clips' motion scores, micro-conditions of an uncropped res x res frame."""
    import jax.numpy as jnp

    from stiv_jax.conditioning import make_conditions

    b, f = x1.shape[:2]
    mask = np.zeros((b, f), bool)
    mask[:, 0] = True
    emb = comps.text_encoder.encode(captions)
    return make_conditions(
        latents=x1, cond_mask=jnp.asarray(mask), text_tokens=jnp.asarray(emb.tokens),
        text_mask=jnp.asarray(emb.mask), text_pooled=jnp.asarray(emb.pooled),
        micro=jnp.tile(jnp.asarray([res, res, 0, 0, 1.0], jnp.float32), (b, 1)),
        motion=jnp.asarray([c["motion_score"] for c in clips], jnp.float32),
    )  # fmt: skip


def direction(workdir: str, num: int = 24, step: int | None = None) -> None:
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from stiv_jax.data.schema import normalize_uint8
    from stiv_jax.data.shapes import DIRECTIONS, generate_clip
    from stiv_jax.diffusion import to_velocity
    from stiv_jax.pipeline import STIVPipeline
    from stiv_jax.video import to_uint8

    pipe = STIVPipeline.from_workdir(workdir, step=step)
    config, comps = pipe.config, pipe.comps
    model = nnx.merge(pipe.graphdef, pipe.params)
    seed, res, frames = config.data.shapes.heldout_seed, config.data.res, config.data.frames
    clips, i = [], 0
    while len(clips) < num:  # one object moving at medium/fast speed, plain, no pan
        c = generate_clip(i, split="heldout", seed=seed, res=res, frames=frames,
                          textured=False, camera_pan=False)  # fmt: skip
        i += 1
        objs = c["truth"]["objects"]
        if len(objs) == 1 and objs[0]["motion"] in DIRECTIONS and objs[0]["speed"] != "slow":
            clips.append(c)

    def cosine(video, c) -> float:
        o = c["truth"]["objects"][0]
        return object_cosine(video, o, o["motion"])

    def summary(cs) -> str:
        cs = np.asarray(cs)
        # cos > 0.7: within one 45-degree sector; cos > 0.924: the evaluator's exact 8-way class.
        exact = np.nanmean(cs > math.cos(math.pi / 8))
        return f"cos {np.nanmean(cs):+.2f} (share > 0.7: {np.nanmean(cs > 0.7):.2f}, exact: {exact:.2f})"

    x1 = comps.autoencoder.encode(
        jnp.asarray(normalize_uint8(np.stack([c["video"] for c in clips])))
    )
    b, f = x1.shape[:2]
    mask = np.zeros((b, f), bool)
    mask[:, 0] = True
    given = jnp.asarray(mask)[:, :, None, None, None]
    prediction = config.model.get("prediction", "velocity")
    captions = {
        "true": [c["caption"] for c in clips],
        "opposite": [opposite_direction(c["caption"]) for c in clips],
    }

    conds = {k: frame0_conditions(comps, x1, v, clips, res) for k, v in captions.items()}
    print(f"{workdir}: {b} held-out single-object clips, e.g. {captions['true'][0]!r}")
    eps = jax.random.normal(jax.random.key(0), x1.shape)
    rings: list[str] = []
    for t in (0.0, 0.2, 0.4):
        xt = jnp.where(given, x1, t * x1 + (1 - t) * eps)
        tt = jnp.full((b,), t)
        row = []
        for name, cond in conds.items():
            xh = xt + (1 - t) * to_velocity(model(xt, tt, cond), xt, tt, prediction)
            vids = to_uint8(np.asarray(comps.autoencoder.decode(xh)))
            row.append(f"{name} caption: {summary([cosine(v, c) for v, c in zip(vids, clips)])}")
            if t == 0.0:
                rings.append(f"  {name:8s} {mass_track(vids, clips)}")
        print(f"x1-hat at t={t:.1f}   " + "   ".join(row), flush=True)
    print(
        "x1-hat at t=0.0, object mass per frame (px): centroid shift along the true direction"
        " | spread\n" + "\n".join(rings)
    )
    # Which path carries the direction: the caption tokens (cross-attention, per token) or
    # the pooled vector and word bag (AdaLN, one vector for the whole clip)? Each from a
    # different caption; a path the model does not use leaves x1-hat where the other puts it.
    true, opp = conds["true"], conds["opposite"]
    if true["text_tokens"].shape == opp["text_tokens"].shape:
        mixed = {
            "tokens true, pooled opposite": {**true, "text_pooled": opp["text_pooled"]},
            "tokens opposite, pooled true": {**opp, "text_pooled": true["text_pooled"]},
        }
        xt, tt = jnp.where(given, x1, eps), jnp.zeros((b,))
        for name, cond in mixed.items():
            xh = xt + to_velocity(model(xt, tt, cond), xt, tt, prediction)
            vids = to_uint8(np.asarray(comps.autoencoder.decode(xh)))
            print(f"x1-hat at t=0.0, {name}: {summary([cosine(v, c) for v, c in zip(vids, clips)])}"
                  f"\n  {mass_track(vids, clips)}", flush=True)  # fmt: skip
    row = []
    for name, caps in captions.items():
        cs = [
            cosine(pipe(cap, image=c["video"][0], seed=j, motion_score=float(c["motion_score"])), c)
            for j, (cap, c) in enumerate(zip(caps, clips))
        ]
        row.append(f"{name} caption: {summary(cs)}")
    print("sampled (default sampler)   " + "   ".join(row))


def binding(
    workdir: str,
    num: int = 24,
    step: int | None = None,
    t2v: bool = False,
    swappable: bool = False,
    res: int = 0,
) -> None:
    from stiv_jax import checkpoint as ckpt
    from stiv_jax.binding import drill_clips, probe
    from stiv_jax.pipeline import STIVPipeline

    config = ckpt.restore_config(workdir, step)
    if res:  # probe at another resolution than the run's (e.g. a low-resolution drill)
        with config.unlocked():
            config.data.res = res
            config.data.buckets.shapes = (f"{config.data.frames}x{res}x{res}",)
    pipe = STIVPipeline.from_workdir(workdir, config, step=step)
    clips = drill_clips(pipe.config, num, swappable)
    mode = ("T2V" if t2v else "TI2V") + (", swappable starts" if swappable else "")
    print(f"{workdir}: {num} held-out binding-drill clips, {mode}, e.g. {clips[0]['caption']!r}")
    exact = math.cos(math.pi / 8)

    def log(name, own, other):
        seen = np.isfinite(own)  # objects found by colour in at least two frames
        print(f"sampled, {name:7s} caption ({seen.sum()}/{seen.size} objects tracked): cos "
              f"with its own direction {np.nanmean(own):+.2f} (exact {np.mean(own[seen] > exact):.2f}), "
              f"with the other object's {np.nanmean(other):+.2f} "
              f"(exact {np.mean(other[seen] > exact):.2f})", flush=True)  # fmt: skip

    result = probe(pipe, clips, t2v=t2v, log=log)  # the swap effect: stiv_jax/binding.py
    print(f"swap effect (own's drop + other's rise) / 2: {result.effect:+.2f}")
    tok, vel = swap_reach(pipe, clips[:6])
    print(f"the swap changes the caption tokens by {tok:.3f} and the velocity by {vel:.4f} "
          "(mean |difference| / mean |true|; 6 clips, frame 0 given, t = 0.3)")  # fmt: skip


def axes(workdir: str, num: int = 24, step: int | None = None, swappable: bool = False) -> None:
    from eval_objects import axis_summary, object_rows

    from stiv_jax.binding import drill_clips
    from stiv_jax.pipeline import STIVPipeline

    pipe = STIVPipeline.from_workdir(workdir, step=step)
    clips = drill_clips(pipe.config, num, swappable)
    rows = []
    for j, c in enumerate(clips):  # the binding probe's seeds: its "true" samples
        video = pipe(
            c["caption"], image=c["video"][0], seed=j, motion_score=float(c["motion_score"])
        )
        rows += object_rows(video, {"truth": c["truth"]})
    exact = np.mean([r["truth"] == r["measured"] for r in rows])
    print(f"{workdir}: {num} held-out binding-drill clips, TI2V, true captions"
          f"{', swappable starts' if swappable else ''}: {len(rows)} objects, exact {exact:.3f}")  # fmt: skip
    for a, v in axis_summary(rows).items():
        print(f"  {'horizontal' if a == 'x' else 'vertical':10s} kept {v['kept']:.2f} of "
              f"{v['objects']}, added {v['added']:.2f}, moved {v['gain']:.2f} of the truth")  # fmt: skip


def swap_reach(pipe, clips: list[dict]) -> tuple[float, float]:
    """How much swapping the directions changes what the blocks attend to (the caption
    tokens) and the model's output: one forward at t = 0.3, frame 0 given, per clip."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from stiv_jax.data.schema import normalize_uint8

    model, comps, res = nnx.merge(pipe.graphdef, pipe.params), pipe.comps, pipe.config.data.res
    tok, vel = [], []
    for j, c in enumerate(clips):
        x1 = comps.autoencoder.encode(jnp.asarray(normalize_uint8(c["video"][None])))
        eps, t = jax.random.normal(jax.random.key(j), x1.shape), 0.3
        xt = (t * x1 + (1 - t) * eps).at[:, 0].set(x1[:, 0])
        outs = []
        for cap in (c["caption"], swap_directions(c)):
            cond = frame0_conditions(comps, x1, [cap], [c], res)
            ctx = model.caption_tokens(cond["text_tokens"], cond["text_mask"])
            outs.append((np.asarray(ctx), np.asarray(model(xt, jnp.full((1,), t), cond))))
        for acc, k in ((tok, 0), (vel, 1)):
            acc.append(np.abs(outs[0][k] - outs[1][k]).mean() / np.abs(outs[0][k]).mean())
    return float(np.mean(tok)), float(np.mean(vel))


def mass_track(videos: np.ndarray, clips: list[dict]) -> str:
    """Mean over clips, per frame, of the object's mass (|pixel - background|, the background
    being frame 0's median colour): centroid shift along the true direction and RMS spread.
    An unread caption leaves a ring (spread grows, centroid stays); a read one moves it."""
    from stiv_jax.data.shapes import DIRECTIONS

    v = videos.astype(np.float32)  # [B, T, H, W, 3]
    bg = np.median(v[:, 0].reshape(len(v), -1, 3), axis=1)
    m = np.abs(v - bg[:, None, None, None]).sum(-1)  # [B, T, H, W]
    w = m / np.maximum(m.sum((2, 3), keepdims=True), 1e-6)
    ys, xs = np.mgrid[: v.shape[2], : v.shape[3]]
    cx, cy = (w * xs).sum((2, 3)), (w * ys).sum((2, 3))
    spread = np.sqrt(
        (w * ((xs - cx[..., None, None]) ** 2 + (ys - cy[..., None, None]) ** 2)).sum((2, 3))
    )
    d = np.array([DIRECTIONS[c["truth"]["objects"][0]["motion"]] for c in clips])
    along = (cx - cx[:, :1]) * d[:, :1] + (cy - cy[:, :1]) * d[:, 1:]
    fmt = lambda a: " ".join(f"{x:5.2f}" for x in a.mean(0))  # noqa: E731
    return f"{fmt(along)} | {fmt(spread)}"


def paths(workdir: str) -> None:
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from stiv_jax.conditioning import make_conditions
    from stiv_jax.data.schema import normalize_uint8
    from stiv_jax.data.shapes import generate_clip
    from stiv_jax.pipeline import STIVPipeline

    pipe = STIVPipeline.from_workdir(workdir)
    config, comps = pipe.config, pipe.comps
    model = nnx.merge(pipe.graphdef, pipe.params)
    res = config.data.res
    c = generate_clip(3, split="heldout", seed=config.data.shapes.heldout_seed, res=res,
                      frames=config.data.frames, textured=False, camera_pan=False)  # fmt: skip
    cap = "a magenta square moves left quickly on a plain gray background"
    alts = {
        "direction": cap.replace("left", "right"),
        "colour": cap.replace("magenta", "cyan"),
        "background": cap.replace("gray", "black"),
        "shape": cap.replace("square", "circle"),
    }
    x1 = comps.autoencoder.encode(jnp.asarray(normalize_uint8(c["video"][None])))
    mask = np.zeros((1, x1.shape[1]), bool)
    mask[:, 0] = True

    def cond(token_caption: str, pooled_caption: str):
        a, p = (
            comps.text_encoder.encode([token_caption]),
            comps.text_encoder.encode([pooled_caption]),
        )
        return make_conditions(
            latents=x1, cond_mask=jnp.asarray(mask), text_tokens=jnp.asarray(a.tokens),
            text_mask=jnp.asarray(a.mask), text_pooled=jnp.asarray(p.pooled),
            micro=jnp.asarray([[res, res, 0, 0, 1.0]], jnp.float32),
            motion=jnp.asarray([1.5], jnp.float32),
        )  # fmt: skip

    eps = jax.random.normal(jax.random.key(0), x1.shape)
    print(f"{workdir}: caption {cap!r}, one word changed; RMS change of the model output")
    for t in (0.0, 0.3):
        xt = jnp.where(jnp.asarray(mask)[:, :, None, None, None], x1, t * x1 + (1 - t) * eps)
        tt = jnp.full((1,), t)
        base = model(xt, tt, cond(cap, cap))

        def rms(out, base=base) -> float:
            return float(jnp.sqrt(jnp.mean(jnp.square(out - base))))

        for word, alt in alts.items():
            tok, pool = rms(model(xt, tt, cond(alt, cap))), rms(model(xt, tt, cond(cap, alt)))
            print(
                f"t={t:.1f} {word:10s} tokens (cross-attention) {tok:.4f}   pooled (AdaLN) {pool:.4f}"
            )


def crossattn(workdir: str, num: int = 8, step: int | None = None) -> None:
    """Where an object's video tokens look among the caption's words (see module docstring)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    import stiv_jax.model.attention as attn_mod
    from stiv_jax.conditioning import make_conditions
    from stiv_jax.data.schema import normalize_uint8
    from stiv_jax.data.shapes import generate_clip
    from stiv_jax.kernels.prologue import qk_prologue
    from stiv_jax.pipeline import STIVPipeline

    pipe = STIVPipeline.from_workdir(workdir, step=step)
    config, comps = pipe.config, pipe.comps
    model = nnx.merge(pipe.graphdef, pipe.params)
    res, p, enc = config.data.res, config.model.patch_size, comps.text_encoder
    seed, frames = config.data.shapes.heldout_seed, config.data.frames
    recorded = []
    original = attn_mod.attention

    def recording(q, k, v, **kw):  # cross-attention: queries are video, keys are words
        if kw.get("mask") is not None and q.shape[1] != k.shape[1]:
            qf = qk_prologue(q, kw["q_norm_scale"], None, 1e-6)
            kf = qk_prologue(k, kw["k_norm_scale"], None, 1e-6)
            logits = jnp.einsum("blnh,bmnh->bnlm", qf, kf) / np.sqrt(q.shape[-1])
            logits = jnp.where(kw["mask"][:, None, None, :], logits, -1e30)
            recorded.append(np.asarray(jax.nn.softmax(logits, -1).mean(1)))  # [B, Lq, M]
        return original(q, k, v, **kw)

    def pieces(word: str) -> list[int]:
        ids, m = enc.tokenize([word])
        return [int(t) for t, keep in zip(ids[0], m[0]) if keep][1:-1]  # no [CLS]/[SEP]

    def positions(row: list[int], words) -> set[int]:
        out = set()
        for w in words:
            sub = pieces(w)
            out |= {i for i in range(len(row)) if row[i : i + len(sub)] == sub}
        return out

    names = ("own colour", "other colour", "own direction", "other direction", "uniform")
    mass = {n: [] for n in names}
    captions = []
    attn_mod.attention = recording
    try:
        for j in range(num):
            c = generate_clip(j, split="heldout", seed=seed, res=res, frames=frames, drill=True,
                              drill_objects=2)  # fmt: skip
            x1 = comps.autoencoder.encode(jnp.asarray(normalize_uint8(c["video"][None])))
            mask = np.zeros((1, x1.shape[1]), bool)
            mask[:, 0] = True
            captions.append(c["caption"])
            e = enc.encode([c["caption"]])
            cond = make_conditions(
                latents=x1, cond_mask=jnp.asarray(mask), text_tokens=jnp.asarray(e.tokens),
                text_mask=jnp.asarray(e.mask), text_pooled=jnp.asarray(e.pooled),
                micro=jnp.asarray([[res, res, 0, 0, 1.0]], jnp.float32),
                motion=jnp.asarray([float(c["motion_score"])], jnp.float32),
            )  # fmt: skip
            eps = jax.random.normal(jax.random.key(j), x1.shape)
            t = 0.3
            xt = jnp.where(jnp.asarray(mask)[:, :, None, None, None], x1, t * x1 + (1 - t) * eps)
            recorded.clear()
            model(xt, jnp.full((1,), t), cond)
            probs = np.mean([r[0] for r in recorded], axis=0)  # [F'·S, M], blocks averaged
            ids, tmask = enc.tokenize([c["caption"]])
            row = [int(t) for t in ids[0]]
            gw = res // p
            objs = c["truth"]["objects"]
            for a, b in (objs, objs[::-1]):
                q = int(a["y"][0]) // p * gw + int(a["x"][0]) // p  # first token frame
                own_d, other_d = set(a["motion"].split("-")), set(b["motion"].split("-"))
                sets = {
                    "own colour": positions(row, [a["color"]]),
                    "other colour": positions(row, [b["color"]]),
                    "own direction": positions(row, own_d - other_d),
                    "other direction": positions(row, other_d - own_d),
                }
                for n, idx in sets.items():
                    mass[n].append(float(probs[q, sorted(idx)].sum()) / max(len(idx), 1))
                mass["uniform"].append(1.0 / float(tmask[0].sum()))
    finally:
        attn_mod.attention = original
    print(
        f"{workdir}: {num} held-out binding-drill clips, TI2V, t = 0.3; cross-attention of "
        f"each object's first-frame video token (heads and blocks averaged), per caption token"
    )
    for n in names:
        print(f"  {n:16s} {np.mean(mass[n]):.4f}")
    # Are the keys' inputs distinct words or one caption-wide vector? Over the real tokens of
    # the same captions: mean pairwise cosine, and the share of their energy in the mean token.
    e = enc.encode(captions)
    ctx = model.caption_tokens(jnp.asarray(e.tokens), jnp.asarray(e.mask), refine=False)
    stages = [("projected caption tokens", ctx)]
    if model.text_refiner is not None:
        stages.append(("refined caption tokens", model.text_refiner(ctx, jnp.asarray(e.mask))))
    for name, h in stages:
        cos, share, norm = [], [], []
        for row, m in zip(np.asarray(h), e.mask):
            v = row[m]
            u = v / np.linalg.norm(v, axis=1, keepdims=True)
            cos.append((u @ u.T)[np.triu_indices(len(v), 1)].mean())
            share.append(np.sum(v.mean(0) ** 2) / np.mean(np.sum(v**2, 1)))
            norm.append(np.linalg.norm(v, axis=1).mean())
        print(f"  {name}: mean pairwise cosine {np.mean(cos):.3f}, shared part "
              f"{100 * np.mean(share):.1f}% of the energy, norm {np.mean(norm):.2f}")  # fmt: skip


def ti2v_requests(clips: list[dict], scale: float) -> list:
    """One TI2V `Request` per clip: its caption, frame 0 given, its motion score, seed = index."""
    from stiv_jax.data.schema import normalize_uint8
    from stiv_jax.pipeline import Request

    reqs = []
    for i, c in enumerate(clips):
        r = Request(id=f"c{i}", prompt=c["caption"], cond_frames=[0], cfg_scale=scale,
                    seed=i, motion_score=float(c["motion_score"]))  # fmt: skip
        r.first_frame = normalize_uint8(c["video"][0])
        reqs.append(r)
    return reqs


def background(workdir: str, num: int = 3, step: int | None = None) -> None:
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from stiv_jax.checkpoint import restore_config
    from stiv_jax.data.schema import normalize_uint8
    from stiv_jax.data.shapes import config_kwargs, generate_clip
    from stiv_jax.diffusion import to_velocity
    from stiv_jax.pipeline import STIVPipeline, restore_for_sampling

    config = restore_config(workdir, step)
    comps, graphdef, params, step = restore_for_sampling(config, workdir, step)
    model = nnx.merge(graphdef, params)
    seed = config.data.shapes.heldout_seed
    cs = [generate_clip(i, split="heldout", seed=seed, **config_kwargs(config)) for i in range(num)]
    x1 = comps.autoencoder.encode(jnp.asarray(normalize_uint8(np.stack([c["video"] for c in cs]))))
    b, f = x1.shape[:2]
    mask = np.zeros((b, f), bool)
    mask[:, 0] = True
    res, pred = config.data.res, config.model.get("prediction", "velocity")

    def corner(x) -> list:  # mean uint8 colour of the bottom-right 6x6 corner, frames 1..
        u = (np.clip(np.asarray(x), -1, 1) + 1) * 127.5
        return [
            tuple(round(float(v), 1) for v in c) for c in u[:, 1:, 24:30, 24:30].mean((1, 2, 3))
        ]

    print(f"step {step}; truth {corner(x1)}")
    eps = jax.random.normal(jax.random.key(0), x1.shape)
    given = jnp.asarray(mask)[:, :, None, None, None]
    captions = {
        "true caption": [c["caption"] for c in cs],
        "empty caption": [""] * b,
        "red background": ["against a plain red background"] * b,
    }
    for name, caps in captions.items():
        cond = frame0_conditions(comps, x1, caps, cs, res)
        for t in (0.0, 0.5, 0.9):
            xt, tt = jnp.where(given, x1, t * x1 + (1 - t) * eps), jnp.full((b,), t)
            xh = xt + (1 - t) * to_velocity(model(xt, tt, cond), xt, tt, pred)
            print(f"one-step x1-hat, {name}, t={t:.1f}: {corner(xh)}")
    pipe = STIVPipeline(config, comps, graphdef, params, step)
    for scale in (1.0, 2.0):
        reqs = ti2v_requests(cs, scale)
        print(f"sampled, guidance {scale:g}: {corner(np.stack(pipe.generate(reqs)))}")


def pan(workdir: str, num: int = 16) -> None:
    import jax
    import jax.numpy as jnp
    from eval_objects import STILL_TOL
    from flax import nnx

    from stiv_jax.data.schema import normalize_uint8
    from stiv_jax.data.shapes import config_kwargs, generate_clip
    from stiv_jax.diffusion import to_data
    from stiv_jax.pipeline import STIVPipeline

    pipe = STIVPipeline.from_workdir(workdir)
    config, comps = pipe.config, pipe.comps
    model = nnx.merge(pipe.graphdef, pipe.params)
    kw = {**config_kwargs(config), "camera_pan": True}
    seed, groups, i = config.data.shapes.heldout_seed, {True: [], False: []}, 0
    while min(len(g) for g in groups.values()) < num:  # held-out textured clips, by pan
        c = generate_clip(i, split="heldout", seed=seed, **kw)
        i += 1
        if c["truth"]["background"]["kind"] != "plain":
            groups[c["truth"]["camera"]["pan"] != "none"].append(c)
    prediction = config.model.get("prediction", "velocity")

    def x1_hat(cs, captions, t):  # TI2V, frame 0 given; the same noise for every caption
        x1 = comps.autoencoder.encode(
            jnp.asarray(normalize_uint8(np.stack([c["video"] for c in cs])))
        )
        cond = frame0_conditions(comps, x1, captions, cs, config.data.res)
        eps = jax.random.normal(jax.random.key(0), x1.shape)
        given = jnp.zeros(x1.shape[:2], bool).at[:, 0].set(True)[:, :, None, None, None]
        xt = jnp.where(given, x1, t * x1 + (1 - t) * eps)
        tt = jnp.full((x1.shape[0],), t)
        return np.asarray(to_data(model(xt, tt, cond), xt, tt, prediction)), np.asarray(x1)

    def psnr(xh, x1, sel) -> float:  # pooled over the selected pixels of frames 1..
        err = np.square(xh - x1).mean(-1)[:, 1:]
        return float(10 * np.log10(4 / err[sel[:, 1:]].mean()))

    print(f"step {pipe.step}; {num} held-out textured clips without a pan and {num} with one")
    still_cs, pan_cs = groups[False][:num], groups[True][:num]
    u8 = np.stack([c["video"] for c in still_cs]).astype(np.float64)
    still = np.abs(u8 - u8[:, :1]).max(-1) <= STILL_TOL  # [B, T, H, W]
    caps = [c["caption"] for c in still_cs]
    variants = {"true": caps, "+pan": [f"{c}, the camera pans left quickly" for c in caps],
                "empty": [""] * num}  # fmt: skip
    pan_caps = {"true": [c["caption"] for c in pan_cs], "empty": [""] * num}
    for t in (0.0, 0.2):
        row = [f"{k} {psnr(*x1_hat(still_cs, v, t), still):.2f}" for k, v in variants.items()]
        print(f"t={t:.1f}  no pan, still pixels: {', '.join(row)} dB")
        everything = np.ones((num, u8.shape[1], *u8.shape[2:4]), bool)
        row = [f"{k} {psnr(*x1_hat(pan_cs, v, t), everything):.2f}" for k, v in pan_caps.items()]
        _, x1 = x1_hat(pan_cs, pan_caps["true"], t)
        row.append(f"static floor {psnr(np.broadcast_to(x1[:, :1], x1.shape), x1, everything):.2f}")
        print(f"t={t:.1f}  pan, all pixels: {', '.join(row)} dB")


def trajectory(workdir: str, num: int = 16, scales: tuple[float, ...] = (1.0, 1.5)) -> None:
    import jax
    import jax.numpy as jnp
    from eval_objects import STILL_TOL

    import stiv_jax.pipeline as pipeline_lib
    from stiv_jax.checkpoint import restore_config
    from stiv_jax.data.schema import normalize_uint8
    from stiv_jax.data.shapes import config_kwargs, generate_clip
    from stiv_jax.pipeline import STIVPipeline, restore_for_sampling

    config = restore_config(workdir, None)
    comps, graphdef, params, step = restore_for_sampling(config, workdir, None)
    seed = config.data.shapes.heldout_seed
    cs = [generate_clip(i, split="heldout", seed=seed, **config_kwargs(config)) for i in range(num)]
    clip_u8 = np.stack([c["video"] for c in cs]).astype(np.float64)  # [B, T, H, W, 3]
    still = np.abs(clip_u8 - clip_u8[:, :1]).max(-1) <= STILL_TOL  # [B, T, H, W]
    x1 = np.asarray(
        comps.autoencoder.encode(jnp.asarray(normalize_uint8(clip_u8.astype(np.uint8))))
    )
    # x1-hat figures are in the latent space, which is pixels in [-1, 1] for S (no VAE).
    record: list[tuple[float, np.ndarray]] = []
    original = pipeline_lib.sample_ode

    def recording_ode(velocity_fn, x0, **kw):
        def recorded(x, t, v):
            tb = t.reshape((-1,) + (1,) * (x.ndim - 1))
            xh = x + (1 - tb) * v
            jax.debug.callback(lambda tt, xx: record.append((float(tt[0]), np.asarray(xx))), t, xh)
            return v

        def velocity(x, t):
            return recorded(x, t, velocity_fn(x, t))

        def stateful(x, t, state):  # a model that carries state (self-conditioning)
            v, state = velocity_fn(x, t, state)
            return recorded(x, t, v), state

        return original(stateful if kw.get("state") is not None else velocity, x0, **kw)

    def psnr(xh, sel) -> float:  # mean over clips of the PSNR on frames 1.. where sel
        xh = np.asarray(xh)[:, 1:]
        err = np.square(xh - x1[:, 1:]).mean(-1)  # [B, T-1, H, W]
        s = sel[:, 1:]
        vals = [
            10 * np.log10(4 / max(err[i][s[i]].mean(), 1e-10)) for i in range(len(xh)) if s[i].any()
        ]
        return float(np.mean(vals))

    def row(xh) -> str:
        return " ".join(f"{psnr(xh, sel):6.2f}" for sel in (np.ones_like(still), still, ~still))

    pipeline_lib.sample_ode = recording_ode
    try:
        pipe = STIVPipeline(config, comps, graphdef, params, step)
        print(
            f"step {step}; {num} held-out TI2V cases; PSNR (dB) on frames 1..: all / still / changing"
        )
        floor = np.broadcast_to(x1[:, :1], x1.shape)
        print(f"static floor (frame 0 repeated): {row(floor)}")
        for scale in scales:
            record.clear()
            videos = np.stack(pipe.generate(ti2v_requests(cs, scale))).astype(np.float64)
            jax.effects_barrier()
            starts = [i for i, (t, _) in enumerate(record) if t == 0.0]  # one per sampler call
            steps = [record[a:b] for a, b in zip(starts, starts[1:] + [len(record)])]
            print(f"guidance {scale:g}: step t, x1-hat on the sampler's own path")
            for k, (t, _) in enumerate(steps[0]):
                xh = np.concatenate([s[k][1] for s in steps])[:num]  # batch padding off
                print(f"  t={t:.3f}  {row(xh)}")
            print(f"  sample          {row(videos)}")
    finally:
        pipeline_lib.sample_ode = original


def evaluate_patched(module, name: str, replacement, workdir: str, out: str, tasks) -> None:
    """`stiv_jax.evaluate` (16 cases) of `workdir` into `out` with `module.name` replaced
    for the call; prints each task's model row."""
    from configs.stiv import get_config
    from stiv_jax import evaluate

    original = getattr(module, name)
    setattr(module, name, replacement)
    try:
        report = evaluate.evaluate_checkpoint(get_config("variant=S"), workdir, out, tasks=tasks)
    finally:
        setattr(module, name, original)
    for task, table in report["scores"].items():
        model = table["rows"]["model"]
        print(task, " ".join(f"{k}={v:.3f}" for k, v in model.items() if isinstance(v, float)))


def phrasing(workdir: str, out: str, templates: tuple[int, ...], tasks: tuple[str, ...]) -> None:
    from stiv_jax.data import captions

    held = len(captions.HELDOUT_TEMPLATES)
    if len(templates) != held or not all(0 <= i < len(captions.TRAIN_TEMPLATES) for i in templates):
        raise SystemExit(
            f"error: --templates {','.join(map(str, templates))}: expected {held} indices into "
            f"the {len(captions.TRAIN_TEMPLATES)} training templates (the held-out split's count "
            "keeps its scenes)"
        )
    picked = tuple(captions.TRAIN_TEMPLATES[i] for i in templates)
    evaluate_patched(
        captions, "TEMPLATES", {**captions.TEMPLATES, "heldout": picked}, workdir, out, tasks
    )


def interpolate(
    workdir: str, source: str, alpha: float, out: str, groups: str, tasks: tuple[str, ...]
) -> None:
    import re

    import jax

    from configs.stiv import get_config
    from stiv_jax import evaluate
    from stiv_jax.optim import param_path

    pattern = re.compile(groups)
    _, _, theirs, _ = evaluate.restore_for_sampling(get_config("variant=S"), source)
    restore = evaluate.restore_for_sampling

    def mixed(config, run, step=None, **kw):
        comps, graphdef, params, step = restore(config, run, step, **kw)
        moved = []

        def mix(path, a, b):
            if not pattern.search(param_path(path)):
                return a
            moved.append(a.size)
            return (1.0 - alpha) * a + alpha * b.astype(a.dtype)

        params = jax.tree_util.tree_map_with_path(mix, params, theirs)
        print(f"interpolated {sum(moved):,} weights in {len(moved)} arrays ({groups!r}, a={alpha})")
        return comps, graphdef, params, step

    evaluate_patched(evaluate, "restore_for_sampling", mixed, workdir, out, tasks)


def switch(workdir: str, source: str, until: float, out: str, tasks: tuple[str, ...]) -> None:
    import jax
    from flax import nnx

    from configs.stiv import get_config
    from stiv_jax import evaluate, pipeline
    from stiv_jax.conditioning import get_image_cond, null_conditions
    from stiv_jax.diffusion import check_interval, make_guided_fn, sample_ode, to_velocity

    _, _, noise_expert, _ = evaluate.restore_for_sampling(get_config("variant=S"), source)

    def make_sample_fn(config, graphdef, **kw):
        s = config.sample
        if kw or s.cfg_mode != "joint" or s.get("step_cache") or config.model.get("self_cond"):
            raise ValueError("switch probe: joint guidance, no step cache, no self_cond")
        interval = check_interval(s.get("cfg_interval", (0.0, 1.0)), "sample.cfg_interval")
        interval = None if interval == (0.0, 1.0) else interval
        post_step = get_image_cond(config.model.image_cond).post_step
        prediction = config.model.prediction

        def run(params, x0, cond, null_text, scale, t_start=None):
            def model(x, t, c):  # t [B]: one noise level for the whole batch (no t_start)
                def with_(p):
                    return lambda: to_velocity(nnx.merge(graphdef, p)(x, t, c), x, t, prediction)

                return jax.lax.cond(t[0] < until, with_(noise_expert), with_(params))

            velocity = make_guided_fn(
                model, (cond, null_conditions(cond, null_text)), mode="joint",
                renorm=s.cfg_renorm, renorm_mode=s.get("cfg_renorm_mode", "scale_down"),
                interval=interval, scale=scale[:, None, None, None, None],
            )  # fmt: skip
            return sample_ode(velocity, x0, steps=s.steps, solver=s.solver, shift=s.shift,
                              post_step=post_step(cond), t_start=t_start)  # fmt: skip

        return jax.jit(run)

    # evaluate imports make_sample_fn from the pipeline at call time
    evaluate_patched(pipeline, "make_sample_fn", make_sample_fn, workdir, out, tasks)


DISTANCE_GROUPS = "text=cross|text_proj|word_|pooled_proj,spatial=spatial,temporal=temporal,mlp=mlp"


def distance(workdir: str, source: str, groups: str) -> None:
    import re

    import jax

    from configs.stiv import get_config
    from stiv_jax import evaluate
    from stiv_jax.optim import param_path

    named = []
    for entry in groups.split(","):
        name, sep, rx = entry.partition("=")
        if not sep or not name or not rx:
            raise SystemExit(f"--groups entry {entry!r}; expected NAME=REGEX")
        named.append((name, re.compile(rx)))
    config = get_config("variant=S")
    _, _, ours, _ = evaluate.restore_for_sampling(config, workdir)
    _, _, theirs, _ = evaluate.restore_for_sampling(config, source)
    sums: dict[str, list[float]] = {}

    def add(path, a, b):
        name = param_path(path)
        group = next((g for g, rx in named if rx.search(name)), "other")
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        row = sums.setdefault(group, [0.0, 0.0, 0])
        row[0] += float(((a - b) ** 2).sum())
        row[1] += float((b**2).sum())
        row[2] += b.size

    jax.tree_util.tree_map_with_path(add, ours, theirs)
    print(f"{workdir} against {source} (EMA weights)")
    print(f"{'group':10s} {'weights':>9s} {'rms(S)':>8s} {'rms(W-S)':>9s} {'ratio':>6s}")
    for group, (d2, s2, n) in sums.items():
        print(f"{group:10s} {n:9d} {math.sqrt(s2 / n):8.4f} {math.sqrt(d2 / n):9.4f} "
              f"{math.sqrt(d2 / s2):6.3f}")  # fmt: skip


def centroid_track(
    videos: np.ndarray, clips: list[dict], floor: float = 48.0, across: bool = False
) -> np.ndarray:
    """[B, T] shift of the object's mass centroid along its true direction (px; per clip;
    `across`: [B, T, 2], along and across it, the across axis the direction turned +90°):
    mass is |pixel - that frame's median colour| summed over RGB, where over `floor` levels,
    so a background that shifts its colour or a faint haze does not pull the centroid."""
    from stiv_jax.data.shapes import DIRECTIONS

    v = videos.astype(np.float32)
    b, t = v.shape[:2]
    bg = np.median(v.reshape(b, t, -1, 3), axis=2)  # [B, T, 3]
    m = np.abs(v - bg[:, :, None, None]).sum(-1)
    m = np.where(m > floor, m, 0.0)
    w = m / np.maximum(m.sum((2, 3), keepdims=True), 1e-6)
    ys, xs = np.mgrid[: v.shape[2], : v.shape[3]]
    cx, cy = (w * xs).sum((2, 3)), (w * ys).sum((2, 3))
    d = np.array([DIRECTIONS[c["truth"]["objects"][0]["motion"]] for c in clips], np.float32)
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    dx, dy = cx - cx[:, :1], cy - cy[:, :1]
    along = dx * d[:, :1] + dy * d[:, 1:]
    return np.stack([along, dy * d[:, :1] - dx * d[:, 1:]], -1) if across else along


# Median motion score of training clips with one object moving at each speed, no pan
# (indices 0-399; docs/quality.md §32.3).
MOTION_MEDIANS = {"slow": 0.72, "medium": 1.50, "fast": 2.56}


def with_speed_words(caption: str, old: str, new: str) -> str:
    """The caption with one speed's words (adverb "quickly", adjective "fast pace") said as
    another's; ShapesBench's templates (stiv_jax/data/captions.py) are the vocabulary."""
    import re

    from stiv_jax.data.captions import SPEED_ADVERBS

    caption = caption.replace(SPEED_ADVERBS[old], SPEED_ADVERBS[new])
    return re.sub(rf"\b{old}\b", new, caption)


def speed(workdir: str, num: int = 12, step: int | None = None) -> None:
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from stiv_jax.data.schema import normalize_uint8
    from stiv_jax.data.shapes import DIRECTIONS, SPEEDS, generate_clip
    from stiv_jax.diffusion import to_velocity
    from stiv_jax.pipeline import STIVPipeline
    from stiv_jax.video import to_uint8

    pipe = STIVPipeline.from_workdir(workdir, step=step)
    config, comps = pipe.config, pipe.comps
    model = nnx.merge(pipe.graphdef, pipe.params)
    seed, res, frames = config.data.shapes.heldout_seed, config.data.res, config.data.frames
    groups: dict[str, list[dict]] = {s: [] for s in SPEEDS}
    i = 0
    while min(len(g) for g in groups.values()) < num:
        c = generate_clip(i, split="heldout", seed=seed, res=res, frames=frames,
                          textured=False, camera_pan=False)  # fmt: skip
        i += 1
        objs = c["truth"]["objects"]
        if len(objs) == 1 and objs[0]["motion"] in DIRECTIONS:
            g = groups[objs[0]["speed"]]
            if len(g) < num:
                g.append(c)
    clips = [c for g in groups.values() for c in g]
    speeds = np.array([c["truth"]["objects"][0]["speed"] for c in clips])
    truth = centroid_track(np.stack([c["video"] for c in clips]), clips)
    x1 = comps.autoencoder.encode(
        jnp.asarray(normalize_uint8(np.stack([c["video"] for c in clips])))
    )
    b, f = x1.shape[:2]
    given = (jnp.arange(f) == 0)[None, :, None, None, None]
    prediction = config.model.get("prediction", "velocity")
    cond = frame0_conditions(comps, x1, [c["caption"] for c in clips], clips, res)
    print(f"{workdir}: {num} held-out single-object clips per speed (plain, no pan); truth's "
          f"last-frame shift (px): " + ", ".join(
              f"{s} {truth[speeds == s, -1].mean():.1f}" for s in SPEEDS))  # fmt: skip

    def row(name: str, videos: np.ndarray) -> None:
        both = centroid_track(videos, clips, across=True)
        track, size = both[..., 0], np.linalg.norm(both[:, -1], axis=-1)
        cells = []
        for s in SPEEDS:
            k = speeds == s
            last = (track[k, -1] * truth[k, -1]).sum() / (truth[k, -1] ** 2).sum()
            per = (track[k] * truth[k]).sum(0)[1:] / (truth[k] ** 2).sum(0)[1:]
            cos = np.mean(track[k, -1] / np.maximum(size[k], 1e-6))
            cells.append(f"{s} {last:4.2f} [{' '.join(f'{g:4.2f}' for g in per)}] "
                         f"|shift| {size[k].sum() / truth[k, -1].sum():4.2f} cos {cos:+.2f}")  # fmt: skip
        print(f"{name:18s} " + "   ".join(cells), flush=True)

    print(
        "moved along the truth, last frame [frames 1..]; last-frame |shift| / truth's, "
        "mean cosine with the true direction:"
    )
    eps = jax.random.normal(jax.random.key(0), x1.shape)
    for t in (0.0, 0.2, 0.4, 0.6, 0.8):
        xt = jnp.where(given, x1, t * x1 + (1 - t) * eps)
        tt = jnp.full((b,), t)
        xh = xt + (1 - t) * to_velocity(model(xt, tt, cond), xt, tt, prediction)
        xh = jnp.where(given, x1, xh)  # the given frame, as the sampler keeps it
        row(f"x1-hat at t={t:.1f}", to_uint8(np.asarray(comps.autoencoder.decode(xh))))
    # Which signal says how fast: the t = 0 guess (its last-frame shift in px, by true speed)
    # with the caption's speed words, or the motion score, set to each speed's.
    xt, tt = jnp.where(given, x1, eps), jnp.zeros((b,))
    print("x1-hat at t=0.0, last-frame |shift| (px) by the true speed, with the request's "
          "speed words, motion score or both set to each speed's:")  # fmt: skip
    for s_new in SPEEDS:
        caps = [with_speed_words(c["caption"], str(k), s_new) for c, k in zip(clips, speeds)]
        words = frame0_conditions(comps, x1, caps, clips, res)
        motion = jnp.full((b,), MOTION_MEDIANS[s_new], jnp.float32)
        requests = {
            f"words say {s_new}": words,
            f"motion {MOTION_MEDIANS[s_new]:.2f}": {**cond, "motion": motion},
            f"both say {s_new}": {**words, "motion": motion},
        }
        for name, c_new in requests.items():
            xh = xt + to_velocity(model(xt, tt, c_new), xt, tt, prediction)
            vids = to_uint8(np.asarray(comps.autoencoder.decode(jnp.where(given, x1, xh))))
            size = np.linalg.norm(centroid_track(vids, clips, across=True)[:, -1], axis=-1)
            print(f"  {name:18s} " + "   ".join(
                f"{s} {size[speeds == s].mean():4.1f}" for s in SPEEDS), flush=True)  # fmt: skip
    vids = np.stack([
        pipe(c["caption"], image=c["video"][0], seed=j, motion_score=float(c["motion_score"]))
        for j, c in enumerate(clips)
    ])  # fmt: skip
    row("sampled", vids)


def caption_score(workdir: str, num: int = 16) -> None:
    import jax.numpy as jnp

    from stiv_jax.candidates import make_score_fn, score_levels, score_noise
    from stiv_jax.conditioning import make_conditions
    from stiv_jax.data.schema import normalize_uint8
    from stiv_jax.data.shapes import generate_clip
    from stiv_jax.pipeline import STIVPipeline

    pipe = STIVPipeline.from_workdir(workdir)
    config, comps = pipe.config, pipe.comps
    seed, res, frames = config.data.shapes.heldout_seed, config.data.res, config.data.frames
    clips = [generate_clip(i, split="heldout", seed=seed, res=res, frames=frames)
             for i in range(num)]  # fmt: skip
    x1 = comps.autoencoder.encode(
        jnp.asarray(normalize_uint8(np.stack([c["video"] for c in clips])))
    )
    b, f = x1.shape[:2]
    score = make_score_fn(config, pipe.graphdef)
    noise = score_noise(list(range(b)), x1.shape[1:], len(score_levels(config)))
    table = np.zeros((b, b))  # [video, caption]
    for j, c in enumerate(clips):
        emb = comps.text_encoder.encode([c["caption"]] * b)
        cond = make_conditions(
            latents=x1, cond_mask=jnp.zeros((b, f), bool), text_tokens=jnp.asarray(emb.tokens),
            text_mask=jnp.asarray(emb.mask), text_pooled=jnp.asarray(emb.pooled),
            micro=jnp.tile(jnp.asarray([res, res, 0, 0, 1.0], jnp.float32), (b, 1)),
            motion=jnp.full((b,), c["motion_score"], jnp.float32),
        )  # fmt: skip
        table[:, j] = np.asarray(score(pipe.params, x1, cond, comps.null_text, noise))
    own = np.diag(table)
    first = np.mean(table.argmax(0) == np.arange(b))
    above = np.mean((table > own[None, :]).sum(0))
    print(f"{workdir}: {b} held-out cases, levels {score_levels(config)}: a caption rates its "
          f"own video first in {first:.2f}; other videos above its own: {above:.2f} of {b - 1}")  # fmt: skip


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "probe",
        choices=(
            "spot",
            "memorise",
            "denoise",
            "heldout",
            "direction",
            "binding",
            "axes",
            "paths",
            "crossattn",
            "background",
            "trajectory",
            "pan",
            "interpolate",
            "switch",
            "distance",
            "speed",
            "caption_score",
            "phrasing",
        ),
    )
    ap.add_argument("--workdir", default="runs/memorise")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--set", action="append", default=[], help="config override a.b=v")
    ap.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
    ap.add_argument("--raw", action="store_true", help="raw weights instead of EMA")
    ap.add_argument("--num", type=int, default=None, help="clips (default: the probe's own)")
    ap.add_argument("--t2v", action="store_true", help="binding probe: T2V (no first frame)")
    ap.add_argument(
        "--swappable", action="store_true", help="binding probe: starts that fit either direction"
    )
    ap.add_argument("--scales", default="1,1.5", help="trajectory probe: guidance scales")
    ap.add_argument("--res", type=int, default=0, help="binding probe: resolution (0 = the run's)")
    ap.add_argument("--source", default="", help="interpolate, switch: the other run's workdir")
    ap.add_argument("--alpha", type=float, default=0.5, help="interpolate: the source's weight")
    ap.add_argument(
        "--groups", default=None, help="interpolate: regex of parameter paths (default '.'); "
        "distance: NAME=REGEX,... (default: text, spatial, temporal, mlp)"
    )  # fmt: skip
    ap.add_argument("--until", type=float, default=0.1, help="switch: S's weights while t < T")
    ap.add_argument("--tasks", default="ti2v", help="interpolate, switch, phrasing: tasks")
    ap.add_argument("--out", default="", help="interpolate, switch, phrasing: evaluation's dir")
    ap.add_argument("--templates", default="0,1", help="phrasing: training template indices")
    a = ap.parse_args()
    if a.probe == "interpolate":
        if not a.source or not a.out:
            ap.error("interpolate needs --source and --out")
        groups = a.groups or "."
        interpolate(a.workdir, a.source, a.alpha, a.out, groups, tuple(a.tasks.split(",")))
    elif a.probe == "switch":
        if not a.source or not a.out:
            ap.error("switch needs --source and --out")
        switch(a.workdir, a.source, a.until, a.out, tuple(a.tasks.split(",")))
    elif a.probe == "phrasing":
        if not a.out:
            ap.error("phrasing needs --out")
        phrasing(
            a.workdir,
            a.out,
            tuple(int(i) for i in a.templates.split(",")),
            tuple(a.tasks.split(",")),
        )
    elif a.probe == "distance":
        if not a.source:
            ap.error("distance needs --source")
        distance(a.workdir, a.source, a.groups or DISTANCE_GROUPS)
    elif a.probe == "spot":
        spot()
    elif a.probe == "caption_score":
        caption_score(a.workdir, a.num or 16)
    elif a.probe == "speed":
        speed(a.workdir, a.num or 12, a.step)
    elif a.probe == "paths":
        paths(a.workdir)
    elif a.probe == "direction":
        direction(a.workdir, a.num or 24, a.step)
    elif a.probe == "binding":
        binding(a.workdir, a.num or 24, a.step, a.t2v, a.swappable, a.res)
    elif a.probe == "axes":
        axes(a.workdir, a.num or 24, a.step, a.swappable)
    elif a.probe == "crossattn":
        crossattn(a.workdir, a.num or 24, a.step)
    elif a.probe == "background":
        background(a.workdir, a.num or 24, a.step)
    elif a.probe == "trajectory":
        trajectory(a.workdir, a.num or 16, tuple(float(v) for v in a.scales.split(",")))
    elif a.probe == "pan":
        pan(a.workdir, a.num or 16)
    elif a.probe == "memorise":
        memorise(a.workdir, a.steps, a.set)
    else:
        denoise(a.workdir, heldout=a.probe == "heldout", step=a.step, ema=not a.raw)
