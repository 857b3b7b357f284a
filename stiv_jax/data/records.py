"""ArrayRecord clip records → Grain per-host batches (`config.data.source == "records"`).

Shapes: B per-host batch, T pixel frames, H x W pixels, F latent frames, h x w latent size,
C latent channels, L text tokens, D text width.

Record schema (DESIGN.md "Data records"): one msgpack map per clip, no pickle. Arrays are
maps {"__nd__": 1, "dtype", "shape", "data"} with plain numeric dtypes only.
  video         mp4 bytes (`video_format` "mp4") or uint8 [T, H, W, 3] ("raw")
  caption str, motion_score float32, fps float, orig_size (h, w), num_frames int, source str
  optional: latents [F, h, w, C], micro float32 [5] (of the cached crop),
            text_tokens [L, D], text_mask bool [L], text_pooled [D]
Shards: `<dir>/<split>-<i>-of-<n>.array_record`, each with `<shard>.index.npy` int32 [N, 3]
(stored height, width, num_frames) so buckets are assigned without decoding videos.

Batch: the host batch of `stiv_jax.data.schema` (video or cached latents, caption or cached
text).
"""

from __future__ import annotations

import glob
import io
import os
import re
import tempfile
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import cv2
import msgpack
import numpy as np

from stiv_jax.data import buckets as buckets_lib
from stiv_jax.data import tasks as tasks_lib
from stiv_jax.data.schema import CACHED_TEXT, collate, host_batch_size, normalize_uint8

if TYPE_CHECKING:
    import grain

_SHARD_RE = re.compile(r"^(?P<split>.+)-(?P<i>\d{5})-of-(?P<n>\d{5})\.array_record$")


# ---------------------------------------------------------------- record codec


def _pack_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in "biuf":
            raise TypeError(f"array dtype {obj.dtype} cannot go in a record; expected numeric/bool")
        arr = np.ascontiguousarray(obj)
        return {
            "__nd__": 1,
            "dtype": arr.dtype.str,
            "shape": list(arr.shape),
            "data": arr.tobytes(),
        }
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"{type(obj).__name__} cannot go in a record; expected str/bytes/number/array")


def _unpack_hook(obj: dict) -> Any:
    if obj.get("__nd__") == 1:
        arr = np.frombuffer(obj["data"], dtype=np.dtype(obj["dtype"]))
        return arr.reshape(obj["shape"])
    return obj


def encode_record(record: dict[str, Any]) -> bytes:
    """msgpack bytes of a record dict (numpy arrays as typed byte maps, never pickle)."""
    return msgpack.packb(record, default=_pack_default, use_bin_type=True)


def decode_record(data: bytes) -> dict[str, Any]:
    """Inverse of `encode_record`."""
    return msgpack.unpackb(data, object_hook=_unpack_hook, raw=False)


# ---------------------------------------------------------------- video decoding


def _open_bytes(data: bytes) -> tuple[cv2.VideoCapture, Any]:
    """(capture, keep): `keep` is the stream the capture reads (it must outlive the capture:
    OpenCV holds no reference to it) or the temp file path to delete afterwards."""
    # OpenCV >= 4.10 reads from a Python stream; older builds need a file.
    stream = io.BytesIO(data)
    try:
        cap = cv2.VideoCapture(stream, cv2.CAP_FFMPEG, [])
        if cap.isOpened():
            return cap, stream
    except (cv2.error, TypeError):
        pass
    fd, path = tempfile.mkstemp(suffix=".mp4")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return cv2.VideoCapture(path), path


def decode_frames(
    video: bytes | np.ndarray | Sequence[bytes], frame_ids: Sequence[int] | None = None
) -> np.ndarray:
    """uint8 RGB [T, H, W, 3] of the given frame indices (sorted ascending) or all frames.

    `video`: mp4 bytes, a uint8 [T, H, W, 3] array, or a list of encoded images (PNG/JPEG
    frames, as TFDS stores videos), of which only the requested ones are decoded.
    """
    if isinstance(video, (list, tuple)):
        ids = range(len(video)) if frame_ids is None else frame_ids
        out = []
        for i in ids:
            img = cv2.imdecode(np.frombuffer(video[int(i)], np.uint8), cv2.IMREAD_COLOR)
            if img is None:
                raise ValueError(f"frame {i} of an image-sequence video could not be decoded")
            out.append(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
        return np.stack(out)
    if isinstance(video, np.ndarray):
        if video.ndim != 4 or video.shape[-1] != 3 or video.dtype != np.uint8:
            raise ValueError(f"raw video {video.shape} {video.dtype} is not uint8 [T, H, W, 3]")
        return video if frame_ids is None else video[np.asarray(frame_ids)]
    cap, keep = _open_bytes(bytes(video))
    try:
        wanted = None if frame_ids is None else set(int(i) for i in frame_ids)
        last = None if frame_ids is None else max(frame_ids)
        out, i = [], 0
        first = 0 if frame_ids is None else min(frame_ids)
        # Seek instead of decoding the frames before the crop: FFmpeg seeks to the previous
        # keyframe and decodes forward, so the frames are exact (tested against a full decode).
        if first > 0 and cap.set(cv2.CAP_PROP_POS_FRAMES, first):
            if int(cap.get(cv2.CAP_PROP_POS_FRAMES)) == first:
                i = first
            else:
                cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
        while last is None or i <= last:
            ok, frame = cap.read()
            if not ok:
                break
            if wanted is None or i in wanted:
                out.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
            i += 1
    finally:
        cap.release()
        if isinstance(keep, str):
            os.remove(keep)
    need = 1 if frame_ids is None else len(frame_ids)
    if len(out) < need:
        raise ValueError(f"mp4 record decoded {len(out)} frames; expected frames {frame_ids}")
    return np.stack(out)


# ---------------------------------------------------------------- shards


def list_shards(path: str, split: str) -> list[str]:
    """The `<split>-*-of-*.array_record` files under `path`, sorted; errors if none or partial."""
    files = sorted(glob.glob(os.path.join(glob.escape(path), f"{split}-*-of-*.array_record")))
    files = [f for f in files if _SHARD_RE.match(os.path.basename(f))]
    if not files:
        raise FileNotFoundError(f"no '{split}-NNNNN-of-NNNNN.array_record' shards in {path!r}")
    n = int(_SHARD_RE.match(os.path.basename(files[0]))["n"])
    if len(files) != n:
        raise ValueError(f"{path!r} has {len(files)} {split} shards; their names say {n}")
    return files


def read_index(shard: str) -> np.ndarray:
    """int [N, 3] (height, width, num_frames) for each record of `shard`."""
    index = np.load(shard + ".index.npy", allow_pickle=False)
    if index.ndim != 2 or index.shape[1] != 3:
        raise ValueError(f"{shard}.index.npy has shape {index.shape}; expected [N, 3]")
    return index


# ---------------------------------------------------------------- per-clip transform


def _resize_crop(
    frames: np.ndarray, height: int, width: int, rng: np.random.Generator | None
) -> tuple[np.ndarray, int, int]:
    """Resize to cover (height, width) keeping aspect, then crop (random, or centre if no rng)."""
    _, h, w, _ = frames.shape
    scale = max(height / h, width / w)
    rh, rw = max(height, round(h * scale)), max(width, round(w * scale))
    if (rh, rw) != (h, w):
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        frames = np.stack([cv2.resize(f, (rw, rh), interpolation=interp) for f in frames])
    if rng is None:
        top, left = (rh - height) // 2, (rw - width) // 2
    else:
        top = int(rng.integers(0, rh - height + 1))
        left = int(rng.integers(0, rw - width + 1))
    return frames[:, top : top + height, left : left + width], top, left


class ClipTransform:
    """Reads record `index` from `source` and makes one example of `bucket` (grain RandomMap).

    `decode` turns what `source[i]` returns into a record dict (default: msgpack records).

    Temporal crop: stride s = min(frame_stride, (n - 1) // (T - 1)) so short clips still fit,
    random start (training) or centred (evaluation).
    """

    def __init__(
        self,
        source,
        bucket: buckets_lib.Bucket,
        *,
        latent_frames: int,
        frame_stride: int,
        task_probs: dict[str, float],
        predict_frames: int,
        train: bool,
        decode: Callable[[Any], dict[str, Any]] = decode_record,
    ):
        self.source, self.bucket, self.train, self.decode = source, bucket, train, decode
        self.latent_frames, self.frame_stride = latent_frames, frame_stride
        self.task_probs, self.predict_frames = dict(task_probs), predict_frames

    def __call__(self, index: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        rec = self.decode(self.source[int(index)])
        out: dict[str, np.ndarray] = {}
        if "latents" in rec:
            out["latents"] = np.asarray(rec["latents"], np.float32)
            micro = np.asarray(rec["micro"], np.float32)
        else:
            out["video"], micro = self.crop_video(rec, rng)
        if all(k in rec for k in CACHED_TEXT):
            out["text_tokens"] = np.asarray(rec["text_tokens"], np.float32)
            out["text_mask"] = np.asarray(rec["text_mask"], bool)
            out["text_pooled"] = np.asarray(rec["text_pooled"], np.float32)
        else:
            out["caption"] = str(rec["caption"])
        out["motion_score"] = np.float32(rec["motion_score"])
        out["micro"] = micro
        out["task"], out["cond_mask"] = tasks_lib.draw_task(
            rng, self.task_probs, self.latent_frames, self.predict_frames
        )
        return out

    def crop_video(self, rec: dict, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(video float32 [T, H, W, 3] in [-1, 1], micro float32 [5]) of a decoded record."""
        t, n = self.bucket.frames, int(rec["num_frames"])
        stride = 1 if t == 1 else max(1, min(self.frame_stride, (n - 1) // (t - 1)))
        span = (t - 1) * stride + 1
        if span > n:
            raise ValueError(f"clip of {n} frames is shorter than bucket {self.bucket}")
        start = int(rng.integers(0, n - span + 1)) if self.train else (n - span) // 2
        ids = list(range(start, start + span, stride))
        frames = decode_frames(rec["video"], ids)
        frames, top, left = _resize_crop(
            frames, self.bucket.height, self.bucket.width, rng if self.train else None
        )
        oh, ow = rec["orig_size"]
        micro = np.array([oh, ow, top, left, stride], np.float32)
        return normalize_uint8(frames), micro


# ---------------------------------------------------------------- dataset


def records_dataset(
    config,
    *,
    latent_frames: int | Callable[[int], int],
    split: str = "train",
    process_index: int = 0,
    process_count: int = 1,
) -> grain.IterDataset:
    """Per-host batch dicts from the shards in `config.data.path` (see module docstring).

    `latent_frames`: F of `cond_mask`, an int for `config.data.frames` pixel frames or a
    function T -> F when buckets differ in length (see `bucket_latent_frames`).
    Host `process_index` reads shards `process_index::process_count` (disjoint, covering).
    Training repeats forever, reshuffling each epoch by `config.data.seed`; other splits are
    one pass, bucket after bucket, centre crops. Each batch holds one bucket shape.
    """
    import grain  # lazy: the offline engine's worker processes use the codec only

    data = config.data
    host_batch = host_batch_size(int(data.batch_size), process_index, process_count)
    files = list_shards(data.path, split)
    if len(files) < process_count:
        raise ValueError(
            f"{len(files)} {split} shards in {data.path!r} cannot feed {process_count} hosts; "
            "re-run data_pipeline.prepare with --hosts >= the host count"
        )
    files = files[process_index::process_count]
    meta = np.concatenate([read_index(f) for f in files])
    source = grain.sources.ArrayRecordDataSource(files)
    if len(source) != len(meta):
        raise ValueError(f"shards hold {len(source)} records but their indexes list {len(meta)}")
    return bucketed_dataset(
        config,
        source,
        meta,
        np.arange(len(meta)),
        latent_frames=latent_frames,
        train=split == "train",
        host_batch=host_batch,
        process_index=process_index,
    )


def bucketed_dataset(
    config,
    source,
    meta: np.ndarray,
    indices: np.ndarray,
    *,
    latent_frames: int | Callable[[int], int],
    train: bool,
    host_batch: int,
    process_index: int,
    decode: Callable[[Any], dict[str, Any]] = decode_record,
) -> grain.IterDataset:
    """Batches of records `indices` of `source` (meta int [N, 3] per source record), one
    Grain pipeline per bucket, mixed by `config.data.buckets.weights` (train) or one after
    the other (one pass). Shared by the records and TFDS sources."""
    import grain
    from absl import flags

    data = config.data
    buckets, weighting = buckets_lib.buckets_from_config(config)
    indices = np.asarray(indices)
    assigned = buckets_lib.assign_all(buckets, meta[indices])
    seed = int(data.seed)
    read_options = grain.ReadOptions(
        num_threads=int(data.get("read_threads", 2)),
        prefetch_buffer_size=int(data.get("prefetch_batches", 2)),
    )
    per_bucket, counts = [], []
    for b, bucket in enumerate(buckets):
        idx = indices[assigned == b]
        if len(idx) < (host_batch if train else 1):
            continue
        frames = bucket_latent_frames(config, bucket, latent_frames)
        task_probs = tasks_lib.checked_task_probs(
            data.task_probs, frames, int(data.get("predict_frames", 1))
        )
        ds = grain.MapDataset.source(idx.tolist())
        if train:
            ds = ds.shuffle(seed=_mix_seed(seed, process_index, b)).repeat(None)
        transform = ClipTransform(
            source,
            bucket,
            latent_frames=frames,
            frame_stride=int(data.get("frame_stride", 1)),
            task_probs=task_probs,
            predict_frames=int(data.get("predict_frames", 1)),
            train=train,
            decode=decode,
        )
        ds = ds.random_map(transform, seed=_mix_seed(seed + 1, process_index, b))
        ds = ds.batch(host_batch, drop_remainder=train, batch_fn=collate)
        # Few threads and a short buffer per bucket: every bucket prefetches on its own, and
        # Grain's defaults (16 threads, 500 elements) would decode hundreds of batches ahead.
        per_bucket.append(ds.to_iter_dataset(read_options))
        counts.append(len(idx))
    if not per_bucket:
        raise ValueError(
            f"no bucket of {[str(b) for b in buckets]} has {host_batch} clips on host "
            f"{process_index} ({len(indices)} clips; sizes/frames do not fit)"
        )
    if train:
        ds = grain.IterDataset.mix(per_bucket, buckets_lib.mix_weights(counts, weighting))
    else:
        ds = grain.experimental.InterleaveIterDataset(per_bucket, cycle_length=1)
    workers = int(data.get("num_workers", 0))
    if workers > 0:
        # Grain's worker processes read absl flags; a library caller (tests, notebooks) may
        # never have parsed them, and then every flag read raises. Defaults are what we want.
        if not flags.FLAGS.is_parsed():
            flags.FLAGS.mark_as_parsed()
        ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers))
    return ds


def bucket_latent_frames(
    config, bucket: buckets_lib.Bucket, latent_frames: int | Callable[[int], int]
) -> int:
    """Latent frames F of `bucket` (the length of its `cond_mask`).

    `latent_frames` is either F for `config.data.frames` pixel frames (enough when every
    bucket has that many frames) or a function T -> F, e.g.
    `lambda t: autoencoder.latent_shape(t, h, w)[0]`, for buckets of several lengths.
    """
    if callable(latent_frames):
        return int(latent_frames(bucket.frames))
    if bucket.frames != int(config.data.frames):
        raise ValueError(
            f"bucket {bucket} has {bucket.frames} frames but latent_frames={latent_frames} is "
            f"for config.data.frames={config.data.frames}; pass latent_frames as a function "
            "T -> F (e.g. lambda t: autoencoder.latent_shape(t, h, w)[0])"
        )
    return int(latent_frames)


def _mix_seed(seed: int, host: int, bucket: int) -> int:
    # Distinct, reproducible streams per (seed, host, bucket); fits grain's uint32 seeds.
    return int(np.random.SeedSequence([seed, host, bucket]).generate_state(1)[0])
