"""Sampler: frame replacement exactness, one-forward JIT-CFG, prompts file, resumable job."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from stiv_jax.optim import make_optimizer
from stiv_jax.pipeline import Request, build_conditions, make_sample_fn
from stiv_jax.runtime import Components
from stiv_jax.sample import parse_prompts
from stiv_jax.train import init_state


@pytest.fixture
def setup(tiny_config):
    c = tiny_config
    c.sample.steps = 3
    comps = Components(c)
    tx = make_optimizer(c.optim)
    graphdef, state = init_state(comps.model(0), tx)
    # non-zero weights everywhere so the velocity is not trivially zero
    leaves, tree = jax.tree.flatten(state["params"])
    keys = jax.random.split(jax.random.key(5), len(leaves))
    params = jax.tree.unflatten(
        tree, [x + 0.05 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]
    )
    return c, comps, graphdef, params


def _reqs(c, n=2):
    frame = np.linspace(-1, 1, c.data.res * c.data.res * 3, dtype=np.float32).reshape(
        c.data.res, c.data.res, 3
    )
    return [
        Request(
            id=str(i),
            prompt="a red circle moves left",
            cond_frames=[0, 3] if i else [0],
            seed=i,
            first_frame=frame,
        )
        for i in range(n)
    ]


def test_frame_replacement_returns_given_frames_exactly(setup):
    c, comps, graphdef, params = setup
    reqs = _reqs(c)
    cond, x0 = build_conditions(c, comps, reqs)
    out = make_sample_fn(c, graphdef)(params, x0, cond, comps.null_text, jnp.full((2,), 4.0))
    given = np.asarray(cond["cond_mask"])
    np.testing.assert_array_equal(np.asarray(out)[given], np.asarray(cond["cond_latents"])[given])
    assert given.sum() == 3
    # and the free frames moved away from the initial noise
    assert float(jnp.abs(out[:, 1] - x0[:, 1]).max()) > 1e-3


def test_batched_cfg_equals_two_pass_formula(setup):
    from flax import nnx

    from stiv_jax.conditioning import null_conditions
    from stiv_jax.diffusion import guided_velocity

    c, comps, graphdef, params = setup
    cond, x0 = build_conditions(c, comps, _reqs(c))
    model = nnx.merge(graphdef, params)
    calls = []

    def model_fn(x, t, cd):
        calls.append(x.shape[0])
        return model(x, t, cd)

    t = jnp.full((2,), 0.3)
    null = null_conditions(cond, comps.null_text)
    v = guided_velocity(model_fn, x0, t, (cond, null), scale=3.0)
    assert calls == [4]  # one batched forward for both halves
    v_c, v_u = model(x0, t, cond), model(x0, t, null)
    np.testing.assert_allclose(v, v_u + 3.0 * (v_c - v_u), atol=1e-5, rtol=1e-5)
    assert float(jnp.abs(v_c - v_u).max()) > 1e-4  # the two branches differ


def test_parse_prompts_reports_bad_lines_and_keeps_the_rest(tmp_path, tiny_config, caplog):
    img = tmp_path / "wide.png"
    Image.fromarray(np.full((20, 40, 3), 200, np.uint8)).save(img)
    lines = [
        json.dumps({"id": "ok1", "prompt": "a blue square moves up", "image": "wide.png"}),
        "{not json",
        json.dumps({"id": "empty", "prompt": "  "}),
        json.dumps({"id": "noimg", "prompt": "x", "image": "missing.png"}),
        json.dumps({"id": "bad id!", "prompt": "x"}),
        json.dumps({"id": "frames", "prompt": "x", "image": "wide.png", "cond_frames": [99]}),
        json.dumps({"id": "ok2", "prompt": "a green triangle grows", "seed": 3, "cfg_scale": 2.0}),
    ]
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join(lines) + "\n")
    import logging

    with caplog.at_level(logging.INFO):
        reqs, errors = parse_prompts(str(path), tiny_config)
    assert [r.id for r in reqs] == ["ok1", "ok2"]
    assert [e.split(":")[1] for e in errors] == ["2", "3", "4", "5", "6"]
    assert "missing.png" in errors[2] and "'  '" in errors[1]
    assert reqs[0].first_frame.shape == (16, 16, 3) and reqs[0].cond_frames == [0]
    assert reqs[1].seed == 3 and reqs[1].cfg_scale == 2.0 and reqs[1].first_frame is None
    assert "resized" in caplog.text  # a 40x20 image is resized and center-cropped, and says so


def _workdir(tmp_path, c, steps=(0,)):
    """A tiny run directory with untrained checkpoints at `steps`."""
    from stiv_jax import checkpoint as ckpt
    from stiv_jax.runtime import fill_train_grid

    fill_train_grid(c)
    comps = Components(c)
    _, state = init_state(comps.model(0), make_optimizer(c.optim))
    wd = str(tmp_path / "wd")
    mngr = ckpt.manager(wd, max_to_keep=10, async_save=False)
    for s in steps:
        ckpt.save(mngr, s, state, None, c, force=True)
    mngr.wait_until_finished()
    return wd


def test_sample_job_end_to_end_and_resumes(tmp_path, tiny_config, monkeypatch):
    from stiv_jax.pipeline import STIVPipeline
    from stiv_jax.sample import run_job

    c = tiny_config
    c.sample.steps, c.sample.batch_size = 2, 2
    wd = _workdir(tmp_path, c, steps=(0, 3))
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(
        json.dumps({"id": "a", "prompt": "a red circle moves left"}) + "\nnot json\n"
        + json.dumps({"id": "b", "prompt": "a blue square", "motion_score": 4.0}) + "\n"
        + json.dumps({"id": "c", "prompt": "a green triangle"}) + "\n"
    )  # fmt: skip
    batches = []
    generate = STIVPipeline.generate
    monkeypatch.setattr(
        STIVPipeline,
        "generate",
        lambda self, reqs: batches.append(len(reqs)) or generate(self, reqs),
    )
    out = str(tmp_path / "out")
    counts = run_job(c, wd, str(prompts), out, step=0)
    assert counts == {
        "generated": 3, "skipped_done": 0, "bad_lines": 1, "failed": 0, "claimed_elsewhere": 0
    }  # fmt: skip
    assert batches == [2, 2]  # the short last batch is padded: one compiled shape
    assert sorted(os.listdir(out)) == [
        ".locks", "a.gif", "a.mp4", "a.png", "b.gif", "b.mp4", "b.png", "c.gif", "c.mp4", "c.png",
        "contact_sheet.png", "results.jsonl",
    ]  # fmt: skip
    from stiv_jax.video import read_mp4

    assert read_mp4(os.path.join(out, "a.mp4")).shape == (4, 16, 16, 3)
    with open(os.path.join(out, "results.jsonl")) as fh:
        recs = [json.loads(line) for line in fh]
    assert [(r["path"], r["gif"], r["strip"], r["step"]) for r in recs] == [
        (f"{i}.mp4", f"{i}.gif", f"{i}.png", 0) for i in "abc"
    ]  # relative to OUT; sampled from the asked step, not the latest (3)
    sheet = Image.open(os.path.join(out, "contact_sheet.png"))
    assert sheet.size[1] == 3 * (14 + 128) + 2 * 2  # three labelled 16x16 -> 128 px strips
    counts = run_job(c, wd, str(prompts), out)
    assert counts == {
        "generated": 0, "skipped_done": 3, "bad_lines": 1, "failed": 0, "claimed_elsewhere": 0
    }  # fmt: skip
    with pytest.raises(ValueError, match=r"step 5 has no checkpoint .*available: \[0, 3\]"):
        run_job(c, wd, str(prompts), out, step=5)


def test_missing_workdir_is_one_line_and_creates_nothing(tmp_path, tiny_config):
    import subprocess
    import sys

    wd = _workdir(tmp_path, tiny_config, steps=(0, 3))
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cli = [sys.executable, "-m", "stiv_jax.sample"]
    listed = subprocess.run(
        cli + ["--workdir", wd, "--list"], cwd=repo, capture_output=True, text=True, timeout=300
    )
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert listed.stdout.split() == ["0", "3"]
    typo = str(tmp_path / "runs" / "stiv_typo")
    (tmp_path / "p.jsonl").write_text(json.dumps({"id": "a", "prompt": "x"}) + "\n")
    proc = subprocess.run(
        cli + ["--config", "configs/stiv.py:variant=tiny", "--workdir", typo,
               "--prompts", str(tmp_path / "p.jsonl"), "--out", str(tmp_path / "out")],
        cwd=repo, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == [f"error: workdir {typo!r} does not exist"]
    assert not os.path.exists(tmp_path / "runs") and not os.path.exists(tmp_path / "out")


def test_request_defaults_are_the_cli_defaults(tmp_path, tiny_config):
    c = tiny_config
    c.sample.motion_score, c.sample.cfg_scale = 2.5, 3.0
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"id": "x1", "prompt": "a red circle"}) + "\n")
    (cli,), _ = parse_prompts(str(path), c)
    api = Request(id="x1", prompt="a red circle").with_defaults(c)
    assert (api.seed, api.motion_score, api.cfg_scale) == (
        cli.seed,
        cli.motion_score,
        2.5 * 0 + 3.0,
    )
    assert (cli.motion_score, cli.cfg_scale) == (2.5, 3.0)
    # sample.cfg_scale_given: the default scale of requests that give frames, CLI and API alike.
    c.sample.cfg_scale_given = 1.0
    frame = np.zeros((c.data.res, c.data.res, 3), np.uint8)
    Image.fromarray(frame).save(tmp_path / "f.png")
    lines = [{"id": "t", "prompt": "x"}, {"id": "i", "prompt": "x", "image": "f.png"},
             {"id": "o", "prompt": "x", "image": "f.png", "cfg_scale": 2.0}]  # fmt: skip
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    reqs, _ = parse_prompts(str(path), c)
    assert [r.cfg_scale for r in reqs] == [3.0, 1.0, 2.0]
    given = Request(id="g", prompt="x", first_frame=frame, cond_frames=[0]).with_defaults(c)
    assert given.cfg_scale == 1.0 and Request(id="t", prompt="x").with_defaults(c).cfg_scale == 3.0
    c.sample.cfg_scale_given = -1.0  # unset: every request takes cfg_scale
    assert (
        Request(id="g", prompt="x", first_frame=frame, cond_frames=[0]).with_defaults(c).cfg_scale
        == 3.0
    )


def test_generate_returns_videos_in_minus_one_to_one(setup):
    from stiv_jax.pipeline import generate

    c, comps, graphdef, params = setup
    decode = comps.autoencoder.decode
    comps.autoencoder.decode = lambda z: 5.0 * decode(z)  # a decoder that overshoots
    videos = generate(c, comps, make_sample_fn(c, graphdef), params, _reqs(c))
    assert videos.dtype == np.float32 and videos.shape == (2, 4, 16, 16, 3)
    assert videos.min() == -1.0 and videos.max() == 1.0


def test_readme_example_prompts_run_from_a_fresh_clone():
    """docs/examples/prompts.jsonl (the README's sampling example) parses with no bad line and
    its image is the shipped held-out ShapesBench first frame."""
    import importlib.util

    from configs.stiv import get_config

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    examples = os.path.join(root, "docs", "examples")
    reqs, errors = parse_prompts(os.path.join(examples, "prompts.jsonl"), get_config("variant=S"))
    assert errors == [] and [r.id for r in reqs] == ["circle", "ti2v"]
    assert reqs[1].first_frame.shape == (32, 32, 3)
    spec = importlib.util.spec_from_file_location(
        "make_first_frame", os.path.join(examples, "make_first_frame.py")
    )
    make = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make)
    np.testing.assert_array_equal(np.asarray(Image.open(make.PATH)), make.first_frame())
    readme = open(os.path.join(root, "README.md")).read()
    assert "--prompts docs/examples/prompts.jsonl --out runs/" in readme
