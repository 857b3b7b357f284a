"""Trainer: overfitting one clip, exact resume after SIGKILL, metrics, bad config values."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stiv_jax.optim import make_optimizer
from stiv_jax.runtime import Components
from stiv_jax.train import init_state, make_train_step, prepare_batch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_tiny_model_overfits_one_clip(tiny_config):
    from stiv_jax.data.pipeline import make_dataset

    c = tiny_config
    c.model.mask_ratio = 0.0
    c.diffusion.text_drop = c.diffusion.image_drop = 0.0
    c.optim.lr, c.optim.warmup_steps = 3e-3, 10
    comps = Components(c)
    batch = next(iter(make_dataset(c, latent_frames=comps.latent_shape[0])))
    batch = {k: v[:1].repeat(4, axis=0) for k, v in batch.items()}  # one clip, 4 noise draws
    batch = prepare_batch(batch, comps)
    tx = make_optimizer(c.optim)
    graphdef, state = init_state(comps.model(0), tx)
    step = jax.jit(make_train_step(c, graphdef, tx, comps.null_text))
    key = jax.random.key(0)
    losses = []
    for _ in range(250):
        state, m = step(state, batch, key)
        losses.append(float(m["loss"]))
    first, last = np.mean(losses[:10]), np.mean(losses[-20:])
    assert last * 10 <= first, (first, last)


def _run(workdir, steps, *extra, kill_after_ckpt=None):
    cmd = [
        sys.executable, "-m", "stiv_jax.train", "--config", "configs/stiv.py:variant=tiny",
        "--workdir", workdir, f"--config.train.steps={steps}", "--config.train.log_every=1",
        "--config.train.ckpt_every=4", "--config.data.res=16", "--config.data.frames=4",
        "--config.data.batch_size=2", "--config.sample.num_train_samples=1",
        "--config.sample.steps=2", "--config.train.unmasked_steps=5", *extra,
    ]  # fmt: skip
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    if kill_after_ckpt is None:
        subprocess.run(cmd, cwd=REPO, env=env, check=True, capture_output=True, timeout=900)
        return
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    target = os.path.join(workdir, "checkpoints", str(kill_after_ckpt), "commit_success.txt")
    deadline = time.time() + 600
    while not os.path.exists(target) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "training ended before the checkpoint to kill after"
    time.sleep(1.0)  # let it run a bit past the checkpoint (mid-training)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def _losses(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as fh:
        return {r["step"]: r["loss"] for r in map(json.loads, fh)}


@pytest.mark.slow
def test_sigkill_and_resume_is_bit_identical(tmp_path):
    ref, run = str(tmp_path / "ref"), str(tmp_path / "run")
    _run(ref, 10)
    no_samples = "--config.sample.num_train_samples=0"
    _run(run, 10, no_samples, kill_after_ckpt=4)
    restored = max(int(s) for s in os.listdir(os.path.join(run, "checkpoints")) if s.isdigit())
    assert restored < 10
    _run(run, 10, no_samples)
    a, b = _losses(ref), _losses(run)
    assert sorted(a) == sorted(b) == list(range(1, 11))
    for s in range(restored + 1, 11):
        assert a[s] == b[s], (s, a[s], b[s])  # bit-identical on CPU
    samples = sorted(os.listdir(os.path.join(ref, "samples", "step_10")))
    assert samples == ["000.gif", "000.mp4", "000.png", "captions.json", "contact_sheet.png"]


def test_bad_override_is_one_clear_error(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "stiv_jax.train", "--config", "configs/stiv.py:variant=tiny",
         "--workdir", str(tmp_path), "--config.model.image_cond=pixels"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode != 0
    assert "image_cond" in out.stderr and "pixels" in out.stderr


def test_unknown_config_key_and_variant():
    from configs.stiv import get_config

    with pytest.raises(ValueError, match="unknown variant 'Q'"):
        get_config("variant=Q")
    with pytest.raises(ValueError, match="config argument 'colour'"):
        get_config("colour=red")


def test_url_workdir_is_one_line_error(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "stiv_jax.train", "--config", "configs/stiv.py:variant=tiny",
         "--workdir", "gs://bucket/run"],
        cwd=REPO, env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert proc.returncode != 0
    assert (
        proc.stderr.strip()
        .splitlines()[-1]
        .startswith("error: workdir 'gs://bucket/run' is a gs:// URL; expected a filesystem path")
    )
    assert not os.path.exists(os.path.join(REPO, "gs:"))


def test_bad_cool_down_is_one_line_error_and_writes_nothing(tmp_path, tiny_config):
    from stiv_jax.train import train_loop

    tiny_config.optim.decay_steps = tiny_config.train.steps  # leaves no room for the warmup
    workdir = tmp_path / "run"
    with pytest.raises(ValueError, match=r"optim.decay_steps=\d+; expected 0 or 1\.\."):
        train_loop(tiny_config, str(workdir))
    assert not workdir.exists()


def test_drill_t2v_in_a_whole_drill_run_is_one_line_error(tmp_path, tiny_config):
    """A whole stage=drill run set its task mix before the command line's overrides, so
    data.shapes.drill_t2v there would be silently ignored: it is refused instead."""
    from stiv_jax.train import train_loop

    tiny_config.data.shapes.drill, tiny_config.data.shapes.drill_t2v = True, 0.3
    workdir = tmp_path / "run"
    with pytest.raises(ValueError, match=r"drill_t2v=0.3 reaches a prelude's drill only"):
        train_loop(tiny_config, str(workdir))
    assert not workdir.exists()


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("model.ref_skip", True, r"model.ref_skip=True needs model.prediction='data'"),
        ("model.ref_gate", True, r"model.ref_gate=True needs model.prediction='data'"),
        ("model.text_window", -1, r"model.text_window=-1; expected a half-width >= 1"),
        ("data.shapes.bg_drop", 1.5, r"data.shapes: ShapesSource bg_drop=1.5; expected"),
        ("data.shapes.bg_drop_tasks", "t2v", r"ShapesSource bg_drop_tasks='t2v'; expected"),
        ("data.shapes.speed_binding", 0.5, r"data.shapes: ShapesSource speed_binding=0.5 with "),
        ("diffusion.motion_weight", -1.0, r"diffusion.motion_weight=-1.0; expected a number"),
        ("diffusion.input_perturb", -0.1, r"diffusion.input_perturb=-0.1; expected a number"),
        ("diffusion.states_drop", 1.5, r"diffusion.states_drop=1.5 with model.word_pieces="),
        ("diffusion.states_drop", 0.5, r"states_drop=0.5 with model.word_pieces=0; expected"),
        ("sample.cfg_interval", (0.5, 0.2), r"sample.cfg_interval=\(0.5, 0.2\); expected 0 <="),
        ("sample.t2v_candidates", 0, r"sample.t2v_candidates=0; expected an integer >= 1"),
        ("sample.t2v_candidates", 4, r"t2v_candidates=4 picks among first passes; expected"),
        ("sample.ti2v_candidates", 0, r"sample.ti2v_candidates=0; expected an integer >= 1"),
        ("sample.t2v_score_levels", (0.2, 1.0), r"t2v_score_levels=\(0.2, 1.0\); expected noise"),
        ("optim.lr_groups", "cross", r"optim.lr_groups entry 'cross'; expected REGEX:SCALE"),
        ("optim.anchor_decay", "cross", r"optim.anchor_decay entry 'cross'; expected REGEX:RATE"),
        ("optim.anchor_decay", "cross:5000", r"optim.anchor_decay rate 5000 with optim.lr="),
    ],
)
def test_bad_model_or_data_value_is_one_line_error_and_writes_nothing(
    tmp_path, tiny_config, key, value, message
):
    from stiv_jax.train import train_loop

    section, *rest = key.split(".")
    target = tiny_config[section]
    for name in rest[:-1]:
        target = target[name]
    target[rest[-1]] = value
    workdir = tmp_path / "run"
    with pytest.raises(ValueError, match=message) as info:
        train_loop(tiny_config, str(workdir))
    assert "\n" not in str(info.value)
    assert not workdir.exists()


def test_motion_weight_reweights_the_training_loss_only_where_the_clip_changes(tiny_config):
    """diffusion.motion_weight: a clip whose frames are all equal has the plain loss; one with
    a changing patch does not."""
    from stiv_jax.train import make_loss_fn

    c = tiny_config
    comps = Components(c)
    graphdef, state = init_state(comps.model(0), make_optimizer(c.optim))
    f, h, w, ch = comps.latent_shape
    still = jnp.broadcast_to(
        jax.random.normal(jax.random.key(1), (2, 1, h, w, ch)), (2, f, h, w, ch)
    )
    moving = still.at[:, 1:, :2, :2].add(1.0)
    batch = {
        "text_tokens": jnp.zeros((2, c.text_encoder.max_length, c.model.text_dim)),
        "text_mask": jnp.ones((2, c.text_encoder.max_length), bool),
        "text_pooled": jnp.zeros((2, c.model.pooled_dim)),
        "micro": jnp.zeros((2, 5)),
        "motion": jnp.ones((2,)),
        "cond_mask": jnp.zeros((2, f), bool).at[:, 0].set(True),
    }
    losses = {}
    for strength in (0.0, 4.0):
        c.diffusion.motion_weight = strength
        loss_fn = jax.jit(make_loss_fn(c, graphdef, comps.null_text, masked=False))
        for name, x1 in (("still", still), ("moving", moving)):
            losses[name, strength] = float(
                loss_fn(state["params"], {**batch, "latents": x1}, jax.random.key(2))
            )
    assert losses["still", 4.0] == pytest.approx(losses["still", 0.0], rel=1e-6)
    assert abs(losses["moving", 4.0] - losses["moving", 0.0]) > 1e-3 * losses["moving", 0.0]


def test_self_cond_feeds_the_models_own_estimate_on_half_the_steps(tiny_config):
    """model.self_cond: a fresh (zero) estimate embedding leaves the loss as without it for
    every key (no other random draw moves); a trained one reads the model's own x̂1 on the
    steps whose draw says so (its kernel gets a gradient) and zeros on the others (none)."""
    from stiv_jax.data.pipeline import make_dataset
    from stiv_jax.train import SELF_COND_STREAM, make_loss_fn

    c = tiny_config
    c.model.mask_ratio = 0.0
    comps = Components(c)
    batch = next(iter(make_dataset(c, latent_frames=comps.latent_shape[0])))
    batch = prepare_batch(batch, comps)
    keys = [jax.random.key(i) for i in range(8)]
    plain_def, plain = init_state(comps.model(0), make_optimizer(c.optim))
    plain_loss = jax.jit(make_loss_fn(c, plain_def, comps.null_text))
    c.model.self_cond = True
    comps = Components(c)
    model = comps.model(0)
    graphdef, state = init_state(model, make_optimizer(c.optim))
    loss_fn = jax.jit(make_loss_fn(c, graphdef, comps.null_text))
    for key in keys:
        assert float(loss_fn(state["params"], batch, key)) == pytest.approx(
            float(plain_loss(plain["params"], batch, key)), rel=1e-6
        )
    params = jax.tree.map(  # every weight non-zero, so x̂1 and the embedding are not 0
        lambda p: p + 0.05 * jax.random.normal(jax.random.key(3), p.shape, p.dtype),
        state["params"],
    )
    grad = jax.jit(jax.grad(loss_fn))
    used = []
    for key in keys:
        use = bool(jax.random.bernoulli(jax.random.fold_in(key, SELF_COND_STREAM)))
        kernel = grad(params, batch, key)["self_cond_embed"]["kernel"]
        assert bool(jnp.any(kernel != 0)) == use, key
        used.append(use)
    assert any(used) and not all(used), used


def test_ref_noise_loss_draws_the_reference_noise_per_sample(tiny_config):
    """model.ref_noise: the loss reads a reference noised by its own per-sample draw (the
    fixed sampling draw is not used in training): the same params give another loss than
    with ref_noise 0, and the loss follows the key's draw."""
    from stiv_jax.data.pipeline import make_dataset
    from stiv_jax.train import make_loss_fn

    c = tiny_config
    c.model.mask_ratio, c.model.image_cond = 0.0, "frame_replace_ref"
    c.diffusion.image_drop = 0.0
    comps = Components(c)
    batch = next(iter(make_dataset(c, latent_frames=comps.latent_shape[0])))
    batch = prepare_batch(batch, comps)
    batch["cond_mask"] = batch["cond_mask"].at[:, 0].set(True)  # every sample gives frame 0
    graphdef, state = init_state(comps.model(0), make_optimizer(c.optim))
    params = jax.tree.map(
        lambda p: p + 0.05 * jax.random.normal(jax.random.key(3), p.shape, p.dtype),
        state["params"],
    )
    plain = jax.jit(make_loss_fn(c, graphdef, comps.null_text, masked=False))
    c.model.ref_noise = 1.0
    noisy_def, _ = init_state(Components(c).model(0), make_optimizer(c.optim))
    noisy = jax.jit(make_loss_fn(c, noisy_def, comps.null_text, masked=False))
    key = jax.random.key(1)
    a, b = float(plain(params, batch, key)), float(noisy(params, batch, key))
    assert a != pytest.approx(b, rel=1e-4)
    assert float(noisy(params, batch, key)) == b  # deterministic given the key
    assert float(noisy(params, batch, jax.random.key(2))) != pytest.approx(b, rel=1e-6)


def test_self_cond_run_trains_and_samples_end_to_end(tmp_path):
    """model.self_cond through the CLI: the trainer's steps and its end-of-run sampling (the
    sampler carrying each branch's estimate) run and write a video."""
    workdir = str(tmp_path / "sc")
    _run(workdir, 4, "--config.model.self_cond=True")
    assert len(_losses(workdir)) == 4
    videos = [
        n for n in os.listdir(os.path.join(workdir, "samples", "step_4")) if n.endswith(".mp4")
    ]
    assert videos, os.listdir(os.path.join(workdir, "samples", "step_4"))
