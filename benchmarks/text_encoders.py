"""Text-encoder benchmark: load time, compile time and prompts/s on this machine.

Shapes: B prompts per forward (chunk), L = max_length tokens, D width.
  minilm   the packaged MiniLM-L6 weights through `get_text_encoder` (tokenizer included):
           load seconds, first encode (compile) seconds, steady prompts/s over N prompts,
           and the cached re-encode rate with `cache_size`.
  t5-base  a random T5 v1.1-base-sized encoder (d_model 768, 12 layers, no weights needed),
           forward only on random ids: compile seconds and prompts/s.
Figures are printed and, with --out, written as JSON.

  python benchmarks/text_encoders.py
  python benchmarks/text_encoders.py --arch t5-base --prompts 256 --max-length 128 --out /tmp/te.json
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from stiv_jax.atomic import atomic_write


def bench_minilm(n: int, max_length: int, chunk: int) -> dict:
    from stiv_jax.encoders import get_text_encoder

    rng = np.random.default_rng(0)
    words = "a red blue ball cat dog runs jumps over the grass sky slowly quickly camera".split()
    texts = [" ".join(rng.choice(words, rng.integers(3, 30))) for _ in range(n)]
    cfg = dict(name="minilm", path="", max_length=max_length, pooled_path="", chunk_size=chunk)
    t0 = time.perf_counter()
    enc = get_text_encoder({**cfg, "cache_size": n})
    load = time.perf_counter() - t0
    t0 = time.perf_counter()
    enc.encode(texts[:chunk])
    first = time.perf_counter() - t0
    enc._cache.clear()
    t0 = time.perf_counter()
    enc.encode(texts)
    steady = time.perf_counter() - t0
    t0 = time.perf_counter()
    enc.encode(texts)
    cached = time.perf_counter() - t0
    return {
        "arch": "minilm",
        "prompts": n,
        "max_length": max_length,
        "chunk": chunk,
        "load_s": round(load, 3),
        "first_chunk_s_incl_compile": round(first, 3),
        "prompts_per_s": round(n / steady, 1),
        "cached_prompts_per_s": round(n / cached, 1),
    }


def bench_t5_base(n: int, max_length: int, chunk: int) -> dict:
    import jax
    from flax import nnx

    from stiv_jax.encoders.t5 import T5, T5Config

    c = T5Config(32128, 768, 64, 12, 2048, 12, 32, 128, 1e-6, "gelu_new", True, False)
    model = T5(c, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    fwd = jax.jit(lambda s, i, m: nnx.merge(graphdef, s)(i, m))
    rng = np.random.default_rng(0)
    ids = rng.integers(3, c.vocab_size, (chunk, max_length)).astype(np.int32)
    mask = np.arange(max_length)[None] < rng.integers(4, max_length + 1, (chunk, 1))
    t0 = time.perf_counter()
    jax.block_until_ready(fwd(state, ids, mask))
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(max(1, n // chunk)):
        jax.block_until_ready(fwd(state, ids, mask))
    steady = time.perf_counter() - t0
    return {
        "arch": "t5-base",
        "prompts": max(1, n // chunk) * chunk,
        "max_length": max_length,
        "chunk": chunk,
        "first_chunk_s_incl_compile": round(first, 3),
        "prompts_per_s": round(max(1, n // chunk) * chunk / steady, 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--arch", choices=["minilm", "t5-base", "all"], default="minilm")
    p.add_argument("--prompts", type=int, default=512)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--chunk", type=int, default=64)
    p.add_argument("--out", default="")
    a = p.parse_args()
    archs = ["minilm", "t5-base"] if a.arch == "all" else [a.arch]
    fns = {"minilm": bench_minilm, "t5-base": bench_t5_base}
    results = []
    for arch in archs:
        r = fns[arch](a.prompts, a.max_length, a.chunk)
        print(json.dumps(r))
        results.append(r)
    if a.out:
        with atomic_write(a.out) as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
