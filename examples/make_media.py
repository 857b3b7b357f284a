"""Example condition media for the README's application commands, from held-out ShapesBench.

  python examples/make_media.py [--out examples/media] [--res 32] [--frames 8] [--index 0]

Writes (atomically) OUT/first.png, OUT/mid.png, OUT/last.png (frames 0, T/2, T-1 of one
held-out clip), OUT/ctx.mp4 (the clip: context for prediction) and OUT/in.mp4 (another
clip: the video-to-video input), and prints the clip's caption. Shapes: T frames, res x res
pixels, uint8 RGB. Nothing is downloaded; the clips are a pure function of the arguments.
"""

from __future__ import annotations

import argparse
import os

from PIL import Image

from stiv_jax.atomic import atomic_path
from stiv_jax.data.shapes import generate_clip
from stiv_jax.video import write_mp4

HELDOUT_SEED = 1_000_003  # configs/stiv.py data.shapes.heldout_seed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "media"))
    ap.add_argument("--res", type=int, default=32)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--index", type=int, default=0)
    a = ap.parse_args()
    kw = dict(res=a.res, frames=a.frames, split="heldout", seed=HELDOUT_SEED)
    clip, other = generate_clip(a.index, **kw), generate_clip(a.index + 1, **kw)
    os.makedirs(a.out, exist_ok=True)
    video = clip["video"]
    for name, frame in (("first", 0), ("mid", a.frames // 2), ("last", a.frames - 1)):
        with atomic_path(os.path.join(a.out, f"{name}.png"), suffix=".png") as tmp:
            Image.fromarray(video[frame]).save(tmp)
    write_mp4(os.path.join(a.out, "ctx.mp4"), video)
    write_mp4(os.path.join(a.out, "in.mp4"), other["video"])
    print(f"wrote {a.out}/{{first,mid,last}}.png, ctx.mp4, in.mp4; caption: {clip['caption']!r}")


if __name__ == "__main__":
    main()
