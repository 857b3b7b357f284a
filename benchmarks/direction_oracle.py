"""Diagnostic: is reading the caption what makes the direction drill slow? (quality.md §10)

Runs the trainer or the direction probe with the text encoder's output edited so that the
caption's direction is handed to the model in a form it cannot miss:

  ORACLE=pooled  the pooled text vector is replaced by a one-hot of the direction (scaled to
                 the pooled vector's norm): a global signal into the AdaLN-single condition;
  ORACLE=token   every MiniLM token state is kept and one extra valid token is appended
                 whose state is a one-hot of the direction (scaled to the mean token norm):
                 a distinct token for cross-attention;
  ORACLE=bind    each moving object's colour-word token gets a one-hot of THAT object's
                 direction written into its first 8 channels (scaled to the mean token
                 norm): the binding handed over at the word the object's video tokens
                 attend to (docs/quality.md §21), so a model that does not bind under it
                 lacks the video side, not the words.

Captions without a direction word (the null prompt, still/grow/shrink) are left as they are.
The §10 runs predate the word bag, so they add `--config.text_encoder.word_bag=0` to both
commands. Train and probe with the same ORACLE:

  ORACLE=pooled python benchmarks/direction_oracle.py train \\
      --config configs/stiv.py:variant=S,stage=drill --workdir runs/or_pooled \\
      --config.train.steps=600 --config.train.ckpt_every=200
  ORACLE=pooled python benchmarks/direction_oracle.py probe direction \\
      --workdir runs/or_pooled --step 400

The main job of the time with an oracle (docs/quality.md §18: what would reading the words
at once buy in its 1,000 steps of the mix? Since §25 that config is `variant=S,stage=ti2v`),
evaluated as in the README under the same oracle:

  ORACLE=pooled python benchmarks/direction_oracle.py train \\
      --config configs/stiv.py:variant=S,stage=ti2v --workdir runs/main_or_pooled
  ORACLE=pooled python benchmarks/direction_oracle.py evaluate \\
      --config configs/stiv.py:variant=S,stage=ti2v --workdir runs/main_or_pooled --out runs/main_or_pooled/eval
"""

from __future__ import annotations

import os
import runpy
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import re  # noqa: E402

from stiv_jax.data.captions import DIRECTION_WORDS, SPEED_ADVERBS, TEMPLATES  # noqa: E402
from stiv_jax.data.shapes import COLORS  # noqa: E402
from stiv_jax.encoders.base import TextEmbeddings  # noqa: E402
from stiv_jax.encoders.minilm import MiniLMEncoder  # noqa: E402

_ORDER = tuple(DIRECTION_WORDS)
_INDEX = {k: i for i, k in enumerate(sorted(DIRECTION_WORDS))}


def caption_direction(caption: str) -> str | None:
    """The first direction phrase of `caption` (at one position, the longest), or None."""
    padded = f" {caption} "
    hits = [(padded.find(f" {DIRECTION_WORDS[k]} "), k) for k in _ORDER]
    hits = [(pos, -len(DIRECTION_WORDS[k]), k) for pos, k in hits if pos >= 0]
    return min(hits)[2] if hits else None  # earliest, then longest ("up and to the left")


def _move_pattern(move: str) -> re.Pattern:
    """A template's `move` clause as a regex with `color` and `dir` groups."""
    alt = lambda words: "|".join(sorted(map(re.escape, words), key=len, reverse=True))  # noqa: E731
    parts = re.split(r"(\{\w+\})", move)
    fields = {
        "{color}": f"(?P<color>{alt(COLORS)})",
        "{shape}": r"\w+",
        "{dir}": f"(?P<dir>{alt(DIRECTION_WORDS.values())})",
        "{speed}": f"(?:{alt(SPEED_ADVERBS.values())})",
        "{speed_adj}": r"\w+",
    }
    lit = lambda x: re.escape(x[:-2]) + "an? " if x.endswith("a ") else re.escape(x)  # noqa: E731
    return re.compile("".join(fields.get(x, lit(x)) for x in parts))  # "a orange" -> "an orange"


_MOVES = [_move_pattern(t.move) for split in TEMPLATES.values() for t in split]
_WORD_DIR = {v: k for k, v in DIRECTION_WORDS.items()}


def object_directions(caption: str) -> list[tuple[str, str]]:
    """(colour, direction) of every moving object's clause in `caption`, in caption order."""
    hits = {
        m.start(): (m["color"], _WORD_DIR[m["dir"]]) for p in _MOVES for m in p.finditer(caption)
    }
    return [hits[k] for k in sorted(hits)]


def with_bind_oracle(enc, out: TextEmbeddings, texts: list[str]) -> TextEmbeddings:
    """`out` with each moving object's direction one-hot in its colour word's token state."""
    tokens = out.tokens.copy()
    ids, _ = enc.tokenize(texts)
    for i, text in enumerate(texts):
        row = [int(t) for t in ids[i]][: tokens.shape[1]]
        scale = float(np.linalg.norm(tokens[i, out.mask[i]], axis=-1).mean()) if text else 0.0
        for color, d in object_directions(text or ""):
            piece = enc.tokenize([color])[0][0][1]  # the colour's first word piece (no [CLS])
            for pos in [j for j, t in enumerate(row) if t == piece]:
                tokens[i, pos, :8] = 0.0
                tokens[i, pos, _INDEX[d]] = scale
    return TextEmbeddings(tokens, out.mask.copy(), out.pooled.copy())


def with_oracle(out: TextEmbeddings, texts: list[str], mode: str) -> TextEmbeddings:
    """`out` with each caption's direction written in as `mode` (see module docstring)."""
    tokens, mask, pooled = out.tokens.copy(), out.mask.copy(), out.pooled.copy()
    for i, text in enumerate(texts):
        d = caption_direction(text) if text else None
        if d is None:
            continue
        if mode == "pooled":
            v = np.zeros_like(pooled[i])
            v[_INDEX[d]] = np.linalg.norm(pooled[i])
            pooled[i] = v
        else:
            n = int(mask[i].sum())
            if n >= mask.shape[1]:
                continue  # no free slot: the caption fills max_length
            v = np.zeros_like(tokens[i, n])
            v[_INDEX[d]] = float(np.linalg.norm(tokens[i, :n], axis=-1).mean())
            tokens[i, n], mask[i, n] = v, True
    return TextEmbeddings(tokens, mask, pooled)


def install(mode: str) -> None:
    if mode not in ("pooled", "token", "bind"):
        raise SystemExit(f"error: ORACLE={mode!r}; expected pooled, token or bind")
    encode = MiniLMEncoder.encode

    def oracle_encode(self, texts):
        texts = list(texts)
        if mode == "bind":
            return with_bind_oracle(self, encode(self, texts), texts)
        return with_oracle(encode(self, texts), texts, mode)

    MiniLMEncoder.encode = oracle_encode


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in ("train", "evaluate", "probe"):
        raise SystemExit(
            "usage: ORACLE=pooled|token|bind direction_oracle.py train|evaluate|probe ARGS..."
        )
    install(os.environ.get("ORACLE", ""))
    what, rest = sys.argv[1], sys.argv[2:]
    if what == "train":
        from stiv_jax import train

        train.main([sys.argv[0], *rest])
    elif what == "evaluate":
        from stiv_jax import evaluate

        evaluate.main([sys.argv[0], *rest])
    else:
        sys.argv = ["quality_probes.py", *rest]
        runpy.run_path(os.path.join(ROOT, "benchmarks", "quality_probes.py"), run_name="__main__")


if __name__ == "__main__":
    main()
