"""STIV / Step-Video ablations at small scale: identical budgets, one change each, scored.

Shapes: not applicable (whole training runs); the evaluation is `stiv_jax.evaluate`'s.

  python benchmarks/ablations.py --out runs/ablations [--variant tiny --steps 200 \
      --num_cases 12 --ode_steps 10] [--only baseline,channel_concat]
  python benchmarks/ablations.py --out runs/abl_main --recipe main --num_cases 16 [--seed 1 \
      --data_seed 0]

Every variant is the same base config with ONE override. `--recipe mix` (default): the task
mix alone, `configs/stiv.py:variant=<v>,res=32,frames=8,stage=ti2v` plus the budget flags
(`--steps`, constant lr after warmup, `--ema_decay`, `--ode_steps`). `--recipe main`: the
README main job itself (`variant=S`: its binding-drill prelude, then the mix with its shares
and cool-down, its EMA and sampler; docs/quality.md §25), one command per variant; the
override then holds in the drill too (it is the same model).

  baseline         the base config unchanged (tiny: frame_replace, MaskDiT 0.5; S: frame_replace_ref, no MaskDiT)
  channel_concat   model.image_cond=channel_concat   (Step-Video's image conditioning)
  cross_attn       model.image_cond=cross_attn       (STIV's rejected baseline)
  no_image_drop    diffusion.image_drop=0.0          (sampled with the same JIT-CFG)
  no_motion_cond   model.motion_cond=False
  no_maskdit       model.mask_ratio=0.0                (when the base masks: tiny)
  maskdit          model.mask_ratio=0.5, the last 100 steps unmasked (when it does not: S)
  maskdit_equal_compute  maskdit with 1.25x the steps (prelude and cool-down too): the
                   unmasked baseline's training compute (only with --only)
  no_temporal_adaln  model.temporal_adaln=False        (STIV Table 19: AdaLN on spatial + MLP only)

By default every variant that changes the base config runs (`--only` picks some); one that
would change nothing (no_maskdit on S, maskdit on tiny) is left out.

Each trains with `stiv_jax.train.train_loop` in `OUT/<name>/` (same seeds, steps and batch),
then `stiv_jax.evaluate.evaluate_checkpoint` samples the same held-out cases into
`OUT/<name>/eval/`. Results are written after every variant (`OUT/results.json`,
`OUT/table.md`, temp + rename; variants of earlier runs into OUT stay in them); `--combine
OUT0,OUT1` prints the mean of sweeps run with different `--seed`s, per seed in brackets. A
variant whose `eval/scores.json` exists is skipped, and a killed run resumes (the trainer
restores its last checkpoint, the evaluator skips videos already written); a run a signal
stopped ends with one line saying so, unevaluated. Wall and process-CPU seconds are
recorded: on a shared machine the CPU figure is the one that transfers. `--rescore` scores
the finished variants' saved videos again with the current evaluator (no training or
sampling) and rebuilds the table.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs.stiv import get_config  # noqa: E402
from stiv_jax import evaluate  # noqa: E402
from stiv_jax.atomic import write_text  # noqa: E402

# Not a config field: multiplies the run's steps, each prelude stage's and the cool-down's.
STEPS_SCALE = "steps_scale"
VARIANTS: dict[str, dict[str, object]] = {
    "baseline": {},
    "frame_replace": {"model.image_cond": "frame_replace"},
    "frame_replace_ref": {"model.image_cond": "frame_replace_ref"},
    "channel_concat": {"model.image_cond": "channel_concat"},
    "no_motion_cond": {"model.motion_cond": False},
    "no_image_drop": {"diffusion.image_drop": 0.0},
    "no_maskdit": {"model.mask_ratio": 0.0},
    "maskdit": {"model.mask_ratio": 0.5, "train.unmasked_steps": 100},
    # MaskDiT at the unmasked baseline's compute: a masked S step costs ~0.8 of an unmasked
    # one (docs/ablations.md: 1,220 vs 1,520 training CPU s), so 1.25x the steps.
    "maskdit_equal_compute": {
        "model.mask_ratio": 0.5,
        "train.unmasked_steps": 100,
        STEPS_SCALE: 1.25,
    },
    "cross_attn": {"model.image_cond": "cross_attn"},
    "no_temporal_adaln": {"model.temporal_adaln": False},
}
TI2V_COLS = (
    "direction_accuracy",
    "pan_accuracy",
    "size_accuracy",
    "still_accuracy",
    "subject_consistency",
    "dynamic_degree",
    "first_frame_psnr",
    "first_frame_ssim",
    "video_psnr",
    "motion_control",
    "motion_control_within",
)
T2V_COLS = (
    "direction_accuracy",
    "pan_accuracy",
    "size_accuracy",
    "still_accuracy",
    "subject_consistency",
    "dynamic_degree",
    "motion_control",
)
# The columns of the seed-combined table (`--combine`): the ones the papers' findings are about.
COMBINED_COLS = {
    "ti2v": ("subject_consistency", "first_frame_psnr", "video_psnr", "motion_control",
             "motion_control_within", "dynamic_degree", "direction_accuracy"),
    "t2v": ("subject_consistency", "motion_control", "direction_accuracy"),
}  # fmt: skip


# --recipe mix's budget where a flag is not given
MIX_DEFAULTS = {"variant": "tiny", "steps": 200, "ema_decay": 0.98, "ode_steps": 10}


def budget_args(args: argparse.Namespace) -> argparse.Namespace:
    """`args` with the recipe's budget filled in: the mix's defaults, or (main) the main
    job's own steps, EMA and sampler steps; a budget flag given with `--recipe main` is an
    error, since the main job's budget is its config's."""
    if args.recipe == "main":
        given = [k for k in MIX_DEFAULTS if k != "variant" and getattr(args, k) is not None]
        if given or args.variant not in (None, "S"):
            raise SystemExit(
                f"error: --recipe main is the README main job's own budget (variant S); "
                f"got {' '.join(f'--{k}' for k in given) or f'--variant={args.variant}'}"
            )
        return argparse.Namespace(**{**vars(args), "variant": "S"})
    return argparse.Namespace(
        **{**vars(args), **{k: v if getattr(args, k) is None else getattr(args, k)
                            for k, v in MIX_DEFAULTS.items()}}
    )  # fmt: skip


def base_config(args: argparse.Namespace):
    if args.recipe == "main":  # the README main job: drill prelude, then the mix (§25)
        c = get_config("variant=S,res=32,frames=8")
    else:  # stage=ti2v: the mix alone, without the main job's drill prelude and shares (§25)
        c = get_config(f"variant={args.variant},res=32,frames=8,stage=ti2v")
        c.train.steps = args.steps
        c.optim.decay_steps = 0  # the ablation tables' runs: constant after warmup
        c.train.ckpt_every = 50  # resumable within a variant
        # A short run: the default 0.999 EMA would still be >80% the init after 200 steps.
        c.optim.ema_decay = args.ema_decay
        c.sample.steps = args.ode_steps
    c.train.log_every = 10
    c.train.seed = args.seed
    data_seed = getattr(args, "data_seed", None)  # callers before --data_seed: --seed
    c.data.seed = args.seed if data_seed is None else data_seed
    c.data.batch_size = args.batch
    c.sample.num_train_samples = 2  # the trainer's own end-of-run samples (not scored)
    return c


def scale_steps(config, factor: float) -> None:
    """`train.steps`, every prelude stage's steps and `optim.decay_steps` times `factor`."""
    from stiv_jax import stages

    config.train.steps = round(config.train.steps * factor)
    config.optim.decay_steps = round(config.optim.decay_steps * factor)
    entries = stages.parse_prelude(config.train.prelude)
    config.train.prelude = tuple(f"{stage}:{round(n * factor)}" for stage, n in entries)


def apply(config, overrides: dict[str, object]) -> None:
    for dotted, value in overrides.items():
        if dotted == STEPS_SCALE:
            scale_steps(config, float(value))
            continue
        *path, key = dotted.split(".")
        node = config
        for p in path:
            node = node[p]
        if key not in node:
            raise KeyError(f"override {dotted!r} names no config field")
        node[key] = value


def changes_base(base, overrides: dict[str, object]) -> bool:
    """Whether `overrides` change any field of `base` (a no-op variant is not worth a run)."""
    for dotted, value in overrides.items():
        if dotted == STEPS_SCALE:
            if value != 1:
                return True
            continue
        node = base
        for p in dotted.split("."):
            node = node[p]
        if node != value:
            return True
    return False


def _final_loss(workdir: str, last: int = 5) -> float:
    """Mean `loss_avg` of the last `last` logged points (each already a 10-step mean)."""
    path = os.path.join(workdir, "metrics.jsonl")
    with open(path) as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    vals = [r["loss_avg"] for r in rows[-last:]]
    return float(sum(vals) / len(vals)) if vals else math.nan


def rescore(name: str, config, args: argparse.Namespace) -> dict:
    """Scores a finished variant's videos again with the current evaluator (no sampling)."""
    eval_dir = os.path.join(args.out, name, "eval")
    with open(os.path.join(eval_dir, "scores.json")) as fh:
        old = json.load(fh)
    keep = ("videos", "scores", "skipped", "errors")
    header = {k: v for k, v in old.items() if k not in keep}
    scores = evaluate.evaluate_dir(
        config, os.path.join(eval_dir, "videos"), eval_dir, header=header
    )
    with open(os.path.join(args.out, name, "budget.json")) as fh:
        return {"budget": json.load(fh), "scores": scores}


def run_variant(name: str, args: argparse.Namespace) -> dict | None:
    from stiv_jax import stages
    from stiv_jax.train import train_loop

    workdir = os.path.join(args.out, name)
    eval_dir = os.path.join(workdir, "eval")
    budget_path = os.path.join(workdir, "budget.json")
    finished = os.path.exists(os.path.join(eval_dir, "scores.json")) and os.path.exists(budget_path)
    if finished and not args.rescore:
        logging.info("%s: already evaluated, skipped", name)
        with open(budget_path) as fh:
            budget = json.load(fh)
        with open(os.path.join(eval_dir, "scores.json")) as fh:
            return {"budget": budget, "scores": json.load(fh)}
    config = base_config(args)
    apply(config, VARIANTS[name])
    if args.rescore:
        return rescore(name, config, args) if finished else None
    wall, cpu = time.time(), time.process_time()
    if stages.run_prelude(config, workdir, train_loop):  # the main job's drill (no-op: mix)
        train_loop(config, workdir)
    train_wall, train_cpu = time.time() - wall, time.process_time() - cpu
    if config.train.steps not in stages.saved_steps(workdir):  # a signal stopped it (it saved)
        raise SystemExit(
            f"error: {name} stopped before step {config.train.steps}; "
            "run the same command to resume"
        )
    config = base_config(args)  # evaluate restores the architecture from the checkpoint
    apply(config, VARIANTS[name])
    wall, cpu = time.time(), time.process_time()
    scores = evaluate.evaluate_checkpoint(
        config, workdir, eval_dir, num_cases=args.num_cases, multipliers=(0.5, 1.0, 2.0)
    )
    budget = {
        "overrides": VARIANTS[name],
        "recipe": args.recipe,
        "variant": args.variant,
        "prelude": list(config.train.prelude),
        "steps": int(config.train.steps),
        "batch": args.batch,
        "seed": args.seed,
        "data_seed": int(config.data.seed),
        "ema_decay": float(config.optim.ema_decay),
        "ode_steps": int(config.sample.steps),
        "num_cases": args.num_cases,
        "final_loss": _final_loss(workdir),
        # Resumed runs only time the part done by this process.
        "train_wall_s": round(train_wall, 1),
        "train_cpu_s": round(train_cpu, 1),
        "eval_wall_s": round(time.time() - wall, 1),
        "eval_cpu_s": round(time.process_time() - cpu, 1),
    }
    evaluate._write_json(budget_path, budget)
    return {"budget": budget, "scores": scores}


def _earlier_results(out: str) -> dict[str, dict]:
    """OUT/results.json of earlier runs into OUT ({} if none); a damaged one is an error."""
    path = os.path.join(out, "results.json")
    if not os.path.exists(path):
        return {}
    try:
        with open(path) as fh:
            return dict(json.load(fh))
    except (ValueError, TypeError) as e:
        raise SystemExit(f"error: {path} is not a results file ({e}); move it away") from None


def _fmt(v) -> str:
    return evaluate._fmt(v)


def table(results: dict[str, dict]) -> str:
    """Markdown: one table per task, variants as rows plus the floor and ceiling rows."""
    lines = []
    for task, cols in (("ti2v", TI2V_COLS), ("t2v", T2V_COLS)):
        lines += ["", f"### {task.upper()}", ""]
        lines.append("| variant | final loss | " + " | ".join(cols) + " |")
        lines.append("|---" * (len(cols) + 2) + "|")
        ref = None
        for name, r in results.items():
            s = r["scores"]["scores"].get(task)
            if not s:
                continue
            ref = ref or s["rows"]
            row = s["rows"]["model"]
            lines.append(
                f"| {name} | {_fmt(r['budget']['final_loss'])} | "
                + " | ".join(_fmt(row.get(c)) for c in cols)
                + " |"
            )
        if ref:
            for base in ("static", "ground_truth"):
                lines.append(
                    f"| *{base}* | — | " + " | ".join(_fmt(ref[base].get(c)) for c in cols) + " |"
                )
    return "\n".join(lines) + "\n"


def combined_table(outs: list[str]) -> str:
    """Markdown: per task, each variant's mean over the sweeps in `outs` (one per seed), with
    the per-seed values in brackets, then the static floor and the ground truth."""
    runs = []
    for out in outs:
        with open(os.path.join(out, "results.json")) as fh:
            runs.append(json.load(fh))
    names = [n for n in runs[0] if all(n in r for r in runs)]
    lines = [f"Sweeps: {', '.join(outs)}; cells: mean (per sweep)."]
    for task, cols in COMBINED_COLS.items():
        lines += ["", f"### {task.upper()}", ""]
        lines.append("| variant | final loss | " + " | ".join(cols) + " |")
        lines.append("|---" * (len(cols) + 2) + "|")
        for name in names:
            rows = [r[name]["scores"]["scores"][task]["rows"]["model"] for r in runs]
            losses = [r[name]["budget"]["final_loss"] for r in runs]

            def cell(vals):
                vals = [float(v) for v in vals]
                per = " / ".join(_fmt(v) for v in vals)
                return f"{_fmt(sum(vals) / len(vals))} ({per})"

            lines.append(
                f"| {name} | {cell(losses)} | "
                + " | ".join(cell([row.get(c, math.nan) for row in rows]) for c in cols)
                + " |"
            )
        ref = runs[0][names[0]]["scores"]["scores"][task]["rows"]
        for base in ("static", "ground_truth"):
            lines.append(
                f"| *{base}* | — | " + " | ".join(_fmt(ref[base].get(c)) for c in cols) + " |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", default="runs/ablations")
    ap.add_argument("--variant", default=None, help="model variant (mix: tiny; main: S)")
    ap.add_argument(
        "--recipe",
        choices=("mix", "main"),
        default="mix",
        help="mix: the task mix alone at --steps; main: the README main job",
    )
    ap.add_argument("--steps", type=int, default=None, help="mix: steps (200)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--data_seed",
        type=int,
        default=None,
        help="data.seed (default: --seed); 0 with --seed 1 is the README's second seed",
    )
    ap.add_argument("--ema_decay", type=float, default=None, help="mix: EMA decay (0.98)")
    ap.add_argument("--ode_steps", type=int, default=None, help="mix: sampler steps (10)")
    ap.add_argument("--num_cases", type=int, default=12)
    ap.add_argument("--rescore", action="store_true", help="re-score finished variants only")
    ap.add_argument("--only", default="", help="comma-separated variant names (default: all)")
    ap.add_argument("--combine", default="", help="DIR,DIR: the seed-combined table of sweeps")
    args = ap.parse_args()
    if args.combine:
        print(combined_table([d for d in args.combine.split(",") if d]))
        return
    args = budget_args(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    base = base_config(args)
    masks = base.model.mask_ratio > 0  # MaskDiT is toggled off (tiny) or on (S), not both
    names = [n for n in args.only.split(",") if n] or [
        n
        for n, o in VARIANTS.items()
        if (not o or changes_base(base, o))
        and not (n.startswith("maskdit") and masks)
        and n != "maskdit_equal_compute"
    ]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        ap.error(f"unknown variants {unknown}; expected some of {list(VARIANTS)}")
    os.makedirs(args.out, exist_ok=True)
    results = _earlier_results(args.out)  # another --only run's variants stay in the table
    for name in names:
        t0 = time.time()
        result = run_variant(name, args)
        if result is None:
            print(f"{name}: not finished, nothing to re-score", flush=True)
            continue
        results[name] = result
        # The table in VARIANTS' order, whichever run added a row (unknown names last).
        rank = {n: i for i, n in enumerate(VARIANTS)}
        results = dict(sorted(results.items(), key=lambda kv: rank.get(kv[0], len(rank))))
        evaluate._write_json(os.path.join(args.out, "results.json"), results)
        write_text(os.path.join(args.out, "table.md"), table(results))
        print(f"{name}: done in {time.time() - t0:.0f} s", flush=True)
    print(table(results))


if __name__ == "__main__":
    main()
