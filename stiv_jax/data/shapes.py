"""ShapesBench: procedural text-to-video clips with exact ground truth.

Shapes: T frames, H = W = res pixels, 3 RGB channels; a clip is uint8 [T, H, W, 3].
(The B, F, S, L, D, N, H model legend does not apply here: no batch or latent dims.)

Each clip has 1-2 objects (circle / square / triangle in one of 8 named colours) on a plain
or low-contrast textured background (stripes / checker / noise in a named dark colour).
An object moves left/right/up/down/diagonally, stays still, grows or shrinks, at a slow,
medium or fast rate given as a fraction of `res` per frame (`SPEEDS`, `GROWTH`). On a
textured background the camera may pan: the world (texture and objects, which are then
still in the world) moves the opposite way on screen. Start positions are drawn so that
every trajectory stays inside the frame; when a long clip cannot fit its nominal rate, the
rate is capped and the truth records the rate actually used.

Everything is a pure function of (seed, split, index): `split="train"` and
`split="heldout"` draw from disjoint seed streams and use disjoint caption templates
(paraphrases, `stiv_jax.data.captions`). The motion score is
`stiv_jax.data.motion.motion_score` with a short frame interval (default 2) because clips
are only a few frames long.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from stiv_jax.data import captions
from stiv_jax.data.motion import motion_score

SPLITS = ("train", "heldout")
SHAPES = ("circle", "square", "triangle")
# Saturated object colours, pairwise >= 95 apart in RGB so colour tracking can separate them.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 190, 50),
    "blue": (40, 70, 230),
    "yellow": (235, 225, 30),
    "cyan": (30, 215, 225),
    "magenta": (215, 40, 210),
    "orange": (245, 130, 20),
    "white": (240, 240, 240),
}
# Dark background colours, >= 100 from every object colour even with texture contrast.
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "gray": (100, 100, 100),
    "black": (25, 25, 25),
    "brown": (95, 60, 35),
    "navy": (25, 30, 80),
    "olive": (80, 85, 30),
}
TEXTURES = ("plain", "stripes", "checker", "noise")
STRIPE_CROSS = 0.35  # relative amplitude of the wave along the stripes
TEXTURE_CONTRAST = 22.0  # +- amplitude of a texture around its base colour (0..255 scale)
# Unit screen directions (x right, y down).
_D = 1.0 / math.sqrt(2.0)
DIRECTIONS: dict[str, tuple[float, float]] = {
    "left": (-1.0, 0.0),
    "right": (1.0, 0.0),
    "up": (0.0, -1.0),
    "down": (0.0, 1.0),
    "up-left": (-_D, -_D),
    "up-right": (_D, -_D),
    "down-left": (-_D, _D),
    "down-right": (_D, _D),
}
MOTIONS = (*DIRECTIONS, "still", "grow", "shrink")
PAN_DIRECTIONS = ("left", "right", "up", "down")
# Translation (and camera pan) speed in fractions of `res` per frame: 32 px -> 0.38/0.8/1.3.
SPEEDS: dict[str, float] = {"slow": 0.012, "medium": 0.025, "fast": 0.04}
# Half-size change of grow/shrink in fractions of `res` per frame.
GROWTH: dict[str, float] = {"slow": 0.004, "medium": 0.008, "fast": 0.013}
SIZE_RANGE = (0.10, 0.16)  # half-size (radius / half side) of moving or still objects
GROW_START = (0.07, 0.10)  # half-size at frame 0 of a growing object
SHRINK_START = (0.16, 0.20)  # half-size at frame 0 of a shrinking object
SIZE_LIMITS = (0.05, 0.24)  # grow/shrink rates are capped to stay inside these
SUPERSAMPLE = 4  # sub-samples per pixel axis for anti-aliased shape coverage
P_TWO_OBJECTS = 0.4
P_TEXTURED = 0.5
P_PAN = 0.3  # of textured clips when camera pans are enabled
_DRILL_STREAM = 7  # rng stream of ShapesSource's drill_share draw (apart from _SPLIT_STREAM)
_BG_DROP_STREAM = 8  # rng stream of ShapesSource's bg_drop draw
_FREE_START_STREAM = 9  # rng stream of ShapesSource's free_start draw
_SPEED_BINDING_STREAM = 10  # rng stream of ShapesSource's speed_binding draw
_SPEED_DRILL_STREAM = 11  # rng stream of ShapesSource's speed_drill draw
_GIVEN_TEMPLATE_STREAM = 12  # rng stream of generate_clip's given_templates phrasing draw
DRILL_BINDS = ("direction", "speed")  # what the binding drill's two objects differ in
# Which training samples of a bg_drop index lose the background phrase: all of them, or only
# those whose task gives a frame (then the image is there to tell the background).
BG_DROP_TASKS = ("all", "given")
DRILL_SPEEDS = ("fast",)  # default speeds of the direction drill (`generate_clip(drill=True)`)
SWAP_ATTEMPTS = 30  # start draws per direction pair of a swappable binding-drill clip
SWAP_PAIRS = 20  # direction pairs tried before a swappable binding-drill clip is an error

_SPLIT_STREAM = {"train": 0, "heldout": 1}  # disjoint SeedSequence streams per split


def _check_args(index: int, res: int, frames: int, split: str, frame_stride: int) -> None:
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is unknown; expected one of {SPLITS}")
    if res < 16:
        raise ValueError(f"res={res} must be >= 16")
    if frames < 1:
        raise ValueError(f"frames={frames} must be >= 1")
    if index < 0:
        raise ValueError(f"index={index} must be >= 0")
    if frame_stride < 1:
        raise ValueError(f"frame_stride={frame_stride} must be >= 1")


def _texture(kind: str, rng: np.random.Generator, res: int) -> dict[str, Any]:
    """Parameters of a periodic texture, evaluated analytically so pans are sub-pixel exact."""
    if kind == "plain":
        return {"kind": kind}
    if kind == "stripes":  # oblique stripes so both horizontal and vertical pans show
        ang = rng.uniform(0.2, 1.37) + rng.integers(0, 4) * (math.pi / 2)
        k = 2 * math.pi / (rng.uniform(0.15, 0.3) * res)
        # A faint long wave along the stripes: pure stripes hide motion along them (the
        # aperture problem), so a pan would be ambiguous.
        k2 = 2 * math.pi / (rng.uniform(0.4, 0.7) * res)
        waves = [
            (k * math.cos(ang), k * math.sin(ang), rng.uniform(0, 6.3), 1.0),
            (-k2 * math.sin(ang), k2 * math.cos(ang), rng.uniform(0, 6.3), STRIPE_CROSS),
        ]
        return {"kind": kind, "waves": waves}
    if kind == "checker":
        period = rng.uniform(0.2, 0.35) * res
        k = 2 * math.pi / period
        return {"kind": kind, "k": k, "phase": rng.uniform(0, 6.3, size=2)}
    waves = []  # noise: a few random plane waves
    for _ in range(5):
        ang = rng.uniform(0, 2 * math.pi)
        k = 2 * math.pi / (rng.uniform(0.12, 0.5) * res)
        waves.append((k * math.cos(ang), k * math.sin(ang), rng.uniform(0, 6.3), 1.0))
    return {"kind": kind, "waves": waves}


def _render_texture(tex: dict[str, Any], xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Texture value (about [-1, 1]) at world coordinates (xs, ys) [..., H, W]."""
    kind = tex["kind"]
    if kind == "checker":
        s = np.sin(tex["k"] * xs + tex["phase"][0]) * np.sin(tex["k"] * ys + tex["phase"][1])
        return np.tanh(4.0 * s)  # soft edges: sub-pixel shifts change pixels smoothly
    v = sum(a * np.sin(kx * xs + ky * ys + ph) for kx, ky, ph, a in tex["waves"])
    return v / math.sqrt(len(tex["waves"])) if kind == "noise" else v


def shape_area(shape: str, size: np.ndarray | float) -> np.ndarray:
    """Pixel area of a shape with half-size `size` (radius, half side, circumradius)."""
    size = np.asarray(size, np.float64)
    factor = {"circle": math.pi, "square": 4.0, "triangle": 3.0 * math.sqrt(3.0) / 4.0}[shape]
    return factor * size**2


_SUB = ((np.arange(SUPERSAMPLE) + 0.5) / SUPERSAMPLE - 0.5).astype(np.float32)  # sub-pixels
# Triangle edge normals (apex up, y down): inside iff <p - c, n> <= inradius = size / 2.
_TRI_NORMALS = np.array(
    [[0.0, 1.0], [-math.sqrt(3) / 2, -0.5], [math.sqrt(3) / 2, -0.5]], np.float32
)


def _draw(video: np.ndarray, shape: str, rgb, cx: np.ndarray, cy: np.ndarray, s: np.ndarray):
    """Blends a shape into every frame of `video` float32 [T, H, W, 3] in place.

    cx, cy, s: float [T] centre and half-size per frame; pixel centres are integer
    coordinates. Coverage is exact up to 4x4 supersampling (cv2's anti-aliased polygons are
    ~20% too large and off-centre by 0.3 px), so the area and centroid truth is honest.
    """
    res_h, res_w = video.shape[1:3]
    x0, x1 = max(0, math.floor((cx - s).min()) - 1), min(res_w, math.ceil((cx + s).max()) + 2)
    y0, y1 = max(0, math.floor((cy - s).min()) - 1), min(res_h, math.ceil((cy + s).max()) + 2)
    if x0 >= x1 or y0 >= y1:
        return
    cx, cy, s = (np.asarray(v, np.float32)[:, None, None] for v in (cx, cy, s))
    px = (np.arange(x0, x1, dtype=np.float32)[:, None] + _SUB).ravel()[None, None, :] - cx
    py = (np.arange(y0, y1, dtype=np.float32)[:, None] + _SUB).ravel()[None, :, None] - cy
    if shape == "circle":
        inside = px**2 + py**2 <= s * s  # [T, h*ss, w*ss]
    elif shape == "square":
        inside = (np.abs(px) <= s) & (np.abs(py) <= s)
    else:
        inside = px * _TRI_NORMALS[0, 0] + py * _TRI_NORMALS[0, 1] <= 0.5 * s
        for nx, ny in _TRI_NORMALS[1:]:
            inside &= px * nx + py * ny <= 0.5 * s
    ss = SUPERSAMPLE
    t = inside.shape[0]
    cover = inside.reshape(t, y1 - y0, ss, x1 - x0, ss).sum(axis=(2, 4), dtype=np.float32)
    alpha = cover[..., None] * (1.0 / ss**2)
    patch = video[:, y0:y1, x0:x1]
    patch += alpha * (np.asarray(rgb, np.float32) - patch)


def _sample_object(
    rng: np.random.Generator,
    res: int,
    n: int,
    colors: list[str],
    drill: bool = False,
    drill_speeds: tuple[str, ...] = DRILL_SPEEDS,
) -> dict:
    color = str(rng.choice([c for c in COLORS if c not in colors]))
    shape = str(rng.choice(SHAPES))
    motion = str(rng.choice(tuple(DIRECTIONS) if drill else MOTIONS))
    speeds = drill_speeds if drill else tuple(SPEEDS)
    speed = "none" if motion == "still" else str(rng.choice(speeds))
    t = np.arange(n, dtype=np.float64)
    if motion in ("grow", "shrink"):
        lo, hi = GROW_START if motion == "grow" else SHRINK_START
        s0 = rng.uniform(lo, hi) * res
        rate = GROWTH[speed] * res
        limit = (SIZE_LIMITS[1] * res - s0) if motion == "grow" else (s0 - SIZE_LIMITS[0] * res)
        rate = min(rate, limit / max(n - 1, 1))
        size = s0 + (rate if motion == "grow" else -rate) * t
        velocity = (0.0, 0.0)
    else:
        size = np.full(n, rng.uniform(*SIZE_RANGE) * res)
        rate = SPEEDS[speed] * res if motion != "still" else 0.0
        dx, dy = DIRECTIONS.get(motion, (0.0, 0.0))
        velocity = (dx * rate, dy * rate)
    return {
        "shape": shape,
        "color": color,
        "rgb": COLORS[color],
        "motion": motion,
        "speed": speed,
        "size": size,
        "velocity": velocity,
        "growth": float(rate) if motion in ("grow", "shrink") else 0.0,
    }


def _next_object(
    rng: np.random.Generator,
    res: int,
    n: int,
    objs: list[dict],
    drill: bool,
    drill_speeds: tuple[str, ...] = DRILL_SPEEDS,
    binds: str = "direction",
) -> dict:
    """An object to join `objs`: another colour, and in the binding drill another direction
    (`binds="direction"`) or the same direction at another speed (`binds="speed"`; speeds
    from all of `SPEEDS`, whatever `drill_speeds` says)."""
    colors = [o["color"] for o in objs]
    speeds = tuple(SPEEDS) if binds == "speed" else drill_speeds

    def clashes(obj: dict) -> bool:  # with the first object, in what the drill binds
        if not (drill and objs):
            return False
        same_way = obj["motion"] == objs[0]["motion"]
        if binds == "direction":
            return same_way
        return not same_way or obj["speed"] == objs[0]["speed"]

    obj = _sample_object(rng, res, n, colors, drill, speeds)
    while clashes(obj):
        obj = _sample_object(rng, res, n, colors, drill, speeds)
    return obj


def drill_speeds_tuple(value: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The drill's speeds from "fast" / "slow,medium,fast" or a sequence; one-line error if bad."""
    names = tuple(v.strip() for v in value.split(",")) if isinstance(value, str) else tuple(value)
    if not names or any(v not in SPEEDS for v in names):
        raise ValueError(f"ShapesBench drill_speeds={value!r}; expected names from {tuple(SPEEDS)}")
    return names


def _place(
    rng: np.random.Generator,
    obj: dict,
    res: int,
    cam: np.ndarray,
    drill: bool = False,
    free: bool = False,
) -> None:
    """Chooses the start and caps the velocity so the on-screen track stays in frame.

    Drill: the start is drawn where a track of the object's length fits in EVERY direction,
    so the start position says nothing about the direction (in the default placement an
    object near the right edge can only move left: a prior a model learns instead of the
    caption's direction words, docs/quality.md §9). `free`: a drill start where the track
    fits in every direction and the camera is still; otherwise the default placement.
    """
    t = np.arange(cam.shape[0], dtype=np.float64)
    h = float(obj["size"].max())
    lo, hi = h, res - 1 - h
    vx, vy = obj["velocity"]
    reach = float(np.hypot(vx, vy)) * t[-1]
    if free and not drill and not cam.any() and hi - lo >= 2 * reach:
        drill = True
    if drill:
        if hi - lo < 2 * reach:
            raise ValueError(
                f"ShapesBench drill: res={res} is too small for a {reach:.1f} px track"
            )
        sx, sy = rng.uniform(lo + reach, hi - reach, size=2)
        obj["x"], obj["y"] = sx + vx * t, sy + vy * t
        return
    # Screen displacement = own motion - camera offset (objects are fixed to the world).
    disp = np.stack([vx * t - cam[:, 0], vy * t - cam[:, 1]])  # [2, T]
    extent = disp.max(axis=1) - disp.min(axis=1)
    # One scale for both axes keeps the direction exact; pans are pre-capped so scale is 1.
    scale = min(1.0, (hi - lo) / max(float(extent.max()), 1e-9))
    disp *= scale
    # max(): a track scaled to fill [lo, hi] leaves an empty range that rounding can invert
    start = [rng.uniform(lo - d.min(), max(lo - d.min(), hi - d.max())) for d in disp]
    obj["velocity"] = (vx * scale, vy * scale)
    obj["x"], obj["y"] = start[0] + disp[0], start[1] + disp[1]


def _overlap(a: dict, b: dict) -> bool:
    d = np.hypot(a["x"] - b["x"], a["y"] - b["y"])
    return bool(np.any(d < a["size"] + b["size"] + 1.0))


def _place_swappable(rng: np.random.Generator, objs: list[dict], res: int, n: int) -> bool:
    """Binding drill: starts from which each object's track fits with EITHER object's
    velocity and the two tracks never touch under either assignment, so the caption with the
    two directions swapped describes an equally possible clip and the starts cannot say
    which object takes which direction (docs/quality.md §21). False if no such starts.
    """
    t = np.arange(n, dtype=np.float64)
    vel = [np.asarray(o["velocity"], np.float64) for o in objs]
    for _ in range(SWAP_ATTEMPTS):
        starts = []
        for o in objs:
            h = float(o["size"].max())
            lo = h - np.minimum(0.0, np.minimum(vel[0], vel[1]) * t[-1])  # [2] x, y
            hi = res - 1 - h - np.maximum(0.0, np.maximum(vel[0], vel[1]) * t[-1])
            if np.any(lo > hi):
                return False
            starts.append(rng.uniform(lo, hi))
        tracks = [[s[:, None] + v[:, None] * t for v in vel] for s in starts]  # [obj][vel]
        a, b = objs
        own = ({**a, "x": tracks[0][0][0], "y": tracks[0][0][1]},
               {**b, "x": tracks[1][1][0], "y": tracks[1][1][1]})  # fmt: skip
        swapped = ({**a, "x": tracks[0][1][0], "y": tracks[0][1][1]},
                   {**b, "x": tracks[1][0][0], "y": tracks[1][0][1]})  # fmt: skip
        if not _overlap(*own) and not _overlap(*swapped):
            for o, placed in zip(objs, own):
                o["x"], o["y"] = placed["x"], placed["y"]
            return True
    return False


def generate_clip(
    index: int,
    *,
    res: int = 32,
    frames: int = 8,
    split: str = "train",
    seed: int = 0,
    textured: bool = True,
    camera_pan: bool = True,
    motion_interval: int = 2,
    frame_stride: int = 1,
    drill: bool = False,
    drill_objects: int = 1,
    drill_swappable: bool = False,
    drill_speeds: tuple[str, ...] | str = DRILL_SPEEDS,
    drill_binds: str = "direction",
    free_start: bool = False,
    caption_background: bool = True,
    caption_without_background: bool = False,
    templates: int = captions.BASE_TEMPLATES,
    given_templates: int = 0,
) -> dict[str, Any]:
    """One ShapesBench clip: a pure function of (seed, split, index) and the options.

    Returns dict(video uint8 [T,H,W,3], caption str, motion_score float32, truth dict).
    With `frame_stride` s the clip is rendered at (T-1)*s+1 frames and every s-th is kept,
    so the same scene moves s times faster per kept frame.
    `drill`: the direction drill (docs/quality.md §9): one object moving in one of the 8
    directions at `DRILL_SPEEDS`, plain background, no pan, and a start position independent
    of the direction, so only the caption tells where the object goes.
    `drill_objects=2`: the binding drill, two such objects with different directions, so the
    caption must also say which object takes which (docs/quality.md §11.1). Their starts
    are placed like the default clips' (two direction-free starts would collide at 32 px), so
    there the start position does hint at the direction.
    `drill_swappable` (binding drill only): both starts are drawn where either object's
    track fits with either direction and the tracks never touch under either assignment
    (`_place_swappable`), so the starts say nothing about which object takes which
    direction; only the caption's binding does (docs/quality.md §21).
    `drill_speeds`: the drill objects' speeds, drawn uniformly ("slow,medium,fast": the mix's
    speeds, so the motion score varies in the drill as it does in the mix).
    `drill_binds="speed"` (binding drill only): the two objects take the same direction at
    two different speeds (drawn from all of `SPEEDS`), so the caption must say which object
    is the fast one (docs/quality.md §34.6); with `drill_swappable` their starts fit either
    speed.
    `free_start`: every object whose track fits in every direction from some start (and
    the camera is still) starts there, as in the drill, so its start does not hint at its
    direction; a second object that keeps touching the first falls back to the default
    placement (docs/quality.md §19).
    `caption_background=False`: the caption leaves the background out (a camera pan's keeps
    it); the clip itself is the same, so only the first frame can tell the background.
    `caption_without_background=True` adds that caption too, as `caption_given` (the
    trainer's task draw picks it for samples with a given frame: `ToTrainExample`).
    `templates`: the training split's caption is drawn from its first `templates` phrasings
    (`captions.TRAIN_TEMPLATES`; the default, the original three, leaves every clip as it was); the
    held-out split always uses all of its own.
    `given_templates=N` (training split): `caption_given` is the same scene in a phrasing
    drawn from the first N (its own rng stream, so the clip and `caption` are unchanged),
    without the background if `caption_without_background`: paraphrases only where a frame
    is given (docs/quality.md §39).
    """
    _check_args(index, res, frames, split, frame_stride)
    captions.check_templates(templates, given_templates)
    if drill_objects not in (1, 2):
        raise ValueError(f"drill_objects={drill_objects}; expected 1 or 2")
    drill_speeds = drill_speeds_tuple(drill_speeds)
    if drill_binds not in DRILL_BINDS or (drill_binds == "speed" and drill_objects != 2):
        raise ValueError(
            f"drill_binds={drill_binds!r} with drill_objects={drill_objects}; expected one of "
            f"{DRILL_BINDS}, and 'speed' only with drill_objects=2"
        )
    rng = np.random.default_rng(np.random.SeedSequence([seed, _SPLIT_STREAM[split], index]))
    n = (frames - 1) * frame_stride + 1
    t = np.arange(n, dtype=np.float64)
    tpl_id = int(rng.integers(templates if split == "train" else len(captions.TEMPLATES[split])))
    textured, camera_pan = textured and not drill, camera_pan and not drill
    kind = str(rng.choice(TEXTURES[1:])) if textured and rng.random() < P_TEXTURED else "plain"
    bg = {"kind": kind, "color": str(rng.choice(tuple(BACKGROUNDS)))}
    bg["rgb"] = BACKGROUNDS[bg["color"]]
    tex = _texture(kind, rng, res)
    pan = {"direction": "none", "speed": "none", "rate": 0.0}
    cam = np.zeros((n, 2))
    if kind != "plain" and camera_pan and rng.random() < P_PAN:
        pan["direction"] = str(rng.choice(PAN_DIRECTIONS))
        pan["speed"] = str(rng.choice(tuple(SPEEDS)))
        pan["rate"] = SPEEDS[pan["speed"]] * res
    num_objects = drill_objects if drill else 2 if rng.random() < P_TWO_OBJECTS else 1
    binds = drill_binds if drill else "direction"
    objs: list[dict] = []
    for _ in range(num_objects):
        obj = _next_object(rng, res, n, objs, drill, drill_speeds, binds)
        if pan["direction"] != "none":  # objects are still in the world while the camera pans
            obj.update(motion="still", speed="none", velocity=(0.0, 0.0), growth=0.0)
            s0 = np.clip(obj["size"][0], SIZE_RANGE[0] * res, SIZE_RANGE[1] * res)
            obj["size"] = np.full(n, s0)
        objs.append(obj)
    if pan["direction"] != "none":
        # Cap the pan rate so every (world-still) object stays in frame.
        span = min(res - 1 - 2 * float(o["size"].max()) for o in objs)
        pan["rate"] = min(pan["rate"], span / max(n - 1, 1))
        cam = np.outer(t * pan["rate"], DIRECTIONS[pan["direction"]])
    swappable = drill and drill_objects == 2 and drill_swappable
    if swappable:  # a new second object (direction) until some starts fit both assignments
        for _ in range(SWAP_PAIRS):
            if _place_swappable(rng, objs, res, n):
                break
            objs[1] = _next_object(rng, res, n, objs[:1], drill, drill_speeds, binds)
        else:
            raise ValueError(f"ShapesBench binding drill: res={res} has no swappable starts")
    for i, obj in enumerate(() if swappable else objs):
        for attempt in range(30):  # re-draw the start until the two tracks never touch
            # Two direction-free starts would both sit in the frame's centre and collide,
            # so the binding drill places each track like the default clips do.
            free = free_start and attempt < 15
            _place(rng, obj, res, cam, drill and drill_objects == 1, free)
            if i == 0 or not _overlap(objs[0], obj):
                break

    keep = slice(None, None, frame_stride)  # only the kept frames are rendered
    ys, xs = np.mgrid[0:res, 0:res].astype(np.float32)
    cam_kept = cam[keep].astype(np.float32)
    video = np.empty((frames, res, res, 3), np.float32)
    video[:] = np.asarray(bg["rgb"], np.float32)
    if kind != "plain":
        wx = xs[None] + cam_kept[:, 0, None, None]  # [T, H, W] world coordinates
        wy = ys[None] + cam_kept[:, 1, None, None]
        video += TEXTURE_CONTRAST * _render_texture(tex, wx, wy)[..., None]
    for o in objs:
        _draw(video, o["shape"], o["rgb"], o["x"][keep], o["y"][keep], o["size"][keep])
    video = np.rint(np.clip(video, 0, 255)).astype(np.uint8)
    score = motion_score(video, interval=motion_interval) if frames > 1 else 0.0
    truth = {
        "index": index,
        "split": split,
        "seed": seed,
        "template": tpl_id,
        "res": res,
        "frames": frames,
        "frame_stride": frame_stride,
        "motion_interval": motion_interval,
        "background": {k: bg[k] for k in ("kind", "color", "rgb")},
        "camera": {
            "pan": pan["direction"],
            "speed": pan["speed"],
            # px per kept frame of the world's screen motion is -rate * direction.
            "rate": float(pan["rate"] * frame_stride),
            "offset": cam[keep].astype(np.float32),  # [T, 2] camera position (px)
        },
        "objects": [
            {
                "shape": o["shape"],
                "color": o["color"],
                "rgb": o["rgb"],
                "motion": o["motion"],
                "speed": o["speed"],
                "velocity": tuple(float(v) * frame_stride for v in o["velocity"]),
                "growth": float(o["growth"] * frame_stride),
                "x": o["x"][keep].astype(np.float32),
                "y": o["y"][keep].astype(np.float32),
                "size": o["size"][keep].astype(np.float32),
                "area": shape_area(o["shape"], o["size"][keep]).astype(np.float32),
            }
            for o in objs
        ],
    }
    caption = captions.caption(captions.TEMPLATES[split][tpl_id], objs, bg, pan, caption_background)
    out = {"video": video, "caption": caption, "motion_score": np.float32(score), "truth": truth}
    paraphrase = bool(given_templates) and split == "train"
    if paraphrase or caption_without_background:
        given_tpl = tpl_id
        if paraphrase:
            stream = [seed, _SPLIT_STREAM[split], index, _GIVEN_TEMPLATE_STREAM]
            given_tpl = int(np.random.default_rng(stream).integers(given_templates))
        truth["template_given"] = given_tpl
        background = caption_background and not caption_without_background
        out["caption_given"] = captions.caption(
            captions.TEMPLATES[split][given_tpl], objs, bg, pan, background
        )
    return out


class ShapesSource:
    """Grain `RandomAccessDataSource` over ShapesBench indices [0, num)."""

    def __init__(
        self,
        num: int,
        *,
        res: int = 32,
        frames: int = 8,
        split: str = "train",
        seed: int = 0,
        textured: bool = True,
        camera_pan: bool = True,
        motion_interval: int = 2,
        frame_stride: int = 1,
        drill: bool = False,
        drill_objects: int = 1,
        drill_swappable: bool = False,
        drill_speeds: tuple[str, ...] | str = DRILL_SPEEDS,
        drill_share: float = 0.0,
        free_start: float = 0.0,
        bg_drop: float = 0.0,
        bg_drop_tasks: str = "all",
        speed_binding: float = 0.0,
        speed_drill: float = 0.0,
        templates: int = captions.BASE_TEMPLATES,
        given_templates: int = 0,
    ):
        """`drill_share`: the share of indices (a fixed function of seed and index) that are
        drill clips (`generate_clip(drill=True)`) in a source that is not all drill.
        `free_start`: the share of indices (a fixed function of seed and index, independent
        of the other draws) whose objects start direction-free (`generate_clip(free_start=True)`).
        `bg_drop`: the share of indices (a fixed function of seed and index, independent of
        the drill draw) whose caption leaves the background out
        (`generate_clip(caption_background=False)`). `bg_drop_tasks="given"`: those indices
        keep their caption and add `caption_given` without it, which the task draw uses
        only when the sample gets a given frame (`BG_DROP_TASKS`).
        `speed_binding`: the share of binding-drill clips (a fixed function of seed and
        index) whose two objects share a direction and differ in speed
        (`generate_clip(drill_binds="speed")`); needs drill_objects=2.
        `speed_drill`: the share of drill clips (a fixed function of seed and index) that are
        one-object drill clips at every speed (`generate_clip(drill_objects=1,
        drill_speeds=SPEEDS)`): only the words and the motion score say how far the object
        goes (docs/quality.md §37.4); needs drill_share > 0. An all-drill source (`drill`,
        a prelude's drill stage) ignores it, so the main run's setting leaves its drill as is.
        `given_templates`: every clip adds `caption_given`, its scene in one of the first N
        training phrasings, which the task draw uses where a frame is given
        (`generate_clip(given_templates=N)`); an all-drill source ignores it, as above."""
        if num < 1:
            raise ValueError(f"ShapesSource num={num} must be >= 1")
        if not 0.0 <= drill_share <= 1.0:
            raise ValueError(f"ShapesSource drill_share={drill_share}; expected a value in [0, 1]")
        if not 0.0 <= free_start <= 1.0:
            raise ValueError(f"ShapesSource free_start={free_start}; expected a value in [0, 1]")
        self.free_start = float(free_start)
        if not 0.0 <= bg_drop <= 1.0:
            raise ValueError(f"ShapesSource bg_drop={bg_drop}; expected a value in [0, 1]")
        self.bg_drop = float(bg_drop)
        if bg_drop_tasks not in BG_DROP_TASKS:
            raise ValueError(
                f"ShapesSource bg_drop_tasks={bg_drop_tasks!r}; expected one of {BG_DROP_TASKS}"
            )
        self.bg_drop_tasks = bg_drop_tasks
        if drill_objects not in (1, 2):  # fail at construction, not at the first clip
            raise ValueError(f"ShapesSource drill_objects={drill_objects}; expected 1 or 2")
        self.drill_share = float(drill_share)
        if not 0.0 <= speed_binding <= 1.0 or (speed_binding > 0 and drill_objects != 2):
            raise ValueError(
                f"ShapesSource speed_binding={speed_binding} with drill_objects={drill_objects}; "
                "expected a value in [0, 1], above 0 only with drill_objects=2"
            )
        self.speed_binding = float(speed_binding)
        if not 0.0 <= speed_drill <= 1.0 or (speed_drill > 0 and not drill and not drill_share):
            raise ValueError(
                f"ShapesSource speed_drill={speed_drill} with drill_share={drill_share}; "
                "expected a value in [0, 1], above 0 only with drill_share > 0"
            )
        self.speed_drill = 0.0 if drill else float(speed_drill)  # a prelude's drill: unchanged
        _check_args(0, res, frames, split, frame_stride)
        captions.check_templates(templates, given_templates)
        self.given_templates = 0 if drill else int(given_templates)  # a prelude's drill: unchanged
        self.num = int(num)
        self.kwargs = dict(
            res=res,
            frames=frames,
            split=split,
            seed=seed,
            textured=textured,
            camera_pan=camera_pan,
            motion_interval=motion_interval,
            frame_stride=frame_stride,
            drill=drill,
            drill_objects=drill_objects,
            drill_swappable=drill_swappable,
            drill_speeds=drill_speeds_tuple(drill_speeds),  # checked at construction
            templates=int(templates),
        )

    def __len__(self) -> int:
        return self.num

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index)
        if not 0 <= index < self.num:
            raise IndexError(f"ShapesSource index {index} is outside [0, {self.num})")
        kwargs = dict(self.kwargs)

        def picked(stream: int, share: float) -> bool:  # a fixed draw per (seed, stream, index)
            return bool(np.random.default_rng([kwargs["seed"], stream, index]).random() < share)

        if self.drill_share > 0.0 and not self.kwargs["drill"]:
            kwargs["drill"] = picked(_DRILL_STREAM, self.drill_share)
        if self.free_start > 0.0:
            kwargs["free_start"] = picked(_FREE_START_STREAM, self.free_start)
        if self.speed_binding > 0.0 and kwargs["drill"]:
            if picked(_SPEED_BINDING_STREAM, self.speed_binding):
                kwargs["drill_binds"] = "speed"
        if self.speed_drill > 0.0 and kwargs["drill"]:
            if picked(_SPEED_DRILL_STREAM, self.speed_drill):
                kwargs.update(drill_objects=1, drill_swappable=False, drill_speeds=tuple(SPEEDS))
                kwargs.pop("drill_binds", None)
        if self.given_templates:
            kwargs["given_templates"] = self.given_templates
        if self.bg_drop > 0.0:
            drop = picked(_BG_DROP_STREAM, self.bg_drop)
            if self.bg_drop_tasks == "given":
                kwargs["caption_without_background"] = drop
            else:
                kwargs["caption_background"] = not drop
        return generate_clip(index, **kwargs)

    def __repr__(self) -> str:
        return (
            f"ShapesSource(num={self.num}, drill_share={self.drill_share}, "
            f"free_start={self.free_start}, speed_binding={self.speed_binding}, "
            f"speed_drill={self.speed_drill}, bg_drop={self.bg_drop}, bg_drop_tasks={self.bg_drop_tasks!r}, "
            f"given_templates={self.given_templates}, {self.kwargs})"
        )


def config_kwargs(config: Any) -> dict[str, Any]:
    """`generate_clip` / `ShapesSource` arguments taken from `config.data` (all but split, seed)."""
    d = config.data
    return dict(
        res=int(d.res),
        frames=int(d.frames),
        textured=bool(d.shapes.textured),
        camera_pan=bool(d.shapes.camera_pan),
        motion_interval=int(d.shapes.motion_interval),
        frame_stride=int(d.frame_stride),
        drill=bool(d.shapes.get("drill", False)),
        drill_objects=int(d.shapes.get("drill_objects", 1)),
        drill_swappable=bool(d.shapes.get("drill_swappable", False)),
        drill_speeds=drill_speeds_tuple(d.shapes.get("drill_speeds", ",".join(DRILL_SPEEDS))),
        templates=int(d.shapes.get("templates", captions.BASE_TEMPLATES)),
    )
