"""STIV's progressive recipe vs training from scratch: loss and ShapesBench scores.

  python benchmarks/staged_vs_scratch.py --root runs/staged [--variant S] \
      [--steps 300,200,300] [--scratch_steps 0] [--num_cases 16] [--out docs/progressive.md]

Trains (each a `python -m stiv_jax.train` process, so a rerun resumes or skips what is done):
  ROOT/t2i     variant,stage=t2i                       steps[0]   (ShapesBench frames as images)
  ROOT/t2v     stage=t2v at --t2v_res / --t2v_frames    steps[1]   init_from ROOT/t2i
  ROOT/ti2v    stage=ti2v (the variant's size)          steps[2]   init_from ROOT/t2v
  ROOT/scratch the variant as is                        sum(steps) unless --scratch_steps
then evaluates ROOT/ti2v and ROOT/scratch (`python -m stiv_jax.evaluate`, TI2V + T2V) and
writes a markdown table (atomically) to --out and ROOT/staged_vs_scratch.json: final loss
(mean of the last 5 logged values), ShapesBench rows, and the compute of each run counted
as optimizer steps x batch x tokens per sample (T/pt x (res/p)^2, so stages at lower
resolution cost less per step). Extra `--set a.b=v` overrides go to every train command
(e.g. a smoke run: --variant tiny --set data.res=16 --set data.frames=4 ...).
Prints figures; not a timed test.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def _train(workdir: str, arg: str, steps: int, sets: list[str], init_from: str = "") -> None:
    cmd = [sys.executable, "-m", "stiv_jax.train", "--config", f"configs/stiv.py:{arg}",
           "--workdir", workdir, f"--config.train.steps={steps}"]  # fmt: skip
    cmd += [f"--config.{s}" for s in sets]
    if init_from:
        cmd.append(f"--config.train.init_from={init_from}")
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=REPO, check=True)


def _evaluate(workdir: str, arg: str, sets: list[str], num_cases: int) -> dict:
    out = os.path.join(workdir, "eval")
    cmd = [sys.executable, "-m", "stiv_jax.evaluate", "--config", f"configs/stiv.py:{arg}",
           "--workdir", workdir, "--out", out, f"--num_cases={num_cases}",
           "--tasks=ti2v,t2v"]  # fmt: skip
    cmd += [f"--config.{s}" for s in sets if s.startswith(("data.", "sample."))]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=REPO, check=True)
    with open(os.path.join(out, "scores.json")) as fh:
        return json.load(fh)


def _final_loss(workdir: str) -> float:
    with open(os.path.join(workdir, "metrics.jsonl")) as fh:
        losses = [json.loads(line)["loss"] for line in fh if line.strip()]
    tail = losses[-5:]
    return sum(tail) / len(tail)


def _compute(workdir: str) -> float:
    """steps x batch x tokens per sample of the run's saved config."""
    from stiv_jax import checkpoint as ckpt
    from stiv_jax.runtime import latent_shape

    c = ckpt.restore_config(workdir)
    f, h, w, _ = latent_shape(c)
    m = c.model
    tokens = (f // m.temporal_patch) * (h // m.patch_size) * (w // m.patch_size)
    return float(c.train.steps) * float(c.data.batch_size) * tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", required=True)
    ap.add_argument("--variant", default="S")
    ap.add_argument("--steps", default="300,200,300", help="t2i,t2v,ti2v optimizer steps")
    ap.add_argument("--scratch_steps", type=int, default=0, help="0 = the staged total")
    ap.add_argument("--t2v_res", type=int, default=0, help="0 = half the variant's res")
    ap.add_argument("--t2v_frames", type=int, default=0, help="0 = half the variant's frames")
    ap.add_argument("--num_cases", type=int, default=16)
    ap.add_argument("--set", action="append", default=[], help="a.b=v for every train run")
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    from configs.stiv import get_config
    from stiv_jax.atomic import atomic_path

    steps = [int(s) for s in a.steps.split(",")]
    if len(steps) != 3 or min(steps) < 1:
        raise SystemExit(f"error: --steps {a.steps!r} must be three positive integers")
    base = get_config(f"variant={a.variant}")
    res = a.t2v_res or base.data.res // 2
    frames = a.t2v_frames or max(2, base.data.frames // 2)
    v = f"variant={a.variant}"
    runs = {
        "t2i": (f"{v},stage=t2i", steps[0], ""),
        "t2v": (f"{v},stage=t2v,res={res},frames={frames}", steps[1], "t2i"),
        "ti2v": (f"{v},stage=ti2v", steps[2], "t2v"),
        "scratch": (f"{v},stage=ti2v", a.scratch_steps or sum(steps), ""),  # the mix, no prelude
    }
    # stage-specific shapes come from the argument string: keep data.res/frames overrides
    # for the full-size runs only
    full_sets = a.set
    small_sets = [s for s in a.set if not s.startswith(("data.res", "data.frames"))]
    for name, (arg, n, src) in runs.items():
        sets = small_sets if name in ("t2i", "t2v") else full_sets
        _train(os.path.join(a.root, name), arg, n, sets, os.path.join(a.root, src) if src else "")
    rows = {}
    for name in ("ti2v", "scratch"):
        wd = os.path.join(a.root, name)
        report = _evaluate(wd, runs[name][0], full_sets, a.num_cases)
        rows[name] = {"final_loss": _final_loss(wd), "scores": report["scores"]}
    staged_compute = sum(_compute(os.path.join(a.root, n)) for n in ("t2i", "t2v", "ti2v"))
    rows["ti2v"]["compute"] = staged_compute
    rows["scratch"]["compute"] = _compute(os.path.join(a.root, "scratch"))
    lines = [
        f"# Staged (T2I {steps[0]} -> T2V {steps[1]} at {res}px/{frames}f -> TI2V {steps[2]}) "
        f"vs scratch ({runs['scratch'][1]} steps), variant {a.variant}",
        "",
        "| | staged | scratch |",
        "|---|---|---|",
        f"| compute (steps x batch x tokens) | {staged_compute:.3g} | "
        f"{rows['scratch']['compute']:.3g} |",
        f"| final loss (last 5 logs) | {rows['ti2v']['final_loss']:.4f} | "
        f"{rows['scratch']['final_loss']:.4f} |",
    ]
    for task in ("ti2v", "t2v"):
        for key in ("direction_accuracy", "subject_consistency", "video_psnr", "motion_control"):
            vals = [rows[r]["scores"].get(task, {}).get("rows", {}).get("model", {}).get(key)
                    for r in ("ti2v", "scratch")]  # fmt: skip
            cells = [f"{x:.3f}" if isinstance(x, float) else "—" for x in vals]
            lines.append(f"| {task} {key} | {cells[0]} | {cells[1]} |")
    table = "\n".join(lines) + "\n"
    print(table)
    with atomic_path(os.path.join(a.root, "staged_vs_scratch.json")) as tmp:
        with open(tmp, "w") as fh:
            json.dump(rows, fh, indent=1)
    if a.out:
        with atomic_path(a.out) as tmp:
            with open(tmp, "w") as fh:
                fh.write(table)


if __name__ == "__main__":
    main()
