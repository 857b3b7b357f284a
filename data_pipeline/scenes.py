"""Scene splitting with PySceneDetect (content + fade detection) and clip cutting.

Shapes: none (frame indices). A scene is a half-open frame range [start, end). The detector
settings mirror the `scenedetect` CLI defaults so `detect-content detect-threshold` on the
command line finds the same cuts (tests/data_pipeline/test_scenes.py runs both).
"""

from __future__ import annotations

import dataclasses
import logging
import math

import scenedetect


@dataclasses.dataclass(frozen=True)
class SceneSettings:
    """Detector and clip-length settings (seconds are converted with the video's fps)."""

    content_threshold: float = 27.0  # ContentDetector HSV-delta threshold (CLI default)
    fade_threshold: float = 12.0  # ThresholdDetector mean-intensity threshold (fades to black)
    min_scene_seconds: float = 0.6  # detector minimum scene length (CLI global default)
    min_clip_seconds: float = 1.0  # scenes shorter than this are dropped ("duration")
    max_clip_seconds: float = 10.0  # longer scenes are cut into consecutive clips this long


def detect_scenes(path: str, settings: SceneSettings) -> tuple[list[tuple[int, int]], int]:
    """([(start, end)) frame ranges of the scenes in `path`, frames decoded by the detector)."""
    logging.getLogger("pyscenedetect").setLevel(logging.ERROR)
    video = scenedetect.open_video(path, backend="opencv")
    fps = float(video.frame_rate)
    min_len = max(1, round(settings.min_scene_seconds * fps))
    manager = scenedetect.SceneManager()
    manager.auto_downscale = True  # as the CLI without -d
    manager.add_detector(
        scenedetect.ContentDetector(threshold=settings.content_threshold, min_scene_len=min_len)
    )
    manager.add_detector(
        scenedetect.ThresholdDetector(
            threshold=settings.fade_threshold,
            min_scene_len=min_len,
            fade_bias=0.0,
            add_final_scene=True,  # CLI default add-last-scene
            min_out_length=max(0, round(0.1 * fps)),  # CLI default min-out-length 0.1s
        )
    )
    decoded = manager.detect_scenes(video)
    scenes = manager.get_scene_list(start_in_scene=True)
    return [(int(a.frame_num), int(b.frame_num)) for a, b in scenes], int(decoded)


def cut_clips(
    scenes: list[tuple[int, int]], fps: float, settings: SceneSettings
) -> tuple[list[tuple[int, int]], int]:
    """(clips, dropped): scenes cut to [min, max] clip length; `dropped` counts too-short pieces."""
    min_frames = max(2, math.ceil(settings.min_clip_seconds * fps))
    max_frames = max(min_frames, math.floor(settings.max_clip_seconds * fps))
    clips, dropped = [], 0
    for start, end in scenes:
        pos = start
        while pos < end:
            stop = min(end, pos + max_frames)
            if stop - pos >= min_frames:
                clips.append((pos, stop))
            else:
                dropped += 1
            pos = stop
    return clips, dropped
