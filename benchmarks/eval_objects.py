"""Per-object breakdown of an evaluation: why direction accuracy is what it is.

  python benchmarks/eval_objects.py --eval runs/stiv_s/eval [--config variant=S]

Reads `<eval>/videos` (the MP4s and truth JSONs `stiv_jax.evaluate` wrote) and prints, per
object of every x1 TI2V and T2V video: background, pan, speed, the true direction, the
measured one (the evaluator's own `metrics.score_clip`), the measured displacement relative
to the background (px) and its angle error to the truth (degrees), the visible share and the
colour stability. Then per task: exact-class accuracy, the share within one 45-degree sector,
and the accuracy split by speed, background and object count. Pixel-space: videos are
uint8 [T, H, W, 3]; the model legend does not apply.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections import defaultdict

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from stiv_jax import metrics  # noqa: E402
from stiv_jax.data.shapes import DIRECTIONS  # noqa: E402

ANGLES = {k: math.degrees(math.atan2(dy, dx)) for k, (dx, dy) in DIRECTIONS.items()}


def angle_error(dx: float, dy: float, truth: str) -> float:
    """|angle(dx, dy) - angle(truth)| in degrees (NaN when not measurable)."""
    if not (np.isfinite(dx) and np.isfinite(dy)) or math.hypot(dx, dy) == 0:
        return math.nan
    d = math.degrees(math.atan2(dy, dx)) - ANGLES[truth]
    return abs((d + 180.0) % 360.0 - 180.0)


def object_rows(video: np.ndarray, case: dict) -> list[dict]:
    """One row per directional object: the evaluator's measurement plus its displacement."""
    truth = case["truth"]
    clip = metrics.score_clip(video, truth)
    rows = []
    for obj, meas in zip(truth["objects"], clip["objects"]):
        if obj["motion"] not in DIRECTIONS:
            continue
        dx, dy = meas["dx"], meas["dy"]
        rows.append(
            {
                "truth": obj["motion"],
                "measured": meas["direction"],
                "speed": obj["speed"],
                "background": truth["background"]["kind"],
                "pan": truth["camera"]["pan"],
                "objects": len(truth["objects"]),
                "disp": math.hypot(dx, dy) if np.isfinite(dx) else math.nan,
                "err": angle_error(dx, dy, obj["motion"]),
                "visible": meas["visible"],
                "color": meas["color_stability"],
            }
        )
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="variant=S", help="configs/stiv.py argument string")
    ap.add_argument("--eval", required=True, help="the evaluate --out directory")
    args = ap.parse_args(argv)
    from configs.stiv import get_config
    from stiv_jax.evaluate import read_videos

    config = get_config(args.config.split(":")[-1])
    videos, cases, errors = read_videos(os.path.join(args.eval, "videos"), config)
    for e in errors:
        print("skipped:", e)
    for task in ("ti2v", "t2v"):
        items = sorted((i for i in videos if i.task == task and i.multiplier == 1.0),
                       key=lambda i: i.index)  # fmt: skip
        if not items:
            continue
        print(f"\n{task}: case  background  pan  speed  objects  truth -> measured  "
              "disp px  angle err  visible  colour")  # fmt: skip
        rows = []
        for it in items:
            for r in object_rows(videos[it], cases[it.index]):
                rows.append(r)
                print(f"  {it.index:3d}  {r['background']:9s} {r['pan']:5s} {r['speed']:6s} "
                      f"{r['objects']}  {r['truth']:>10s} -> {r['measured']:10s} "
                      f"{r['disp']:5.1f}  {r['err']:5.0f}  {r['visible']:.2f}  {r['color']:.2f}")  # fmt: skip
        exact = [r["truth"] == r["measured"] for r in rows]
        near = [r["err"] <= 67.5 for r in rows if np.isfinite(r["err"])]
        print(f"{task}: {len(rows)} objects, exact {np.mean(exact):.3f}, within one sector "
              f"{np.sum(near) / len(rows):.3f}, median angle error "
              f"{np.nanmedian([r['err'] for r in rows]):.0f} deg")  # fmt: skip
        for key in ("speed", "background", "objects"):
            groups = defaultdict(list)
            for r, ok in zip(rows, exact):
                groups[r[key]].append(ok)
            print(f"  by {key}: " + ", ".join(
                f"{k} {np.mean(v):.2f} ({len(v)})" for k, v in sorted(groups.items(), key=str)))  # fmt: skip


if __name__ == "__main__":
    main()
