"""The README's application prompts (examples/apps.jsonl) parse on a fresh clone once
examples/make_media.py has written their media: every line valid for variant=S."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_example_prompts_parse_with_generated_media(tmp_path):
    from configs.stiv import get_config
    from stiv_jax.sample import parse_prompts

    shutil.copy(os.path.join(REPO, "examples", "apps.jsonl"), tmp_path)
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
    subprocess.run(
        [sys.executable, os.path.join(REPO, "examples", "make_media.py"), "--out",
         str(tmp_path / "media")],
        check=True, env=env, capture_output=True, timeout=300,
    )  # fmt: skip
    reqs, errors = parse_prompts(str(tmp_path / "apps.jsonl"), get_config("variant=S"))
    assert errors == []
    by_id = {r.id: r for r in reqs}
    assert len(by_id) == 10
    assert [c.frame for c in by_id["interp"].conditions] == [0, 7]
    assert by_id["predict"].conditions[0].media.shape == (2, 32, 32, 3)
    assert by_id["v2v"].video.shape == (8, 32, 32, 3) and by_id["v2v"].strength == 0.6
    assert by_id["long_hier"].long_mode == "hierarchical" and by_id["long_hier"].frames == 64
