"""Training stages (stiv_jax/stages.py): the stage rules and `train.prelude`."""

import json
import os
import subprocess
import sys

import pytest

from configs.stiv import get_config
from stiv_jax import stages
from stiv_jax.checkpoint import restore_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_parse_prelude_and_its_errors():
    assert stages.parse_prelude(()) == []
    assert stages.parse_prelude(("drill:400", " t2v:20 ")) == [("drill", 400), ("t2v", 20)]
    assert stages.parse_prelude("drill:5") == [("drill", 5)]
    for bad, match in (
        ("drill", "'drill'; expected 'stage:steps'"),
        ("drill:0", "'drill:0'; expected"),
        ("drill:x", "'drill:x'; expected"),
        ("warmup:10", "stage 'warmup' is not a prelude stage"),
        ("t2i:10", "t2i changes the frame count"),
    ):
        with pytest.raises(ValueError, match=match):
            stages.parse_prelude((bad,))


def test_stage_config_keeps_overrides_and_applies_the_stage():
    c = get_config("variant=S")
    c.optim.lr, c.train.prelude, c.train.init_from = 5e-4, ("drill:30",), "runs/base:ema"
    sub = stages.stage_config(c, "drill", 30, "runs/base:ema")
    assert sub.optim.lr == 5e-4 and sub.model.pooled_dim == c.model.pooled_dim
    assert sub.data.shapes.drill and dict(sub.data.task_probs) == {"t2v": 0.0, "ti2v": 1.0}
    assert (sub.diffusion.logit_mean, sub.diffusion.logit_std) == stages.DRILL_LAW
    assert (sub.train.steps, sub.train.ckpt_every, tuple(sub.train.prelude)) == (30, 30, ())
    assert sub.train.init_from == "runs/base:ema" and sub.sample.num_train_samples == 0
    assert not c.data.shapes.drill and c.train.steps == 870  # the main config is untouched
    c.data.shapes.drill_t2v = 0.3  # a share of text-only drill clips, in a prelude's drill too
    sub = stages.stage_config(c, "drill", 30, "")
    assert dict(sub.data.task_probs) == {"t2v": 0.3, "ti2v": 0.7}
    c.data.shapes.drill_t2v = 1.0
    with pytest.raises(ValueError, match=r"data.shapes.drill_t2v=1.0 is not a share"):
        stages.stage_config(c, "drill", 30, "")
    # The whole-run stage is the same rule: configs/stiv.py:stage=drill.
    whole = get_config("variant=S,stage=drill")
    assert whole.data.shapes.drill and whole.train.steps == stages.DRILL_STEPS


def test_a_prelude_stage_stopped_by_a_signal_stops_the_command(tmp_path, monkeypatch):
    """SIGTERM / Ctrl-C inside a prelude stage saves and returns from its train_loop early;
    the next stage and the main run must not start (session 14 found the main run starting
    from the cut stage), and the same command later resumes the cut stage."""
    done: dict[str, list[int]] = {}
    monkeypatch.setattr(stages, "saved_steps", lambda wd: done.get(wd, []))
    calls = []

    def stopped_loop(config, workdir):  # saves at step 3 of 7, as a signal would
        calls.append((workdir, config.train.steps))
        done[workdir] = [3]

    c = get_config("variant=S")
    c.train.prelude = ("drill:7", "ti2v:3")
    wd = str(tmp_path / "run")
    assert stages.run_prelude(c, wd, stopped_loop) is False
    assert calls == [(f"{wd}/prelude/0-drill", 7)] and c.train.init_from == ""

    def full_loop(config, workdir):
        calls.append((workdir, config.train.steps))
        done[workdir] = [config.train.steps]

    assert stages.run_prelude(c, wd, full_loop) is True  # resumes the cut stage, then the next
    assert calls[1:] == [(f"{wd}/prelude/0-drill", 7), (f"{wd}/prelude/1-ti2v", 3)]


def test_s_recipes_are_a_binding_drill_then_the_mix_with_its_shares():
    base = get_config("variant=S,stage=ti2v")  # the full mix without a recipe's block
    main, long = get_config("variant=S"), get_config("variant=S,recipe=long")

    def edits(a, b) -> set[str]:
        return {k for k in b.keys() if a[k] != b[k]}

    for c in (main, long):  # the shared block: the binding drill and its shares in the mix
        # 2 heads of 64 (quality.md §28.4), RoPE base 100 (§29.1)
        assert edits(c.model, base.model) == {
            "key_shift", "word_pieces", "word_pieces_zero_init", "heads", "rope_theta"
        }  # fmt: skip
        assert (c.model.heads, c.model.rope_theta) == (2, 100.0)
        assert c.model.key_shift and c.model.word_pieces == c.text_encoder.word_pieces == 1024
        assert c.model.word_pieces_zero_init is False
        assert edits(c.text_encoder, base.text_encoder) == {"word_pieces"}
        assert edits(c.data, base.data) == {"shapes"}
        assert edits(c.data.shapes, base.data.shapes) == {
            "drill_objects", "drill_swappable", "drill_share"
        }  # fmt: skip
        assert (c.data.shapes.drill_objects, c.data.shapes.drill_swappable) == (2, True)
        assert (c.data.shapes.drill_share, c.diffusion.noisy_share) == (0.3, 0.3)
        assert edits(c.diffusion, base.diffusion) == {"noisy_share"}
        assert stages.parse_prelude(c.train.prelude)
        # sampling: no guidance where a frame is given; text-only requests image first
        # (the best of 4 first frames), guided at 3 while t < 0.4 (§29.2, §31.2, §33.3)
        assert edits(c.sample, base.sample) == {
            "cfg_scale", "cfg_interval", "cfg_scale_given", "t2v_image_first", "t2v_candidates",
        }  # fmt: skip
        assert c.sample.t2v_image_first and c.sample.t2v_candidates == 4
        assert (c.sample.cfg_scale_given, base.sample.cfg_scale_given) == (1.0, -1.0)
        assert (c.sample.cfg_scale, tuple(c.sample.cfg_interval)) == (3.0, (0.0, 0.4))
    changed = {"train", "optim", "data", "diffusion", "model", "text_encoder", "sample", "arg"}
    assert all(long[k] == main[k] == base[k] for k in main.keys() if k not in changed)
    assert (base.model.heads, base.model.rope_theta, base.sample.cfg_interval) == (4, 1e4, (0, 1))
    # main: 1,000 drill steps, 870 of the mix, no check
    assert edits(main.train, base.train) == {"prelude", "steps", "bind_min"}
    assert (tuple(main.train.prelude), main.train.steps, main.train.bind_min) == (
        ("drill:1000",), 870, 0.0,
    )  # fmt: skip
    assert edits(main.optim, base.optim) == set() and main.optim.decay_steps == 200
    # long: 3,000 drill steps checked, 9,000 of the mix, the last 1,800 cooling down
    assert edits(long.train, base.train) == {"prelude", "steps", "ckpt_every"}
    assert tuple(long.train.prelude) == ("drill:3000",) and long.train.bind_min == 0.3
    assert (long.train.steps, long.optim.decay_steps) == (9000, 1800)
    assert edits(long.optim, base.optim) == {"decay_steps"}
    assert long.sample == main.sample and long.model == main.model
    assert tuple(get_config("variant=S,runlocal").train.prelude) == ("drill:10",)
    assert get_config("variant=S,recipe=main") == get_config("variant=S,recipe=main")
    for bad, match in (
        ("variant=S,recipe=longer", "recipe='longer' is unknown"),
        ("variant=tiny,recipe=long", "variant=tiny"),
        ("variant=S,stage=drill,recipe=long", "stage=drill"),
    ):
        with pytest.raises(ValueError, match=match):
            get_config(bad)


def test_run_prelude_chains_stages_and_skips_finished_ones(tmp_path, monkeypatch):
    done: dict[str, list[int]] = {}
    monkeypatch.setattr(stages, "saved_steps", lambda wd: done.get(wd, []))
    calls = []

    def fake_train_loop(config, workdir):
        calls.append((workdir, config.train.steps, config.train.init_from))
        done[workdir] = [config.train.steps]

    c = get_config("variant=S")
    c.train.prelude = ("drill:7", "ti2v:3")
    wd = str(tmp_path / "run")
    stages.run_prelude(c, wd, fake_train_loop)
    d0, d1 = f"{wd}/prelude/0-drill", f"{wd}/prelude/1-ti2v"
    assert calls == [(d0, 7, ""), (d1, 3, f"{d0}:ema")]
    assert c.train.init_from == f"{d1}:ema"
    # A rerun skips finished stages; a main run that has checkpointed runs no stage at all.
    c.train.init_from, calls[:] = "", []
    del done[d1]
    stages.run_prelude(c, wd, fake_train_loop)
    assert calls == [(d1, 3, f"{d0}:ema")]
    done[wd], calls[:] = [10], []
    stages.run_prelude(c, wd, fake_train_loop)
    assert calls == [] and c.train.init_from == f"{d1}:ema"


@pytest.mark.slow
def test_prelude_runs_before_the_main_run_in_one_command(tmp_path):
    wd = str(tmp_path / "run")
    cmd = [
        sys.executable, "-m", "stiv_jax.train", "--config", "configs/stiv.py:variant=tiny",
        "--workdir", wd, "--config.train.steps=2", "--config.train.log_every=1",
        "--config.train.ckpt_every=2", "--config.data.res=16", "--config.data.frames=4",
        "--config.data.batch_size=2", "--config.sample.num_train_samples=0",
        "--config.train.unmasked_steps=0", "--config.train.prelude=('drill:2',)",
    ]  # fmt: skip
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    # A binding drill (two objects) is checked before the main run: at a bar no model meets,
    # the command stops after the drill with one line (stiv_jax.binding, the real sampler).
    binding_drill = [
        "--config.data.shapes.drill_objects=2",
        "--config.data.shapes.drill_swappable=True",
    ]
    out = subprocess.run(cmd + binding_drill + ["--config.train.bind_min=2.5"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=900)  # fmt: skip
    assert out.returncode == 1, out.stderr[-2000:]
    drill = os.path.join(wd, "prelude", "0-drill")
    assert "has not bound at step 2: swap effect" in out.stderr.splitlines()[-1]
    assert json.load(open(os.path.join(drill, "binding.json")))["step"] == 2
    assert not os.path.isdir(os.path.join(wd, "checkpoints"))
    # The same command at a bar of 0 (no check) goes on from the finished drill.
    out = subprocess.run(cmd + binding_drill + ["--config.train.bind_min=0"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=900)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert "already at step 2" in out.stderr
    assert os.path.isdir(os.path.join(drill, "checkpoints", "2"))
    assert os.path.isdir(os.path.join(wd, "checkpoints", "2"))
    assert f"{drill}:ema" in out.stderr  # the main run started from the drill's EMA
    main, first = restore_config(wd), restore_config(drill)
    assert main.train.init_from == f"{drill}:ema" and not main.data.shapes.drill
    assert first.data.shapes.drill and first.diffusion.logit_mean == stages.DRILL_LAW[0]
