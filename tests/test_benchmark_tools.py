"""The quality benchmarks' own logic: per-object direction breakdown and the ablation tables."""

from __future__ import annotations

import json
import math
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks"))

import ablations  # noqa: E402
import eval_objects  # noqa: E402
import quality_probes  # noqa: E402
import step_profile  # noqa: E402
import train_step  # noqa: E402
import xla_cpu_ops  # noqa: E402

from stiv_jax.data.shapes import DIRECTIONS, generate_clip  # noqa: E402


def test_angle_error_is_the_smallest_angle_to_the_true_direction():
    dx, dy = DIRECTIONS["right"]
    assert eval_objects.angle_error(dx, dy, "right") == pytest.approx(0.0)
    assert eval_objects.angle_error(-dx, -dy, "right") == pytest.approx(180.0)
    ux, uy = DIRECTIONS["up"]
    assert eval_objects.angle_error(ux, uy, "up-right") == pytest.approx(45.0)
    assert eval_objects.angle_error(ux, uy, "down-left") == pytest.approx(135.0)
    assert math.isnan(eval_objects.angle_error(math.nan, 1.0, "up"))
    assert math.isnan(eval_objects.angle_error(0.0, 0.0, "up"))


def test_object_rows_of_ground_truth_clips_match_their_truth():
    rows = []
    for i in range(40):
        clip = generate_clip(i, split="heldout", seed=1_000_003, res=32, frames=8)
        rows += eval_objects.object_rows(clip["video"], clip)
    assert len(rows) >= 10
    exact = [r for r in rows if r["measured"] == r["truth"]]
    assert len(exact) >= 0.9 * len(rows)  # the evaluator scores ground truth ~1.0
    assert all(r["err"] < 22.5 for r in exact if r["pan"] == "none")
    assert {r["objects"] for r in rows} <= {1, 2}


def test_axis_fit_recovers_gain_and_drift_and_skips_lost_objects():
    true = [(4.0, -2.0), (-3.0, 5.0), (1.0, 1.0), (0.0, -6.0)]
    rows = [dict(true_dx=tx, true_dy=ty, dx=0.5 * tx + 0.2, dy=0.6 * ty + 1.5) for tx, ty in true]
    rows.append(dict(true_dx=9.0, true_dy=9.0, dx=math.nan, dy=math.nan))  # lost: not fitted
    fit = eval_objects.axis_fit(rows)
    assert fit["x"] == pytest.approx((0.5, 0.2)) and fit["y"] == pytest.approx((0.6, 1.5))
    assert all(math.isnan(v) for v in eval_objects.axis_fit(rows[:1])["x"])  # one object


def test_consistency_terms_multiply_to_the_evaluators_score():
    from stiv_jax import metrics

    clips = [generate_clip(i, split="heldout", seed=1_000_003, res=32, frames=8) for i in range(6)]
    terms = [t for c in clips for t in eval_objects.consistency_terms(c["video"], c["truth"])]
    score = metrics.evaluate_videos([c["video"] for c in clips], clips)["subject_consistency"]
    assert np.prod(terms, axis=1).mean() == pytest.approx(score)
    assert all(v == 1.0 for v, _, _ in terms)  # the truth keeps every object visible


def test_pixel_split_separates_still_and_changing_pixels():
    clip = np.zeros((3, 4, 4, 3), np.uint8)
    clip[1:, 0, 0] = 200  # one pixel changes after frame 0
    s = eval_objects.pixel_split(clip, clip)  # the truth itself: no error anywhere
    assert s["err_still"] == s["err_changing"] == 0.0
    assert s["still_share"] == pytest.approx(15 / 16) and s["floor_changing"] == 2 * 3 * 200**2
    video = clip.copy()
    video[1:, 3, 3] = 10  # an error on a still pixel only
    s = eval_objects.pixel_split(video, clip)
    assert s["err_still"] == 2 * 3 * 10**2 and s["err_changing"] == 0.0


def test_ablation_variant_sets_follow_the_base_config():
    def names(variant):
        ns = type("A", (), dict(recipe="mix", variant=variant, steps=10, seed=0, batch=8,
                                ema_decay=0.98, ode_steps=5))  # fmt: skip
        base = ablations.base_config(ns)
        return {
            n for n, o in ablations.VARIANTS.items() if not o or ablations.changes_base(base, o)
        }

    assert {"no_maskdit", "no_temporal_adaln", "channel_concat"} <= names("tiny")
    s = names("S")
    assert "maskdit" in s and "no_maskdit" not in s  # S does not mask: turning it off is a no-op


def test_ablation_main_recipe_is_the_readme_main_job_with_the_seed():
    import argparse

    from configs.stiv import get_config

    def args(**kw):
        base = dict(recipe="main", variant=None, steps=None, ema_decay=None, ode_steps=None,
                    seed=1, batch=8)  # fmt: skip
        return ablations.budget_args(argparse.Namespace(**{**base, **kw}))

    c = ablations.base_config(args())
    main = get_config("variant=S")
    assert tuple(c.train.prelude) == tuple(main.train.prelude) == ("drill:1000",)

    def get(config, dotted):
        for part in dotted.split("."):
            config = config[part]
        return config

    for field in ("train.steps", "optim.decay_steps", "optim.ema_decay", "sample.steps",
                  "data.shapes.drill_share", "diffusion.noisy_share", "model.key_shift",
                  "model.heads", "model.rope_theta"):  # fmt: skip
        assert get(c, field) == get(main, field), field
    assert c.train.seed == c.data.seed == 1
    readme_seed1 = ablations.base_config(args(data_seed=0))  # the README's second seed
    assert (readme_seed1.train.seed, readme_seed1.data.seed) == (1, 0)
    for bad in (dict(steps=400), dict(variant="tiny"), dict(ema_decay=0.9)):
        with pytest.raises(SystemExit, match="--recipe main is the README main job's own"):
            args(**bad)
    mix = ablations.budget_args(argparse.Namespace(recipe="mix", variant=None, steps=None,
                                                   ema_decay=None, ode_steps=7))  # fmt: skip
    assert (mix.variant, mix.steps, mix.ema_decay, mix.ode_steps) == ("tiny", 200, 0.98, 7)


def test_maskdit_equal_compute_scales_every_step_count_and_a_stopped_run_is_not_scored(
    tmp_path, monkeypatch
):
    import argparse

    args = ablations.budget_args(argparse.Namespace(recipe="main", variant=None, steps=None,
                                                    ema_decay=None, ode_steps=None, seed=0,
                                                    batch=8, out=str(tmp_path), rescore=False,
                                                    num_cases=1))  # fmt: skip
    masked, equal = ablations.base_config(args), ablations.base_config(args)
    ablations.apply(masked, ablations.VARIANTS["maskdit"])
    ablations.apply(equal, ablations.VARIANTS["maskdit_equal_compute"])
    assert (masked.train.steps, tuple(masked.train.prelude), masked.optim.decay_steps) == (
        870, ("drill:1000",), 200)  # fmt: skip
    assert (equal.train.steps, tuple(equal.train.prelude), equal.optim.decay_steps) == (
        1088, ("drill:1250",), 250)  # fmt: skip
    assert equal.model.mask_ratio == masked.model.mask_ratio == 0.5
    assert ablations.changes_base(ablations.base_config(args), {ablations.STEPS_SCALE: 1.25})

    # A run a signal stopped (it saved before its last step) is reported, not evaluated.
    from stiv_jax import evaluate, stages

    monkeypatch.setattr(stages, "run_prelude", lambda *a: False)
    monkeypatch.setattr(evaluate, "evaluate_checkpoint", lambda *a, **k: pytest.fail("scored"))
    with pytest.raises(SystemExit, match="maskdit stopped before step 870; run the same"):
        ablations.run_variant("maskdit", args)


def test_an_ablation_run_keeps_the_variants_of_earlier_runs_in_its_table(tmp_path, monkeypatch):
    def result(value):
        rows = {"model": {"direction_accuracy": value}, "static": {}, "ground_truth": {}}
        return {"budget": {"final_loss": value},
                "scores": {"scores": {"ti2v": {"rows": rows}, "t2v": {"rows": rows}}}}  # fmt: skip

    (tmp_path / "results.json").write_text(json.dumps({"baseline": result(0.5)}))
    monkeypatch.setattr(ablations, "run_variant", lambda name, args: result(0.25))
    monkeypatch.setattr(sys, "argv", ["ablations.py", "--out", str(tmp_path), "--only", "maskdit"])
    ablations.main()
    kept = json.loads((tmp_path / "results.json").read_text())
    assert set(kept) == {"baseline", "maskdit"}
    assert "| baseline |" in (tmp_path / "table.md").read_text()
    (tmp_path / "results.json").write_text("{not json")
    with pytest.raises(SystemExit, match="is not a results file"):
        ablations.main()


def test_combined_table_means_the_seeds(tmp_path):
    def sweep(name, value):
        rows = {"model": {"subject_consistency": value, "motion_control": value},
                "static": {"subject_consistency": 1.0}, "ground_truth": {}}  # fmt: skip
        res = {"baseline": {"budget": {"final_loss": value},
                            "scores": {"scores": {"ti2v": {"rows": rows}, "t2v": {"rows": rows}}}}}  # fmt: skip
        out = tmp_path / name
        out.mkdir()
        (out / "results.json").write_text(json.dumps(res))
        return str(out)

    table = ablations.combined_table([sweep("s0", 0.2), sweep("s1", 0.4)])
    assert "| baseline | 0.300 (0.200 / 0.400) | 0.300 (0.200 / 0.400) |" in table
    assert "| *static* | — | 1.000 |" in table


def test_still_breakdown_puts_a_uniform_colour_shift_in_the_offset():
    """A video that is the clip plus a constant colour: all of the still error is the
    per-video offset; plus zero-mean noise instead: none of it is."""
    clip = np.clip(generate_clip(3, res=16, frames=4)["video"], 10, 245)  # room to shift
    shifted = (clip.astype(np.int16) + np.array([6, -4, 2])).astype(np.uint8)
    r = eval_objects.still_breakdown(shifted, clip)
    assert r["err"] > 0 and r["offset"] == pytest.approx(r["err"])
    assert r["per_frame"].shape == (3, 2) and r["per_frame"][:, 0].sum() == pytest.approx(r["err"])
    sign = np.where(np.indices(clip.shape).sum(0) % 2 == 0, 5, -5)
    noisy = np.clip(clip.astype(np.int16) + sign, 0, 255).astype(np.uint8)
    r = eval_objects.still_breakdown(noisy, clip)
    assert r["offset"] < 0.05 * r["err"]


def test_kind_psnr_splits_pans_plain_and_textured_cases(capsys):
    """`case_kind` names pans first, then plain vs textured backgrounds; `print_kind_psnr`
    prints the mean per-case PSNR of frames 1.. against the static floor's, per kind."""
    kinds = [
        eval_objects.case_kind({"camera": {"pan": p}, "background": {"kind": k}})
        for p, k in (("left", "plain"), ("none", "plain"), ("none", "checker"))
    ]
    assert kinds == ["pan", "plain", "textured"]
    rng = np.random.default_rng(0)
    clip = rng.integers(0, 256, (4, 8, 8, 3)).astype(np.uint8)
    off = np.clip(clip.astype(int) + 1, 0, 255).astype(np.uint8)  # one level off everywhere
    floor = np.broadcast_to(clip[:1], clip.shape)  # the static floor itself
    eval_objects.print_kind_psnr([("plain", off, clip), ("textured", floor, clip)])
    line = capsys.readouterr().out
    want = eval_objects.psnr_of(np.mean((floor[1:].astype(float) - clip[1:]) ** 2), 1)
    one_off = eval_objects.psnr_of(np.mean((off[1:].astype(float) - clip[1:]) ** 2), 1)
    assert one_off > 48  # one level off (a few pixels clip at 255)
    assert f"plain {one_off:.2f} / {want:.2f} (1), textured {want:.2f} / {want:.2f} (1)" in line


def test_centroid_track_of_a_true_clip_is_its_speed_times_frames():
    from stiv_jax.data.shapes import SPEEDS

    clips = []
    for i in range(200):
        c = generate_clip(i, split="heldout", seed=1_000_003, res=32, frames=8,
                          textured=False, camera_pan=False)  # fmt: skip
        objs = c["truth"]["objects"]
        if len(objs) == 1 and objs[0]["motion"] in DIRECTIONS:
            clips.append(c)
        if len(clips) == 6:
            break
    track = quality_probes.centroid_track(np.stack([c["video"] for c in clips]), clips)
    assert track.shape == (6, 8) and np.all(track[:, 0] == 0)
    want = np.array([SPEEDS[c["truth"]["objects"][0]["speed"]] * 32 for c in clips])
    # the mass centroid moves along the true direction at the clip's rate, frame by frame
    np.testing.assert_allclose(track, want[:, None] * np.arange(8), atol=0.35)
    # the opposite direction's video reads as moving backwards
    back = quality_probes.centroid_track(np.stack([c["video"][::-1] for c in clips]), clips)
    np.testing.assert_allclose(back[:, -1], -track[:, -1], atol=0.35)


def test_quality_probes_binding_uses_the_library_probe():
    from stiv_jax import binding

    # One place for the probe (stiv_jax/binding.py, tests/test_binding.py); the benchmark prints it.
    assert quality_probes.swap_directions is binding.swap_directions
    assert quality_probes.object_cosine is binding.object_cosine


def test_axis_summary_counts_kept_and_added_components_and_the_moved_share():
    def row(truth, measured, dx, dy, tdx, tdy):
        return dict(truth=truth, measured=measured, dx=dx, dy=dy, true_dx=tdx, true_dy=tdy)

    rows = [
        row("up-right", "right", 4.0, -1.0, 4.0, -4.0),  # keeps x, drops y
        row("up", "up-left", -2.0, -3.0, 0.0, -6.0),  # keeps y, adds x
        row("left", "lost", math.nan, math.nan, -6.0, 0.0),  # lost: not kept, not moved
    ]
    s = eval_objects.axis_summary(rows)
    assert s["x"]["objects"] == 2 and s["x"]["kept"] == 0.5  # up-right kept, lost not
    assert s["x"]["added"] == 1.0  # the one object without x ("up") gained it
    assert s["x"]["gain"] == pytest.approx(4.0 / 4.0)  # the lost object has no track
    assert s["y"]["objects"] == 2 and s["y"]["kept"] == 0.5 and s["y"]["added"] == 0.0
    assert s["y"]["gain"] == pytest.approx((1.0 + 3.0) / (4.0 + 6.0))  # up is -y: signs match
    assert math.isnan(eval_objects.axis_summary([])["x"]["kept"])
    # along the truth: (4·4 + 1·4) / 32 and (3·6) / 36 pooled; the lost object left out
    assert eval_objects.along_gain(rows) == pytest.approx((20.0 + 18.0) / (32.0 + 36.0))
    assert math.isnan(eval_objects.along_gain(rows[2:]))


def test_step_profile_reads_each_ops_primitive_and_callers_from_the_compiled_module():
    import jax
    import jax.numpy as jnp

    def inner(x):
        return jnp.sin(x) @ x

    def outer(x):
        return inner(x) * 2.0

    text = jax.jit(outer).lower(jnp.ones((8, 8))).compile().as_text()
    ops, frames = step_profile.parse_module(text)
    sin = [v for v in ops.values() if v[0] == "sin"]
    assert sin and {v[1] for v in sin} == {"other"}  # no jvp: neither forward nor backward
    chains = [step_profile.caller_chain(v[2], frames) for v in sin]
    assert any(c[:2] == [inner.__qualname__, outer.__qualname__] for c in chains), chains
    assert step_profile.kind_of("dot_general") == "GEMM"
    assert step_profile.kind_of("reduce_max") == "reduction"
    assert step_profile.kind_of("concatenate") == "layout"
    assert step_profile.kind_of("tanh") == "elementwise"
    frames = {"1": ("MLP.__call__", "2"), "2": ("STIV.caption_tokens", "0")}  # id: (func, caller)
    assert step_profile.part_of("1", frames) == "caption tokens, word pieces"


def test_xla_cpu_ops_times_the_same_math_on_both_sides():
    """Each op of the XLA-vs-PyTorch micro-benchmark: equal outputs and input gradients."""
    torch = pytest.importorskip("torch")
    import jax
    import jax.numpy as jnp

    for name, (jfn, tfn, shapes, nbytes) in xla_cpu_ops.ops().items():
        rng = np.random.default_rng(0)
        args = [rng.standard_normal(s).astype(np.float32) for s in shapes]
        out = np.asarray(jfn(*map(jnp.asarray, args)))
        cot = rng.standard_normal(out.shape).astype(np.float32)
        grads = jax.grad(lambda *a, f=jfn, c=cot: jnp.sum(f(*a) * c), tuple(range(len(args))))(
            *map(jnp.asarray, args)
        )
        targs = [torch.tensor(a, requires_grad=True) for a in args]
        tout = tfn(*targs)
        tout.backward(torch.tensor(cot))
        np.testing.assert_allclose(out, tout.detach().numpy(), rtol=1e-4, atol=1e-4, err_msg=name)
        for g, t in zip(grads, targs):
            np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-3, atol=1e-3, err_msg=name)
        assert nbytes > 0


def test_train_step_offline_text_leaves_no_caption_for_the_loop_to_encode(tmp_path, capsys):
    """`--text offline`: every caption a loop round draws (with the prefetch look-ahead) is
    encoded before it, so the loop encodes none; online, it encodes each batch's."""
    from configs.stiv import get_config
    from stiv_jax.runtime import Components, fill_train_grid

    c = get_config("variant=tiny,res=16,frames=4")
    c.data.batch_size, c.data.shapes.num_train = 2, 64
    fill_train_grid(c)
    comps = Components(c)
    counts = {}
    for mode in ("offline", "online"):
        sec = train_step.loop_step_s(
            c, comps, 1, str(tmp_path / mode), data_seed=7 if mode == "offline" else 8,
            text_offline=mode == "offline",
        )  # fmt: skip
        assert sec > 0
        counts[mode] = int(capsys.readouterr().out.split("loop encoded ")[1].split()[0])
    assert counts["offline"] == 0 and counts["online"] >= 2 * 2  # two steps of two captions
    chain = train_step.encoder_chain(comps.text_encoder)  # down to the caching model
    assert chain[-1].cache_size == c.text_encoder.cache_size > 0
