"""Video and image files: MP4 writing (atomic: stiv_jax.atomic) and condition-image loading.

Shapes: T frames, H/W pixels; frames are uint8 [T, H, W, 3] or float in [-1, 1].
"""

from __future__ import annotations

import logging
import os
import warnings

import numpy as np

from stiv_jax.atomic import atomic_path


def to_uint8(video: np.ndarray) -> np.ndarray:
    """float [-1, 1] -> uint8 [0, 255] (uint8 passes through)."""
    video = np.asarray(video)
    if video.dtype == np.uint8:
        return video
    return np.clip(np.round((video.astype(np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def write_mp4(path: str, video: np.ndarray, fps: int = 8) -> str:
    """Writes [T, H, W, 3] frames as H.264 MP4 atomically (temp file, then rename)."""
    import imageio.v2 as imageio

    frames = to_uint8(video)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"video shape {frames.shape} is not [T, H, W, 3]")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_path(path, suffix=".mp4") as tmp:  # ffmpeg picks the container by extension
        writer = imageio.get_writer(
            tmp, format="FFMPEG", fps=fps, codec="libx264", macro_block_size=1,
            ffmpeg_log_level="error", output_params=["-pix_fmt", "yuv420p", "-crf", "12"],
        )  # fmt: skip
        try:
            for frame in frames:
                writer.append_data(frame)
        finally:
            writer.close()
    return path


def read_mp4(path: str) -> np.ndarray:
    """All frames of a video file as uint8 [T, H, W, 3]."""
    import imageio.v2 as imageio

    reader = imageio.get_reader(path, format="FFMPEG")
    try:
        return np.stack([np.asarray(f)[..., :3] for f in reader])
    finally:
        reader.close()


def fit_image(image, size: tuple[int, int], *, name: str = "condition image") -> np.ndarray:
    """An image resized (short side) and center-cropped to size (h, w), float32 [-1, 1].

    `image`: a PIL image, or an array [H, W, 3] (uint8, or float in [-1, 1])."""
    from PIL import Image

    from stiv_jax.data.schema import normalize_uint8

    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(f"{name} has shape {image.shape}; expected [H, W, 3]")
        image = Image.fromarray(to_uint8(image))
    im = image.convert("RGB")
    w0, h0 = im.size
    h, w = size
    scale = max(h / h0, w / w0)
    rw, rh = max(w, round(w0 * scale)), max(h, round(h0 * scale))
    if (h0, w0) != (h, w):
        logging.info(
            "%s is %dx%d; resized to %dx%d and center-cropped to %dx%d",
            name, w0, h0, rw, rh, w, h,
        )  # fmt: skip
    im = im.resize((rw, rh), Image.BICUBIC)
    left, top = (rw - w) // 2, (rh - h) // 2
    return normalize_uint8(np.asarray(im.crop((left, top, left + w, top + h))))


def load_image(path, size: tuple[int, int]) -> np.ndarray:
    """An image file (or an array, see `fit_image`) fitted to size (h, w), float [-1, 1].

    Raises FileNotFoundError / ValueError naming the path when it is missing or unreadable.
    """
    from PIL import Image, UnidentifiedImageError

    if isinstance(path, np.ndarray):
        return fit_image(path, size)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"condition image {path!r} does not exist")
    try:
        with warnings.catch_warnings():
            # Past MAX_IMAGE_PIXELS PIL only warns: a decompression bomb is refused, not decoded.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                return fit_image(im, size, name=f"condition image {path}")
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
        raise ValueError(f"condition image {path!r} is too large to decode: {e}") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ValueError(f"condition image {path!r} cannot be read as an image: {e}") from None
