"""Optional pass: cache autoencoder latents and text-encoder outputs into the records.

Shapes: B batch, T pixel frames, H x W pixels, F latent frames, h x w latent size,
C latent channels, L text tokens, D text width.

  python -m data_pipeline.cache_latents --config configs/stiv.py:variant=S \
      --in SHARDS --out CACHED [--split train] [--drop_video] [--config.autoencoder.name=wan]

Every record is cropped as the evaluation pipeline crops it (centred window of its
resolution bucket from `config.data.buckets`, stride `config.data.frame_stride`), encoded
with `get_autoencoder(config.autoencoder)` → `latents` float16 [F, h, w, C] plus the crop's
`micro` [5], and its caption with `get_text_encoder(config.text_encoder)` → `text_tokens`
float16 [L, D], `text_mask` bool [L], `text_pooled` float16 [Dp]. The output shards keep the
input's shard layout; their index rows are the bucket shape, so the Grain pipeline puts each
record back into the bucket it was encoded for. Records that fit no bucket are counted.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence

import numpy as np

from data_pipeline import shards as shards_lib
from stiv_jax.data import buckets as buckets_lib
from stiv_jax.data import records


def _encode_batch(items, encode_video, encode_text, drop_video) -> list[bytes]:
    """Records of `items` = [(record, video [T, H, W, 3], micro [5])] with cached outputs."""
    lat = encode_video(np.stack([v for _, v, _ in items]))
    tokens, mask, pooled = encode_text([r["caption"] for r, _, _ in items])
    out = []
    for j, (rec, _, micro) in enumerate(items):
        rec = dict(rec, latents=np.asarray(lat[j], np.float16), micro=micro)
        rec.update(
            text_tokens=np.asarray(tokens[j], np.float16),
            text_mask=np.asarray(mask[j], bool),
            text_pooled=np.asarray(pooled[j], np.float16),
        )
        if drop_video:
            rec.pop("video")
        out.append(records.encode_record(rec))
    return out


def cache_shards(
    config,
    in_dir: str,
    out_dir: str,
    *,
    encode_video: Callable[[np.ndarray], np.ndarray],
    encode_text: Callable[[Sequence[str]], tuple[np.ndarray, np.ndarray, np.ndarray]],
    split: str = "train",
    drop_video: bool = False,
    batch_size: int = 4,
) -> dict:
    """Writes cached copies of `in_dir`'s `split` shards to `out_dir`; returns counts.

    encode_video: float32 [B, T, H, W, 3] in [-1, 1] -> [B, F, h, w, C];
    encode_text: list[str] -> (tokens [B, L, D], mask [B, L], pooled [B, Dp]).
    """
    buckets, _ = buckets_lib.buckets_from_config(config)
    crops = [
        records.ClipTransform(
            None,
            bucket,
            latent_frames=1,
            frame_stride=int(config.data.get("frame_stride", 1)),
            task_probs={"t2v": 1.0},
            predict_frames=1,
            train=False,
        )
        for bucket in buckets
    ]
    os.makedirs(out_dir, exist_ok=True)
    counts = {"records": 0, "cached": 0, "no_bucket": 0}
    for shard in records.list_shards(in_dir, split):
        out_records, out_rows = [], []
        pending: dict[int, list] = {}  # bucket -> [(record, video, micro)]
        index = records.read_index(shard)
        for raw, (h, w, n) in zip(shards_lib.read_records(shard), index):
            counts["records"] += 1
            b = buckets_lib.assign_bucket(buckets, int(h), int(w), int(n))
            if b < 0:
                counts["no_bucket"] += 1
                continue
            rec = records.decode_record(raw)
            video, micro = crops[b].crop_video(rec, np.random.default_rng(0))  # centred: no rng
            items = pending.setdefault(b, [])
            items.append((rec, video, micro))
            if len(items) == batch_size:  # encode as soon as a batch is full: bounded memory
                out_records += _encode_batch(items, encode_video, encode_text, drop_video)
                out_rows += [buckets[b].shape_row()] * len(items)
                pending[b] = []
        for b, items in sorted(pending.items()):
            if items:
                out_records += _encode_batch(items, encode_video, encode_text, drop_video)
                out_rows += [buckets[b].shape_row()] * len(items)
        counts["cached"] += len(out_records)
        name = os.path.join(out_dir, os.path.basename(shard))
        shards_lib.write_records(name, out_records)
        shards_lib.write_index(name + ".index.npy", out_rows)
    return counts


def main(argv: Sequence[str]) -> int:
    from absl import flags, logging

    from stiv_jax import host_memory

    logging.debug("host malloc: %s", host_memory.configure())  # before JAX starts
    import jax.numpy as jnp

    from stiv_jax.autoencoders import get_autoencoder
    from stiv_jax.encoders import get_text_encoder

    f = flags.FLAGS
    config = f.config
    if len(argv) > 1:
        raise ValueError(f"unexpected arguments {argv[1:]}; use --in, --out, --config")
    ae = get_autoencoder(config.autoencoder)
    te = get_text_encoder(config.text_encoder)

    def encode_video(v: np.ndarray) -> np.ndarray:
        return np.asarray(ae.encode(jnp.asarray(v)), np.float32)

    def encode_text(texts: Sequence[str]):
        e = te.encode(list(texts))
        return e.tokens, e.mask, e.pooled

    counts = cache_shards(
        config,
        f["in"].value,
        f.out,
        encode_video=encode_video,
        encode_text=encode_text,
        split=f.split,
        drop_video=f.drop_video,
        batch_size=f.batch,
    )
    print(json.dumps(counts))
    return 0


if __name__ == "__main__":
    from absl import app, flags
    from ml_collections import config_flags

    config_flags.DEFINE_config_file("config", None, "configs/stiv.py:ARG", lock_config=False)
    flags.DEFINE_string("in", None, "input shards directory", required=True)
    flags.DEFINE_string("out", None, "output shards directory", required=True)
    flags.DEFINE_string("split", "train", "split name of the shards")
    flags.DEFINE_bool("drop_video", False, "drop the video bytes from cached records")
    flags.DEFINE_integer("batch", 4, "clips per encoder call")

    def cli(argv: Sequence[str]) -> None:
        try:
            sys.exit(main(argv))
        except (ValueError, FileNotFoundError) as e:  # one line, no traceback
            raise SystemExit(f"error: {e}") from None

    app.run(cli)
