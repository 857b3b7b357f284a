"""ShapesBench generator: determinism, splits, ground truth against the pixels, options."""

import collections
import dataclasses
import re

import cv2
import numpy as np
import pytest

from stiv_jax.data import captions, shapes
from stiv_jax.data.motion import motion_score
from stiv_jax.data.shapes import ShapesSource, generate_clip


def _mask(frame: np.ndarray, rgb) -> np.ndarray:
    return np.linalg.norm(frame.astype(np.float32) - np.asarray(rgb, np.float32), axis=-1) < 40


def _same(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return bool(np.array_equal(a, b))


def test_deterministic_by_seed_split_index():
    a, b = generate_clip(5), generate_clip(5)
    assert _same(a, b)
    assert not np.array_equal(a["video"], generate_clip(5, seed=1)["video"])
    assert not np.array_equal(a["video"], generate_clip(6)["video"])
    assert not np.array_equal(a["video"], generate_clip(5, split="heldout")["video"])


@pytest.mark.parametrize("res, frames", [(16, 1), (32, 8), (64, 16), (32, 17)])
def test_shapes_dtypes_and_score(res, frames):
    clip = generate_clip(3, res=res, frames=frames)
    assert clip["video"].shape == (frames, res, res, 3) and clip["video"].dtype == np.uint8
    assert isinstance(clip["caption"], str) and clip["caption"]
    assert clip["motion_score"].dtype == np.float32
    expect = motion_score(clip["video"], interval=2) if frames > 1 else 0.0
    assert clip["motion_score"] == pytest.approx(expect, abs=1e-6)
    for obj in clip["truth"]["objects"]:
        for key in ("x", "y", "size", "area"):
            assert obj[key].shape == (frames,)


def test_heldout_uses_disjoint_templates():
    def skeleton(tpl):  # the fixed words of every phrasing of a template
        return {getattr(tpl, f.name) for f in dataclasses.fields(tpl)}

    train = set().union(*(skeleton(t) for t in captions.TRAIN_TEMPLATES))
    held = set().union(*(skeleton(t) for t in captions.HELDOUT_TEMPLATES))
    assert not train & held
    caps = {s: {generate_clip(i, split=s)["caption"] for i in range(40)} for s in shapes.SPLITS}
    assert not caps["train"] & caps["heldout"]
    tpls = {generate_clip(i, split="heldout")["truth"]["template"] for i in range(40)}
    assert tpls == set(range(len(captions.HELDOUT_TEMPLATES)))


def test_paraphrase_templates_keep_the_heldout_phrasings_unseen():
    """`templates=N` draws training captions from the first N phrasings; the default is the
    original three (clips unchanged); no training template uses a held-out template's own
    words (function words aside), so the evaluator's phrasings stay unseen."""

    def words(tpls):
        fields = [getattr(t, f.name) for t in tpls for f in dataclasses.fields(t)]
        return set(re.findall(r"[a-z]+", re.sub(r"\{[a-z_]+\}", " ", " ".join(fields))))

    base = captions.TRAIN_TEMPLATES[: captions.BASE_TEMPLATES]
    held_own = words(captions.HELDOUT_TEMPLATES) - words(base) - {"at", "by", "in", "is", "that"}
    assert held_own and not held_own & words(captions.TRAIN_TEMPLATES)
    n = len(captions.TRAIN_TEMPLATES)
    used = collections.Counter(
        generate_clip(i, templates=n)["truth"]["template"] for i in range(400)
    )
    assert set(used) == set(range(n))
    for i in range(6):  # the default is the original draw, the held-out split ignores it
        a, b = generate_clip(i), generate_clip(i, templates=captions.BASE_TEMPLATES)
        assert a["caption"] == b["caption"] and np.array_equal(a["video"], b["video"])
        assert (
            generate_clip(i, split="heldout", templates=n)["caption"]
            == generate_clip(i, split="heldout")["caption"]
        )
    src = ShapesSource(10, templates=n)
    assert src[3]["caption"] == generate_clip(3, templates=n)["caption"]
    for bad in (0, n + 1):
        with pytest.raises(ValueError, match=f"templates={bad}; expected 1 to {n}"):
            ShapesSource(10, templates=bad)


def test_truth_matches_pixels_and_stays_in_frame():
    res = 64
    checked = 0
    ys, xs = np.mgrid[0:res, 0:res]
    for i in range(60):
        clip = generate_clip(i, res=res, frames=8, textured=False)
        bg = np.asarray(clip["truth"]["background"]["rgb"], np.float32)
        objs = clip["truth"]["objects"]
        for obj in objs:
            s = obj["size"]
            assert np.all(obj["x"] >= s - 1e-3) and np.all(obj["x"] <= res - 1 - s + 1e-3)
            assert np.all(obj["y"] >= s - 1e-3) and np.all(obj["y"] <= res - 1 - s + 1e-3)
            if len(objs) > 1:
                continue  # the soft coverage below assumes one object over the background
            for f in (0, 7):
                # Coverage of each pixel by the object, from its blend between bg and colour.
                d = np.asarray(obj["rgb"], np.float32) - bg
                alpha = (clip["video"][f].astype(np.float32) - bg) @ d / (d @ d)
                area = alpha.sum()
                # 4x4 supersampling puts straight edges within 1/8 px: <= ~4% area, 0.15 px.
                assert area == pytest.approx(obj["area"][f], rel=0.04)
                assert (alpha * xs).sum() / area == pytest.approx(obj["x"][f], abs=0.15)
                assert (alpha * ys).sum() / area == pytest.approx(obj["y"][f], abs=0.15)
                # A hard colour threshold (what trackers use) still finds the centre.
                m = _mask(clip["video"][f], obj["rgb"])
                assert xs[m].mean() == pytest.approx(obj["x"][f], abs=0.6)
                assert ys[m].mean() == pytest.approx(obj["y"][f], abs=0.6)
                checked += 1
    assert shapes.shape_area("square", 2.0) == 16.0
    assert checked >= 40


def test_motions_follow_their_captions():
    res, n = 64, 8
    seen = collections.Counter()
    for i in range(200):
        truth = generate_clip(i, res=res, frames=n, camera_pan=False)["truth"]
        for obj in truth["objects"]:
            motion, speed = obj["motion"], obj["speed"]
            seen[motion] += 1
            dx, dy = obj["x"][-1] - obj["x"][0], obj["y"][-1] - obj["y"][0]
            if motion in shapes.DIRECTIONS:
                ux, uy = shapes.DIRECTIONS[motion]
                dist = np.hypot(dx, dy)
                assert (dx * ux + dy * uy) / dist == pytest.approx(1.0, abs=1e-4)
                # 8 frames at 64 px always fit the nominal speed.
                assert dist / (n - 1) == pytest.approx(shapes.SPEEDS[speed] * res, rel=1e-4)
            else:
                assert abs(dx) < 1e-4 and abs(dy) < 1e-4
            growth = obj["size"][-1] - obj["size"][0]
            sign = {"grow": 1, "shrink": -1}.get(motion, 0)
            assert np.sign(round(float(growth), 4)) == sign
    assert set(seen) == set(shapes.MOTIONS)


def test_camera_pan_moves_background_and_objects():
    found = 0
    for i in range(300):
        clip = generate_clip(i, res=64, frames=8)
        cam = clip["truth"]["camera"]
        if cam["pan"] == "none":
            continue
        found += 1
        assert "pan" in clip["caption"] or "camera" in clip["caption"]
        ux, uy = shapes.DIRECTIONS[cam["pan"]]
        offset = cam["offset"]
        assert offset[-1] == pytest.approx(np.array([ux, uy]) * cam["rate"] * 7, abs=1e-3)
        # The background moves against the pan: phase correlation of frame 0 -> last.
        a, b = (cv2.cvtColor(clip["video"][f], cv2.COLOR_RGB2GRAY) for f in (0, -1))
        (sx, sy), _ = cv2.phaseCorrelate(a.astype(np.float32), b.astype(np.float32))
        assert np.hypot(sx + offset[-1, 0], sy + offset[-1, 1]) < 1.0
        for obj in clip["truth"]["objects"]:
            assert obj["motion"] == "still"
            assert obj["x"][-1] - obj["x"][0] == pytest.approx(-offset[-1, 0], abs=1e-3)
            assert obj["y"][-1] - obj["y"][0] == pytest.approx(-offset[-1, 1], abs=1e-3)
        if found >= 6:
            break
    assert found >= 6


def test_options_and_coverage():
    kinds, colors, shp, nobj = set(), set(), set(), set()
    for i in range(150):
        t = generate_clip(i, textured=False)["truth"]
        assert t["background"]["kind"] == "plain" and t["camera"]["pan"] == "none"
        t = generate_clip(i, camera_pan=False)["truth"]
        assert t["camera"]["pan"] == "none"
        kinds.add(t["background"]["kind"])
        nobj.add(len(t["objects"]))
        for o in t["objects"]:
            colors.add(o["color"])
            shp.add(o["shape"])
        if len(t["objects"]) == 2:
            assert t["objects"][0]["color"] != t["objects"][1]["color"]
    assert kinds == set(shapes.TEXTURES) and colors == set(shapes.COLORS)
    assert shp == set(shapes.SHAPES) and nobj == {1, 2}


def test_frame_stride_keeps_every_kth_rendered_frame():
    strided = generate_clip(4, frames=5, frame_stride=2)
    full = generate_clip(4, frames=9)
    assert np.array_equal(strided["video"], full["video"][::2])
    assert strided["caption"] == full["caption"]


def test_source_and_errors():
    src = ShapesSource(10, res=16, frames=4)
    assert len(src) == 10
    assert np.array_equal(src[3]["video"], generate_clip(3, res=16, frames=4)["video"])
    with pytest.raises(IndexError, match="10"):
        src[10]
    with pytest.raises(ValueError, match="split='test'"):
        generate_clip(0, split="test")
    with pytest.raises(ValueError, match="res=8"):
        generate_clip(0, res=8)
    with pytest.raises(ValueError, match="num=0"):
        ShapesSource(0)


def test_long_heldout_clips_generate():
    """64-frame clips (the evaluator's long-video cases): a track scaled to fill the frame
    left an empty start range that rounding inverted (numpy: high - low < 0)."""
    from configs.stiv import get_config
    from stiv_jax.evaluate import generator_kwargs

    kw = generator_kwargs(get_config("variant=S"), 64)
    for i in range(8):
        clip = generate_clip(i, **kw)
        assert clip["video"].shape == (64, 32, 32, 3)


def test_small_config_text_length_covers_every_shapesbench_caption():
    """The S/tiny text length must not cut ShapesBench captions (32 tokens cut 14% of the
    held-out ones: their backgrounds were never seen)."""
    from configs.stiv import get_config
    from stiv_jax.encoders.minilm import packaged_minilm_dir
    from stiv_jax.encoders.tokenizer import Tokenizer

    config = get_config("variant=S")
    tok = Tokenizer.from_dir(packaged_minilm_dir(), config.text_encoder.max_length)
    for split, seed in (("train", 0), ("heldout", config.data.shapes.heldout_seed)):
        caps = [generate_clip(i, split=split, seed=seed)["caption"] for i in range(400)]
        tok(caps)
    assert tok.truncated == 0


def test_small_config_word_bag_gives_every_direction_word_its_own_bucket():
    """The S word bag (text_encoder.word_bag) must not hash a direction word into the bucket
    of another ShapesBench word: the model would read "left" and, say, "red" as one word."""
    from configs.stiv import get_config
    from stiv_jax.data.captions import DIRECTION_WORDS
    from stiv_jax.encoders.minilm import packaged_minilm_dir
    from stiv_jax.encoders.tokenizer import Tokenizer

    buckets = get_config("variant=S").text_encoder.word_bag
    assert buckets > 0
    tok = Tokenizer.from_dir(packaged_minilm_dir(), 64)
    caps = [generate_clip(i, split=s)["caption"] for s in ("train", "heldout") for i in range(300)]
    ids, mask = tok(caps)
    words = {int(i) for i in np.asarray(ids)[np.asarray(mask, bool)]}
    for word in ("left", "right", "up", "down"):
        (wid,) = np.asarray(tok([word])[0])[0, 1:2]  # [CLS] word [SEP]
        assert int(wid) in words, word
        others = {w for w in words - {int(wid)} if w % buckets == wid % buckets}
        assert not others, f"{word!r} shares bucket {wid % buckets} with ids {others}"
    assert {"left", "up and to the left"} <= set(DIRECTION_WORDS.values())


def test_drill_clips_start_where_every_direction_fits():
    """The drill's start position carries no direction: the track of each clip would stay in
    frame in all 8 directions; the default placement does not have that property."""
    res, frames = 32, 8
    seen, default_unfit = set(), 0
    for i in range(60):
        c = generate_clip(i, res=res, frames=frames, drill=True)
        (o,) = c["truth"]["objects"]
        assert o["motion"] in shapes.DIRECTIONS and o["speed"] in shapes.DRILL_SPEEDS
        assert c["truth"]["background"]["kind"] == "plain" and c["truth"]["camera"]["pan"] == "none"
        assert captions.DIRECTION_WORDS[o["motion"]] in c["caption"]
        seen.add(o["motion"])
        h, reach = float(o["size"].max()), float(np.hypot(*o["velocity"])) * (frames - 1)
        for dx, dy in shapes.DIRECTIONS.values():
            x, y = o["x"][0] + dx * reach, o["y"][0] + dy * reach
            assert h - 1e-3 <= x <= res - 1 - h + 1e-3 and h - 1e-3 <= y <= res - 1 - h + 1e-3
        d = generate_clip(i, res=res, frames=frames, textured=False, camera_pan=False)
        for o in d["truth"]["objects"]:
            h, reach = float(o["size"].max()), float(np.hypot(*o["velocity"])) * (frames - 1)
            ends = [
                (o["x"][0] + dx * reach, o["y"][0] + dy * reach)
                for dx, dy in shapes.DIRECTIONS.values()
            ]
            default_unfit += any(
                not (h <= x <= res - 1 - h and h <= y <= res - 1 - h) for x, y in ends
            )
    assert seen == set(shapes.DIRECTIONS)
    assert default_unfit > 10  # the prior the drill removes exists in the default placement
    assert ShapesSource(4, drill=True)[0]["caption"] == generate_clip(0, drill=True)["caption"]


def _fits_every_direction(o: dict, res: int, frames: int) -> bool:
    h, reach = float(o["size"].max()), float(np.hypot(*o["velocity"])) * (frames - 1)
    ends = [
        (o["x"][0] + dx * reach, o["y"][0] + dy * reach) for dx, dy in shapes.DIRECTIONS.values()
    ]
    lo, hi = h - 1e-3, res - 1 - h + 1e-3
    return all(lo <= x <= hi and lo <= y <= hi for x, y in ends)


def test_free_start_places_tracks_direction_free_and_changes_nothing_else():
    """`free_start`: translating objects under a still camera start where their track fits
    in every direction (most of them; a second object that keeps touching the first falls
    back), where the default placement leaves most fast ones hinting at their direction.
    The clip's other draws (caption, colours, speeds, background) are the default clip's."""
    res, frames = 32, 8
    counts = {False: [0, 0], True: [0, 0]}  # free_start -> [direction-free, fast objects]
    for i in range(150):
        d, c = generate_clip(i), generate_clip(i, free_start=True)
        assert c["caption"] == d["caption"]
        assert c["truth"]["background"] == d["truth"]["background"]
        for clip, free in ((d, False), (c, True)):
            if clip["truth"]["camera"]["pan"] != "none":
                continue
            for o in clip["truth"]["objects"]:
                if o["speed"] == "fast" and o["motion"] in shapes.DIRECTIONS:
                    counts[free][0] += _fits_every_direction(o, res, frames)
                    counts[free][1] += 1
        if c["truth"]["camera"]["pan"] != "none" or len(c["truth"]["objects"]) == 1:
            if c["truth"]["camera"]["pan"] == "none":  # alone: always direction-free
                assert _fits_every_direction(c["truth"]["objects"][0], res, frames)
            else:  # a pan keeps the default placement
                np.testing.assert_array_equal(c["video"], d["video"])
    free, n = counts[True]
    assert n > 20 and free >= 0.7 * n and counts[False][0] <= 0.2 * n
    src = ShapesSource(64, free_start=0.5)
    picked = [generate_clip(i, free_start=True)["video"] for i in range(64)]
    same = sum(np.array_equal(src[i]["video"], picked[i]) for i in range(64))
    assert 16 <= same <= 48  # about half the indices (moving objects differ in the rest)
    with pytest.raises(ValueError, match="free_start=1.5"):
        ShapesSource(4, free_start=1.5)


def test_binding_drill_has_two_objects_with_different_directions():
    seen = set()
    for i in range(40):
        c = generate_clip(i, drill=True, drill_objects=2)
        a, b = c["truth"]["objects"]
        assert a["motion"] != b["motion"] and {a["motion"], b["motion"]} <= set(shapes.DIRECTIONS)
        assert a["color"] != b["color"] and a["speed"] in shapes.DRILL_SPEEDS
        assert c["truth"]["background"]["kind"] == "plain" and c["truth"]["camera"]["pan"] == "none"
        for o in (a, b):  # the caption names both objects' directions
            assert (
                captions.DIRECTION_WORDS[o["motion"]] in c["caption"] and o["color"] in c["caption"]
            )
        seen |= {a["motion"], b["motion"]}
    assert seen == set(shapes.DIRECTIONS)
    one = generate_clip(3, drill=True, drill_objects=1)  # the one-object drill is unchanged
    assert one["caption"] == generate_clip(3, drill=True)["caption"]
    np.testing.assert_array_equal(one["video"], generate_clip(3, drill=True)["video"])
    with pytest.raises(ValueError, match="drill_objects=3"):
        generate_clip(0, drill=True, drill_objects=3)
    with pytest.raises(ValueError, match="ShapesSource drill_objects=0"):
        ShapesSource(8, drill=True, drill_objects=0)
    src = ShapesSource(8, drill=True, drill_objects=2)
    assert len(src[0]["truth"]["objects"]) == 2


def _swap_fits(c: dict) -> bool:
    """Whether the clip's starts also fit the swapped directions (in frame, never touching)."""
    a, b = c["truth"]["objects"]
    t = np.arange(c["truth"]["frames"])
    res = c["truth"]["res"]
    moved = []
    for o, v in ((a, b["velocity"]), (b, a["velocity"])):
        x, y = o["x"][0] + v[0] * t, o["y"][0] + v[1] * t
        h = float(o["size"].max())
        if min(x.min(), y.min()) < h - 1e-4 or max(x.max(), y.max()) > res - 1 - h + 1e-4:
            return False
        moved.append({"x": x, "y": y, "size": o["size"]})
    return not shapes._overlap(*moved) and not shapes._overlap(a, b)


def test_swappable_binding_drill_starts_fit_either_assignment():
    default = [generate_clip(i, drill=True, drill_objects=2) for i in range(60)]
    assert np.mean([_swap_fits(c) for c in default]) < 0.7  # the default starts often tell
    pairs = set()
    for i in range(60):
        c = generate_clip(i, drill=True, drill_objects=2, drill_swappable=True)
        a, b = c["truth"]["objects"]
        assert a["motion"] != b["motion"] and a["speed"] in shapes.DRILL_SPEEDS
        assert _swap_fits(c), c["caption"]
        for o in (a, b):  # its own track is the one drawn: start + velocity * t
            v = o["velocity"]
            np.testing.assert_allclose(o["x"], o["x"][0] + v[0] * np.arange(8), atol=1e-4)
            np.testing.assert_allclose(o["y"], o["y"][0] + v[1] * np.arange(8), atol=1e-4)
        pairs.add(frozenset((a["motion"], b["motion"])))
    assert len(pairs) >= 20  # of the 28 direction pairs: none is ruled out
    # Off, or outside the binding drill, the flag changes nothing.
    for kw in ({"drill": True}, {}):
        np.testing.assert_array_equal(
            generate_clip(4, drill_swappable=True, **kw)["video"], generate_clip(4, **kw)["video"]
        )
    src = ShapesSource(8, drill=True, drill_objects=2, drill_swappable=True)
    assert (
        src[2]["caption"]
        == generate_clip(2, drill=True, drill_objects=2, drill_swappable=True)["caption"]
    )
    with pytest.raises(ValueError, match="no swappable starts"):
        generate_clip(0, frames=30, drill=True, drill_objects=2, drill_swappable=True)


def test_drill_speeds_draw_the_mix_speeds_and_the_score_follows():
    """drill_speeds="slow,medium,fast": every speed in the drill, the motion score ordered by it."""
    scores: dict[str, list[float]] = {s: [] for s in shapes.SPEEDS}
    for i in range(60):
        c = generate_clip(
            i, drill=True, drill_objects=2, drill_swappable=True, drill_speeds="slow,medium,fast"
        )
        a, b = c["truth"]["objects"]
        assert a["motion"] != b["motion"] and _swap_fits(c), c["caption"]
        if a["speed"] == b["speed"]:
            scores[a["speed"]].append(float(c["motion_score"]))
    means = [np.mean(scores[s]) for s in ("slow", "medium", "fast")]
    assert all(scores.values()) and means[0] < means[1] < means[2], means
    # The default is the fast drill, bit for bit; the config's string reaches the clips.
    np.testing.assert_array_equal(
        generate_clip(5, drill=True, drill_speeds="fast")["video"],
        generate_clip(5, drill=True)["video"],
    )
    from configs.stiv import get_config

    config = get_config("variant=S,stage=drill")
    config.data.shapes.drill_speeds = "slow, fast"
    assert shapes.config_kwargs(config)["drill_speeds"] == ("slow", "fast")
    with pytest.raises(ValueError, match="drill_speeds='fast,zoom'"):
        generate_clip(0, drill=True, drill_speeds="fast,zoom")
    with pytest.raises(ValueError, match="drill_speeds=''"):
        ShapesSource(4, drill=True, drill_speeds="")


def test_speed_binding_drill_clips_share_a_direction_and_differ_in_speed():
    """drill_binds="speed": one direction, two speeds (any of the three), starts that fit the
    swapped speeds, each object's own speed word in the caption and its travel its speed's."""
    speeds = collections.Counter()
    for i in range(40):
        c = generate_clip(i, drill=True, drill_objects=2, drill_swappable=True, drill_binds="speed")
        a, b = c["truth"]["objects"]
        assert a["motion"] == b["motion"] and a["speed"] != b["speed"], c["caption"]
        assert _swap_fits(c), c["caption"]
        for o in (a, b):
            travel = np.hypot(o["x"][-1] - o["x"][0], o["y"][-1] - o["y"][0])
            np.testing.assert_allclose(travel, shapes.SPEEDS[o["speed"]] * 32 * 7, rtol=1e-5)
        speeds.update((a["speed"], b["speed"]))
    assert set(speeds) == set(shapes.SPEEDS), speeds  # not only drill_speeds' "fast"
    # The direction drill is unchanged bit for bit; the source's share picks drill clips only.
    np.testing.assert_array_equal(
        generate_clip(3, drill=True, drill_objects=2, drill_binds="direction")["video"],
        generate_clip(3, drill=True, drill_objects=2)["video"],
    )
    src = ShapesSource(
        300, drill_share=0.5, drill_objects=2, drill_swappable=True, speed_binding=0.5
    )
    kinds = collections.Counter()
    for i in range(300):
        c, plain = (
            src[i],
            ShapesSource(300, drill_share=0.5, drill_objects=2, drill_swappable=True)[i],
        )
        a, *rest = c["truth"]["objects"]
        speed_clip = c["caption"] != plain["caption"]
        if speed_clip:  # a drill clip of the other kind: same direction, two speeds
            assert rest and a["motion"] == rest[0]["motion"] and a["speed"] != rest[0]["speed"]
        kinds[speed_clip] += 1
    assert 0.15 < kinds[True] / 300 < 0.35, kinds  # half of the ~half that are drill clips
    with pytest.raises(ValueError, match="speed_binding=0.5 with drill_objects=1"):
        ShapesSource(4, drill_share=0.3, speed_binding=0.5)
    with pytest.raises(ValueError, match="drill_binds='speed' with drill_objects=1"):
        generate_clip(0, drill=True, drill_binds="speed")


def test_drill_share_mixes_drill_clips_into_the_training_source():
    src = ShapesSource(400, drill_share=0.5)
    is_drill = [src[i]["caption"] == generate_clip(i, drill=True)["caption"] for i in range(400)]
    assert 0.4 < np.mean(is_drill) < 0.6
    plain = ShapesSource(400)
    assert all(plain[i]["caption"] == generate_clip(i)["caption"] for i in range(20))
    assert [src[i]["caption"] for i in range(20)] == [src[i]["caption"] for i in range(20)]
    with pytest.raises(ValueError, match="drill_share=1.5"):
        ShapesSource(4, drill_share=1.5)


def test_bg_drop_leaves_the_background_out_of_that_share_of_captions():
    """The same clips; a fixed share of captions (pans excepted) lose the background phrase."""
    base, drop = (
        ShapesSource(120, res=16, frames=2),
        ShapesSource(120, res=16, frames=2, bg_drop=0.5),
    )
    dropped = 0
    for i in range(120):
        a, b = base[i], drop[i]
        np.testing.assert_array_equal(a["video"], b["video"])
        bg = a["truth"]["background"]["color"]
        assert bg in a["caption"]
        panned = a["truth"]["camera"]["pan"] != "none"
        if b["caption"] != a["caption"]:
            dropped += 1
            assert not panned and "background" not in b["caption"], b["caption"]
            assert b["caption"] in a["caption"]  # the clauses, unchanged
        assert drop[i]["caption"] == b["caption"]  # a fixed function of the index
    assert 40 <= dropped <= 60
    with pytest.raises(ValueError, match="bg_drop=1.5"):
        ShapesSource(4, bg_drop=1.5)


def test_speed_drill_share_turns_mix_drill_clips_into_one_object_clips_at_every_speed():
    """speed_drill: that share of a mixed source's drill clips is one-object drill clips at
    all three speeds (plain, no pan, travel = its speed); the other clips are unchanged."""
    kw = dict(drill_share=0.5, drill_objects=2, drill_swappable=True)
    src, plain = ShapesSource(200, speed_drill=0.5, **kw), ShapesSource(200, **kw)
    speeds, changed = collections.Counter(), 0
    for i in range(200):
        c, p = src[i], plain[i]
        if c["caption"] == p["caption"]:
            np.testing.assert_array_equal(c["video"], p["video"])
            continue
        changed += 1
        (obj,) = c["truth"]["objects"]
        assert c["truth"]["camera"]["pan"] == "none" and len(p["truth"]["objects"]) == 2
        travel = np.hypot(obj["x"][-1] - obj["x"][0], obj["y"][-1] - obj["y"][0])
        np.testing.assert_allclose(travel, shapes.SPEEDS[obj["speed"]] * 32 * 7, rtol=1e-5)
        speeds[obj["speed"]] += 1
    assert 0.15 < changed / 200 < 0.35, changed  # half of the ~half that are drill clips
    assert set(speeds) == set(shapes.SPEEDS), speeds
    with pytest.raises(ValueError, match="speed_drill=0.5 with drill_share=0"):
        ShapesSource(4, speed_drill=0.5)
    # A prelude's drill stage (an all-drill source) keeps its clips.
    kw = dict(drill=True, drill_objects=2, drill_swappable=True)
    np.testing.assert_array_equal(
        ShapesSource(8, speed_drill=0.5, drill_share=0.3, **kw)[5]["video"],
        ShapesSource(8, **kw)[5]["video"],
    )
    with pytest.raises(ValueError, match="speed_drill=1.5"):
        ShapesSource(4, drill_share=0.3, speed_drill=1.5)
