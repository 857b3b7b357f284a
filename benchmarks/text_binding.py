"""Do the caption's token embeddings bind each object's direction to the object?

A linear probe on the text encoder alone (no diffusion model): for binding-drill captions
("a red square moves left and a blue circle moves up …", two objects, two different
directions of the 8), take each object's colour-word tokens from the encoder's contextual
token embeddings and fit a ridge classifier to that object's direction (8 classes; chance
0.125). Features: the colour word's state; the mean of the states within ±4 tokens
(`model.text_window`'s feature); the hashed word pieces summed per relative-position bin
around the colour word (`model.word_pieces`' feature, one linear map per bin); and as the
control the mean-pooled caption vector (the same for both objects of a caption, so it can
name the two directions but not which is whose: at most 0.5). The classifier is fitted on
the training templates' captions and tested on unseen captions of the same templates and
on the held-out templates' (the evaluator's phrasings, never trained on).

If a feature scores near 1 on both, cross-attention from the object's video tokens (which
find their colour word) can read the direction there, whatever the phrasing
(docs/quality.md §12, §20).

    python benchmarks/text_binding.py --num_train 2000 --num_test 500
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from stiv_jax.data.shapes import DIRECTIONS, generate_clip

BUCKETS = 1024  # word-piece hash buckets, as the S config's word bag
FEATURES = (
    "colour-word token state",
    "±4-token state mean (text_window)",
    "word pieces by position (word_pieces)",
    "mean-pooled caption (control)",
)


def _find(seq: list[int], sub: list[int]) -> int:
    for i in range(len(seq) - len(sub) + 1):
        if seq[i : i + len(sub)] == sub:
            return i
    return -1


def features(encoder, captions: list[str], objects: list[list[dict]]) -> tuple[dict, np.ndarray]:
    """-> ({feature set: [2n, ·]}, labels [2n]): per object of each caption, from the token
    at its colour word (the word an object's video tokens attend to, docs/quality.md §12.4)."""
    from stiv_jax.model.text_window import window_mean
    from stiv_jax.model.word_pieces import bin_sums

    emb = encoder.encode(captions)
    ids, mask = encoder.tokenize(captions)
    window = np.asarray(window_mean(emb.tokens, mask, 4))  # model.text_window=4's feature
    hashed = np.asarray(ids) % BUCKETS

    def bins(i: int) -> np.ndarray:  # model.word_pieces' feature, one table per bin: [L, K·V]
        onehot = np.eye(BUCKETS, dtype=np.float32)[hashed[i : i + 1]]
        return np.asarray(bin_sums(onehot, mask[i : i + 1])[0])

    colour_ids = {}
    out = {name: [] for name in FEATURES}
    labels = []
    for i, objs in enumerate(objects):
        row, row_bins = [int(t) for t in ids[i]], bins(i)  # once per caption, both objects
        for obj in objs:
            c = obj["color"]
            if c not in colour_ids:  # word pieces of the colour word alone, no [CLS]/[SEP]
                cid, cmask = encoder.tokenize([c])
                colour_ids[c] = [int(t) for t, m in zip(cid[0], cmask[0]) if m][1:-1]
            j = _find(row, colour_ids[c])
            if j < 0:
                raise ValueError(f"colour {c!r} not found in the tokens of {captions[i]!r}")
            out[FEATURES[0]].append(np.asarray(emb.tokens[i, j : j + len(colour_ids[c])]).mean(0))
            out[FEATURES[1]].append(window[i, j])
            out[FEATURES[2]].append(row_bins[j])
            out[FEATURES[3]].append(np.asarray(emb.pooled[i, : emb.tokens.shape[-1]]))
            labels.append(list(DIRECTIONS).index(obj["motion"]))
    return {k: np.stack(v) for k, v in out.items()}, np.asarray(labels)


def ridge_accuracy(xtr, ytr, xte, yte, lam: float = 1.0) -> float:
    mu, sd = xtr.mean(0), xtr.std(0) + 1e-6
    a, b = (xtr - mu) / sd, (xte - mu) / sd
    a, b = np.hstack([a, np.ones((len(a), 1))]), np.hstack([b, np.ones((len(b), 1))])
    onehot = np.eye(int(ytr.max()) + 1)[ytr]
    w = np.linalg.solve(a.T @ a + lam * np.eye(a.shape[1]), a.T @ onehot)
    return float(((b @ w).argmax(1) == yte).mean())


def clips(split: str, start: int, n: int):
    from configs.stiv import get_config

    seed = 0 if split == "train" else get_config("variant=S").data.shapes.heldout_seed
    caps, objs = [], []
    for i in range(start, start + n):
        c = generate_clip(i, split=split, seed=seed, drill=True, drill_objects=2)
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
    tr, ytr = features(encoder, *clips("train", 0, args.num_train))
    same, ysame = features(encoder, *clips("train", 10**6, args.num_test))
    held, yheld = features(encoder, *clips("heldout", 0, args.num_test))
    print(
        f"binding-drill captions, 8 directions: fit on {args.num_train} (training templates); "
        f"test on {args.num_test} unseen ones of the training templates and {args.num_test} "
        "of the held-out templates"
    )
    print(f"  e.g. {clips('train', 10**6, 1)[0][0]!r}")
    print(f"       {clips('heldout', 0, 1)[0][0]!r}")
    print(
        f"  {'features at the colour word':40s} same templates  held-out templates (chance 0.125)"
    )
    for name in FEATURES:
        a = ridge_accuracy(tr[name], ytr, same[name], ysame, args.lam)
        b = ridge_accuracy(tr[name], ytr, held[name], yheld, args.lam)
        print(f"  {name:40s} {a:14.3f}  {b:18.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
