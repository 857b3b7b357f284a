"""TFDS video datasets (array_record file format) → the same batch dict as `records_dataset`.

Shapes: B per-host batch, T pixel frames, H x W pixels, F latent frames (see records.py for
the batch contract).

A TFDS builder prepared with `file_format="array_record"` writes, in its version folder,
`<name>-<split>.array_record-<i>-of-<n>` files whose records are serialized
`tf.train.Example` protos; a `tfds.features.Video` is a list of encoded PNG/JPEG frames
under its feature key. We read those files with Grain's ArrayRecordDataSource and parse the
protos with the small wire-format reader below, so neither TensorFlow nor
tensorflow-datasets is needed (that is also what `tfds.data_source` reads underneath).

Config (`config.data`; `path` is the builder's version folder):
  tfds.video_key    feature holding the frames (default "video")
  tfds.caption_key  text feature, or a ClassLabel whose `<key>.labels.txt` names the
                    classes (default "caption")
  tfds.motion_key   float feature with a precomputed motion score; "" (default) computes
                    `stiv_jax.data.motion.motion_score` on the fly from every 12th frame
Per-host sharding is by record (`process_index::process_count`), so one file feeds any
number of hosts. Bucket assignment scans every record once at construction (frame counts
live only in the records) and decodes one frame header per record.
"""

from __future__ import annotations

import glob
import os
import re
import struct
from collections.abc import Callable
from typing import Any

import cv2
import grain
import numpy as np

from stiv_jax.data import records
from stiv_jax.data.motion import motion_score
from stiv_jax.data.schema import host_batch_size

MOTION_INTERVAL = 12  # Step-Video's frame interval, as in data_pipeline
_FILE_RE = re.compile(r"^(?P<name>.+)-(?P<split>[^-]+)\.array_record-(\d{5})-of-(\d{5})$")


# ---------------------------------------------------------------- tf.train.Example reader


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result, shift = 0, 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes):
    """(field number, wire type, value) of a protobuf message; value is int or bytes."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        num, wire = key >> 3, key & 7
        if wire == 0:
            val, pos = _varint(buf, pos)
        elif wire == 1:
            val, pos = buf[pos : pos + 8], pos + 8
        elif wire == 2:
            n, pos = _varint(buf, pos)
            val, pos = buf[pos : pos + n], pos + n
        elif wire == 5:
            val, pos = buf[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"protobuf wire type {wire} is not used by tf.train.Example")
        yield num, wire, val


def _feature(buf: bytes) -> list:
    """Values of a tf.train.Feature: bytes_list=1, float_list=2, int64_list=3."""
    for kind, _, body in _fields(buf):
        out: list = []
        for _, wire, val in _fields(body):
            if kind == 1:
                out.append(bytes(val))
            elif kind == 2:  # packed (wire 2) or one fixed32 (wire 5): little-endian floats
                out.extend(struct.unpack(f"<{len(val) // 4}f", val))
            elif kind == 3:
                if wire == 2:  # packed varints
                    p = 0
                    while p < len(val):
                        v, p = _varint(val, p)
                        out.append(v - (1 << 64) if v >= 1 << 63 else v)
                else:
                    out.append(val - (1 << 64) if val >= 1 << 63 else val)
        return out
    return []


def parse_example(data: bytes) -> dict[str, list]:
    """A serialized tf.train.Example → {feature key: list of bytes | float | int}."""
    out: dict[str, list] = {}
    for num, _, features in _fields(bytes(data)):
        if num != 1:
            continue
        for fnum, _, entry in _fields(features):
            if fnum != 1:
                continue
            key, value = None, b""
            for enum, _, v in _fields(entry):
                if enum == 1:
                    key = bytes(v).decode("utf-8")
                elif enum == 2:
                    value = v
            if key is not None:
                out[key] = _feature(value)
    return out


# ---------------------------------------------------------------- records


def _frame_size(encoded: bytes) -> tuple[int, int]:
    if encoded[:8] == b"\x89PNG\r\n\x1a\n":  # IHDR width/height: no pixel decoding needed
        w, h = struct.unpack(">II", encoded[16:24])
        return h, w
    img = cv2.imdecode(np.frombuffer(encoded, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError("a TFDS video frame is neither PNG nor decodable by OpenCV")
    return img.shape[:2]


class TfdsDecoder:
    """tf.train.Example bytes → record dict (video = list of encoded frames)."""

    def __init__(self, video_key: str, caption_key: str, motion_key: str, labels: list[str]):
        self.video_key, self.caption_key, self.motion_key = video_key, caption_key, motion_key
        self.labels = labels

    def features(self, data: bytes) -> dict[str, list]:
        ex = parse_example(data)
        if not ex.get(self.video_key):
            raise ValueError(f"TFDS example has no frames under {self.video_key!r}: {sorted(ex)}")
        return ex

    def __call__(self, data: bytes) -> dict[str, Any]:
        ex = self.features(data)
        frames = ex[self.video_key]
        cap = ex.get(self.caption_key, [b""])
        if cap and isinstance(cap[0], bytes):
            caption = cap[0].decode("utf-8", errors="replace")
        elif cap and self.labels:
            caption = self.labels[int(cap[0])]
        else:
            caption = str(cap[0]) if cap else ""
        n = len(frames)
        if self.motion_key:
            motion = float(ex[self.motion_key][0])
        else:
            # motion_score(all frames, interval=12) only looks at frames 0, 12, 24, ...
            ids = list(range(0, n, MOTION_INTERVAL)) if n > MOTION_INTERVAL else [0, n - 1]
            motion = motion_score(records.decode_frames(frames, ids), interval=1)
        return {
            "video": frames,
            "caption": caption,
            "motion_score": np.float32(motion),
            "orig_size": list(_frame_size(frames[0])),
            "num_frames": n,
        }


def tfds_files(path: str, split: str) -> list[str]:
    files = sorted(glob.glob(os.path.join(glob.escape(path), f"*-{split}.array_record-*-of-*")))
    files = [f for f in files if _FILE_RE.match(os.path.basename(f))]
    if not files:
        raise FileNotFoundError(
            f"no TFDS '<name>-{split}.array_record-NNNNN-of-NNNNN' files in {path!r}"
        )
    return files


def tfds_dataset(
    config,
    *,
    latent_frames: int | Callable[[int], int],
    split: str = "train",
    process_index: int = 0,
    process_count: int = 1,
) -> grain.IterDataset:
    """Per-host batches (the records_dataset contract) from a TFDS array_record folder."""
    data = config.data
    opts = data.get("tfds", None) or {}
    video_key = opts.get("video_key", "video")
    caption_key = opts.get("caption_key", "caption")
    labels_file = os.path.join(data.path, f"{caption_key}.labels.txt")
    labels = []
    if os.path.isfile(labels_file):
        with open(labels_file, encoding="utf-8") as f:
            labels = [line.rstrip("\n") for line in f]
    decoder = TfdsDecoder(video_key, caption_key, opts.get("motion_key", ""), labels)
    host_batch = host_batch_size(int(config.data.batch_size), process_index, process_count)
    source = grain.sources.ArrayRecordDataSource(tfds_files(data.path, split))
    meta = np.zeros((len(source), 3), np.int64)
    for i in range(len(source)):
        frames = decoder.features(source[i])[video_key]
        meta[i] = (*_frame_size(frames[0]), len(frames))
    return records.bucketed_dataset(
        config,
        source,
        meta,
        np.arange(len(source))[process_index::process_count],
        latent_frames=latent_frames,
        train=split == "train",
        host_batch=host_batch,
        process_index=process_index,
        decode=decoder,
    )
