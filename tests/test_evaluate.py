"""ShapesBench evaluator: ground truth at the ceiling, static baseline at the floor, wrong-way
motion scored wrong, `--videos` MP4 round trip with bad files skipped, and an end-to-end
sampling smoke test on a freshly initialised tiny checkpoint."""

import json
import math
import os

import numpy as np
import pytest

from stiv_jax import evaluate, metrics
from stiv_jax.data.shapes import DIRECTIONS, generate_clip
from stiv_jax.video import write_mp4

N_CASES = 24


@pytest.fixture(scope="module")
def config():
    from configs.stiv import get_config

    return get_config("variant=tiny")  # res 32, 8 frames: the evaluated ShapesBench size


@pytest.fixture(scope="module")
def cases(config):
    kw = evaluate.generator_kwargs(config)
    return {i: generate_clip(i, **kw) for i in range(N_CASES)}


def _x1(cases, transform, task="ti2v"):
    return {evaluate.Item(task, i, 1.0): transform(c["video"]) for i, c in cases.items()}


def test_plan_and_ids():
    items = evaluate.make_plan(3, multipliers=(2, 0.5, 1))
    ids = [it.id for it in items]
    assert ids[:3] == ["ti2v-0000-x0.5", "ti2v-0000-x1", "ti2v-0000-x2"]
    assert sum(it.task == "t2v" for it in items) == 3 and len(items) == 12
    assert all(evaluate.Item.from_id(i) == it for i, it in zip(ids, items))
    with pytest.raises(ValueError, match="video id 'ti2v-3'"):
        evaluate.Item.from_id("ti2v-3")
    with pytest.raises(ValueError, match="multipliers"):
        evaluate.make_plan(2, multipliers=(0.0,))


def test_ground_truth_as_model_scores_at_ceiling(cases):
    s = evaluate.score_task("ti2v", _x1(cases, lambda v: v), cases, codec=False)
    model, gt = s["rows"]["model"], s["rows"]["ground_truth"]
    assert model["direction_accuracy"] >= 0.98
    assert model["pan_accuracy"] >= 0.95 and model["size_accuracy"] >= 0.95
    assert model["first_frame_psnr"] == 100.0 and model["motion_control"] == pytest.approx(1.0)
    assert model["video_psnr"] == 100.0
    for key in evaluate.ADHERENCE_KEYS:  # the ceiling row is the same computation
        assert model[key] == pytest.approx(gt[key], nan_ok=True)


def test_static_video_scores_at_floor(cases):
    s = evaluate.score_task("ti2v", _x1(cases, metrics.static_baseline), cases, codec=False)
    model, floor = s["rows"]["model"], s["rows"]["static"]
    assert model["direction_accuracy"] <= 0.02 and model["dynamic_degree"] <= 0.02
    assert model["pan_accuracy"] <= 0.02 and abs(model["motion_control"]) < 0.3
    for key in evaluate.ADHERENCE_KEYS:
        assert model[key] == pytest.approx(floor[key], nan_ok=True)
    assert 20.0 < model["video_psnr"] < 40.0  # the background is right, the objects are not
    # A dynamic ground truth set: the floor is well below the ceiling on motion metrics.
    assert s["rows"]["ground_truth"]["dynamic_degree"] >= 0.8


def test_wrong_way_motion_scores_wrong(cases):
    mirrored = _x1(cases, lambda v: np.ascontiguousarray(v[:, :, ::-1]))  # x flipped
    s = evaluate.score_task("ti2v", mirrored, cases, codec=False)["rows"]["model"]
    # Only purely vertical motions survive a horizontal mirror.
    vertical = [
        o["motion"] in ("up", "down")
        for c in cases.values()
        for o in c["truth"]["objects"]
        if o["motion"] in DIRECTIONS
    ]
    assert s["direction_accuracy"] <= np.mean(vertical) + 0.02
    assert s["direction_accuracy"] < 0.7
    reversed_ = _x1(cases, lambda v: np.ascontiguousarray(v[::-1]))
    s = evaluate.score_task("ti2v", reversed_, cases, codec=False)["rows"]["model"]
    assert s["direction_accuracy"] <= 0.02 and s["pan_accuracy"] <= 0.02
    # Noise around the right frames scores below the static floor on video PSNR.
    rng = np.random.default_rng(0)
    noisy = _x1(cases, lambda v: np.clip(v + rng.normal(0, 40, v.shape), 0, 255).astype(np.uint8))
    rows = evaluate.score_task("ti2v", noisy, cases, codec=False)["rows"]
    assert rows["model"]["video_psnr"] < rows["static"]["video_psnr"] - 3.0


def test_motion_control_within_case(cases):
    """A 'model' whose motion grows with the request scores 1; one that ignores it, 0."""
    moving = {i: c for i, c in cases.items() if c["motion_score"] > 0.3}
    videos_ok, videos_flat = {}, {}
    for i, c in moving.items():
        v = c["video"]
        # Fewer distinct frames = less motion: x0.5 holds each frame twice, x2 is the clip.
        slow = np.repeat(v[: (len(v) + 1) // 2], 2, axis=0)[: len(v)]
        still = metrics.static_baseline(v)
        for m, video in ((0.5, still), (1.0, slow), (2.0, v)):
            videos_ok[evaluate.Item("ti2v", i, m)] = video
            videos_flat[evaluate.Item("ti2v", i, m)] = v
    ok = evaluate.score_task("ti2v", videos_ok, moving, codec=False)["rows"]["model"]
    flat = evaluate.score_task("ti2v", videos_flat, moving, codec=False)["rows"]["model"]
    assert ok["motion_control_within"] >= 0.95 and ok["motion_control"] > 0.5
    assert flat["motion_control_within"] == 0.0


def test_videos_mode_mp4_round_trip(config, cases, tmp_path):
    """GT MP4s (32 px, H.264 4:2:0) still track; bad and missing files are named and skipped."""
    vdir = tmp_path / "videos"
    gen = evaluate.generator_kwargs(config)
    ids = []
    for i in range(6):
        for task in ("ti2v", "t2v"):
            item = evaluate.Item(task, i, 1.0)
            write_mp4(str(vdir / f"{item.id}.mp4"), cases[i]["video"])
            if i % 2:  # half with a truth JSON, half resolved from the held-out split by id
                evaluate._write_json(
                    str(vdir / f"{item.id}.json"), evaluate.truth_record(cases[i], item, gen)
                )
            ids.append(item.id)
    (vdir / "ti2v-0009-x1.mp4").write_bytes(b"not a video")
    evaluate._write_json(
        str(vdir / "ti2v-0010-x1.json"),
        evaluate.truth_record(cases[10], evaluate.Item("ti2v", 10, 1.0), gen),
    )
    write_mp4(str(vdir / "clip.mp4"), cases[0]["video"])  # not named by a case id
    out = tmp_path / "report"
    report = evaluate.evaluate_dir(config, str(vdir), str(out))
    assert report["skipped"] == 3
    joined = "\n".join(report["errors"])
    for name in ("ti2v-0009-x1.mp4", "ti2v-0010-x1.mp4", "clip.mp4"):
        assert name in joined
    on_disk = json.loads((out / "scores.json").read_text())
    assert on_disk["skipped"] == 3 and set(on_disk["scores"]) == {"ti2v", "t2v"}
    ti2v = on_disk["scores"]["ti2v"]["rows"]
    assert ti2v["model"]["direction_accuracy"] >= 0.98  # the tracker survives compression
    assert ti2v["model"]["pan_accuracy"] in (None, 1.0)
    assert ti2v["model"]["first_frame_psnr"] > 30 and ti2v["model"]["motion_control"] > 0.9
    # Baselines carry the same codec, so the model (= ground truth here) matches the ceiling.
    assert ti2v["model"]["direction_accuracy"] == ti2v["ground_truth"]["direction_accuracy"]
    assert on_disk["scores"]["t2v"]["rows"]["model"]["first_frame_psnr"] is None
    md = (out / "scores.md").read_text()
    assert "| direction_accuracy |" in md and "## TI2V (6 cases" in md
    assert not [p for p in os.listdir(out) if p.endswith(".tmp")]


def test_cli_videos_mode(config, cases, tmp_path):
    vdir = tmp_path / "v"
    for i in range(3):
        write_mp4(str(vdir / f"ti2v-{i:04d}-x1.mp4"), cases[i]["video"])
    with pytest.raises(SystemExit) as e:
        evaluate.main(
            ["evaluate", "--config=configs/stiv.py:variant=tiny", f"--videos={vdir}",
             f"--out={tmp_path / 'r'}"]
        )  # fmt: skip
    assert e.value.code in (None, 0)
    report = json.loads((tmp_path / "r" / "scores.json").read_text())
    assert report["skipped"] == 0 and report["scores"]["ti2v"]["num_cases"] == 3


def test_sampling_smoke_on_fresh_tiny_checkpoint(tmp_path):
    """Fresh tiny model -> checkpoint -> evaluate_checkpoint writes videos and scores.json."""
    from configs.stiv import get_config
    from stiv_jax import checkpoint as ckpt
    from stiv_jax.optim import make_optimizer
    from stiv_jax.runtime import Components, fill_train_grid
    from stiv_jax.train import init_state

    config = get_config("variant=tiny")
    config.data.res, config.data.frames = 16, 4
    config.sample.steps, config.sample.batch_size = 2, 3
    fill_train_grid(config)
    comps = Components(config)
    _, state = init_state(comps.model(config.train.seed), make_optimizer(config.optim))
    mngr = ckpt.manager(str(tmp_path / "run"), max_to_keep=1, async_save=False)
    ckpt.save(mngr, 0, state, None, config, force=True)
    mngr.wait_until_finished()
    out = tmp_path / "eval"
    report = evaluate.evaluate_checkpoint(
        config, str(tmp_path / "run"), str(out), num_cases=1, multipliers=(0.5, 1.0)
    )
    names = sorted(os.listdir(out / "videos"))
    assert names == sorted(
        f"{it.id}.{ext}" for it in evaluate.make_plan(1, multipliers=(0.5, 1.0))
        for ext in ("json", "mp4")
    )  # fmt: skip
    saved = json.loads((out / "scores.json").read_text())
    assert saved["checkpoint_step"] == 0 and saved["skipped"] == 0
    ti2v = saved["scores"]["ti2v"]["rows"]["model"]
    # frame_replace keeps the given frame 0 clean and the pixel autoencoder is the identity:
    # only MP4 compression separates frame 0 from the condition image.
    assert ti2v["first_frame_psnr"] > 28
    assert ti2v["num_videos"] == 2 and report["scores"]["t2v"]["rows"]["model"]["num_videos"] == 1
    assert math.isfinite(report["scores"]["ti2v"]["rows"]["model"]["dynamic_degree"])


def test_application_tasks_and_long_video_on_a_fresh_tiny_checkpoint(tmp_path):
    """predict / interp / keyframes / long_extend / long_hier: sampled, scored, re-scored."""
    from configs.stiv import get_config
    from stiv_jax import checkpoint as ckpt
    from stiv_jax.optim import make_optimizer
    from stiv_jax.runtime import Components, fill_train_grid
    from stiv_jax.train import init_state
    from stiv_jax.video import read_mp4

    config = get_config("variant=tiny")
    config.data.res, config.data.frames = 16, 4
    config.sample.steps, config.sample.batch_size = 2, 2
    fill_train_grid(config)
    comps = Components(config)
    _, state = init_state(comps.model(config.train.seed), make_optimizer(config.optim))
    mngr = ckpt.manager(str(tmp_path / "run"), max_to_keep=1, async_save=False)
    ckpt.save(mngr, 0, state, None, config, force=True)
    mngr.wait_until_finished()
    tasks = ["predict", "interp", "keyframes", "long_extend", "long_hier"]
    report = evaluate.evaluate_checkpoint(
        config, str(tmp_path / "run"), str(tmp_path / "eval"), num_cases=2, tasks=tasks,
        long_frames=10,
    )  # fmt: skip
    scores = report["scores"]
    assert sorted(scores) == sorted(tasks) and report["skipped"] == 0
    # the case's own frames are given: the interp video's last frame is the case's (codec only)
    case = generate_clip(0, **evaluate.generator_kwargs(config))
    interp = read_mp4(str(tmp_path / "eval" / "videos" / "interp-0000-x1.mp4"))
    given, middle = (metrics.psnr(interp[f], case["video"][f]) for f in (-1, 1))
    assert given > 24 and given > middle + 5, (given, middle)  # the middle is generated
    ext, hier = scores["long_extend"], scores["long_hier"]
    assert ext["frames"] == 10 and ext["seams"] == [4, 6, 8] and hier["seams"] == [3, 6]
    assert read_mp4(str(tmp_path / "eval" / "videos" / "long_hier-0001-x1.mp4")).shape[0] == 10
    for row in ("static", "model", "ground_truth"):
        assert {"chunk3_direction_accuracy", *evaluate.SEAM_KEYS} <= set(ext["rows"][row])
    assert math.isfinite(ext["rows"]["ground_truth"]["seam_color_jump_ratio"])
    md = (tmp_path / "eval" / "scores.md").read_text()
    assert "## LONG_HIER" in md and "seam_track_jump_ratio" in md
    # the --videos mode re-scores the same directory to the same numbers
    again = evaluate.evaluate_dir(config, str(tmp_path / "eval" / "videos"), str(tmp_path / "r2"))
    assert again["skipped"] == 0
    a, b = again["scores"]["long_extend"]["rows"]["model"], ext["rows"]["model"]
    assert all(a[k] == b[k] or (math.isnan(a[k]) and math.isnan(b[k])) for k in b)
