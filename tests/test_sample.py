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


def test_sample_job_end_to_end_and_resumes(tmp_path, tiny_config):
    from stiv_jax import checkpoint as ckpt
    from stiv_jax.runtime import fill_train_grid
    from stiv_jax.sample import run_job

    c = tiny_config
    c.sample.steps = 2
    fill_train_grid(c)
    comps = Components(c)
    tx = make_optimizer(c.optim)
    _, state = init_state(comps.model(0), tx)
    mngr = ckpt.manager(str(tmp_path / "wd"), max_to_keep=1, async_save=False)
    ckpt.save(mngr, 0, state, None, c, force=True)
    mngr.wait_until_finished()
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(
        json.dumps({"id": "a", "prompt": "a red circle moves left"}) + "\nnot json\n"
        + json.dumps({"id": "b", "prompt": "a blue square", "motion_score": 4.0}) + "\n"
    )  # fmt: skip
    out = str(tmp_path / "out")
    counts = run_job(c, str(tmp_path / "wd"), str(prompts), out)
    assert counts == {
        "generated": 2,
        "skipped_done": 0,
        "bad_lines": 1,
        "failed": 0,
        "claimed_elsewhere": 0,
    }
    assert sorted(f for f in os.listdir(out) if f.endswith(".mp4")) == ["a.mp4", "b.mp4"]
    from stiv_jax.video import read_mp4

    assert read_mp4(os.path.join(out, "a.mp4")).shape == (4, 16, 16, 3)
    counts = run_job(c, str(tmp_path / "wd"), str(prompts), out)
    assert counts == {
        "generated": 0,
        "skipped_done": 2,
        "bad_lines": 1,
        "failed": 0,
        "claimed_elsewhere": 0,
    }
