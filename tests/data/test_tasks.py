"""Task mix: condition masks per task, sampling frequencies, validation errors."""

import numpy as np
import pytest

from stiv_jax.data.tasks import TASKS, sample_task, task_cond_mask, task_probs_array


def test_cond_masks():
    f = 6
    assert task_cond_mask("t2v", f, 2).tolist() == [0, 0, 0, 0, 0, 0]
    assert task_cond_mask("ti2v", f, 2).tolist() == [1, 0, 0, 0, 0, 0]
    assert task_cond_mask("predict", f, 2).tolist() == [1, 1, 0, 0, 0, 0]
    assert task_cond_mask("interp", f, 2).tolist() == [1, 0, 0, 0, 0, 1]
    for i, name in enumerate(TASKS):
        assert np.array_equal(task_cond_mask(i, f, 3), task_cond_mask(name, f, 3))
        assert task_cond_mask(i, f, 3).dtype == bool


def test_sampling_matches_probabilities():
    rng = np.random.default_rng(0)
    probs = {"t2v": 1.0, "ti2v": 2.0, "predict": 1.0}  # unnormalised, interp absent -> 0
    draws = np.array([sample_task(rng, probs) for _ in range(4000)])
    freq = np.bincount(draws, minlength=len(TASKS)) / draws.size
    np.testing.assert_allclose(freq, [0.25, 0.5, 0.25, 0.0, 0.0], atol=0.03)
    np.testing.assert_allclose(task_probs_array(probs), [0.25, 0.5, 0.25, 0.0, 0.0])


@pytest.mark.parametrize(
    "probs, match",
    [
        ({"t2v": 1.0, "video": 1.0}, "video"),
        ({"t2v": -0.1, "ti2v": 1.0}, "non-negative"),
        ({"t2v": 0.0}, "positive sum"),
        ({"t2v": float("nan")}, "finite"),
    ],
)
def test_bad_probs(probs, match):
    with pytest.raises(ValueError, match=match):
        task_probs_array(probs)


def test_bad_masks():
    with pytest.raises(ValueError, match="'video'"):
        task_cond_mask("video", 4, 1)
    with pytest.raises(ValueError, match="task=7"):
        task_cond_mask(7, 4, 1)
    with pytest.raises(ValueError, match="predict_frames=4"):
        task_cond_mask("predict", 4, 4)
    with pytest.raises(ValueError, match="num_latent_frames=2"):
        task_cond_mask("interp", 2, 1)


def test_keyframes_task_in_the_mix_gives_one_to_three_random_positions():
    from stiv_jax.data.tasks import draw_task

    rng = np.random.default_rng(0)
    probs = {"ti2v": 1.0, "keyframes": 1.0}
    counts, positions, tasks = [], np.zeros(6), []
    for _ in range(600):
        task, mask = draw_task(rng, probs, 6, 2)
        tasks.append(TASKS[task])
        if TASKS[task] == "keyframes":
            counts.append(int(mask.sum()))
            positions += mask
    assert 0.4 < tasks.count("keyframes") / len(tasks) < 0.6
    assert set(counts) == {1, 2, 3}  # 1-3 given frames, never all
    assert np.all(positions > 0.1 * len(counts))  # every position is drawn, not only 0 / F-1
    assert task_cond_mask("keyframes", 2, 1).sum() == 1  # at most F-1 of 2 frames
    with pytest.raises(ValueError, match="keyframes needs >= 2 latent frames"):
        task_cond_mask("keyframes", 1, 1)
