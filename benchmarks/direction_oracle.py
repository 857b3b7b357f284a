"""Diagnostic: is reading the caption what makes the direction drill slow? (quality.md §10)

Runs the trainer or the direction probe with the text encoder's output edited so that the
caption's direction is handed to the model in a form it cannot miss:

  ORACLE=pooled  the pooled text vector is replaced by a one-hot of the direction (scaled to
                 the pooled vector's norm): a global signal into the AdaLN-single condition;
  ORACLE=token   every MiniLM token state is kept and one extra valid token is appended
                 whose state is a one-hot of the direction (scaled to the mean token norm):
                 a distinct token for cross-attention.

Captions without a direction word (the null prompt, still/grow/shrink) are left as they are.
The §10 runs predate the word bag, so they add `--config.text_encoder.word_bag=0` to both
commands. Train and probe with the same ORACLE:

  ORACLE=pooled python benchmarks/direction_oracle.py train \\
      --config configs/stiv.py:variant=S,stage=drill --workdir runs/or_pooled \\
      --config.train.steps=600 --config.train.ckpt_every=200
  ORACLE=pooled python benchmarks/direction_oracle.py probe direction \\
      --workdir runs/or_pooled --step 400

The main job with an oracle (docs/quality.md §18: what would reading the words at once buy
in the main job's 1,000 steps?), evaluated as in the README under the same oracle:

  ORACLE=pooled python benchmarks/direction_oracle.py train \\
      --config configs/stiv.py:variant=S --workdir runs/main_or_pooled
  ORACLE=pooled python benchmarks/direction_oracle.py evaluate \\
      --config configs/stiv.py:variant=S --workdir runs/main_or_pooled --out runs/main_or_pooled/eval
"""

from __future__ import annotations

import os
import runpy
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from stiv_jax.data.shapes import _DIR_WORDS  # noqa: E402
from stiv_jax.encoders.base import TextEmbeddings  # noqa: E402
from stiv_jax.encoders.minilm import MiniLMEncoder  # noqa: E402

_ORDER = tuple(_DIR_WORDS)
_INDEX = {k: i for i, k in enumerate(sorted(_DIR_WORDS))}


def caption_direction(caption: str) -> str | None:
    """The first direction phrase of `caption` (at one position, the longest), or None."""
    padded = f" {caption} "
    hits = [(padded.find(f" {_DIR_WORDS[k]} "), k) for k in _ORDER]
    hits = [(pos, -len(_DIR_WORDS[k]), k) for pos, k in hits if pos >= 0]
    return min(hits)[2] if hits else None  # earliest, then longest ("up and to the left")


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
    if mode not in ("pooled", "token"):
        raise SystemExit(f"error: ORACLE={mode!r}; expected pooled or token")
    encode = MiniLMEncoder.encode

    def oracle_encode(self, texts):
        texts = list(texts)
        return with_oracle(encode(self, texts), texts, mode)

    MiniLMEncoder.encode = oracle_encode


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in ("train", "evaluate", "probe"):
        raise SystemExit(
            "usage: ORACLE=pooled|token direction_oracle.py train|evaluate|probe ARGS..."
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
