"""Fault injection (issue 14): divergence, bad prompt lines, damaged checkpoints, signals.

Each test injects one fault a hostile user or a failing machine can cause and checks that
the run keeps its good state, reports one line naming the value, and (where it can) goes
on. Tiny configs; the trainer and CLI runs are marked slow.
"""

import json
import logging
import os
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from stiv_jax.summaries import SCALARS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, JAX_PLATFORMS="cpu")


def _train_cli(wd: str, *flags: str) -> list[str]:
    """The trainer CLI on a tiny 16x16x4 model with no sampling, plus `flags`."""
    return [
        sys.executable, "-m", "stiv_jax.train", "--config", "configs/stiv.py:variant=tiny",
        "--workdir", wd, "--config.data.res=16", "--config.data.frames=4",
        "--config.data.batch_size=2", "--config.sample.num_train_samples=0",
        "--config.train.unmasked_steps=0", *flags,
    ]  # fmt: skip


def _tiny(steps=2, **train):
    from configs.stiv import get_config

    c = get_config("variant=tiny")
    c.data.res, c.data.frames, c.data.batch_size = 16, 4, 2
    c.sample.num_train_samples, c.sample.steps = 0, 2
    c.train.steps, c.train.log_every, c.train.ckpt_every, c.train.unmasked_steps = steps, 1, 1, 0
    for k, v in train.items():
        c.train[k] = v
    return c


def _strict_json(line: str):
    def no_constant(name):
        raise ValueError(f"bare {name} is not JSON")

    return json.loads(line, parse_constant=no_constant)


# ============================================================================ 1 divergence


def test_step_never_applies_a_nonfinite_update(tiny_config):
    from stiv_jax.data.pipeline import make_dataset
    from stiv_jax.optim import make_optimizer
    from stiv_jax.runtime import Components
    from stiv_jax.train import init_state, make_train_step, prepare_batch

    c = tiny_config
    comps = Components(c)
    batch = prepare_batch(next(iter(make_dataset(c, latent_frames=comps.latent_shape[0]))), comps)
    tx = make_optimizer(c.optim)
    graphdef, state = init_state(comps.model(0), tx)
    before = jax.device_get(state)
    step = jax.jit(make_train_step(c, graphdef, tx, comps.null_text))
    bad = dict(batch, latents=batch["latents"].at[0, 0, 0, 0, 0].set(np.nan))
    new, m = step(state, bad, jax.random.key(0))
    assert not np.isfinite(float(m["loss"])) and not bool(m["finite"])
    assert int(new["step"]) == 1  # the step counts (rng and data move on) ...
    for a, b in zip(jax.tree.leaves(before["params"]), jax.tree.leaves(new["params"])):
        np.testing.assert_array_equal(a, b)  # ... but params, EMA and optimizer are untouched
    for a, b in zip(jax.tree.leaves(before["opt"]), jax.tree.leaves(new["opt"])):
        np.testing.assert_array_equal(a, b)
    new, m = step(new, batch, jax.random.key(0))
    assert bool(m["finite"]) and all(np.isfinite(x).all() for x in jax.tree.leaves(new["params"]))


def test_metrics_lines_stay_json_for_nan(tmp_path):
    from stiv_jax.train import MetricsLog

    log = MetricsLog(str(tmp_path), resume_step=0)
    log.write(5, {"loss": float("nan"), "loss_avg": float("inf"), "grad_norm": 1.5})
    log.close()
    rows = [_strict_json(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows == [{"step": 5, "loss": None, "loss_avg": None, "grad_norm": 1.5}]


@pytest.mark.slow
def test_divergence_aborts_and_keeps_the_last_good_checkpoint(tmp_path):
    """The issue's case: lr=1e6, log_every=5 does not divide ckpt_every=1."""
    from stiv_jax import checkpoint as ckpt

    wd = str(tmp_path / "wd")
    cmd = _train_cli(
        wd, "--config.train.steps=10", "--config.optim.lr=1e6", "--config.optim.warmup_steps=0",
        "--config.train.log_every=5", "--config.train.ckpt_every=1",
    )  # fmt: skip
    p = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=900)
    last = p.stderr.strip().splitlines()[-1]
    assert p.returncode != 0 and last.startswith("error: loss "), p.stderr[-3000:]
    assert "not finite; stopped without saving it" in last
    bad_step = int(last.split(" at step ")[1].split(":")[0])
    assert "cannot schedule new futures" not in p.stderr
    names = os.listdir(os.path.join(wd, "checkpoints"))
    assert all(n.isdigit() for n in names), names  # no half-written step left behind
    steps = sorted(int(n) for n in names)
    assert steps and steps[-1] < bad_step and f"last checkpoint is step {steps[-1]}" in last
    from flax import nnx

    from stiv_jax.runtime import build_model

    c = ckpt.restore_config(wd)
    _, params = nnx.split(nnx.eval_shape(lambda: build_model(c)), nnx.Param)
    params = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), nnx.to_pure_dict(params)
    )
    restored, step = ckpt.restore_params(wd, params, ema=False)
    assert step == steps[-1]
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(restored))
    if os.path.exists(os.path.join(wd, "metrics.jsonl")):
        for line in open(os.path.join(wd, "metrics.jsonl")):
            _strict_json(line)


@pytest.mark.slow
def test_divergence_skip_policy_counts_and_goes_on(tmp_path):
    from stiv_jax.train import train_loop

    c = _tiny(steps=6, nonfinite="skip", log_every=3, ckpt_every=2)
    c.optim.lr, c.optim.warmup_steps = 1e6, 0
    state = train_loop(c, str(tmp_path))
    assert int(state["step"]) == 6
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state["params"]))
    rows = [_strict_json(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [3, 6]
    assert sum(r.get("skipped", 0) for r in rows) >= 1, rows


# ============================================================================ 2/3/8/9 prompts


def _bomb_png(path, side=40_000):
    """A valid 1x1 PNG whose header claims side x side pixels (a decompression bomb)."""
    Image.new("L", (1, 1)).save(path)
    data = bytearray(open(path, "rb").read())
    ihdr = 8 + 8  # signature, then length + "IHDR"
    data[ihdr : ihdr + 8] = struct.pack(">II", side, side)
    crc = zlib.crc32(bytes(data[ihdr - 4 : ihdr + 13]))
    data[ihdr + 13 : ihdr + 17] = struct.pack(">I", crc)
    open(path, "wb").write(bytes(data))


# (line, fragment of its error); every one must be reported with its line number.
BAD_LINES = [
    ('{"id": "seedbig", "prompt": "x", "seed": 1' + "0" * 30 + "}", "seed 1000"),
    ('{"id": "deep", "prompt": "x", "n": ' + "[" * 10**5 + "]" * 10**5 + "}", "nested"),
    ('{"id": "digits", "prompt": "x", "motion_score": ' + "9" * 400 + "}", "(400 characters)"),
    ('{"id": "bomb", "prompt": "x", "image": "bomb.png"}', "too large"),
    ('{"id": "cfgnan", "prompt": "x", "cfg_scale": NaN}', "cfg_scale nan must be a finite"),
    ('{"id": "msinf", "prompt": "x", "motion_score": Infinity}', "motion_score inf"),
    ('{"id": "cfgneg", "prompt": "x", "cfg_scale": -3}', "cfg_scale -3 must be"),
    ('{"id": "seedfloat", "prompt": "x", "seed": 1.7}', "seed 1.7 must be an integer"),
    ('{"id": "seedbool", "prompt": "x", "seed": true}', "seed True must be an integer"),
    ('{"id": "cfgstr", "prompt": "x", "cfg_scale": "4"}', "cfg_scale '4' must be"),
    ('{"id": "framebool", "prompt": "x", "image": "ok.png", "cond_frames": [true]}', "cond_frames"),
    ('{"id": ".", "prompt": "x"}', "id '.'"),
    ('{"id": "..", "prompt": "x"}', "id '..'"),
    ('{"id": "nl\\n", "prompt": "x"}', "id 'nl\\n'"),
    ('{"id": 7, "prompt": "x"}', "id 7"),
    ('{"id": "img7", "prompt": "x", "image": 7}', "image 7 must be"),
    ('{"id": "img0", "prompt": "x", "image": ""}', "image '' must be"),
]


def _prompt_dir(tmp_path):
    Image.fromarray(np.full((16, 16, 3), 100, np.uint8)).save(tmp_path / "ok.png")
    _bomb_png(tmp_path / "bomb.png")


def test_every_bad_prompt_line_is_reported_with_its_line(tmp_path, tiny_config):
    from stiv_jax.sample import parse_prompts

    _prompt_dir(tmp_path)
    good = [
        json.dumps({"id": "g1", "prompt": "a red circle", "seed": 2**40, "cfg_scale": 0}),
        json.dumps({"id": "g2", "prompt": "a cube", "image": "ok.png", "motion_score": 3}),
    ]
    lines = [good[0], *(b for b, _ in BAD_LINES), good[1]]
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join(lines) + "\n")
    reqs, errors = parse_prompts(str(path), tiny_config)
    assert [r.id for r in reqs] == ["g1", "g2"]
    assert reqs[0].seed == 2**40 and reqs[0].cfg_scale == 0.0 and reqs[1].motion_score == 3.0
    assert len(errors) == len(BAD_LINES)
    for n, (e, (_, fragment)) in enumerate(zip(errors, BAD_LINES), start=2):
        assert e.startswith(f"{path}:{n}: ") and e.endswith("; skipped"), e
        assert fragment in e, (fragment, e)
        assert len(e) < 400 and "\n" not in e


def test_images_root_confines_condition_images(tmp_path, tiny_config):
    from stiv_jax.sample import parse_prompts

    root = tmp_path / "root"
    root.mkdir()
    Image.fromarray(np.full((16, 16, 3), 9, np.uint8)).save(root / "in.png")
    secret = tmp_path / "secret.png"
    Image.fromarray(np.full((16, 16, 3), 9, np.uint8)).save(secret)
    os.symlink(secret, root / "link.png")
    lines = [
        {"id": "in", "prompt": "x", "image": "in.png"},
        {"id": "abs", "prompt": "x", "image": str(secret)},
        {"id": "dots", "prompt": "x", "image": "../secret.png"},
        {"id": "gone", "prompt": "x", "image": "../nothing_here.png"},
        {"id": "link", "prompt": "x", "image": "link.png"},
    ]
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join(map(json.dumps, lines)))
    tiny_config.sample.images_root = str(root)
    reqs, errors = parse_prompts(str(path), tiny_config)
    assert [r.id for r in reqs] == ["in"]
    assert len(errors) == 4 and all("is outside sample.images_root" in e for e in errors)
    # an existing and a missing file outside the root get the same words
    assert errors[1].split(": ", 1)[1].replace("secret", "X") == errors[2].split(": ", 1)[
        1
    ].replace("nothing_here", "X")


class _FakePipe:
    """Stands in for STIVPipeline: black videos; prompts containing BOOM fail."""

    mesh = None  # one process, replicated params (STIVPipeline.mesh)

    def __init__(self, delay=0.0):
        self.delay, self.calls, self.step = delay, [], 0

    def generate(self, reqs, frames=None):
        self.calls.append([r.id for r in reqs])
        time.sleep(self.delay)
        if any("BOOM" in r.prompt for r in reqs):
            raise RuntimeError("injected generation failure")
        return np.zeros((len(reqs), 4, 16, 16, 3), np.float32)


def test_a_prompt_failing_at_generation_costs_only_itself(
    tmp_path, tiny_config, monkeypatch, caplog
):
    from stiv_jax import sample

    monkeypatch.setattr(sample.STIVPipeline, "from_workdir", lambda *a, **k: _FakePipe())
    prompts = tmp_path / "p.jsonl"
    ids = ["a", "b", "boom", "c", "d"]
    prompts.write_text(
        "\n".join(
            json.dumps({"id": i, "prompt": "BOOM" if i == "boom" else f"prompt {i}"}) for i in ids
        )
    )
    out = tmp_path / "out"
    with caplog.at_level(logging.ERROR):
        counts = sample.run_job(tiny_config, "unused", str(prompts), str(out))
    assert counts["generated"] == 4 and counts["failed"] == 1
    assert (
        f"{prompts}:3: id 'boom' failed: RuntimeError: injected generation failure" in caplog.text
    )
    assert sorted(f for f in os.listdir(out) if f.endswith(".mp4")) == [
        f"{i}.mp4" for i in ["a", "b", "c", "d"]
    ]


def test_two_jobs_sharing_out_write_each_id_once(tmp_path, tiny_config, monkeypatch):
    from stiv_jax import sample

    monkeypatch.setattr(sample.STIVPipeline, "from_workdir", lambda *a, **k: _FakePipe(0.05))
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("\n".join(json.dumps({"id": f"v{i}", "prompt": "x"}) for i in range(12)))
    tiny_config.sample.batch_size = 2
    out = str(tmp_path / "out")
    counts = []
    jobs = [
        threading.Thread(
            target=lambda: counts.append(sample.run_job(tiny_config, "w", str(prompts), out))
        )
        for _ in range(2)
    ]
    for j in jobs:
        j.start()
    for j in jobs:
        j.join()
    ids = [json.loads(x)["id"] for x in open(os.path.join(out, "results.jsonl"))]
    assert sorted(ids) == sorted(f"v{i}" for i in range(12)), ids  # each id exactly once
    assert sum(c["generated"] for c in counts) == 12
    assert not [f for f in os.listdir(out) if ".tmp" in f]


@pytest.mark.slow
def test_200_line_prompts_file_runs_every_good_line_in_one_job(tmp_path):
    """The must-show: 200 lines, bad ones mixed in; one CLI run on a tiny checkpoint."""
    from stiv_jax import checkpoint as ckpt
    from stiv_jax.optim import make_optimizer
    from stiv_jax.runtime import Components, fill_train_grid
    from stiv_jax.train import init_state

    c = _tiny()
    fill_train_grid(c)
    _, state = init_state(Components(c).model(0), make_optimizer(c.optim))
    mngr = ckpt.manager(str(tmp_path / "wd"), max_to_keep=1, async_save=False)
    ckpt.save(mngr, 0, state, None, c, force=True)
    mngr.wait_until_finished()
    _prompt_dir(tmp_path)
    lines, bad = [], {}
    for n in range(1, 201):
        if n % 8 == 0:
            line, bad[n] = BAD_LINES[(n // 8) % len(BAD_LINES)]  # bad whatever its id
            lines.append(line)
        else:
            obj = {"id": f"p{n:03d}", "prompt": f"a red circle moves left {n}", "seed": n}
            if n % 5 == 0:
                obj.update(image="ok.png", motion_score=1.5, cfg_scale=2.0)
            lines.append(json.dumps(obj))
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    cmd = [
        sys.executable, "-m", "stiv_jax.sample", "--config", "configs/stiv.py:variant=tiny",
        "--workdir", str(tmp_path / "wd"), "--prompts", str(prompts), "--out", str(out),
        "--config.data.res=16", "--config.data.frames=4", "--config.sample.steps=2",
        "--config.sample.batch_size=16",
    ]  # fmt: skip
    p = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=1500)
    assert p.returncode == 1, p.stderr[-3000:]
    good = [n for n in range(1, 201) if n not in bad]
    mp4s = sorted(f for f in os.listdir(out) if f.endswith(".mp4"))
    assert mp4s == sorted(f"p{n:03d}.mp4" for n in good)
    for n, fragment in bad.items():
        hits = [x for x in p.stderr.splitlines() if f"{prompts}:{n}: " in x]
        assert len(hits) == 1 and fragment in hits[0], (n, fragment, hits)
    counts = json.loads(p.stdout.strip().splitlines()[-1])
    assert counts["generated"] == len(good) and counts["bad_lines"] == len(bad) == 25
    assert p.stderr.strip().splitlines()[-1].startswith("error: 25 bad prompt lines and 0 failed")


# ============================================================================ 4/5 resume


class _Data:
    """A HostData stand-in for checkpoints written without a trainer."""

    def get_state(self):
        return json.dumps({"num_shards": 1, "shards": {"0": {}}}).encode()


def _saved_run(tmp_path, config, steps=(1, 2)):
    from stiv_jax import checkpoint as ckpt
    from stiv_jax.optim import make_optimizer
    from stiv_jax.runtime import Components, fill_train_grid
    from stiv_jax.train import init_state

    fill_train_grid(config)
    _, state = init_state(Components(config).model(0), make_optimizer(config.optim))
    wd = str(tmp_path / "wd")
    mngr = ckpt.manager(wd, max_to_keep=5, async_save=False)
    for s in steps:
        ckpt.save(mngr, s, dict(state, step=jnp.asarray(s, jnp.int32)), _Data(), config, force=True)
    mngr.wait_until_finished()
    return wd


def _try_resume(config, wd):
    from stiv_jax import checkpoint as ckpt
    from stiv_jax.optim import make_optimizer
    from stiv_jax.parallel import mesh as mesh_lib
    from stiv_jax.runtime import Components, fill_train_grid
    from stiv_jax.train import _resume, init_state

    fill_train_grid(config)
    comps, tx = Components(config), make_optimizer(config.optim)
    mesh = mesh_lib.make_mesh(config.mesh)
    _, abstract, shardings, _ = mesh_lib.sharded_init(
        lambda: comps.model(0), lambda m: init_state(m, tx), mesh
    )
    mngr = ckpt.manager(wd, max_to_keep=5, async_save=False)
    return _resume(config, wd, mngr, mesh_lib.abstract_with_shardings(abstract, shardings))


@pytest.mark.parametrize(
    "key,value,same_shapes",
    [("causal_temporal", True, True), ("rope_theta", 500.0, True), ("width", 32, False)],
)
def test_resume_with_another_model_is_refused(tmp_path, key, value, same_shapes):
    from stiv_jax import checkpoint as ckpt
    from stiv_jax.train import train_loop

    wd = _saved_run(tmp_path, _tiny())
    c = _tiny(steps=3)
    c.model[key] = value
    with pytest.raises(ValueError) as e:
        train_loop(c, wd)
    msg = str(e.value)
    assert "\n" not in msg and f"model.{key}: checkpoint" in msg and "allow_model_change" in msg
    assert ckpt.restore_config(wd).model[key] != value  # the saved config is not rewritten
    c.train.allow_model_change = True  # the explicit override resumes when shapes allow
    if same_shapes:
        step, state, _, _ = _try_resume(c, wd)
        assert step == 2 and int(state["step"]) == 2
    else:
        with pytest.raises(ValueError, match="does not restore into the changed model"):
            _try_resume(c, wd)
    assert sorted(os.listdir(os.path.join(wd, "checkpoints"))) == ["1", "2"]  # nothing moved


@pytest.mark.parametrize(
    "key,saved,requested",
    [
        ("anchor_decay", "", "cross:2"),
        ("anchor_decay", "cross:2", "mlp:2"),
        ("anchor_decay", "cross:2", ""),
        ("lr_groups", "", "cross:0.5"),
    ],
)
def test_resume_with_another_optimizer_state_is_refused(tmp_path, key, saved, requested):
    """A change that changes the optimizer state's layout is a one-line refusal, not damage:
    nothing is moved aside; a changed rate alone resumes."""
    from stiv_jax.train import train_loop

    c = _tiny(steps=3)
    c.optim[key] = saved
    wd = _saved_run(tmp_path, c)
    c = _tiny(steps=3)
    c.optim[key] = requested
    with pytest.raises(ValueError) as e:
        train_loop(c, wd)
    msg = str(e.value)
    assert "\n" not in msg and f"optim.{key}: checkpoint {saved!r}, requested {requested!r}" in msg
    assert "init_from" in msg
    assert sorted(os.listdir(os.path.join(wd, "checkpoints"))) == ["1", "2"]  # nothing moved
    if saved:  # the same groups at another rate restore
        c.optim[key] = saved.replace(":2", ":3")
        step, state, _, _ = _try_resume(c, wd)
        assert step == 2 and int(state["step"]) == 2


def test_a_checkpoint_predating_a_model_key_compares_as_the_model_it_had(tiny_config):
    from stiv_jax.model.stiv import LEGACY_DEFAULTS
    from stiv_jax.run_checks import model_diff

    requested = tiny_config.model
    same = [k for k, v in LEGACY_DEFAULTS.items() if k in requested and requested[k] == v]
    assert "qk_norm_init" in same and "key_shift" in same
    saved = {k: v for k, v in requested.to_dict().items() if k not in same}  # predates them
    assert model_diff(saved, requested) == []  # the model it had: resumes
    requested.qk_norm_init = 1.41
    assert model_diff(saved, requested) == [
        "model.qk_norm_init: checkpoint 1.0, requested 1.41"
    ]  # a real change is still one refused line
    requested.qk_norm_init = 1.0
    saved.pop("word_bag")  # tiny has a word bag, a checkpoint without the key had none
    assert model_diff(saved, requested) == [
        f"model.word_bag: checkpoint 0, requested {requested.word_bag}"
    ]


def _damage(step_dir, kind):
    if kind == "truncated_array":
        d = os.path.join(step_dir, "state", "ocdbt.process_0", "d")
        big = max((os.path.join(d, f) for f in os.listdir(d)), key=os.path.getsize)
        with open(big, "r+b") as fh:
            fh.truncate(os.path.getsize(big) // 2)
    elif kind == "missing_state":
        shutil.rmtree(os.path.join(step_dir, "state"))
    elif kind == "garbage_metadata":
        for name in ("state/_METADATA", "config/metadata"):
            with open(os.path.join(step_dir, name), "w") as fh:
                fh.write("\x00garbage{")


@pytest.mark.parametrize("kind", ["truncated_array", "missing_state", "garbage_metadata"])
def test_damaged_latest_checkpoint_falls_back_to_an_older_step(tmp_path, kind, caplog):
    wd = _saved_run(tmp_path, _tiny())
    _damage(os.path.join(wd, "checkpoints", "2"), kind)
    with caplog.at_level(logging.WARNING):
        step, state, data, _ = _try_resume(_tiny(), wd)
    assert step == 1 and int(state["step"]) == 1 and data["num_shards"] == 1
    warnings = [r.getMessage() for r in caplog.records if " is damaged " in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].startswith("checkpoint step 2 is damaged")
    assert os.listdir(os.path.join(wd, "checkpoints_damaged")) == ["2"]
    assert sorted(os.listdir(os.path.join(wd, "checkpoints"))) == ["1"]


def test_no_restorable_checkpoint_refuses_to_start_from_scratch(tmp_path):
    from stiv_jax.train import train_loop

    wd = _saved_run(tmp_path, _tiny())
    for s in ("1", "2"):
        _damage(os.path.join(wd, "checkpoints", s), "missing_state")
    with pytest.raises(ValueError, match=r"no restorable checkpoint .*refusing to start from"):
        train_loop(_tiny(steps=3), wd)
    assert not os.path.exists(os.path.join(wd, "metrics.jsonl"))


# ============================================================================ 6 signals


def test_first_sigint_requests_a_save_second_aborts():
    from stiv_jax.train import _Stop

    old = signal.getsignal(signal.SIGINT)
    stop = _Stop()
    try:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.1)
        assert stop.requested == "SIGINT"
        with pytest.raises(KeyboardInterrupt, match="second SIGINT"):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1.0)
    finally:
        stop.close()
    assert signal.getsignal(signal.SIGINT) is old


@pytest.mark.slow
def test_ctrl_c_saves_and_exits_like_sigterm(tmp_path):
    wd = str(tmp_path / "wd")
    cmd = _train_cli(
        wd, "--config.train.steps=500", "--config.train.log_every=1",
        "--config.train.ckpt_every=1000",
    )  # fmt: skip
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    metrics = os.path.join(wd, "metrics.jsonl")
    deadline = time.time() + 600
    while proc.poll() is None and time.time() < deadline:
        if os.path.exists(metrics) and len(open(metrics).read().splitlines()) >= 2:
            break
        time.sleep(0.1)
    assert proc.poll() is None, "training ended before the signal"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    assert "KeyboardInterrupt" not in err and "SIGINT: saved step" in err
    saved = [int(s) for s in os.listdir(os.path.join(wd, "checkpoints"))]
    assert len(saved) == 1 and 2 <= saved[0] < 500


# ============================================================================ 7 config


@pytest.mark.parametrize(
    "key,value,words",
    [
        ("train.steps", 0, "train.steps=0; expected an integer >= 1"),
        ("data.batch_size", 0, "data.batch_size=0; expected an integer >= 1"),
        ("train.ckpt_every", 0, "train.ckpt_every=0; expected"),
        ("train.log_every", 0, "train.log_every=0; expected"),
        ("train.steps", -5, "train.steps=-5; expected"),
        ("data.res", 18, "data.res=18 gives a 18x18 latent, not divisible by model.patch_size=4"),
        ("data.frames", 5, "data.frames=5 gives 5 latent frames, not divisible by"),
        ("train.nonfinite", "ignore", "train.nonfinite='ignore'; expected one of"),
        ("workdir", "file", "is a file; expected a directory"),
    ],
)
def test_bad_config_is_one_line_before_any_work(tmp_path, key, value, words):
    from stiv_jax.train import train_loop

    c = _tiny()
    c.model.patch_size = 4
    wd = tmp_path / "wd"
    if key == "workdir":
        wd.write_text("")
    else:
        section, name = key.split(".")
        c[section][name] = value
    with pytest.raises(ValueError) as e:
        train_loop(c, str(wd))
    assert words in str(e.value) and "\n" not in str(e.value)
    assert os.listdir(tmp_path) == (["wd"] if key == "workdir" else [])  # nothing created


# ============================================================================ 10/11


def test_fifo_sidecar_and_fifo_video_do_not_hang_the_data_engine(tmp_path):
    from data_pipeline import prepare
    from data_pipeline.inputs import list_inputs

    (tmp_path / "a.mp4").write_bytes(b"not a video")
    os.mkfifo(tmp_path / "a.txt")  # a caption sidecar no writer will ever open
    os.mkfifo(tmp_path / "b.mp4")
    result = {}
    worker = threading.Thread(target=lambda: result.update(items=list_inputs(str(tmp_path))))
    worker.daemon = True
    worker.start()
    worker.join(timeout=20)
    try:
        assert not worker.is_alive(), "list_inputs blocked on a FIFO"
    finally:  # unblock a hung reader so the test process can exit
        for name in ("a.txt", "b.mp4"):
            try:
                os.close(os.open(tmp_path / name, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass
    items = {os.path.basename(i.path): i for i in result["items"]}
    assert items["a.mp4"].caption is None
    settings = prepare.Settings(missing_caption="empty")
    r = prepare.process_video(items["b.mp4"], settings, str(tmp_path))
    assert (r["status"], r["reason"]) == ("skipped", "not_regular_file")
    r = prepare.process_video(items["a.mp4"], prepare.Settings(), str(tmp_path))
    assert r["reason"] == "missing_caption" and "sidecar is not a regular file" in r["message"]


@pytest.mark.parametrize("bucket", ["../../etc", "a", "Bucket", "b/c", "gs://b", "-ab", "a..b"])
def test_bad_bucket_names_are_refused(bucket):
    from tpu_scripts import tpu

    with pytest.raises(ValueError, match="is not a GCS bucket name"):
        tpu.main(["install", "--name", "n", "--zone", "z", "--dry-run", f"--bucket={bucket}"])
    assert tpu.bucket_name("my-bkt.v2_x") == "my-bkt.v2_x"


# ============================================================================ 12 resumed logs


def _tb_scalars(logdir):
    """(tag, step, value) as TensorBoard shows them: a SessionLog START at step S (written by
    a resumed writer's purge_step) hides the earlier events with step >= S."""
    from tensorboardX.proto import event_pb2

    events = []
    for name in sorted(os.listdir(logdir)):
        data = open(os.path.join(logdir, name), "rb").read()
        i = 0
        while i < len(data):
            (n,) = struct.unpack("<Q", data[i : i + 8])
            ev = event_pb2.Event.FromString(data[i + 12 : i + 12 + n])
            i += 12 + n + 4
            if ev.HasField("session_log") and ev.session_log.status == ev.session_log.START:
                events = [e for e in events if e[1] < ev.step]
            for v in ev.summary.value:
                if v.tag in SCALARS and v.tag not in TIMINGS:  # not the per-start config
                    events.append((v.tag, ev.step, v.simple_value))
    return sorted(events)


TIMINGS = ("sec_per_step", "samples_per_sec")  # wall-clock figures: differ run to run


@pytest.mark.slow
def test_resumed_logs_equal_the_uninterrupted_run(tmp_path, monkeypatch):
    from stiv_jax import train

    ref, run = str(tmp_path / "ref"), str(tmp_path / "run")
    c = lambda: _tiny(steps=6, log_every=2, ckpt_every=3, async_checkpoint=False)  # noqa: E731
    train.train_loop(c(), ref)
    calls = []
    real = train.mesh_lib.any_process

    def crash_at_step_5(flag):  # a kill after step 4 was logged, with the checkpoint at 3
        calls.append(flag)
        if len(calls) == 5:
            raise RuntimeError("injected crash")
        return real(flag)

    monkeypatch.setattr(train.mesh_lib, "any_process", crash_at_step_5)
    with pytest.raises(RuntimeError, match="injected crash"):
        train.train_loop(c(), run)
    monkeypatch.setattr(train.mesh_lib, "any_process", real)
    assert os.listdir(os.path.join(run, "checkpoints")) == ["3"]  # the crash left step 3
    assert len(os.listdir(os.path.join(run, "tensorboard"))) == 1  # with events up to 4
    train.train_loop(c(), run)

    def rows(wd):
        lines = open(os.path.join(wd, "metrics.jsonl")).read().splitlines()
        return [{k: v for k, v in json.loads(x).items() if k not in TIMINGS} for x in lines]

    assert [r["step"] for r in rows(run)] == [2, 4, 6]
    assert rows(run) == rows(ref)
    assert _tb_scalars(os.path.join(run, "tensorboard")) == _tb_scalars(
        os.path.join(ref, "tensorboard")
    )
