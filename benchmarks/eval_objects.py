"""Per-object breakdown of an evaluation: why direction accuracy is what it is.

  python benchmarks/eval_objects.py --eval runs/stiv_s/eval [--config variant=S]

Reads `<eval>/videos` (the MP4s and truth JSONs `stiv_jax.evaluate` wrote) and prints, per
object of every x1 TI2V and T2V video (`--multiplier`: of another motion request):
background, pan, speed, the true direction, the measured one (the evaluator's own
`metrics.score_clip`), the measured displacement relative to the background (px) and its
angle error to the truth (degrees), the visible share and the colour stability. Then per
task: exact-class accuracy, the share within one 45-degree sector, the accuracy split by
speed, background and object count, and by axis (`axis_summary`: how often the measured
direction has the truth's horizontal and vertical components, how often it adds one the
truth lacks, and the measured share of the true displacement along each axis), and a
straight-line fit per axis (`axis_fit`: measured = gain · true + drift, in px over the clip:
a drift is a displacement every object gets whatever it was asked). Then per task the
evaluator's subject consistency split into its three factors (`consistency_terms`: visible
share, colour stability, size stability), for the model and for the ground truth passed
through the same MP4 encoding (the evaluator's ceiling row). For TI2V
also where the video PSNR is lost (`pixel_split`): on pixels the clip keeps from frame 0 (copying it is exact) and
on those that change (moving objects, pans), for the model and for the static floor; and
what the still pixels' error is made of (`still_breakdown`): the share a per-video mean
colour offset explains, and the still-pixel PSNR by background kind and by frame; and the
video PSNR per case kind (camera pan, plain or textured background without a pan), model
against the static floor (`print_kind_psnr`).
Pixel-space: videos are uint8 [T, H, W, 3]; the model legend does not apply.
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
                "dx": dx,
                "dy": dy,
                "true_dx": float(obj["x"][-1] - obj["x"][0]),
                "true_dy": float(obj["y"][-1] - obj["y"][0]),
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


def _components(direction: str) -> tuple[int, int]:
    """Sign of a direction class's (x, y) screen components; (0, 0) for still / lost."""
    dx, dy = DIRECTIONS.get(direction, (0.0, 0.0))
    return int(np.sign(dx)), int(np.sign(dy))


def axis_summary(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Per axis (x: horizontal, y: vertical), over the objects whose truth moves along it:
    `kept` the share whose measured class has the same component, `gain` the measured over
    the true displacement along it (sums over those objects); over the objects whose truth
    does not move along it: `added` the share whose measured class does. Lost objects count
    as not kept and not added; NaN where no object qualifies."""
    out = {}
    for axis, (d, t) in (("x", ("dx", "true_dx")), ("y", ("dy", "true_dy"))):
        k = 0 if axis == "x" else 1
        need = [r for r in rows if _components(r["truth"])[k]]
        none = [r for r in rows if not _components(r["truth"])[k]]
        kept = [_components(r["measured"])[k] == _components(r["truth"])[k] for r in need]
        moved = [r for r in need if np.isfinite(r[d])]
        true = sum(abs(r[t]) for r in moved)
        out[axis] = {
            "kept": float(np.mean(kept)) if need else math.nan,
            "added": float(np.mean([_components(r["measured"])[k] != 0 for r in none]))
            if none
            else math.nan,
            "gain": sum(r[d] * np.sign(r[t]) for r in moved) / true if true else math.nan,
            "objects": len(need),
        }
    return out


def along_gain(rows: list[dict]) -> float:
    """How far the measured objects moved along their true displacement, as a share of it:
    sum of (measured . true) / sum of |true|^2 over the measured (not lost) objects."""
    moved = [r for r in rows if np.isfinite(r["dx"])]
    true = sum(r["true_dx"] ** 2 + r["true_dy"] ** 2 for r in moved)
    dot = sum(r["dx"] * r["true_dx"] + r["dy"] * r["true_dy"] for r in moved)
    return dot / true if true else math.nan


def axis_fit(rows: list[dict]) -> dict[str, tuple[float, float]]:
    """Per axis, least squares over the measured (not lost) objects of measured = gain · true
    + drift (px): gain < 1 is under-movement, drift a shift every object gets. (NaN, NaN)
    with fewer than two objects or one true displacement."""
    moved = [r for r in rows if np.isfinite(r["dx"])]
    out = {}
    for axis in ("x", "y"):
        true = np.array([r[f"true_d{axis}"] for r in moved])
        meas = np.array([r[f"d{axis}"] for r in moved])
        if len(moved) < 2 or np.ptp(true) == 0:
            out[axis] = (math.nan, math.nan)
            continue
        gain, drift = np.polyfit(true, meas, 1)
        out[axis] = (float(gain), float(drift))
    return out


def consistency_terms(video: np.ndarray, truth: dict) -> list[tuple[float, float, float]]:
    """Per object, the factors of the evaluator's subject consistency
    (`metrics.consistency_factors`): visible share, colour and size stability."""
    return [metrics.consistency_factors(o) for o in metrics.score_clip(video, truth)["objects"]]


def print_consistency_terms(task: str, model: list, truth: list) -> None:
    """model / truth: `consistency_terms` rows of every object (model videos, codec truth)."""
    parts = []
    for name, rows in (("model", model), ("ground truth through the codec", truth)):
        t = np.asarray(rows, np.float64)
        parts.append(f"{name} {t[:, 0].mean():.2f} x {t[:, 1].mean():.2f} x {t[:, 2].mean():.2f}"
                     f" -> {t.prod(1).mean():.3f}")  # fmt: skip
    print(f"{task} consistency (visible x colour x size, mean per object -> score): "
          + "; ".join(parts))  # fmt: skip


STILL_TOL = 8  # uint8 levels: a pixel within this of frame 0 in every channel is "still"


def pixel_split(video: np.ndarray, clip: np.ndarray) -> dict:
    """Squared errors of frames 1.. of `video` against `clip` (uint8 [T, H, W, 3]), split by
    whether the clip's pixel is still (within STILL_TOL of frame 0) or changing."""
    v, c = video[1:].astype(np.float64), clip[1:].astype(np.float64)
    still = (np.abs(c - clip[:1].astype(np.float64)).max(-1) <= STILL_TOL)[..., None]
    err = (v - c) ** 2
    floor = (clip[:1].astype(np.float64) - c) ** 2  # frame 0 repeated
    n_still, n = float(still.sum()) * 3, err.size
    return {
        "still_share": n_still / n,
        "err_still": float((err * still).sum()),
        "err_changing": float((err * ~still).sum()),
        "floor_changing": float((floor * ~still).sum()),
        "n_still": n_still,
        "n_changing": n - n_still,
    }


def psnr_of(sq_err: float, count: float) -> float:
    return 10 * math.log10(255.0**2 / max(sq_err / max(count, 1.0), 1e-10))


def print_pixel_split(splits: list[dict]) -> None:
    tot = {k: sum(s[k] for s in splits) for k in splits[0]}
    model = tot["err_still"] + tot["err_changing"]
    print(
        f"ti2v pixels: still {tot['n_still'] / (tot['n_still'] + tot['n_changing']):.2f} of "
        f"frames 1..; model PSNR on still {psnr_of(tot['err_still'], tot['n_still']):.2f} dB "
        f"(copying frame 0: exact), on changing "
        f"{psnr_of(tot['err_changing'], tot['n_changing']):.2f} dB (static floor "
        f"{psnr_of(tot['floor_changing'], tot['n_changing']):.2f}); still pixels hold "
        f"{tot['err_still'] / max(model, 1e-10):.2f} of the model's squared error"
    )


def still_breakdown(video: np.ndarray, clip: np.ndarray) -> dict:
    """The still pixels' errors of frames 1.. (`pixel_split`'s still set): their sum, the
    part a per-video mean colour offset explains (count · |mean error|², per channel), and
    per frame (sum, count) [T - 1, 2]."""
    v, c = video[1:].astype(np.float64), clip[1:].astype(np.float64)
    still = np.abs(c - clip[:1].astype(np.float64)).max(-1) <= STILL_TOL  # [T-1, H, W]
    d = (v - c)[still]  # [N, 3]
    per_frame = np.array([[((v[f] - c[f])[still[f]] ** 2).sum(), 3 * still[f].sum()]
                          for f in range(len(v))])  # fmt: skip
    offset = float((d.mean(0) ** 2).sum() * len(d)) if len(d) else 0.0
    return {"err": float((d**2).sum()), "offset": offset, "n": float(d.size),
            "per_frame": per_frame}  # fmt: skip


def print_still_breakdown(rows: list[tuple[str, dict]]) -> None:
    """rows: (background kind, still_breakdown) per video."""
    err, off, n = (sum(r[k] for _, r in rows) for k in ("err", "offset", "n"))
    frames = sum(r["per_frame"] for _, r in rows)
    kinds = defaultdict(lambda: [0.0, 0.0])
    for kind, r in rows:
        kinds[kind][0] += r["err"]
        kinds[kind][1] += r["n"]
    print(
        f"ti2v still pixels: {psnr_of(err, n):.2f} dB; a per-video mean colour offset holds "
        f"{off / max(err, 1e-10):.2f} of their error (without it {psnr_of(err - off, n):.2f} dB)"
    )
    print("  by background (dB, share of the still error, pixels): " + ", ".join(
        f"{k} {psnr_of(e, c):.1f} ({e / max(err, 1e-10):.2f}, {c / 3:.0f})"
        for k, (e, c) in sorted(kinds.items())))  # fmt: skip
    print("  by frame 1..: " + " ".join(f"{psnr_of(e, c):.1f}" for e, c in frames))


def case_kind(truth: dict) -> str:
    """pan | plain | textured: a held-out case's kind for the PSNR split."""
    if truth["camera"]["pan"] != "none":
        return "pan"
    return "plain" if truth["background"]["kind"] == "plain" else "textured"


def print_kind_psnr(rows: list[tuple[str, np.ndarray, np.ndarray]]) -> None:
    """rows: (case kind, video, clip) per TI2V case. Mean over cases of the PSNR of frames 1..,
    model against the static floor (frame 0 repeated), per kind: where the floor is beaten."""
    groups = defaultdict(list)
    for kind, video, clip in rows:
        c = clip[1:].astype(np.float64)
        model = np.mean((video[1:].astype(np.float64) - c) ** 2)
        floor = np.mean((clip[:1].astype(np.float64) - c) ** 2)
        groups[kind].append((psnr_of(model, 1), psnr_of(floor, 1)))
    print("  video PSNR by case kind (model / static floor, dB, mean over cases): " + ", ".join(
        f"{k} {np.mean([m for m, _ in v]):.2f} / {np.mean([f for _, f in v]):.2f} ({len(v)})"
        for k, v in sorted(groups.items())))  # fmt: skip


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="variant=S", help="configs/stiv.py argument string")
    ap.add_argument("--eval", required=True, help="the evaluate --out directory")
    ap.add_argument("--multiplier", type=float, default=1.0,
                    help="the motion-request multiplier whose videos to read (1, or 0.5 / 2)")  # fmt: skip
    args = ap.parse_args(argv)
    from configs.stiv import get_config
    from stiv_jax.evaluate import codec_roundtrip, read_videos

    config = get_config(args.config.split(":")[-1])
    videos, cases, errors = read_videos(os.path.join(args.eval, "videos"), config)
    for e in errors:
        print("skipped:", e)
    for task in ("ti2v", "t2v"):
        items = sorted((i for i in videos if i.task == task and i.multiplier == args.multiplier),
                       key=lambda i: i.index)  # fmt: skip
        if not items:
            continue
        print(f"\n{task}: case  background  pan  speed  objects  truth -> measured  "
              "disp px  angle err  visible  colour")  # fmt: skip
        rows = []
        if task == "ti2v":
            print_pixel_split([pixel_split(videos[it], cases[it.index]["video"]) for it in items])
            print_still_breakdown([
                (cases[it.index]["truth"]["background"]["kind"],
                 still_breakdown(videos[it], cases[it.index]["video"]))
                for it in items])  # fmt: skip
            print_kind_psnr([(case_kind(cases[it.index]["truth"]), videos[it],
                              cases[it.index]["video"]) for it in items])  # fmt: skip
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
        axes = axis_summary(rows)
        print("  by axis: " + ", ".join(
            f"{'horizontal' if a == 'x' else 'vertical'} kept {v['kept']:.2f} of {v['objects']}, "
            f"added {v['added']:.2f}, moved {v['gain']:.2f} of the truth"
            for a, v in axes.items()))  # fmt: skip
        print("  fit (measured = gain x true + drift px): " + ", ".join(
            f"{'horizontal' if a == 'x' else 'vertical'} {g:.2f} x true {b:+.2f}"
            for a, (g, b) in axis_fit(rows).items()))  # fmt: skip
        truths = codec_roundtrip([cases[it.index]["video"] for it in items], int(config.sample.fps))
        print_consistency_terms(
            task,
            [t for it in items for t in consistency_terms(videos[it], cases[it.index]["truth"])],
            [
                t
                for it, v in zip(items, truths)
                for t in consistency_terms(v, cases[it.index]["truth"])
            ],
        )
        for key in ("speed", "background", "objects"):
            groups = defaultdict(list)
            for r, ok in zip(rows, exact):
                groups[r[key]].append((ok, r))
            print(f"  by {key} (exact, objects, moved along the truth): " + ", ".join(
                f"{k} {np.mean([ok for ok, _ in v]):.2f} ({len(v)}, "
                f"{along_gain([r for _, r in v]):.2f})"
                for k, v in sorted(groups.items(), key=str)))  # fmt: skip


if __name__ == "__main__":
    main()
