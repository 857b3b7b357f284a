"""cache_latents: cached pixel-autoencoder latents and MiniLM outputs equal the live pipeline's."""

from __future__ import annotations

import os

import jax.numpy as jnp
import ml_collections
import numpy as np

from configs.stiv import get_config
from data_pipeline import shards as shards_lib
from data_pipeline.cache_latents import cache_shards
from stiv_jax.autoencoders import get_autoencoder
from stiv_jax.data import records
from stiv_jax.encoders import get_text_encoder


def _write_eval_shard(path: str) -> None:
    rng = np.random.default_rng(0)
    recs, rows = [], []
    for i, (h, w) in enumerate([(16, 16), (16, 32), (16, 16)]):
        video = rng.integers(0, 255, (6, h, w, 3), dtype=np.uint8)
        rec = dict(video=video, video_format="raw", caption=f"clip number {i}", fps=8.0)
        rec.update(motion_score=np.float32(i), orig_size=[h, w], num_frames=6, source=str(i))
        recs.append(records.encode_record(rec))
        rows.append((h, w, 6))
    name = os.path.join(path, shards_lib.shard_name("eval", 0, 1))
    shards_lib.write_records(name, recs)
    shards_lib.write_index(name + ".index.npy", rows)


def test_cached_equals_live(tmp_path):
    src, out = str(tmp_path / "src"), str(tmp_path / "cached")
    os.makedirs(src)
    _write_eval_shard(src)
    c = get_config("variant=tiny")
    c.data.source, c.data.path, c.data.batch_size = "records", src, 1
    c.data.buckets = {"shapes": ("4x8x8", "4x8x16")}
    c.data.frame_stride, c.data.predict_frames, c.data.frames = 1, 1, 4
    c.text_encoder = ml_collections.ConfigDict({"name": "minilm", "path": "", "max_length": 8})
    ae, te = get_autoencoder(c.autoencoder), get_text_encoder(c.text_encoder)

    def encode_text(texts):
        e = te.encode(list(texts))
        return e.tokens, e.mask, e.pooled

    counts = cache_shards(
        c,
        src,
        out,
        encode_video=lambda v: np.asarray(ae.encode(jnp.asarray(v))),
        encode_text=encode_text,
        split="eval",
        drop_video=True,
        batch_size=2,
    )
    assert counts == {"records": 3, "cached": 3, "no_bucket": 0}
    live = list(records.records_dataset(c, latent_frames=4, split="eval"))
    c.data.path = out
    cached = list(records.records_dataset(c, latent_frames=4, split="eval"))
    assert len(live) == len(cached) == 3  # eval: bucket after bucket, batch 1
    ref = {str(b["caption"][0]): b for b in live}
    for b in cached:
        assert "video" not in b and "caption" not in b
        i = int(round(float(b["motion_score"][0])))
        lb = ref[f"clip number {i}"]
        # Pixel autoencoder: latents are the centre-cropped video (float16 storage).
        np.testing.assert_allclose(b["latents"], lb["video"], atol=4e-3)
        np.testing.assert_array_equal(b["micro"], lb["micro"])
        e = te.encode([f"clip number {i}"])
        np.testing.assert_allclose(b["text_tokens"][0], e.tokens[0], atol=2e-3, rtol=2e-3)
        np.testing.assert_array_equal(b["text_mask"][0], e.mask[0])
        np.testing.assert_allclose(b["text_pooled"][0], e.pooled[0], atol=2e-3, rtol=2e-3)
