"""Input listing: a directory of videos with sidecar captions, or a CSV/JSONL manifest.

Shapes: none. Directory: every file with a video extension, recursively, sorted; the caption
of `a/b.mp4` is the text of `a/b.txt` (None if missing or not a regular file: a FIFO
sidecar would block a reader forever; the video is then skipped as missing_caption). Manifest: one row per video with
`path` (relative paths resolve against the manifest's folder) and `caption`; other columns
are kept as string metadata. Manifests are data: parsed as CSV/JSON, never executed.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import stat

VIDEO_EXTS = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".y4m")


@dataclasses.dataclass(frozen=True)
class InputItem:
    path: str
    caption: str | None
    meta: dict[str, str]


def sidecar(video: str) -> str:
    """The caption sidecar path of a video (`a/b.mp4` -> `a/b.txt`)."""
    return os.path.splitext(video)[0] + ".txt"


def is_regular(path: str) -> bool:
    """True for a regular file (following symlinks); a FIFO, socket or device would block
    or never end when read, so every reader here checks this before opening."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def _read_caption(video: str) -> str | None:
    txt = sidecar(video)
    if not is_regular(txt):  # missing, or a FIFO/device (opening a FIFO blocks forever)
        return None
    try:
        with open(txt, encoding="utf-8", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return None


def _row(row: dict, base: str, where: str) -> InputItem:
    if not row.get("path"):
        raise ValueError(f"{where} has no 'path'; expected columns path, caption[, ...]")
    path = str(row["path"])
    if not os.path.isabs(path):
        path = os.path.join(base, path)
    caption = row.get("caption")
    caption = None if caption is None or str(caption).strip() == "" else str(caption).strip()
    meta = {
        str(k): str(v) for k, v in row.items() if k not in ("path", "caption") and v is not None
    }
    return InputItem(path, caption, meta)


def list_inputs(source: str) -> list[InputItem]:
    """InputItems of a directory, `.csv` or `.jsonl` manifest (see module docstring)."""
    if os.path.isdir(source):
        items = []
        for root, dirs, files in os.walk(source):
            dirs.sort()
            for name in sorted(files):
                if name.lower().endswith(VIDEO_EXTS):
                    path = os.path.join(root, name)
                    items.append(InputItem(path, _read_caption(path), {}))
        return items
    if not os.path.isfile(source):
        raise FileNotFoundError(f"--input {source!r} is neither a directory nor a manifest file")
    base = os.path.dirname(os.path.abspath(source))
    if source.endswith(".csv"):
        with open(source, newline="", encoding="utf-8") as f:
            return [_row(r, base, f"{source} row {i + 2}") for i, r in enumerate(csv.DictReader(f))]
    if source.endswith((".jsonl", ".json")):
        items = []
        with open(source, encoding="utf-8") as f:
            for i, line in enumerate(f):
                if line.strip():
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise ValueError(f"{source} line {i + 1} is not JSON: {e}") from None
                    if not isinstance(row, dict):
                        raise ValueError(f"{source} line {i + 1} is not a JSON object")
                    items.append(_row(row, base, f"{source} line {i + 1}"))
        return items
    raise ValueError(f"--input {source!r}: expected a directory, a .csv or a .jsonl manifest")
