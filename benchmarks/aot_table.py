"""Markdown tables of `tpu_scripts.aot_compile --json` reports (benchmarks/aot_table.sh).

python benchmarks/aot_table.py runs/aot              # train steps (aot_<v>_<res>_<topo>.json)
python benchmarks/aot_table.py --sampler runs/aot    # one sampler ODE step (aot_sample_*.json)
"""

from __future__ import annotations

import glob
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tpu_scripts.aot_compile import chip_specs  # noqa: E402

ORDER = {"XL_2": 0, "XXL_2": 1, "M_2": 2}


def _reports(out_dir: str, prefix: str, what) -> list[tuple[str, int, str, dict]]:
    """(variant, res, TPU family, report) of each `<prefix><variant>_<res>_<topology>.json`
    in `out_dir`, the report being its one entry whose "what" satisfies `what`."""
    found = []
    for path in glob.glob(os.path.join(out_dir, prefix + "*.json")):
        name = os.path.basename(path)
        m = re.match(re.escape(prefix) + r"(.+?)_(\d+)_(v\w+?)_(.+)\.json$", name)
        if not m or (prefix == "aot_" and name.startswith("aot_sample_")):
            continue
        variant, res, family, _ = m.groups()
        with open(path) as fh:
            (r,) = [x for x in json.load(fh) if what(x["what"])]
        found.append((variant, int(res), family, r))
    return found


def rows(out_dir: str) -> list[str]:
    found = [
        ((family, ORDER.get(v, 9), res), v.replace("_", "/"), res, r)
        for v, res, family, r in _reports(out_dir, "aot_", lambda w: w == "train step")
    ]
    out = [
        "| variant | res × frames | topology (chips) | mesh | per-chip args / temp / total GiB "
        "| HBM GiB | fits | FLOPs/step (XLA, all blocks) | model FLOPs/step | roofline step "
        "| bound by | roofline MFU | compile s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for _, variant, res, r in sorted(found, key=lambda x: x[0]):
        if "error" in r:  # libtpu refused the program: over HBM
            mesh = ", ".join(f"{k}={v}" for k, v in r["mesh"].items() if v > 1)
            out.append(
                f"| {variant} | {res}² × 20 | {r['topology']} ({r['chips']}) | {mesh} "
                f"| temporaries alone {r['required_gib']:.1f} | {r['hbm_gib']:.1f} | **no** "
                "| — | — | — | — | — | — |"
            )
            continue
        peak, _, bw = chip_specs(r["topology"])
        flops_chip = r["flops_per_step"] / r["chips"]
        bound = "HBM" if r["bytes_per_chip"] / bw > flops_chip / peak else "compute"
        counted = "extrapolated" in r.get("cost_method", "")
        step = f"{r['roofline_s'] * 1e3:.0f} ms" if counted else "—"
        mfu = f"{100 * r['roofline_mfu']:.0f}%" if counted else "—"
        bound = bound if counted else "—"
        mesh = ", ".join(f"{k}={v}" for k, v in r["mesh"].items() if v > 1) or "1 chip"
        out.append(
            f"| {variant} | {res}² × 20 | {r['topology']} ({r['chips']}) | {mesh} "
            f"| {r['argument_gib']:.2f} / {r['temp_gib']:.1f} / {r['total_gib']:.1f} "
            f"| {r['hbm_gib']:.0f} | {'yes' if r['fits'] else '**no**'} "
            f"| {r['flops_per_step']:.2e}{'' if counted else ' (scan once)'} "
            f"| {r['model_flops_per_step']:.2e} "
            f"| {step} | {bound} | {mfu} "
            f"| {r['compile_s']:.0f} |"
        )
    return out


def sampler_rows(out_dir: str) -> list[str]:
    """One row per `aot_sample_<variant>_<res>_<topology>.json` (aot_compile --sample --notrain)."""
    found = [
        ((ORDER.get(v, 9), family, res), v.replace("_", "/"), res, r)
        for v, res, family, r in _reports(out_dir, "aot_sample_", lambda w: w.startswith("sampler"))
    ]
    out = [
        "| variant | res × frames | topology (chips) | mesh | prompts (CFG batch) "
        "| params GiB, whole (bf16 kernels) | per-chip args / temp / total GiB | HBM GiB "
        "| fits | compile s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for _, variant, res, r in sorted(found, key=lambda x: x[0]):
        mesh = ", ".join(f"{k}={v}" for k, v in r["mesh"].items() if v > 1) or "1 chip"
        b = re.search(r"batch (\d+), CFG (\d+)", r["what"])
        batch = f"{b.group(1)} ({b.group(2)})" if b else "—"
        if "error" in r:  # libtpu refused the program: over HBM
            out.append(
                f"| {variant} | {res}² × 20 | {r['topology']} ({r['chips']}) | {mesh} | {batch} "
                f"| — | temporaries alone {r['required_gib']:.1f} | {r['hbm_gib']:.1f} | **no** | — |"
            )
            continue
        out.append(
            f"| {variant} | {res}² × 20 | {r['topology']} ({r['chips']}) | {mesh} | {batch} "
            f"| {r.get('param_gib', 0.0):.1f} "
            f"| {r['argument_gib']:.2f} / {r['temp_gib']:.2f} / {r['total_gib']:.2f} "
            f"| {r['hbm_gib']:.0f} | {'yes' if r['fits'] else '**no**'} | {r['compile_s']:.0f} |"
        )
    return out


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--sampler"]
    table = sampler_rows if "--sampler" in sys.argv[1:] else rows
    print("\n".join(table(args[0] if args else "runs/aot")))
