"""ShapesBench captions: the phrasings a clip's scene is told in, and the caption writer.

A caption is a pure function of (template, objects, background, camera pan): the clip
generator (`stiv_jax.data.shapes.generate_clip`) draws the template, this module words the
scene. Training captions come from `TRAIN_TEMPLATES` (the first `BASE_TEMPLATES` by default;
`data.shapes.templates` widens the draw), held-out ones from `HELDOUT_TEMPLATES`, whose own
words no training phrasing uses (tests/data/test_shapes.py), so the evaluator's prompts
stay unseen.
"""

from __future__ import annotations

import dataclasses
import re

SPEED_ADVERBS = {"slow": "slowly", "medium": "at a medium speed", "fast": "quickly"}
DIRECTION_WORDS = {
    "left": "left",
    "right": "right",
    "up": "up",
    "down": "down",
    "up-left": "up and to the left",
    "up-right": "up and to the right",
    "down-left": "down and to the left",
    "down-right": "down and to the right",
}


@dataclasses.dataclass(frozen=True)
class Template:
    """Caption phrasings; fields are `str.format` patterns over an object's words."""

    move: str
    still: str
    grow: str
    shrink: str
    join: str  # two object clauses -> one
    scene: str  # clauses + background
    pan: str  # camera pan over objects + background


TRAIN_TEMPLATES = (
    Template(
        move="a {color} {shape} moves {dir} {speed}",
        still="a {color} {shape} stays still",
        grow="a {color} {shape} grows {speed}",
        shrink="a {color} {shape} shrinks {speed}",
        join="{a} while {b}",
        scene="{clauses} on {bg}",
        pan="the camera pans {dir} {speed} over {objects} on {bg}",
    ),
    Template(
        move="a {color} {shape} slides {dir} {speed}",
        still="a {color} {shape} does not move",
        grow="a {color} {shape} becomes larger {speed}",
        shrink="a {color} {shape} becomes smaller {speed}",
        join="{a} and {b}",
        scene="{bg}: {clauses}",
        pan="{bg} with {objects}, the camera panning {dir} {speed}",
    ),
    Template(
        move="{speed_adj} motion {dir} of a {color} {shape}",
        still="a static {color} {shape}",
        grow="{speed_adj} growth of a {color} {shape}",
        shrink="{speed_adj} shrinking of a {color} {shape}",
        join="{a}, {b}",
        scene="{clauses}, {bg}",
        pan="a {speed_adj} camera pan {dir} across {objects} on {bg}",
    ),
    # Paraphrases beyond the original three (`generate_clip(templates=N)` draws from the
    # first N): other verbs, sentence shapes and speed phrasings, none of the held-out
    # templates' words, so the evaluator's phrasings stay unseen (docs/quality.md §38).
    Template(
        move="the {color} {shape} goes {dir} {speed}",
        still="the {color} {shape} stays where it is",
        grow="the {color} {shape} swells {speed}",
        shrink="the {color} {shape} dwindles {speed}",
        join="{a}, and {b}",
        scene="{clauses} in front of {bg}",
        pan="{speed_adj} camera movement {dir} showing {objects} on {bg}",
    ),
    Template(
        move="a {color} {shape} glides {dir} with {speed_adj} speed",
        still="a {color} {shape} remains fixed",
        grow="a {color} {shape} gets larger with {speed_adj} speed",
        shrink="a {color} {shape} gets smaller with {speed_adj} speed",
        join="{a} as {b}",
        scene="{clauses} over {bg}",
        pan="the view shifts {dir} {speed} across {objects} on {bg}",
    ),
    Template(
        move="we see a {color} {shape} moving {dir} {speed}",
        still="we see a {color} {shape} sitting still",
        grow="we see a {color} {shape} growing {speed}",
        shrink="we see a {color} {shape} shrinking {speed}",
        join="{a} and {b}",
        scene="a video of {bg} where {clauses}",
        pan="we see {objects} on {bg} as the camera pans {dir} {speed}",
    ),
    Template(
        move="{speed_adj} movement {dir} by a {color} {shape}",
        still="a {color} {shape} without any motion",
        grow="{speed_adj} enlargement of a {color} {shape}",
        shrink="{speed_adj} reduction in size of a {color} {shape}",
        join="{a} together with {b}",
        scene="{clauses} with {bg}",
        pan="{speed_adj} panning {dir} of the camera over {objects} and {bg}",
    ),
    Template(
        move="a {color} {shape} is moving {dir} {speed}",
        still="a {color} {shape} is not moving",
        grow="a {color} {shape} is growing {speed}",
        shrink="a {color} {shape} is shrinking {speed}",
        join="{a} while {b}",
        scene="on {bg}, {clauses}",
        pan="the camera is panning {dir} {speed} above {objects} on {bg}",
    ),
    Template(
        move="a {color} {shape} shifts {dir} {speed}",
        still="a {color} {shape} holds its position",
        grow="a {color} {shape} increases in size {speed}",
        shrink="a {color} {shape} decreases in size {speed}",
        join="{a} and also {b}",
        scene="in a clip with {bg}, {clauses}",
        pan="a clip with {bg} and {objects}, the camera moving {dir} {speed}",
    ),
    Template(
        move="{color} {shape}, moving {dir} {speed}",
        still="{color} {shape}, not moving",
        grow="{color} {shape}, growing {speed}",
        shrink="{color} {shape}, shrinking {speed}",
        join="{a}; {b}",
        scene="{bg}. {clauses}",
        pan="{bg}. camera pan {dir} {speed}. {objects}",
    ),
    Template(
        move="a {color} {shape} that moves {dir} {speed}",
        still="a {color} {shape} that never moves",
        grow="a {color} {shape} that grows {speed}",
        shrink="a {color} {shape} that shrinks {speed}",
        join="{a}, with {b}",
        scene="a scene on {bg}: {clauses}",
        pan="a scene of {objects} on {bg} while the camera pans {dir} {speed}",
    ),
    Template(
        move="a {color} {shape} floats {dir} {speed}",
        still="a {color} {shape} stands still",
        grow="a {color} {shape} inflates {speed}",
        shrink="a {color} {shape} deflates {speed}",
        join="{a}. {b}",
        scene="{clauses}, the backdrop being {bg}",
        pan="{objects} on {bg}; the camera glides {dir} {speed}",
    ),
)
BASE_TEMPLATES = 3  # the original training phrasings: `templates` default, clips unchanged
HELDOUT_TEMPLATES = (
    Template(
        move="a {color} {shape} travels {dir} at a {speed_adj} pace",
        still="a motionless {color} {shape} rests in place",
        grow="a {color} {shape} expands at a {speed_adj} pace",
        shrink="a {color} {shape} contracts at a {speed_adj} pace",
        join="{a}; meanwhile {b}",
        scene="against {bg}, {clauses}",
        pan="{objects} on {bg}, seen by a camera sweeping {dir} {speed}",
    ),
    Template(
        move="there is a {color} {shape} heading {dir} {speed}",
        still="there is a {color} {shape} that stays put",
        grow="there is a {color} {shape} getting bigger {speed}",
        shrink="there is a {color} {shape} getting smaller {speed}",
        join="{a}, plus {b}",
        scene="{clauses}, all over {bg}",
        pan="{objects} over {bg}, filmed while the camera drifts {dir} {speed}",
    ),
)
TEMPLATES = {"train": TRAIN_TEMPLATES, "heldout": HELDOUT_TEMPLATES}


def check_templates(templates: int, given_templates: int = 0) -> None:
    if not 1 <= templates <= len(TRAIN_TEMPLATES):
        raise ValueError(
            f"templates={templates}; expected 1 to {len(TRAIN_TEMPLATES)} training phrasings"
        )
    if not 0 <= given_templates <= len(TRAIN_TEMPLATES):
        raise ValueError(
            f"given_templates={given_templates}; expected 0 (off) to {len(TRAIN_TEMPLATES)} "
            "training phrasings"
        )


def caption(tpl: Template, objs: list[dict], bg: dict, pan: dict, background: bool) -> str:
    """The scene of `objs` on `bg` (under camera `pan`) in phrasing `tpl`; without its
    background clause when `background` is False (`data.shapes.bg_drop`)."""
    bg_words = (
        f"a plain {bg['color']} background"
        if bg["kind"] == "plain"
        else {
            "stripes": f"a {bg['color']} striped background",
            "checker": f"a {bg['color']} checkered background",
            "noise": f"a {bg['color']} mottled background",
        }[bg["kind"]]
    )

    def words(o: dict, direction: str, speed: str) -> dict:
        return {
            "color": o["color"],
            "shape": o["shape"],
            "dir": DIRECTION_WORDS.get(direction, direction),
            "speed": SPEED_ADVERBS.get(speed, ""),
            "speed_adj": speed,
        }

    if pan["direction"] != "none":
        objects = " and ".join(f"a {o['color']} {o['shape']}" for o in objs)
        w = words(objs[0], pan["direction"], pan["speed"])
        text = tpl.pan.format(
            objects=objects, bg=bg_words, **{k: w[k] for k in ("dir", "speed", "speed_adj")}
        )
    else:
        clauses = []
        for o in objs:
            kind = o["motion"] if o["motion"] in ("still", "grow", "shrink") else "move"
            clauses.append(getattr(tpl, kind).format(**words(o, o["motion"], o["speed"])))
        joined = clauses[0] if len(clauses) == 1 else tpl.join.format(a=clauses[0], b=clauses[1])
        text = tpl.scene.format(clauses=joined, bg=bg_words) if background else joined
    text = re.sub(r"\ba ([aeiou])", r"an \1", text)  # "a orange" -> "an orange"
    return " ".join(text.split())  # collapses double spaces left by empty words
