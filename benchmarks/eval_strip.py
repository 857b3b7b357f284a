"""A labelled frame-strip sheet of an evaluation: ground truth above the model, per case.

  python benchmarks/eval_strip.py --eval runs/stiv_s/eval --out docs/img/s_main_job.png \
      [--ti2v 0,1,2,3] [--t2v 0,1] [--config configs/stiv.py:variant=S]

Reads `EVAL/videos/{ti2v-NNNN-x1,t2v-NNNN-x1}.mp4` (written by `python -m stiv_jax.evaluate`)
and regenerates each case's ground-truth clip from ShapesBench (the config's data fields,
held-out split). Rows: for each TI2V case its clip, then the model's video (frame 0 given);
then each T2V case's clip and video. Written atomically as one PNG.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--eval", required=True, help="an evaluate --out directory")
    ap.add_argument("--out", required=True, help="PNG to write")
    ap.add_argument("--ti2v", default="0,1,2,3", help="TI2V case indices")
    ap.add_argument("--t2v", default="0,1", help="T2V case indices")
    ap.add_argument("--config", default="variant=S", help="configs/stiv.py argument string")
    a = ap.parse_args()

    from configs.stiv import get_config
    from stiv_jax.data.shapes import config_kwargs, generate_clip
    from stiv_jax.previews import _write_bytes, contact_sheet, frame_strip, png_bytes
    from stiv_jax.video import read_mp4

    config = get_config(a.config.split(":")[-1])
    seed = config.data.shapes.heldout_seed
    strips, labels = [], []
    for task, cases in (("ti2v", a.ti2v), ("t2v", a.t2v)):
        for i in [int(c) for c in cases.split(",") if c.strip()]:
            path = os.path.join(a.eval, "videos", f"{task}-{i:04d}-x1.mp4")
            if not os.path.isfile(path):
                raise SystemExit(f"error: {path} does not exist (run stiv_jax.evaluate first)")
            clip = generate_clip(i, split="heldout", seed=seed, **config_kwargs(config))
            strips += [frame_strip(clip["video"]), frame_strip(read_mp4(path))]
            labels += [f"{task} case {i} truth: {clip['caption']}", f"{task} case {i} model"]
    _write_bytes(a.out, png_bytes(contact_sheet(strips, labels)))
    print(f"wrote {a.out} ({len(strips)} rows)")


if __name__ == "__main__":
    main()
