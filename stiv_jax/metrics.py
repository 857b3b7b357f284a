"""ShapesBench video metrics: score generated videos against the generator's ground truth.

Shapes: videos are uint8 [T, H, W, 3] RGB (T frames, H x W pixels); tracks are float [T].
(The model legend B, F, S, L, D, N, H does not apply: these are pixel-space metrics.)

numpy, OpenCV and scipy.stats. Objects are found by colour (pixels within `COLOR_TOL` of the object's
RGB; ShapesBench colours are >= 95 apart, so the balls do not overlap), giving a centroid
and an area per frame. The background's screen motion is a masked global alignment of
non-object pixels between frames (`background_shift`), so object motion is judged relative
to the world, as the caption states it, even while the camera pans. Every metric returns a
plain float; `evaluate_videos` averages them over clips.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import scipy.stats

from stiv_jax.data.motion import motion_score
from stiv_jax.data.shapes import DIRECTIONS, SPEEDS

COLOR_TOL = 45.0  # RGB distance for a pixel to belong to an object (half the colour gap)
MIN_AREA = 2  # pixels; fewer means the object is not visible in that frame
STILL_FRACTION = 0.5  # slower than this fraction of the "slow" speed counts as still
SIZE_RATIO = 1.15  # area ratio (last / first) beyond which a size change is detected
FLAT_STD = 3.0  # gray-level std below which a background is flat (camera motion unseen)
DYNAMIC_FRACTION = 0.01  # dynamic degree threshold on the motion score, fraction of res
_DIR_ANGLES = {name: math.atan2(dy, dx) for name, (dx, dy) in DIRECTIONS.items()}


# --------------------------------------------------------------------------- tracking


def _check_video(video: np.ndarray) -> np.ndarray:
    video = np.asarray(video)
    if video.ndim != 4 or video.shape[-1] != 3 or video.dtype != np.uint8:
        raise ValueError(f"video {video.dtype} {video.shape} must be uint8 [T, H, W, 3]")
    return video


def color_mask(video: np.ndarray, rgb: Sequence[int], tol: float = COLOR_TOL) -> np.ndarray:
    """bool [T, H, W]: pixels within `tol` (RGB distance) of `rgb`."""
    diff = video.astype(np.float32) - np.asarray(rgb, np.float32)
    return np.einsum("thwc,thwc->thw", diff, diff) < tol * tol


def track_color(video: np.ndarray, rgb: Sequence[int], tol: float = COLOR_TOL) -> dict:
    """Centroid x, y (px, NaN when not visible), area (px) and visibility per frame [T]."""
    mask = color_mask(_check_video(video), rgb, tol)
    area = mask.sum(axis=(1, 2)).astype(np.float64)
    ys, xs = np.indices(mask.shape[1:], dtype=np.float64)
    visible = area >= MIN_AREA
    with np.errstate(invalid="ignore", divide="ignore"):
        x = np.where(visible, (mask * xs).sum(axis=(1, 2)) / area, np.nan)
        y = np.where(visible, (mask * ys).sum(axis=(1, 2)) / area, np.nan)
    return {"x": x, "y": y, "area": area, "visible": visible}


def _subpixel(c_m: float, c_0: float, c_p: float) -> float:
    """Offset of a parabola's minimum through costs at -1, 0, +1 (clipped to half a pixel)."""
    den = c_m - 2 * c_0 + c_p
    return 0.0 if den <= 0 else float(np.clip(0.5 * (c_m - c_p) / den, -0.5, 0.5))


def _search(g0, g1, ok0, ok1, center: tuple[int, int], r: int):
    """Masked-SSD shift s = center + [-r, r]^2 (x, y) with g1(p) ~ g0(p - s), sub-pixel."""
    h, w = g0.shape
    m = max(abs(center[0]), abs(center[1])) + r  # margin so every shifted window fits
    if min(h, w) - 2 * m < 8:
        return None
    core1, okc = g1[m : h - m, m : w - m], ok1[m : h - m, m : w - m]
    cost = np.full((2 * r + 1, 2 * r + 1), np.inf)
    for j in range(2 * r + 1):
        for i in range(2 * r + 1):
            sx, sy = center[0] + i - r, center[1] + j - r
            win = (slice(m - sy, h - m - sy), slice(m - sx, w - m - sx))
            valid = okc & ok0[win]
            if valid.sum() >= 16:
                cost[j, i] = np.mean((core1[valid] - g0[win][valid]) ** 2)
    if not np.isfinite(cost).any():
        return None
    iy, ix = np.unravel_index(np.argmin(cost), cost.shape)
    sx, sy = float(center[0] + ix - r), float(center[1] + iy - r)
    if 0 < ix < 2 * r and np.isfinite(cost[iy, ix - 1 : ix + 2]).all():
        sx += _subpixel(*cost[iy, ix - 1 : ix + 2])
    if 0 < iy < 2 * r and np.isfinite(cost[iy - 1 : iy + 2, ix]).all():
        sy += _subpixel(*cost[iy - 1 : iy + 2, ix])
    return sx, sy


def _pair_shift(g0, g1, ok0, ok1, r: int):
    """Shift (x, y) of g0 -> g1 over pixels valid in both, up to r px; None if unobservable.

    Exhaustive search for r <= 3; larger ranges go coarse-to-fine (half resolution with
    half the range, then +-2 px at full resolution), which keeps 256 px clips fast.
    """
    h, w = g0.shape
    if r <= 3 or min(h, w) < 32:
        return _search(g0, g1, ok0, ok1, (0, 0), r)
    size = ((w + 1) // 2, (h + 1) // 2)
    # A coarse pixel is valid only if its whole (blurred) footprint was valid.
    down_ok = [
        cv2.resize(cv2.erode(m.astype(np.uint8), np.ones((3, 3), np.uint8)), size) > 0
        for m in (ok0, ok1)
    ]
    coarse = _pair_shift(cv2.pyrDown(g0), cv2.pyrDown(g1), *down_ok, (r + 1) // 2)
    if coarse is None:
        return None
    return _search(g0, g1, ok0, ok1, (round(2 * coarse[0]), round(2 * coarse[1])), 2)


def background_shift(
    video: np.ndarray, object_rgbs: Sequence[Sequence[int]] = (), max_shift: int = 2
) -> np.ndarray:
    """float [T, 2]: cumulative screen shift (x, y) of the background since frame 0.

    Between consecutive frames: the global shift (up to `max_shift` px per frame) that best
    aligns the pixels away from every object (colour mask dilated by 1 px). Dense optical
    flow is no good here: on 32 px frames its window spreads object motion over the
    background. A flat background (std < `FLAT_STD`) carries no camera motion: shift 0.
    """
    video = _check_video(video)
    t = video.shape[0]
    ok = np.ones(video.shape[:3], bool)
    kernel = np.ones((3, 3), np.uint8)
    for rgb in object_rgbs:
        for f, m in enumerate(color_mask(video, rgb, 2 * COLOR_TOL)):
            ok[f] &= cv2.dilate(m.astype(np.uint8), kernel) == 0
    gray = video.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    shift = np.zeros((t, 2))
    for f in range(1, t):
        step = None
        if gray[f][ok[f]].std() >= FLAT_STD:
            step = _pair_shift(gray[f - 1], gray[f], ok[f - 1], ok[f], max_shift)
        shift[f] = shift[f - 1] + (step if step is not None else 0.0)
    return shift


# --------------------------------------------------------------------------- classifiers


def classify_direction(dx: float, dy: float, still_below: float) -> str:
    """One of the 8 `DIRECTIONS` (nearest 45-degree sector) or "still" if shorter."""
    if not (np.isfinite(dx) and np.isfinite(dy)):
        return "lost"
    if math.hypot(dx, dy) < still_below:
        return "still"
    ang = math.atan2(dy, dx)
    return min(_DIR_ANGLES, key=lambda k: abs(math.remainder(ang - _DIR_ANGLES[k], 2 * math.pi)))


def classify_pan(shift: np.ndarray, still_below: float) -> str:
    """Camera pan from the background's cumulative screen shift [T, 2]; "none" if small."""
    dx, dy = shift[-1]
    if math.hypot(dx, dy) < still_below:
        return "none"
    # Content moving left on screen means the camera pans right.
    if abs(dx) >= abs(dy):
        return "right" if dx < 0 else "left"
    return "down" if dy < 0 else "up"


def classify_size(area: np.ndarray, visible: np.ndarray) -> str:
    """grow / shrink / same from the tracked area of the first and last visible frames."""
    idx = np.flatnonzero(visible)
    if idx.size < 2:
        return "lost"
    ratio = area[idx[-1]] / area[idx[0]]
    return "grow" if ratio > SIZE_RATIO else "shrink" if ratio < 1 / SIZE_RATIO else "same"


def _displacement(track: dict) -> tuple[float, float, int]:
    """(dx, dy) between the first and last visible frames, and the frame gap."""
    idx = np.flatnonzero(track["visible"])
    if idx.size < 2:
        return math.nan, math.nan, 0
    a, b = idx[0], idx[-1]
    return track["x"][b] - track["x"][a], track["y"][b] - track["y"][a], int(b - a)


# --------------------------------------------------------------------------- per clip


def score_clip(video: np.ndarray, truth: dict[str, Any]) -> dict[str, Any]:
    """Per-object and per-clip measurements of one video against its ShapesBench truth.

    Objects: measured direction (relative to the background), size change, visibility,
    colour and size stability. Clip: measured camera pan and motion score.
    """
    video = _check_video(video)
    t, h, w = video.shape[:3]
    if (h, w) != (truth["res"], truth["res"]):
        raise ValueError(f"video is {h}x{w} but the ground truth is {truth['res']}x{truth['res']}")
    rgbs = [o["rgb"] for o in truth["objects"]]
    # Speeds in px per kept frame; a frame stride makes the scene move that much faster.
    slow = SPEEDS["slow"] * truth["res"] * truth.get("frame_stride", 1)
    # Search 1.5x the fastest pan per kept frame, but stay under half a texture period.
    max_shift = max(
        2, math.ceil(1.5 * SPEEDS["fast"] * truth["res"] * truth.get("frame_stride", 1))
    )
    bg = background_shift(video, rgbs, max_shift)
    objects = []
    for obj in truth["objects"]:
        tr = track_color(video, obj["rgb"])
        # Object motion relative to the background: subtract the world's screen motion.
        rel = dict(tr, x=tr["x"] - bg[:, 0], y=tr["y"] - bg[:, 1])
        dx, dy, gap = _displacement(rel)
        direction = classify_direction(dx, dy, STILL_FRACTION * slow * max(gap, 1))
        vis = tr["visible"]
        colors = [
            video[f][color_mask(video[f : f + 1], obj["rgb"])[0]].mean(0)
            for f in np.flatnonzero(vis)
        ]
        color_dev = (
            float(np.mean(np.linalg.norm(np.asarray(colors) - np.mean(colors, 0), axis=-1)))
            if colors
            else math.nan
        )
        areas = tr["area"][vis]
        objects.append(
            {
                "motion": obj["motion"],
                "direction": direction,
                # px between the first and last visible frames, relative to the background
                "dx": float(dx),
                "dy": float(dy),
                "size_change": classify_size(tr["area"], vis),
                "visible": float(vis.mean()),
                # Stability terms in [0, 1]: 1 = constant colour / constant area.
                "color_stability": 1.0 - min(1.0, color_dev / COLOR_TOL) if colors else 0.0,
                "size_stability": 1.0 - min(1.0, float(areas.std() / areas.mean()))
                if areas.size
                else 0.0,
            }
        )
    return {
        "objects": objects,
        "pan": classify_pan(bg, STILL_FRACTION * slow * max(t - 1, 1)),
        "true_pan": truth["camera"]["pan"],
        "motion_score": motion_score(video, interval=truth.get("motion_interval", 2)),
    }


# --------------------------------------------------------------------------- image fidelity


def psnr(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> float:
    """Peak signal-to-noise ratio in dB (inf for identical inputs)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"psnr inputs differ in shape: {a.shape} vs {b.shape}")
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(data_range**2 / mse)


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 255.0, sigma: float = 1.5) -> float:
    """SSIM (Wang et al. 2004): Gaussian window sigma 1.5 (11 taps), K1 0.01, K2 0.03.

    Images [H, W] or [H, W, C]; channels are scored separately and averaged; the mean
    skips a border of half a window, where the window would leave the image (as
    scikit-image's `structural_similarity(gaussian_weights=True,
    use_sample_covariance=False)` does).
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"ssim inputs differ in shape: {a.shape} vs {b.shape}")
    radius = int(3.5 * sigma + 0.5)
    if min(a.shape[:2]) <= 2 * radius:
        raise ValueError(
            f"ssim image {a.shape[:2]} must be larger than the {2 * radius + 1}px window"
        )
    if a.ndim == 2:
        a, b = a[..., None], b[..., None]
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    k = cv2.getGaussianKernel(2 * radius + 1, sigma)

    def blur(x: np.ndarray) -> np.ndarray:
        return cv2.sepFilter2D(x, cv2.CV_64F, k, k, borderType=cv2.BORDER_REFLECT)

    scores = []
    for ch in range(a.shape[-1]):
        x, y = a[..., ch], b[..., ch]
        mx, my = blur(x), blur(y)
        vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
        s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
        scores.append(s[radius:-radius, radius:-radius].mean())
    return float(np.mean(scores))


# --------------------------------------------------------------------------- statistics


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (ties get average ranks); 0.0 if either side is constant
    (where scipy returns NaN with a warning: no ranking to agree with)."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if a.size != b.size or a.size < 2:
        raise ValueError(
            f"spearman needs two equal-length sequences of >= 2, got {a.size}, {b.size}"
        )
    if np.all(a == a[0]) or np.all(b == b[0]):
        return 0.0
    return float(scipy.stats.spearmanr(a, b).statistic)


# --------------------------------------------------------------------------- aggregate


def static_baseline(video: np.ndarray) -> np.ndarray:
    """The trivial "video" that repeats frame 0: uint8 [T, H, W, 3]."""
    video = _check_video(video)
    return np.repeat(video[:1], video.shape[0], axis=0)


def consistency_factors(obj: dict[str, Any]) -> tuple[float, float, float]:
    """A `score_clip` object's subject consistency factors: visible share, colour stability,
    size stability (1.0 for an object asked to grow or shrink); their product is its score."""
    keep_size = obj["motion"] not in ("grow", "shrink")
    return obj["visible"], obj["color_stability"], obj["size_stability"] if keep_size else 1.0


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else math.nan


# The per-video metrics `evaluate_videos` reports, in the order of the evaluator's tables.
# A new metric is a new entry here and in `evaluate_videos`' dict (nothing else changes).
VIDEO_METRICS = (
    "direction_accuracy",
    "still_accuracy",
    "size_accuracy",
    "pan_accuracy",
    "static_camera_accuracy",
    "subject_consistency",
    "dynamic_degree",
    "first_frame_psnr",
    "first_frame_ssim",
)


def evaluate_videos(
    videos: Sequence[np.ndarray],
    cases: Sequence[dict[str, Any]],
    *,
    requested_scores: Sequence[float] | None = None,
) -> dict[str, float]:
    """ShapesBench metrics of `videos` against `cases` (`heldout_cases` dicts), averaged.

    direction_accuracy   objects captioned with a direction: measured direction matches
    still_accuracy       objects captioned still (not during pans): measured still
    size_accuracy        grow/shrink objects: measured size change matches
    pan_accuracy         clips with a camera pan: measured pan direction matches
    static_camera_accuracy  clips without a pan: no pan measured
    subject_consistency  objects: visible share x colour stability x size stability
                         (size stability only for objects that should keep their size)
    first_frame_psnr/ssim  frame 0 vs the condition image (the case's frame 0)
    motion_control       Spearman(requested motion score, measured motion score);
                         requested defaults to the case's ground-truth score
    dynamic_degree       share of videos with motion score > 0.01 * res
    NaN marks a metric with no eligible object or clip.
    """
    if len(videos) != len(cases):
        raise ValueError(f"got {len(videos)} videos for {len(cases)} cases")
    direction, still, size, pan, no_pan, consistency = [], [], [], [], [], []
    p, s, measured, dynamic = [], [], [], []
    for video, case in zip(videos, cases):
        truth = case["truth"]
        clip = score_clip(video, truth)
        for obj in clip["objects"]:
            if obj["motion"] in DIRECTIONS:
                direction.append(obj["direction"] == obj["motion"])
            elif obj["motion"] == "still" and truth["camera"]["pan"] == "none":
                still.append(obj["direction"] == "still")
            elif obj["motion"] in ("grow", "shrink"):
                size.append(obj["size_change"] == obj["motion"])
            consistency.append(math.prod(consistency_factors(obj)))
        (pan if clip["true_pan"] != "none" else no_pan).append(clip["pan"] == clip["true_pan"])
        p.append(min(psnr(video[0], case["video"][0]), 100.0))  # cap inf for averaging
        s.append(ssim(video[0], case["video"][0]))
        measured.append(clip["motion_score"])
        dynamic.append(clip["motion_score"] > DYNAMIC_FRACTION * truth["res"])
    requested = (
        [float(c["motion_score"]) for c in cases] if requested_scores is None else requested_scores
    )
    if len(requested) != len(videos):
        raise ValueError(f"got {len(requested)} requested scores for {len(videos)} videos")
    return {
        "direction_accuracy": _mean(direction),
        "still_accuracy": _mean(still),
        "size_accuracy": _mean(size),
        "pan_accuracy": _mean(pan),
        "static_camera_accuracy": _mean(no_pan),
        "subject_consistency": _mean(consistency),
        "first_frame_psnr": _mean(p),
        "first_frame_ssim": _mean(s),
        "motion_control": spearman(requested, measured) if len(videos) > 1 else math.nan,
        "dynamic_degree": _mean(dynamic),
        "num_videos": float(len(videos)),
    }


# --------------------------------------------------------------------------- long-video seams


def _jump_ratio(steps: np.ndarray, seam_idx: list[int]) -> float:
    """Mean step at the seams / median step elsewhere (1 = a seam looks like any frame)."""
    steps = np.asarray(steps, np.float64)
    ok = np.isfinite(steps)
    at = [steps[i] for i in seam_idx if ok[i]]
    rest = np.delete(steps, seam_idx)
    rest = rest[np.isfinite(rest)]
    if not at or rest.size == 0:
        return math.nan
    return float(np.mean(at) / max(float(np.median(rest)), 1e-3))


def seam_scores(
    video: np.ndarray, seams: Sequence[int], colors: Sequence[Sequence[int]] = ()
) -> dict[str, float]:
    """How visible the chunk boundaries of a stitched long video are.

    video uint8 [T, H, W, 3]; seams: frames where a new chunk starts (frame s follows s−1
    across the boundary); colors: RGB of tracked objects (ShapesBench truth), may be empty.
      color_jump_ratio   mean-frame-colour change across seams / median change elsewhere
      color_drift        RGB distance between the mean colours of the first and last chunk
      track_jump_ratio   object centroid step across seams / median step elsewhere
      track_lost_at_seam share of (object, seam) pairs visible before a seam and not after
    Ratios near 1 mean no seam; NaN where nothing could be measured.
    """
    video = _check_video(video)
    t = video.shape[0]
    seams = sorted(int(s) for s in seams if 0 < int(s) < t)
    if not seams:
        raise ValueError(f"seams {list(seams)} must hold frames in [1, {t - 1}]")
    idx = [s - 1 for s in seams]  # step s-1 -> s
    mean_rgb = video.reshape(t, -1, 3).astype(np.float64).mean(1)  # [T, 3]
    color_steps = np.linalg.norm(np.diff(mean_rgb, axis=0), axis=1)
    bounds = [0, *seams, t]
    first, last = mean_rgb[bounds[0] : bounds[1]].mean(0), mean_rgb[bounds[-2] : bounds[-1]].mean(0)
    track_ratios, lost = [], []
    for rgb in colors:
        tr = track_color(video, rgb)
        steps = np.hypot(np.diff(tr["x"]), np.diff(tr["y"]))
        track_ratios.append(_jump_ratio(steps, idx))
        vis = tr["visible"]
        lost += [bool(vis[s - 1] and not vis[s]) for s in seams]
    finite = [r for r in track_ratios if math.isfinite(r)]
    return {
        "color_jump_ratio": _jump_ratio(color_steps, idx),
        "color_drift": float(np.linalg.norm(last - first)),
        "track_jump_ratio": float(np.mean(finite)) if finite else math.nan,
        "track_lost_at_seam": float(np.mean(lost)) if lost else math.nan,
    }
