"""Offline data engine: videos → scene-split, motion-scored, filtered ArrayRecord shards.

Shapes: T frames, H x W pixels (clips are uint8 RGB [T, H, W, 3]).
  python -m data_pipeline.prepare --input DIR_OR_MANIFEST --out SHARDS_DIR
  python -m data_pipeline.cache_latents --config configs/stiv.py:variant=S --in S --out C
Modules: inputs (listing), video_io (probe/decode/encode), scenes (PySceneDetect),
filters (clarity, near-duplicates, motion), shards (ArrayRecord files), prepare (the run).
Needs the [data] extra (scenedetect-headless); see docs/data_engine.md.
"""
