"""The trainer's console and TensorBoard events, from one short CLI run read back with
`read_events` (no TensorBoard or TensorFlow needed)."""

import io
import json
import os
import subprocess
import sys

import pytest
from PIL import Image

from stiv_jax.summaries import SCALARS, read_events

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("tb") / "run")
    cmd = [
        sys.executable, "-m", "stiv_jax.train", "--config", "configs/stiv.py:variant=tiny",
        "--workdir", workdir, "--config.train.steps=4", "--config.train.log_every=2",
        "--config.data.res=16", "--config.data.frames=4", "--config.data.batch_size=2",
        "--config.sample.num_train_samples=2", "--config.sample.steps=2",
        "--config.train.unmasked_steps=0",
    ]  # fmt: skip
    # No JAX_PLATFORMS: with libtpu installed (the [tpu] extra) the TPU probe runs, as for a user.
    env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return workdir, proc.stdout + proc.stderr


def test_console_is_our_lines_only(run):
    _, console = run
    lines = [ln for ln in console.replace("\r", "\n").splitlines() if ln.strip()]
    ours = [ln for ln in lines if not ln.lstrip().startswith("train:")]  # the tqdm bar
    assert any("compiling train step…" in ln for ln in ours)
    assert any("compiling train step: " in ln and ln.endswith(" s") for ln in ours)
    assert any("sampling 2 videos → " in ln for ln in ours)
    for noise in ("checkpoint_manager", "orbax", "os.fork()", "Unable to initialize backend",
                  "libtpu", "InitGoogle", "TPU accelerator type"):  # fmt: skip
        assert noise not in console, noise
    assert len(ours) <= 8, ours


def test_tensorboard_events_have_scalars_config_and_sample_videos(run):
    workdir, _ = run
    events = read_events(os.path.join(workdir, "tensorboard"))
    scalars = {(e["tag"], e["step"]) for e in events if e["kind"] == "scalar"}
    assert {(k, s) for k in SCALARS for s in (2, 4)} <= scalars
    with open(os.path.join(workdir, "metrics.jsonl")) as fh:
        logged = [json.loads(line) for line in fh]
    assert [r["step"] for r in logged] == [2, 4] and all(set(SCALARS) <= set(r) for r in logged)
    assert logged[0]["lr"] < logged[1]["lr"]  # warmup
    text = [e for e in events if e["kind"] == "text"]
    assert text[0]["tag"] == "config/text_summary" and "variant: tiny" in text[0]["value"]
    assert any(e["kind"] == "hparams" for e in events)
    images = {e["tag"]: e for e in events if e["kind"] == "image"}
    strips, videos = images["samples/frames"], images["samples/videos"]
    assert strips["step"] == videos["step"] == 4
    assert strips["value"]["format"] == "png" and videos["value"]["format"] == "gif"
    gif = Image.open(io.BytesIO(videos["value"]["data"]))
    assert gif.n_frames == 4 and min(gif.size) >= 128  # 16x16 videos, upscaled
    png = Image.open(io.BytesIO(strips["value"]["data"]))
    assert png.size[1] >= 2 * 128  # one row per video


def test_trainer_samples_have_previews_and_a_contact_sheet(run):
    workdir, _ = run
    files = sorted(os.listdir(os.path.join(workdir, "samples", "step_4")))
    assert files == ["000.gif", "000.mp4", "000.png", "001.gif", "001.mp4", "001.png",
                     "captions.json", "contact_sheet.png"]  # fmt: skip


def test_the_runtime_never_imports_torch(tmp_path):
    """tensorboardX imports torch (and boto3) when installed; ours blocks those optional
    imports, so training, sampling and evaluation run without them (torch is installed here)."""
    script = f"""
import sys
import numpy as np
import stiv_jax.evaluate, stiv_jax.pipeline, stiv_jax.sample, stiv_jax.train
from configs.stiv import get_config
from stiv_jax.summaries import MetricsLog, read_events
log = MetricsLog({str(tmp_path)!r}, resume_step=0)
log.write(1, {{"loss": 1.0}})
log.write_config(1, get_config("variant=tiny"))
log.write_videos(1, np.zeros((1, 2, 8, 8, 3), np.uint8), fps=4)
log.close()
assert read_events({str(tmp_path / "tensorboard")!r})
print(sorted(m for m in ("torch", "boto3", "google.cloud.storage") if m in sys.modules))
import torch  # still importable afterwards
"""
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"
