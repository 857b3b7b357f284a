"""Model size registry, as in DiT: `"XL/2" -> depth, width, heads, spatial patch`.

Paper sizes (STIV Table 1): XL 600M, XXL 1.5B, M 8.7B parameters.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    depth: int
    width: int
    heads: int
    patch: int


_SIZES = {
    "tiny": (2, 64, 2),
    "S": (4, 128, 4),  # CPU demo size: trains in minutes on 2 cores
    "XL": (28, 1152, 18),
    "XXL": (38, 1536, 24),
    "M": (46, 3072, 48),
}
# Spatial patch when the name has no `/p`. S works on 32² pixels: 4×4 patches give 64 tokens a
# frame, ~3× the step rate of 2×2 at the same quality per step (docs/quality.md).
DEFAULT_PATCH = {"tiny": 2, "S": 4}


def parse_variant(name: str) -> Variant:
    """`tiny`, `S`, `XL/2`, `XXL/2`, `M/2` (any `/p` patch) -> Variant."""
    size, _, patch = name.partition("/")
    if size not in _SIZES:
        raise ValueError(f"unknown variant {name!r}; expected one of tiny, S, XL/2, XXL/2, M/2")
    if patch and not patch.isdigit():
        raise ValueError(f"variant {name!r}: patch after '/' must be an integer, got {patch!r}")
    p = int(patch) if patch else DEFAULT_PATCH.get(size, 2)
    canonical = size if size in ("tiny", "S") and not patch else f"{size}/{p}"
    return Variant(canonical, *_SIZES[size], patch=p)
