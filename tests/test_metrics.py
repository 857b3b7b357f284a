"""ShapesBench metrics: ground truth scores ~1, the static baseline ~0, wrong motion is wrong;
SSIM / PSNR / Spearman against references and known values."""

import math

import numpy as np
import pytest

from stiv_jax import metrics
from stiv_jax.data.shapes import generate_clip

HELDOUT_SEED = 1_000_003


@pytest.fixture(scope="module")
def cases():
    return [generate_clip(i, split="heldout", seed=HELDOUT_SEED) for i in range(100)]


def test_ground_truth_scores_high(cases):
    r = metrics.evaluate_videos([c["video"] for c in cases], cases)
    assert r["direction_accuracy"] >= 0.98
    assert r["still_accuracy"] >= 0.95 and r["size_accuracy"] >= 0.95
    assert r["pan_accuracy"] >= 0.95 and r["static_camera_accuracy"] >= 0.95
    assert r["first_frame_psnr"] == 100.0 and r["first_frame_ssim"] == pytest.approx(1.0)
    assert r["motion_control"] == pytest.approx(1.0)
    assert r["subject_consistency"] > 0.85
    # Every clip with a moving object or a pan is dynamic; only all-still clips are not.
    assert 0.85 <= r["dynamic_degree"] <= 1.0
    assert r["num_videos"] == 100


def test_static_baseline_scores_zero_on_motion(cases):
    r = metrics.evaluate_videos([metrics.static_baseline(c["video"]) for c in cases], cases)
    assert r["direction_accuracy"] <= 0.02
    assert r["size_accuracy"] <= 0.02 and r["pan_accuracy"] <= 0.02
    assert r["dynamic_degree"] <= 0.02
    assert abs(r["motion_control"]) < 0.3  # no relation between requested and measured
    # It copies frame 0 perfectly: fidelity and consistency cannot tell it apart.
    assert r["first_frame_ssim"] == pytest.approx(1.0) and r["still_accuracy"] >= 0.95


def test_reversed_motion_scores_wrong(cases):
    r = metrics.evaluate_videos([np.ascontiguousarray(c["video"][::-1]) for c in cases], cases)
    assert r["direction_accuracy"] <= 0.02
    assert r["size_accuracy"] <= 0.02 and r["pan_accuracy"] <= 0.02
    assert r["first_frame_psnr"] < 30.0


def test_single_wrong_way_object():
    clip = next(
        c
        for c in (generate_clip(i, split="heldout", seed=HELDOUT_SEED) for i in range(200))
        if len(c["truth"]["objects"]) == 1
        and c["truth"]["objects"][0]["motion"] == "right"
        and c["truth"]["camera"]["pan"] == "none"
    )
    assert metrics.score_clip(clip["video"], clip["truth"])["objects"][0]["direction"] == "right"
    mirrored = np.ascontiguousarray(clip["video"][:, :, ::-1])  # the object now moves left
    assert metrics.score_clip(mirrored, clip["truth"])["objects"][0]["direction"] == "left"


def test_vanishing_object_lowers_consistency():
    clip = next(
        c
        for c in (generate_clip(i, textured=False) for i in range(50))
        if len(c["truth"]["objects"]) == 1
    )
    video = clip["video"].copy()
    video[4:] = np.asarray(clip["truth"]["background"]["rgb"], np.uint8)  # gone after frame 3
    full = metrics.evaluate_videos([clip["video"]], [clip])["subject_consistency"]
    half = metrics.evaluate_videos([video], [clip])["subject_consistency"]
    # Visible in half the frames: at most half the score (times its stability there).
    assert full > 0.8 and half <= 0.5 and half < full - 0.3


def test_track_color_and_classifiers():
    video = np.zeros((3, 32, 32, 3), np.uint8)
    for f in range(3):
        video[f, 10:14, 5 + 2 * f : 9 + 2 * f] = (220, 30, 30)
    tr = metrics.track_color(video, (220, 30, 30))
    np.testing.assert_allclose(tr["x"], [6.5, 8.5, 10.5])
    np.testing.assert_allclose(tr["y"], [11.5] * 3)
    np.testing.assert_allclose(tr["area"], [16] * 3)
    assert np.isnan(metrics.track_color(video, (30, 190, 50))["x"]).all()
    assert metrics.classify_direction(1.0, 0.3, 0.5) == "right"
    assert metrics.classify_direction(1.0, 1.1, 0.5) == "down-right"
    assert metrics.classify_direction(-0.2, -2.0, 0.5) == "up"
    assert metrics.classify_direction(0.1, 0.1, 0.5) == "still"
    assert metrics.classify_pan(np.array([[0, 0], [-3.0, 0.5]]), 1.0) == "right"
    assert metrics.classify_pan(np.array([[0, 0], [0.2, 0.1]]), 1.0) == "none"
    vis = np.ones(3, bool)
    assert metrics.classify_size(np.array([10.0, 12, 14]), vis) == "grow"
    assert metrics.classify_size(np.array([10.0, 10, 10.5]), vis) == "same"


@pytest.mark.parametrize("res, max_shift", [(32, 2), (128, 8)])  # 8: coarse-to-fine path
def test_background_shift_recovers_a_pan(res, max_shift):
    clip = next(
        c
        for c in (generate_clip(i, res=res, frames=6) for i in range(200))
        if c["truth"]["camera"]["pan"] != "none"
    )
    rgbs = [o["rgb"] for o in clip["truth"]["objects"]]
    shift = metrics.background_shift(clip["video"], rgbs, max_shift)
    # The world moves on screen by minus the camera offset.
    np.testing.assert_allclose(shift, -clip["truth"]["camera"]["offset"], atol=0.5)


def _ssim_reference(a, b):
    """scikit-image's recipe written out with scipy (gaussian_weights, population cov)."""
    from scipy.ndimage import gaussian_filter

    a, b = a.astype(np.float64), b.astype(np.float64)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    out = []
    for ch in range(a.shape[-1]):
        x, y = a[..., ch], b[..., ch]
        g = lambda z: gaussian_filter(z, 1.5, truncate=3.5, mode="reflect")
        mx, my = g(x), g(y)
        vx, vy, cxy = g(x * x) - mx**2, g(y * y) - my**2, g(x * y) - mx * my
        s = (2 * mx * my + c1) * (2 * cxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
        out.append(s[5:-5, 5:-5].mean())
    return float(np.mean(out))


def test_ssim_matches_reference_and_known_values():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (32, 40, 3), dtype=np.uint8)
    noise = rng.normal(0, 20, a.shape)
    b = np.clip(a + noise, 0, 255).astype(np.uint8)
    pytest.importorskip("scipy", reason="scipy is the SSIM reference")
    assert metrics.ssim(a, b) == pytest.approx(_ssim_reference(a, b), abs=1e-6)
    assert metrics.ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    # Constant images: variances vanish, SSIM = (2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1).
    c1 = (0.01 * 255) ** 2
    x, y = np.full((16, 16), 100.0), np.full((16, 16), 120.0)
    assert metrics.ssim(x, y) == pytest.approx((2 * 100 * 120 + c1) / (100**2 + 120**2 + c1))
    with pytest.raises(ValueError, match="window"):
        metrics.ssim(np.zeros((8, 8)), np.zeros((8, 8)))


def test_psnr_known_values():
    a = np.zeros((4, 4, 3), np.uint8)
    b = a.copy()
    assert metrics.psnr(a, b) == math.inf
    b[:] = 1  # MSE 1
    assert metrics.psnr(a, b) == pytest.approx(20 * math.log10(255.0))
    with pytest.raises(ValueError, match="shape"):
        metrics.psnr(a, b[:2])


def test_spearman_with_ties():
    # Ranks (1, 2.5, 2.5, 4) vs (1, 3, 2, 4): centred dot 4.5, norms^2 4.5 and 5.
    assert metrics.spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(4.5 / math.sqrt(22.5))
    assert metrics.spearman([1, 2, 3], [3, 5, 100]) == pytest.approx(1.0)
    assert metrics.spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert metrics.spearman([1, 1, 1], [3, 2, 1]) == 0.0
    assert metrics.spearman([3, 2, 1], [4, 4, 4]) == 0.0
    with pytest.raises(ValueError, match="equal-length"):
        metrics.spearman([1, 2, 3], [1, 2])


def test_bad_inputs():
    clip = generate_clip(0)
    with pytest.raises(ValueError, match="uint8"):
        metrics.score_clip(clip["video"].astype(np.float32), clip["truth"])
    with pytest.raises(ValueError, match="64x64"):
        metrics.score_clip(generate_clip(0, res=64)["video"], clip["truth"])
    with pytest.raises(ValueError, match="2 videos for 1 cases"):
        metrics.evaluate_videos([clip["video"]] * 2, [clip])


def test_seam_scores_see_a_jump_at_a_chunk_boundary():
    from stiv_jax.metrics import seam_scores

    def ball_video(xs, bg=30):
        v = np.full((len(xs), 32, 32, 3), bg, np.uint8)
        for t, x in enumerate(xs):
            v[t, 14:18, x : x + 4] = (220, 40, 40)
        return v

    smooth = ball_video(list(range(2, 18)))
    s = seam_scores(smooth, [8], colors=[(220, 40, 40)])
    assert abs(s["track_jump_ratio"] - 1.0) < 0.05 and s["track_lost_at_seam"] == 0.0
    jumped = ball_video(list(range(2, 10)) + list(range(20, 28)))
    j = seam_scores(jumped, [8], colors=[(220, 40, 40)])
    assert j["track_jump_ratio"] > 5
    drift = ball_video(list(range(2, 18)))
    drift[8:] = np.clip(drift[8:].astype(int) + 40, 0, 255).astype(np.uint8)
    d = seam_scores(drift, [8])
    assert d["color_jump_ratio"] > 5 and d["color_drift"] > 30
    assert seam_scores(smooth, [8])["color_drift"] < 1
    with pytest.raises(ValueError, match="seams"):
        seam_scores(smooth, [0])
