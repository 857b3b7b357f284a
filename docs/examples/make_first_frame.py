"""Writes docs/examples/first_frame.png: the first frame of held-out ShapesBench clip 543
("there is a blue square heading up quickly, all over a plain gray background"), 32×32,
the condition image of docs/examples/prompts.jsonl.

  python docs/examples/make_first_frame.py
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from PIL import Image  # noqa: E402

from stiv_jax.data.shapes import generate_clip  # noqa: E402

INDEX, SPLIT, RES = 543, "heldout", 32
PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "first_frame.png")


def first_frame():
    return generate_clip(INDEX, res=RES, frames=8, split=SPLIT)["video"][0]


if __name__ == "__main__":
    Image.fromarray(first_frame()).save(PATH)
    print(PATH)
