"""Training logs: `workdir/metrics.jsonl` and TensorBoard events in `workdir/tensorboard/`.

  tensorboard --logdir runs/stiv_s/tensorboard       # pip install -e ".[tensorboard]"

What a run writes to TensorBoard (tensorboardX; TensorBoard itself is only needed to view):
  scalars   loss, loss_avg, grad_norm, lr, sec_per_step, samples_per_sec (every log step)
  text      config (the full ConfigDict, at the first step of each start or resume)
  hparams   the config's scalar fields, for the HParams tab
  images    samples/frames: the frame strips of the trainer's sample videos (PNG, one row
            per video); samples/videos: the same videos as one animated GIF grid (TensorBoard
            plays GIFs in its Images tab), at every sampling step

`read_events(logdir)` reads the event files back without TensorBoard or TensorFlow (tests,
notebooks). Only process 0 writes (metrics are replicated; every host would write the same).
"""

from __future__ import annotations

import glob
import json
import math
import os
import struct
import sys
from typing import Any

import numpy as np

from stiv_jax.atomic import atomic_write

SCALARS = ("loss", "loss_avg", "grad_norm", "lr", "sec_per_step", "samples_per_sec")


# tensorboardX's package import tries these optional backends: torch (~3 s, and the runtime
# never imports torch), boto3 and google.cloud.storage (S3/GCS writers we do not use).
_OPTIONAL_IMPORTS = ("torch", "boto3", "google.cloud.storage")


def tensorboardx():
    """The tensorboardX package, imported with its optional backends blocked (each import
    then fails as if not installed, which tensorboardX handles). sys.modules is restored,
    so a later `import torch` elsewhere works as usual."""
    if "tensorboardX" in sys.modules:
        return sys.modules["tensorboardX"]
    blocked = [m for m in _OPTIONAL_IMPORTS if m not in sys.modules]
    for m in blocked:
        sys.modules[m] = None  # type: ignore[assignment]
    try:
        import tensorboardX
        import tensorboardX.proto.event_pb2
        import tensorboardX.proto.summary_pb2
        import tensorboardX.summary  # noqa: F401
    finally:
        for m in blocked:
            if sys.modules.get(m, 0) is None:
                del sys.modules[m]
    return tensorboardX


def _json_number(x):
    """A float for metrics.jsonl, or None for NaN/inf (JSON has no NaN)."""
    return None if x is None or not math.isfinite(x) else float(x)


def flat_config(config) -> dict[str, bool | int | float | str]:
    """ConfigDict -> {"optim.lr": 1e-4, ...}: its leaves as HParams values (lists as text)."""
    out = {}

    def walk(node, prefix):
        for k, v in node.items():
            name = f"{prefix}{k}"
            if hasattr(v, "items"):
                walk(v, name + ".")
            elif isinstance(v, bool | int | float | str):
                out[name] = v
            else:
                out[name] = str(v)

    walk(config, "")
    return out


class MetricsLog:
    """metrics.jsonl (one JSON object per logged step) + TensorBoard scalars, text, images."""

    def __init__(self, workdir: str, *, resume_step: int, process_index: int = 0):
        self.path = os.path.join(workdir, "metrics.jsonl")
        self.tb = None
        if process_index != 0:
            return
        self._truncate(resume_step)
        SummaryWriter = tensorboardx().SummaryWriter

        # purge_step: TensorBoard hides events after the restored step (they are logged again).
        self.tb = SummaryWriter(
            os.path.join(workdir, "tensorboard"),
            purge_step=resume_step + 1 if resume_step else None,
        )

    def _truncate(self, step: int) -> None:
        """Drops lines logged after the restored checkpoint (they will be logged again)."""
        if not os.path.exists(self.path):
            return
        keep = []
        with open(self.path) as fh:
            for line in fh:
                try:
                    if json.loads(line)["step"] <= step:
                        keep.append(line)
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue  # a line cut by a kill mid-write
        with atomic_write(self.path) as fh:
            fh.writelines(keep)

    def write(self, step: int, metrics: dict[str, float | None]) -> None:
        """One line; NaN/inf (and None) are written as null, so the file stays strict JSON."""
        if self.tb is None:
            return
        row = {"step": step, **{k: _json_number(v) for k, v in metrics.items()}}
        with open(self.path, "a") as fh:
            fh.write(json.dumps(row, allow_nan=False) + "\n")
        for k, v in row.items():
            if k != "step" and v is not None:
                self.tb.add_scalar(k, v, step)
        self.tb.flush()

    def write_config(self, step: int, config) -> None:
        """The config as text (a code block) and its scalar fields as HParams."""
        if self.tb is None:
            return
        hparams = tensorboardx().summary.hparams

        text = "\n".join("    " + line for line in str(config).splitlines())
        self.tb.add_text("config", text, step)
        writer = self.tb._get_file_writer()
        for s in hparams(flat_config(config), {k: 0.0 for k in ("loss", "loss_avg")}):
            writer.add_summary(s, step)
        self.tb.flush()

    def write_videos(self, step: int, videos: np.ndarray, fps: int) -> None:
        """Sample videos [B, T, H, W, 3] as frame strips (PNG) and an animated GIF grid."""
        if self.tb is None:
            return
        from stiv_jax import previews

        Summary = tensorboardx().proto.summary_pb2.Summary

        strips = previews.contact_sheet([previews.frame_strip(v) for v in videos])
        grid = previews.video_grid(videos)
        writer = self.tb._get_file_writer()
        for tag, img, data in (
            ("samples/frames", strips, previews.png_bytes(strips)),
            ("samples/videos", grid[0], previews.gif_bytes(grid, fps)),
        ):
            h, w = img.shape[:2]
            image = Summary.Image(height=h, width=w, colorspace=3, encoded_image_string=data)
            writer.add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)
        self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


# ============================================================================ reading back


def _records(path: str):
    """The payloads of a TFRecord file: [len u64][crc u32][data][crc u32] repeated."""
    with open(path, "rb") as fh:
        while header := fh.read(12):
            if len(header) < 12:
                return  # a record cut by a kill mid-write
            (n,) = struct.unpack("<Q", header[:8])
            data = fh.read(n)
            if len(data) < n or len(fh.read(4)) < 4:
                return
            yield data


def read_events(logdir: str) -> list[dict[str, Any]]:
    """Every summary value in `logdir`'s event files, oldest file first:
    {step, tag, kind: scalar | text | hparams | image, value} with value a float (scalar), a
    str (text), the plugin's bytes (hparams) or {format: png | gif, width, height, data}."""
    Event = tensorboardx().proto.event_pb2.Event
    out = []
    for path in sorted(
        glob.glob(os.path.join(logdir, "**", "events.out.tfevents.*"), recursive=True)
    ):
        for rec in _records(path):
            event = Event.FromString(rec)
            if not event.HasField("summary"):
                continue
            for v in event.summary.value:
                plugin = v.metadata.plugin_data.plugin_name
                if v.HasField("image"):
                    data = v.image.encoded_image_string
                    fmt = "gif" if data[:3] == b"GIF" else "png" if data[:4] == b"\x89PNG" else "?"
                    value = {"format": fmt, "width": v.image.width, "height": v.image.height,
                             "data": data}  # fmt: skip
                    kind = "image"
                elif plugin == "text":
                    kind, value = "text", v.tensor.string_val[0].decode()
                elif plugin == "hparams":
                    kind, value = "hparams", v.metadata.plugin_data.content
                elif v.HasField("tensor") and not plugin:
                    continue
                else:
                    kind, value = "scalar", float(v.simple_value)
                out.append({"step": int(event.step), "tag": v.tag, "kind": kind, "value": value})
    return out
