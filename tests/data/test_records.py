"""Records Grain pipeline: codec, buckets, determinism, exact resume, per-host sharding."""

from __future__ import annotations

import os

import numpy as np
import pytest

from configs.stiv import get_config
from data_pipeline import shards as shards_lib
from data_pipeline.video_io import encode_mp4
from stiv_jax.data import buckets as buckets_lib
from stiv_jax.data import records
from stiv_jax.data.motion import motion_score

T_SRC = 12  # frames per stored test clip


def _clip(i: int, h: int, w: int, t: int = T_SRC) -> np.ndarray:
    """uint8 [t, h, w, 3]: red = frame index * 10, green = row, blue = column (checkable)."""
    v = np.zeros((t, h, w, 3), np.uint8)
    v[..., 0] = (np.arange(t) * 10)[:, None, None]
    v[..., 1] = np.arange(h)[None, :, None]
    v[..., 2] = np.arange(w)[None, None, :]
    return v


def _record(i: int, h: int, w: int, fmt: str = "raw", **extra) -> bytes:
    video = _clip(i, h, w)
    rec = {
        "video": video if fmt == "raw" else encode_mp4(video, 8.0),
        "video_format": fmt,
        "caption": f"clip {i}",
        "motion_score": np.float32(i),
        "fps": 8.0,
        "orig_size": [h * 4, w * 4],
        "num_frames": T_SRC,
        "source": f"test#{i}",
        **extra,
    }
    return records.encode_record(rec)


def _write(path, sizes: list[tuple[int, int]], num_shards: int, split: str = "train", **kw):
    os.makedirs(path, exist_ok=True)
    for s in range(num_shards):
        ids = list(range(s, len(sizes), num_shards))
        name = os.path.join(path, shards_lib.shard_name(split, s, num_shards))
        shards_lib.write_records(name, [_record(i, *sizes[i], **kw) for i in ids])
        shards_lib.write_index(name + ".index.npy", [(*sizes[i], T_SRC) for i in ids])


def _config(path, **data):
    c = get_config("variant=tiny")
    c.data.source, c.data.path = "records", str(path)
    c.data.batch_size, c.data.frames, c.data.res = 2, 4, 8
    c.data.buckets = {"shapes": ("4x8x8", "4x8x16")}
    for k, v in data.items():
        setattr(c.data, k, v)
    return c


SIZES = [(16, 16)] * 6 + [(16, 32)] * 6  # two aspect groups → two buckets


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    path = tmp_path_factory.mktemp("shards")
    _write(path, SIZES, num_shards=4)
    return path


def _take(it, n):
    return [next(it) for _ in range(n)]


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_codec_roundtrip_without_pickle():
    rec = {"a": np.arange(6, dtype=np.float16).reshape(2, 3), "s": "x", "b": b"\x00", "n": 3}
    out = records.decode_record(records.encode_record(rec))
    assert out["a"].dtype == np.float16 and np.array_equal(out["a"], rec["a"])
    assert out["s"] == "x" and out["b"] == b"\x00" and out["n"] == 3
    with pytest.raises(TypeError, match="cannot go in a record"):
        records.encode_record({"o": np.array([object()], dtype=object)})
    with pytest.raises(TypeError, match="cannot go in a record"):
        records.encode_record({"o": {1, 2}})


def test_mp4_bytes_decode_close_to_source():
    video = _clip(0, 32, 48)
    frames = records.decode_frames(encode_mp4(video, 8.0), [0, 3, 5])
    assert frames.shape == (3, 32, 48, 3)
    # mp4v is lossy; the smooth ramps survive within a few grey levels on average.
    assert np.abs(frames.astype(int) - video[[0, 3, 5]].astype(int)).mean() < 6
    # Seeking to a later window gives exactly the frames of a full decode.
    frames48 = np.concatenate([video] * 4)  # 48 frames, several keyframes, each distinct:
    frames48[..., 0] = (np.arange(48) * 5)[:, None, None]
    long = encode_mp4(frames48, 8.0)
    full = records.decode_frames(long)
    assert full.shape[0] == 48
    for ids in ([30, 33, 36], [12], [47], [1, 2]):
        np.testing.assert_array_equal(records.decode_frames(long, ids), full[ids])


def test_assign_bucket():
    bs = [buckets_lib.parse_bucket(s) for s in ("8x32x32", "8x32x64", "16x32x64")]
    assert buckets_lib.assign_bucket(bs, 100, 100, 50) == 0
    assert buckets_lib.assign_bucket(bs, 90, 200, 50) == 2  # wide; longest fitting bucket
    assert buckets_lib.assign_bucket(bs, 90, 200, 10) == 1  # too short for 16 frames
    assert buckets_lib.assign_bucket(bs, 90, 200, 4) == -1
    with pytest.raises(ValueError, match="TxHxW"):
        buckets_lib.parse_bucket("8x32")


def test_batch_contract_buckets_and_crops(shards):
    c = _config(shards, frame_stride=3)
    it = iter(records.records_dataset(c, latent_frames=3))
    shapes = set()
    for b in _take(it, 8):
        assert set(b) == {"video", "caption", "motion_score", "micro", "cond_mask", "task"}
        v = b["video"]
        assert v.dtype == np.float32 and v.shape[0] == 2 and v.shape[1] == 4
        shapes.add(v.shape[2:4])
        assert b["caption"].shape == (2,) and b["caption"].dtype.kind == "U"
        assert b["micro"].shape == (2, 5) and b["cond_mask"].shape == (2, 3)
        assert b["cond_mask"].dtype == bool and b["task"].dtype == np.int32
        for j in range(2):
            i = int(b["caption"][j].split()[1])
            assert b["motion_score"][j] == i
            oh, ow, top, left, stride = b["micro"][j]
            assert (oh, ow) == (SIZES[i][0] * 4, SIZES[i][1] * 4)
            assert stride == 3  # (12 - 1) // (4 - 1) = 3 fits the configured stride
            px = np.round((v[j] + 1) * 127.5).astype(int)
            red = px[:, 0, 0, 0] // 10
            assert np.array_equal(np.diff(red), [3, 3, 3])  # frames start, +3, +6, +9
            # 16x16 -> 8x8 covers by 0.5x (no crop); 16x32 -> 8x16 likewise.
            assert top == 0 and left == 0
    assert shapes == {(8, 8), (8, 16)}  # both buckets appear, one shape per batch


def test_buckets_of_several_lengths_take_a_latent_frames_function(shards):
    c = _config(shards, buckets={"shapes": ("4x8x8", "8x8x16")}, predict_frames=1)
    with pytest.raises(ValueError, match="pass latent_frames as a function"):
        records.records_dataset(c, latent_frames=3)
    it = iter(records.records_dataset(c, latent_frames=lambda t: t // 2 + 1))
    seen = set()
    for b in _take(it, 8):
        t = b["video"].shape[1]
        assert b["cond_mask"].shape == (2, t // 2 + 1)
        seen.add((t, b["video"].shape[3]))
    assert seen == {(4, 8), (8, 16)}


def test_same_seed_same_batches_and_other_seed_differs(shards):
    a = _take(iter(records.records_dataset(_config(shards), latent_frames=3)), 6)
    b = _take(iter(records.records_dataset(_config(shards), latent_frames=3)), 6)
    c = _take(iter(records.records_dataset(_config(shards, seed=7), latent_frames=3)), 6)
    assert all(_same(x, y) for x, y in zip(a, b))
    assert not all(_same(x, y) for x, y in zip(a, c))


@pytest.mark.parametrize("workers", [0, 1])
def test_restore_continues_exactly(shards, workers):
    c = _config(shards, num_workers=workers)
    it = iter(records.records_dataset(c, latent_frames=3))
    _take(it, 3)
    state = it.get_state()
    expected = _take(it, 3)
    fresh = iter(records.records_dataset(c, latent_frames=3))
    fresh.set_state(state)
    assert all(_same(x, y) for x, y in zip(expected, _take(fresh, 3)))


def test_two_hosts_disjoint_and_cover(shards):
    c = _config(shards, batch_size=2, buckets={"shapes": ("4x8x8",)})  # one bucket: epoch = 6
    seen = []
    for host in range(2):
        ds = records.records_dataset(c, latent_frames=3, process_index=host, process_count=2)
        # One training epoch per host: every host clip once (host batch 1, 6 clips per host).
        caps = [str(b["caption"][0]) for b in _take(iter(ds), 6)]
        assert len(set(caps)) == 6
        seen.append(set(caps))
    assert not seen[0] & seen[1]
    assert seen[0] | seen[1] == {f"clip {i}" for i in range(len(SIZES))}


def test_eval_split_one_pass_centre_crops(tmp_path):
    _write(tmp_path, [(16, 24)] * 3, num_shards=1, split="eval")
    c = _config(tmp_path, batch_size=2)
    batches = list(records.records_dataset(c, latent_frames=3, split="eval"))
    assert [len(b["caption"]) for b in batches] == [2, 1]
    for b in batches:
        assert b["video"].shape[2:4] == (8, 16)  # wide bucket
        # 16x24 covers 8x16 at scale 2/3 -> 11x16; the centre crop starts at row 1.
        assert (b["micro"][:, 2:4] == [1, 0]).all()


def test_cached_latents_and_text_replace_video_and_caption(tmp_path):
    extra = {
        "latents": np.ones((3, 2, 2, 4), np.float16),
        "micro": np.array([64, 64, 0, 0, 1], np.float32),
        "text_tokens": np.zeros((5, 6), np.float16),
        "text_mask": np.array([1, 1, 0, 0, 0], bool),
        "text_pooled": np.zeros(6, np.float32),
    }
    _write(tmp_path, [(4, 8)] * 4, num_shards=1, **extra)
    c = _config(tmp_path, buckets={"shapes": ("4x4x8",)}, predict_frames=1)
    b = next(iter(records.records_dataset(c, latent_frames=3)))
    assert set(b) == {"latents", "text_tokens", "text_mask", "text_pooled"} | {
        "motion_score",
        "micro",
        "cond_mask",
        "task",
    }
    assert b["latents"].shape == (2, 3, 2, 2, 4) and b["latents"].dtype == np.float32
    assert b["text_mask"].dtype == bool and b["text_tokens"].shape == (2, 5, 6)


def test_bad_inputs_raise_clear_errors(shards, tmp_path):
    with pytest.raises(FileNotFoundError, match="no 'train-NNNNN"):
        records.records_dataset(_config(tmp_path), latent_frames=3)
    with pytest.raises(ValueError, match="cannot feed 8 hosts"):
        records.records_dataset(_config(shards, batch_size=8), latent_frames=3, process_count=8)
    with pytest.raises(ValueError, match="must be a positive multiple of process_count=2"):
        records.records_dataset(_config(shards, batch_size=3), latent_frames=3, process_count=2)
    with pytest.raises(ValueError, match="no bucket"):
        c = _config(shards, buckets={"shapes": ("40x8x8",)})
        records.records_dataset(c, latent_frames=3)


# ---------------------------------------------------------------- TFDS array_record source


def _example_class():
    """tf.train.Example built from its .proto definition with google.protobuf (no TF)."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    fdp = descriptor_pb2.FileDescriptorProto(name="ex_test.proto", package="tensorflow")
    fdp.syntax = "proto3"
    F = descriptor_pb2.FieldDescriptorProto
    rep, opt = F.LABEL_REPEATED, F.LABEL_OPTIONAL

    def msg(name, fields, nested=()):
        m = fdp.message_type.add(name=name) if isinstance(name, str) else name
        for fname, num, ftype, label, tname in fields:
            f = m.field.add(name=fname, number=num, type=ftype, label=label)
            if tname:
                f.type_name = tname
        return m

    msg("BytesList", [("value", 1, F.TYPE_BYTES, rep, None)])
    msg("FloatList", [("value", 1, F.TYPE_FLOAT, rep, None)])
    msg("Int64List", [("value", 1, F.TYPE_INT64, rep, None)])
    msg(
        "Feature",
        [
            ("bytes_list", 1, F.TYPE_MESSAGE, opt, ".tensorflow.BytesList"),
            ("float_list", 2, F.TYPE_MESSAGE, opt, ".tensorflow.FloatList"),
            ("int64_list", 3, F.TYPE_MESSAGE, opt, ".tensorflow.Int64List"),
        ],
    )
    feats = msg(
        "Features", [("feature", 1, F.TYPE_MESSAGE, rep, ".tensorflow.Features.FeatureEntry")]
    )
    entry = feats.nested_type.add(name="FeatureEntry")
    entry.options.map_entry = True
    msg(entry, [("key", 1, F.TYPE_STRING, opt, None)])
    msg(entry, [("value", 2, F.TYPE_MESSAGE, opt, ".tensorflow.Feature")])
    msg("Example", [("features", 1, F.TYPE_MESSAGE, opt, ".tensorflow.Features")])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.Example"))


def _tfds_example(cls, video: np.ndarray, label: int, score: float) -> bytes:
    import cv2

    ex = cls()
    frames = [cv2.imencode(".png", cv2.cvtColor(f, cv2.COLOR_RGB2BGR))[1].tobytes() for f in video]
    ex.features.feature["video"].bytes_list.value.extend(frames)
    ex.features.feature["label"].int64_list.value.append(label)
    ex.features.feature["score"].float_list.value.append(score)
    ex.features.feature["neg"].int64_list.value.extend([-3, 5])
    return ex.SerializeToString()


def test_tfds_array_record_layout_without_tensorflow(tmp_path):
    from stiv_jax.data import tfds_source

    cls = _example_class()
    root = tmp_path / "my_videos" / "1.0.0"  # TFDS: <data_dir>/<name>/<version>/
    root.mkdir(parents=True)
    (root / "label.labels.txt").write_text("juggling\nrunning\nswimming\n")
    (root / "dataset_info.json").write_text('{"name": "my_videos", "fileFormat": "ARRAY_RECORD"}')
    clips = [_clip(i, 16, 16, t=14 + i) for i in range(6)]
    for split in ("train", "test"):
        for s in range(2):
            ids = range(s, 6, 2)
            path = str(root / f"my_videos-{split}.array_record-{s:05d}-of-00002")
            recs = [_tfds_example(cls, clips[i], i % 3, i / 2) for i in ids]
            shards_lib.write_records(path, recs)
    ex = tfds_source.parse_example(_tfds_example(cls, clips[0], 2, 1.5))
    assert ex["label"] == [2] and ex["neg"] == [-3, 5] and ex["score"] == [1.5]
    assert len(ex["video"]) == 14

    c = _config(root, batch_size=2, buckets={"shapes": ("4x8x8",)})
    c.data.tfds = {"video_key": "video", "caption_key": "label"}
    it = iter(tfds_source.tfds_dataset(c, latent_frames=3))
    b = next(it)
    assert set(b) == {"video", "caption", "motion_score", "micro", "cond_mask", "task"}
    assert b["video"].shape == (2, 4, 8, 8, 3)
    assert set(b["caption"]) <= {"juggling", "running", "swimming"}
    # Computed motion score equals the shared function on the full decoded clip.
    dec = tfds_source.TfdsDecoder("video", "label", "", ["juggling", "running", "swimming"])
    rec = dec(_tfds_example(cls, clips[3], 0, 0.0))
    assert rec["motion_score"] == np.float32(motion_score(clips[3], interval=12))
    assert rec["caption"] == "juggling" and rec["num_frames"] == 17
    # A precomputed score is used as is; two hosts read disjoint records covering all.
    c.data.tfds = {"caption_key": "label", "motion_key": "score"}
    seen = []
    for host in range(2):
        ds = tfds_source.tfds_dataset(
            c, latent_frames=3, split="test", process_index=host, process_count=2
        )
        seen.append(sorted(float(s) for bt in ds for s in bt["motion_score"]))
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == [i / 2 for i in range(6)]
