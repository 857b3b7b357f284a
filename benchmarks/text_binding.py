"""Do the caption's token embeddings bind each object's direction to the object?

A linear probe on the text encoder alone (no diffusion model): for binding-drill captions
("a red square moves left and a blue circle moves up …", two objects, two different
directions of the 8), take each object's colour-word tokens from the encoder's contextual
token embeddings and fit a ridge classifier to that object's direction (8 classes; chance
0.125). Controls: the mean-pooled caption vector (the same for both objects of a caption,
so it can name the two directions but not which is whose: at most 0.5). Test captions are
unseen indices of the same generator.

If the colour tokens score near 1, the encoder already binds and cross-attention from the
object's video tokens (which know its colour) can read the direction there. If they score
near the pooled control, the binding has to be learned on top of the encoder: that is what
`model.text_refiner` adds (docs/quality.md §12).

    python benchmarks/text_binding.py --num_train 2000 --num_test 500
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from stiv_jax.data.shapes import DIRECTIONS, generate_clip


def _find(seq: list[int], sub: list[int]) -> int:
    for i in range(len(seq) - len(sub) + 1):
        if seq[i : i + len(sub)] == sub:
            return i
    return -1


def features(encoder, captions: list[str], objects: list[list[dict]]):
    """-> (colour-token features [2n, D], pooled features [2n, D], labels [2n])."""
    emb = encoder.encode(captions)
    ids, _ = encoder.tokenize(captions)
    colour_ids = {}
    tok, pooled, labels = [], [], []
    for i, objs in enumerate(objects):
        row = [int(t) for t in ids[i]]
        for obj in objs:
            c = obj["color"]
            if c not in colour_ids:  # word pieces of the colour word alone, no [CLS]/[SEP]
                cid, cmask = encoder.tokenize([c])
                colour_ids[c] = [int(t) for t, m in zip(cid[0], cmask[0]) if m][1:-1]
            j = _find(row, colour_ids[c])
            if j < 0:
                raise ValueError(f"colour {c!r} not found in the tokens of {captions[i]!r}")
            span = np.asarray(emb.tokens[i, j : j + len(colour_ids[c])])
            tok.append(span.mean(0))
            pooled.append(np.asarray(emb.pooled[i, : emb.tokens.shape[-1]]))
            labels.append(list(DIRECTIONS).index(obj["motion"]))
    return np.stack(tok), np.stack(pooled), np.asarray(labels)


def ridge_accuracy(xtr, ytr, xte, yte, lam: float = 1.0) -> float:
    mu, sd = xtr.mean(0), xtr.std(0) + 1e-6
    a, b = (xtr - mu) / sd, (xte - mu) / sd
    a, b = np.hstack([a, np.ones((len(a), 1))]), np.hstack([b, np.ones((len(b), 1))])
    onehot = np.eye(int(ytr.max()) + 1)[ytr]
    w = np.linalg.solve(a.T @ a + lam * np.eye(a.shape[1]), a.T @ onehot)
    return float(((b @ w).argmax(1) == yte).mean())


def clips(start: int, n: int):
    caps, objs = [], []
    for i in range(start, start + n):
        c = generate_clip(i, drill=True, drill_objects=2)
        caps.append(c["caption"])
        objs.append(c["truth"]["objects"])
    return caps, objs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--num_train", type=int, default=2000)
    ap.add_argument("--num_test", type=int, default=500)
    ap.add_argument("--lam", type=float, default=10.0, help="ridge penalty")
    args = ap.parse_args(argv)
    from stiv_jax.encoders import get_text_encoder

    encoder = get_text_encoder({"name": "minilm"})
    tr = features(encoder, *clips(0, args.num_train))
    te = features(encoder, *clips(10**6, args.num_test))
    print(f"binding-drill captions: {args.num_train} train / {args.num_test} test, 8 directions")
    print(f"  e.g. {clips(10**6, 1)[0][0]!r}")
    for name, k in (("colour-word tokens", 0), ("mean-pooled caption (control)", 1)):
        acc = ridge_accuracy(tr[k], tr[2], te[k], te[2], args.lam)
        print(f"  {name:32s} direction of that object: {acc:.3f} (chance 0.125)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
