"""THE motion score (Step-Video-TI2V, arXiv 2503.11251, data curation).

Step-Video scores a clip's motion with OpenCV: grayscale frames sampled every `interval`
frames (paper: 12), dense Farneback optical flow between consecutive sampled frames, the
per-pixel flow magnitude, and the mean of the largest magnitudes. We take the top
`top_fraction` (default 10%) of magnitudes over all sampled pairs, in pixels per sampled
interval, measured at the clip's own resolution. The ShapesBench generator, the offline
data engine and the evaluator all call this one function.
"""

from __future__ import annotations

import cv2
import numpy as np

FARNEBACK = dict(
    pyr_scale=0.5, levels=3, winsize=15, iterations=3, poly_n=5, poly_sigma=1.2, flags=0
)


def _gray(frame: np.ndarray) -> np.ndarray:
    if frame.ndim == 2:
        return frame
    if frame.ndim == 3 and frame.shape[-1] == 3:
        return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    raise ValueError(f"frame shape {frame.shape} is not [H,W] or [H,W,3]")


def motion_score(frames: np.ndarray, *, interval: int = 12, top_fraction: float = 0.1) -> float:
    """Mean of the top `top_fraction` Farneback flow magnitudes of a clip.

    frames: uint8 [T, H, W, 3] (RGB) or [T, H, W] (gray). Clips shorter than `interval + 1`
    frames use their first and last frame. Returns 0.0 for a single-frame clip.
    """
    frames = np.asarray(frames)
    if frames.ndim not in (3, 4):
        raise ValueError(f"frames shape {frames.shape} is not [T,H,W] or [T,H,W,3]")
    if frames.dtype != np.uint8:
        raise ValueError(f"frames dtype {frames.dtype} must be uint8")
    if interval < 1:
        raise ValueError(f"interval={interval} must be >= 1")
    if not 0.0 < top_fraction <= 1.0:
        raise ValueError(f"top_fraction={top_fraction} must be in (0, 1]")
    t = frames.shape[0]
    if t < 2:
        return 0.0
    idx = list(range(0, t, interval)) if t > interval else [0, t - 1]
    gray = [_gray(frames[i]) for i in idx]
    mags = []
    for a, b in zip(gray[:-1], gray[1:]):
        flow = cv2.calcOpticalFlowFarneback(a, b, None, **FARNEBACK)
        mags.append(np.linalg.norm(flow, axis=-1).ravel())
    mag = np.concatenate(mags)
    k = max(1, int(round(top_fraction * mag.size)))
    return float(np.mean(np.partition(mag, mag.size - k)[-k:]))
