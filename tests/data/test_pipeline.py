"""Grain pipeline: batch layout, determinism, exact resume, host sharding, held-out cases."""

import hashlib
import sys
import types

import numpy as np
import pytest

from configs.stiv import get_config
from stiv_jax.data.pipeline import heldout_cases, make_dataset
from stiv_jax.data.shapes import ShapesSource, generate_clip
from stiv_jax.data.tasks import TASKS, task_cond_mask

F = 4  # latent frames


def _config(**data):
    c = get_config("variant=tiny,res=16,frames=4")
    c.data.batch_size = 4
    c.data.shapes.num_train = 16
    for k, v in data.items():
        c.data[k] = v
    return c


def _take(it, n):
    return [next(it) for _ in range(n)]


def _equal(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def _hashes(batch):
    return [hashlib.sha1(v.tobytes()).hexdigest() for v in batch["video"]]


def test_batch_layout():
    b = next(iter(make_dataset(_config(), latent_frames=F)))
    assert b["video"].shape == (4, 4, 16, 16, 3) and b["video"].dtype == np.float32
    assert b["video"].min() >= -1.0 and b["video"].max() <= 1.0
    assert b["caption"].shape == (4,) and all(isinstance(c, str) and c for c in b["caption"])
    assert b["motion_score"].shape == (4,) and b["motion_score"].dtype == np.float32
    assert b["micro"].dtype == np.float32
    np.testing.assert_array_equal(b["micro"], np.tile([16, 16, 0, 0, 1], (4, 1)))
    assert b["cond_mask"].shape == (4, F) and b["cond_mask"].dtype == bool
    assert b["task"].shape == (4,) and b["task"].dtype == np.int32
    for task, mask in zip(b["task"], b["cond_mask"]):
        if TASKS[int(task)] == "keyframes":  # random positions
            assert 1 <= mask.sum() <= min(3, F - 1)
        else:
            np.testing.assert_array_equal(mask, task_cond_mask(int(task), F, 2))


def test_examples_are_the_generated_clips():
    b = next(iter(make_dataset(_config(), latent_frames=F)))
    clips = [generate_clip(i, res=16, frames=4) for i in range(16)]
    by_caption = {c["caption"]: c for c in clips}
    for video, caption, score in zip(b["video"], b["caption"], b["motion_score"]):
        clip = by_caption[str(caption)]
        np.testing.assert_array_equal(video, clip["video"].astype(np.float32) / 127.5 - 1.0)
        assert score == clip["motion_score"]


def test_same_seed_same_batches_other_seed_differs():
    a = _take(iter(make_dataset(_config(), latent_frames=F)), 3)
    b = _take(iter(make_dataset(_config(), latent_frames=F)), 3)
    c = _take(iter(make_dataset(_config(seed=1), latent_frames=F)), 3)
    assert all(_equal(x, y) for x, y in zip(a, b))
    assert not all(_equal(x, y) for x, y in zip(a, c))


def test_task_mix_follows_config():
    cfg = _config(task_probs={"t2v": 0.0, "ti2v": 0.0, "predict": 0.0, "interp": 1.0})
    b = _take(iter(make_dataset(cfg, latent_frames=F)), 2)
    assert all((x["task"] == TASKS.index("interp")).all() for x in b)
    tasks = np.concatenate(
        [x["task"] for x in _take(iter(make_dataset(_config(), latent_frames=F)), 8)]
    )
    assert len(set(tasks.tolist())) >= 3  # default mix 0.25/0.55/0.1/0.1 over 32 draws


def _samples_by_task(cfg, clips):
    """The pipeline's first 8 batches of `clips` as [(clip, caption, given)]: a sample given a
    frame carries its clip's `caption_given`, a text-only one its `caption` (a KeyError
    otherwise), and its clip's video; both kinds occur."""
    full = {c["caption"]: c for c in clips}
    frame_given = {c["caption_given"]: c for c in clips}
    out = []
    for b in _take(iter(make_dataset(cfg, latent_frames=F)), 8):
        for video, caption, mask in zip(b["video"], b["caption"], b["cond_mask"]):
            given = bool(mask.any())
            clip = (frame_given if given else full)[str(caption)]  # KeyError: the wrong caption
            np.testing.assert_array_equal(video, clip["video"].astype(np.float32) / 127.5 - 1.0)
            out.append((clip, str(caption), given))
    assert {given for *_, given in out} == {True, False}
    return out


def test_bg_drop_given_leaves_the_background_out_only_where_a_frame_is_given():
    """bg_drop_tasks=given: T2V samples keep the background phrase, samples with a given frame
    lose it (bg_drop=1: every index); the videos are unchanged."""
    cfg = _config()
    cfg.data.shapes.bg_drop, cfg.data.shapes.bg_drop_tasks = 1.0, "given"
    clips = [generate_clip(i, res=16, frames=4, caption_without_background=True) for i in range(16)]
    for clip, caption, given in _samples_by_task(cfg, clips):
        panned = clip["truth"]["camera"]["pan"] != "none"
        assert ("background" in caption) == (panned or not given), caption
    cfg.data.shapes.bg_drop_tasks = "t2v"
    with pytest.raises(ValueError, match="bg_drop_tasks='t2v'"):
        make_dataset(cfg, latent_frames=F)


def test_given_templates_paraphrase_only_where_a_frame_is_given():
    """given_templates=12: T2V samples keep their clip's caption, samples with a given frame
    train on the same scene in a phrasing from all 12 (some not the original three); the
    videos and the clips' own captions are unchanged, and an all-drill source ignores it."""
    cfg = _config()
    cfg.data.shapes.given_templates = 12
    clips = [generate_clip(i, res=16, frames=4, given_templates=12) for i in range(16)]
    plain = [generate_clip(i, res=16, frames=4) for i in range(16)]
    for c, p in zip(clips, plain):
        assert c["caption"] == p["caption"] and np.array_equal(c["video"], p["video"])
    assert any(c["truth"]["template_given"] >= 3 for c in clips)
    _samples_by_task(cfg, clips)  # the caption each sample trains on, by its task
    drill = ShapesSource(4, res=16, frames=4, drill=True, given_templates=12)
    assert "caption_given" not in drill[0]
    for bad in (-1, 13):
        with pytest.raises(ValueError, match=f"given_templates={bad}; expected 0"):
            ShapesSource(4, res=16, frames=4, given_templates=bad)


def test_resume_is_exact_across_epochs():
    it = iter(make_dataset(_config(), latent_frames=F))
    _take(it, 3)
    state = it.get_state()
    after = _take(it, 2)  # batches 4 and 5 cross the 16-clip epoch boundary
    fresh = iter(make_dataset(_config(), latent_frames=F))
    fresh.set_state(state)
    assert all(_equal(x, y) for x, y in zip(after, _take(fresh, 2)))


def test_resume_through_orbax_grain_handler(tmp_path):
    ocp = pytest.importorskip("orbax.checkpoint", reason="orbax-checkpoint is not installed")
    import grain

    it = iter(make_dataset(_config(), latent_frames=F))
    _take(it, 3)
    with ocp.CheckpointManager(tmp_path / "ckpt") as mngr:
        mngr.save(3, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it)))
        mngr.wait_until_finished()
        after = _take(it, 2)
        fresh = iter(make_dataset(_config(), latent_frames=F))
        mngr.restore(3, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(fresh)))
    assert all(_equal(x, y) for x, y in zip(after, _take(fresh, 2)))


def test_two_hosts_are_disjoint_and_cover_the_data():
    seen = []
    for host in range(2):
        it = iter(make_dataset(_config(), latent_frames=F, process_index=host, process_count=2))
        batches = _take(it, 4)  # 4 batches x 2 per host = the host's 8 of 16 clips
        assert all(b["video"].shape[0] == 2 for b in batches)
        seen.append({h for b in batches for h in _hashes(b)})
    assert len(seen[0]) == len(seen[1]) == 8
    assert not seen[0] & seen[1]
    # Hashes of the float video: map the generated uint8 clips the same way.
    videos = [generate_clip(i, res=16, frames=4)["video"] for i in range(16)]
    every = {
        hashlib.sha1((v.astype(np.float32) / 127.5 - 1.0).tobytes()).hexdigest() for v in videos
    }
    assert seen[0] | seen[1] == every


def test_multiprocess_workers_match_in_process():
    ref = _take(iter(make_dataset(_config(), latent_frames=F)), 3)
    it = iter(make_dataset(_config(num_workers=1), latent_frames=F))
    try:
        got = _take(it, 2)
        state = it.get_state()
        got.append(next(it))
    finally:
        it.close()
    assert all(_equal(x, y) for x, y in zip(ref, got))
    fresh = iter(make_dataset(_config(num_workers=1), latent_frames=F))
    try:
        fresh.set_state(state)
        assert _equal(next(fresh), ref[2])
    finally:
        fresh.close()


def test_heldout_cases_and_split():
    cfg = _config()
    cases = heldout_cases(cfg, 3)
    assert len(cases) == 3
    for i, case in enumerate(cases):
        ref = generate_clip(i, res=16, frames=4, split="heldout", seed=cfg.data.shapes.heldout_seed)
        assert case["caption"] == ref["caption"] and np.array_equal(case["video"], ref["video"])
        assert case["truth"]["split"] == "heldout" and case["truth"]["objects"]
    b = next(iter(make_dataset(cfg, latent_frames=F, split="heldout")))
    train = {generate_clip(i, res=16, frames=4)["caption"] for i in range(16)}
    assert not set(b["caption"].tolist()) & train


def test_records_source_dispatches(monkeypatch):
    calls = {}

    def records_dataset(config, *, latent_frames, split, process_index, process_count):
        calls.update(latent_frames=latent_frames, split=split, host=(process_index, process_count))
        return "records-ds"

    fake = types.ModuleType("stiv_jax.data.records")
    fake.records_dataset = records_dataset
    monkeypatch.setitem(sys.modules, "stiv_jax.data.records", fake)
    out = make_dataset(_config(source="records"), latent_frames=3, process_index=1, process_count=2)
    assert out == "records-ds"
    assert calls == {"latent_frames": 3, "split": "train", "host": (1, 2)}


@pytest.mark.parametrize(
    "data, kwargs, match",
    [
        ({"batch_size": 3}, {"process_count": 2}, "batch_size=3"),
        ({"source": "lmdb"}, {}, "source='lmdb'"),
        ({"predict_frames": 4}, {}, "predict_frames=4"),
        ({"task_probs": {"t2v": 1.0, "i2v": 1.0}}, {}, "i2v"),
        ({}, {"split": "test"}, "split='test'"),
        ({}, {"process_index": 2, "process_count": 2}, "process_index=2"),
    ],
)
def test_bad_config_errors(data, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_dataset(_config(**data), latent_frames=F, **kwargs)
