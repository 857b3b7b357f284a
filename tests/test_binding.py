"""The binding probe and the check after a binding drill (stiv_jax/binding.py)."""

import json
import os

import numpy as np
import pytest

from configs.stiv import get_config
from stiv_jax import binding, stages
from stiv_jax.data.shapes import DIRECTIONS

RES, FRAMES = 32, 8


class FakePipe:
    """Draws each object of the clip a caption belongs to as a 3x3 square moving 0.8 px a
    frame: along the direction the caption gives it when `binds`, along its true direction
    whatever the caption otherwise (a model that reads the frame, not the words)."""

    def __init__(self, clips, binds: bool, config=None):
        self.clips, self.binds, self.config, self.calls = clips, binds, config, 0

    def __call__(self, caption, *, image, seed, motion_score):
        self.calls += 1
        clip = self.clips[seed]
        a, b = clip["truth"]["objects"]
        swapped = caption != clip["caption"]
        assert caption in (clip["caption"], binding.swap_directions(clip))
        moves = (b["motion"], a["motion"]) if swapped and self.binds else (a["motion"], b["motion"])
        video = np.full((FRAMES, RES, RES, 3), 100, np.uint8)
        for obj, motion, (x0, y0) in zip((a, b), moves, ((8, 8), (24, 24))):
            dx, dy = DIRECTIONS[motion]
            for t in range(FRAMES):
                x, y = round(x0 + 0.8 * t * dx), round(y0 + 0.8 * t * dy)
                video[t, y - 1 : y + 2, x - 1 : x + 2] = obj["rgb"]
        return video


@pytest.fixture(scope="module")
def clips():
    return binding.drill_clips(get_config("variant=S"), num=6, swappable=True)


def test_probe_measures_the_swap_effect_of_a_binding_and_a_non_binding_model(clips):
    bound = binding.probe(FakePipe(clips, binds=True), clips, step=7)
    assert (bound.step, bound.clips, bound.tracked) == (7, 6, 12)
    assert bound.own_true > 0.99 and bound.other_swapped > 0.99
    # The swapped caption moves each object along the other's direction: the effect is the
    # mean of 1 - cos(between the two directions), > 0 since the drill's directions differ.
    cos_ab = [
        np.dot(DIRECTIONS[c["truth"]["objects"][0]["motion"]],
               DIRECTIONS[c["truth"]["objects"][1]["motion"]])
        for c in clips
    ]  # fmt: skip
    assert bound.effect == pytest.approx(1 - np.mean(cos_ab), abs=0.05)
    assert bound.effect > 0.3 and bound.exact_true == 1.0
    deaf = binding.probe(FakePipe(clips, binds=False), clips)
    assert deaf.effect == pytest.approx(0.0, abs=1e-9)
    assert deaf.own_true == pytest.approx(deaf.own_swapped) and deaf.own_true > 0.99
    assert "swap effect +0.00" in deaf.summary() and "12/12 objects tracked" in deaf.summary()


def test_swap_directions_exchanges_the_two_directions_and_nothing_else(clips):
    for clip in clips:
        a, b = clip["truth"]["objects"]
        swapped = binding.swap_directions(clip)
        assert swapped != clip["caption"]
        twice = dict(clip, truth=dict(clip["truth"], objects=[
            dict(a, motion=b["motion"], speed=b["speed"]),
            dict(b, motion=a["motion"], speed=a["speed"]),
        ]))  # fmt: skip
        assert binding.swap_directions(twice) == clip["caption"]
    assert binding.opposite_direction("a red circle moves up-left") == (
        "a red circle moves down-right"
    )


def test_check_drill_stops_an_unbound_drill_and_keeps_its_result(clips, tmp_path, monkeypatch):
    from stiv_jax.pipeline import STIVPipeline

    run_config, pipes = get_config("variant=S"), []

    def from_workdir(workdir, config=None, *, step=None, use_ema=None):
        assert step is not None  # the drill's step, not its latest
        pipes.append(FakePipe(clips, binds=workdir.endswith("bound"), config=run_config))
        return pipes[-1]

    monkeypatch.setattr(STIVPipeline, "from_workdir", staticmethod(from_workdir))
    monkeypatch.setattr(binding, "drill_clips", lambda config: clips if config is run_config else 0)
    deaf = str(tmp_path / "deaf")
    os.makedirs(deaf)
    with pytest.raises(ValueError, match=r"has not bound at step 30: swap effect \+0\.00.*"
                       r"bind_min=0\.3.*--config\.train\.bind_min=0"):  # fmt: skip
        binding.check_drill(deaf, 30, 0.3)
    kept = json.load(open(os.path.join(deaf, binding.RESULT_FILE)))
    assert kept["step"] == 30 and kept["effect"] == 0.0 and len(pipes) == 1
    # A rerun reads the kept result: no second probe; another step probes again.
    with pytest.raises(ValueError, match="has not bound"):
        binding.check_drill(deaf, 30, 0.3)
    assert len(pipes) == 1
    assert binding.check_drill(deaf, 30, -0.5).effect == 0.0  # a lower bar lets it through
    with pytest.raises(ValueError, match="at step 40"):
        binding.check_drill(deaf, 40, 0.3)
    assert len(pipes) == 2
    bound = str(tmp_path / "bound")
    os.makedirs(bound)
    assert binding.check_drill(bound, 30, 0.3).effect > 0.3
    # An unreadable kept result is probed again, not trusted.
    open(os.path.join(bound, binding.RESULT_FILE), "w").write("{not json")
    assert binding.check_drill(bound, 30, 0.3).effect > 0.3 and len(pipes) == 4


def test_run_prelude_checks_binding_drills_only(tmp_path, monkeypatch):
    done: dict[str, list[int]] = {}
    monkeypatch.setattr(stages, "saved_steps", lambda wd: done.get(wd, []))
    checked = []
    monkeypatch.setattr(
        binding, "check_drill", lambda wd, step, bar: checked.append((wd, step, bar))
    )

    def fake_train_loop(config, workdir):
        done[workdir] = [config.train.steps]

    def run(objects: int, bind_min: float, name: str):
        c = get_config("variant=S")
        c.train.prelude, c.train.bind_min = ("drill:7", "ti2v:3"), bind_min
        c.data.shapes.drill_objects = objects
        stages.run_prelude(c, str(tmp_path / name), fake_train_loop)

    run(2, 0.3, "a")
    assert checked == [(str(tmp_path / "a/prelude/0-drill"), 7, 0.3)]
    run(1, 0.3, "b")  # a one-object drill has nothing to bind
    run(2, 0.0, "c")  # bind_min <= 0: no check
    assert len(checked) == 1
    assert get_config("variant=S,recipe=long").train.bind_min == 0.3
    assert get_config("variant=S").train.bind_min == 0.0  # the main job always finishes

    def not_bound(wd, step, bar):
        raise ValueError("not bound")

    monkeypatch.setattr(binding, "check_drill", not_bound)
    with pytest.raises(ValueError, match="not bound"):
        run(2, 0.3, "d")
    assert str(tmp_path / "d/prelude/1-ti2v") not in done  # the next stage never started
