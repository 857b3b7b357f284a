"""Where the S train step's time goes, by model part and op kind (profiler trace).

  python benchmarks/step_profile.py [--steps 3] [--cores 2] [--config variant=S]

Shapes: the `configs/stiv.py:<--config>` training step (S: batch 8, 8 frames at 32², F' 4,
64 tokens per frame, D 128); the legend of the model modules applies.

Compiles the jitted train step (`stiv_jax.train.make_train_step`), times it, then traces
`--steps` calls with `jax.profiler` and reads the trace back (`jax.profiler.ProfileData`).
Each executed XLA op (a thunk: a fusion, a dot, a copy) is joined with its instruction in
the compiled module, which gives
  kind   GEMM (the op's jax primitive is dot_general), reduction (reduce_*: softmax
         max/sum, norm statistics, broadcast gradients), layout (transpose, concatenate,
         slice, pad, copy, reshape, ...), elementwise (the rest);
  part   the model part its caller frames (XLA keeps each op's Python stack) name, by
         `PARTS`: spatial / temporal / cross attention, MLP, the sandwich norms with
         modulation and gates, word pieces, embedding and head, the loss and noise, the
         optimizer with EMA and the non-finite guard (forward and backward together:
         XLA's fusions mix them).
An op's time is its wall time in the trace (XLA:CPU parallelises inside an op; ops rarely
overlap), so the shares are the figures to quote, beside the step's own wall time.
`--cores 1` pins the process to one core before JAX starts: the step's time on one core
against two says how much of the second core the step uses.
docs/performance.md (session 22) has the figures and what they mean.
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import re
import sys
import tempfile
import time

# (source function, model part) in priority order: the first whose function is among an
# op's caller frames names its part (a block's sub-layer closure before the MLP and norms
# it runs inside; the caption path before the MLP it shares the class of).
PARTS = (
    ("STIVBlock.__call__.<locals>.spatial", "spatial attention"),
    ("STIVBlock.__call__.<locals>.temporal", "temporal attention"),
    ("STIVBlock.__call__.<locals>.cross", "cross attention"),
    ("STIV.caption_tokens", "caption tokens, word pieces"),
    ("STIV.context", "caption tokens, word pieces"),
    ("MLP.__call__", "MLP"),
    ("STIVBlock.__call__.<locals>.sandwich", "sandwich norms, modulation, gates"),
    ("STIVBlock.__call__.<locals>.plain", "sandwich norms, modulation, gates"),
    ("STIVBlock.__call__", "block: modulation table"),
    ("STIV.__call__", "embedding, head, conditions"),
    ("make_loss_fn", "loss, noise, condition dropout"),
    ("drop_conditions", "loss, noise, condition dropout"),
    ("make_train_step", "optimizer, EMA, guard"),
)
LAYOUT = {"transpose", "concatenate", "slice", "pad", "copy", "reshape", "squeeze", "split",
          "broadcast_in_dim", "dynamic_slice", "dynamic_update_slice", "gather", "scatter-add",
          "expand_dims", "rev"}  # fmt: skip


def parse_module(text: str):
    """Compiled HLO text -> ({instruction: (primitive, phase, stack frame id)}, frames):
    each named instruction's jax primitive (its op_name's last part), whether that is of
    the forward, the backward (transpose of the jvp) or neither, and its caller frames."""
    section = lambda name: re.search(rf"^{name}\n(.*?)(?:\n\n|\n(?=[A-Z]))", text, re.S | re.M)  # noqa: E731
    funcs = dict(re.findall(r'^(\d+) "([^"]*)"', section("FunctionNames").group(1), re.M))
    locs = {
        i: funcs.get(f, "")
        for i, f in re.findall(
            r"^(\d+) \{file_name_id=\d+ function_name_id=(\d+)",
            section("FileLocations").group(1),
            re.M,
        )
    }
    # parent_frame_id counts from 1 (0: none) where the frames above are listed from 1 with
    # their ids offset by one: the parent of the frame listed as k is the one listed as id - 1.
    frames = {
        i: (locs.get(loc, ""), str(int(parent) - 1))
        for i, loc, parent in re.findall(
            r"^(\d+) \{file_location_id=(\d+) parent_frame_id=(\d+)",
            section("StackFrames").group(1),
            re.M,
        )
    }
    ops = {}
    for m in re.finditer(
        r'^\s+(?:ROOT )?%?([\w.\-]+) = [^\n]*?op_name="([^"]*)"(?:[^\n]*?stack_frame_id=(\d+))?',
        text,
        re.M,
    ):
        name, op, frame = m.groups()
        phase = "backward" if "transpose(jvp" in op else "forward" if "jvp(" in op else "other"
        ops[name] = (op.split("/")[-1], phase, frame)
    return ops, frames


def caller_chain(frame: str | None, frames: dict) -> list[str]:
    """Function names of an op's stack frame and its callers, innermost first."""
    chain, seen = [], set()
    while frame and frame in frames and frame not in seen:
        seen.add(frame)
        func, parent = frames[frame]
        chain.append(func)
        frame = parent
    return chain


def part_of(frame: str | None, frames: dict) -> str:
    """The model part of an op: the first PARTS entry among its caller frames."""
    chain = caller_chain(frame, frames)
    for key, part in PARTS:
        if any(func == key or func.startswith(key + ".") for func in chain):
            return part
    return "other"


def kind_of(primitive: str) -> str:
    if primitive == "dot_general":
        return "GEMM"
    if primitive.startswith(("reduce_", "argmax", "argmin", "cumsum")):
        return "reduction"
    return "layout" if primitive in LAYOUT else "elementwise"


def trace_ops(step, args, steps: int) -> dict[str, float]:
    """{op name: seconds per step} from a profiler trace of `steps` calls of `step`."""
    import jax

    with tempfile.TemporaryDirectory() as d:
        jax.profiler.start_trace(d)
        for _ in range(steps):
            jax.block_until_ready(step(*args))
        jax.profiler.stop_trace()
        path = sorted(glob.glob(os.path.join(d, "**", "*.xplane.pb"), recursive=True))[-1]
        data = jax.profiler.ProfileData.from_file(path)
    total: dict[str, float] = collections.defaultdict(float)
    for plane in data.planes:
        for line in plane.lines:
            if not line.name.startswith("tf_XLA"):  # XLA's op threads, not Python's
                continue
            for ev in line.events:
                if not ev.name.startswith(("ThunkExecutor", "SlinkyThreadPool", "end:")):
                    total[ev.name] += ev.duration_ns / 1e9 / steps
    return total


def table(title: str, rows: dict, total: float, top: int) -> str:
    out = [f"{title:44s} {'ms/step':>8s} {'share':>6s}"]
    for key, v in sorted(rows.items(), key=lambda kv: -kv[1])[:top]:
        out.append(f"  {key:42s} {v * 1e3:8.1f} {100 * v / total:5.1f}%")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="variant=S", help="configs/stiv.py argument")
    ap.add_argument("--steps", type=int, default=3, help="traced steps")
    ap.add_argument("--reps", type=int, default=10, help="timed steps before the trace")
    ap.add_argument("--cores", type=int, default=0, help="pin to this many cores (0: all)")
    ap.add_argument("--top", type=int, default=12)
    args = ap.parse_args()
    if args.cores:
        cpus = sorted(os.sched_getaffinity(0))
        if args.cores > len(cpus):
            raise SystemExit(f"error: --cores {args.cores}; this process may use {len(cpus)}")
        os.sched_setaffinity(0, cpus[: args.cores])  # before JAX sizes its thread pools
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import jax

    from configs.stiv import get_config
    from stiv_jax.data.pipeline import make_dataset
    from stiv_jax.optim import make_optimizer
    from stiv_jax.runtime import Components, fill_train_grid
    from stiv_jax.train import init_state, make_train_step, prepare_batch

    config = get_config(args.config)
    fill_train_grid(config)
    comps = Components(config)
    tx = make_optimizer(config.optim, int(config.train.steps))
    graphdef, state = init_state(comps.model(0), tx)
    data = make_dataset(config, latent_frames=comps.latent_shape[0])
    batch = prepare_batch(next(iter(data)), comps)
    step = jax.jit(make_train_step(config, graphdef, tx, comps.null_text))
    call = (state, batch, jax.random.key(0))
    t0 = time.perf_counter()
    compiled = step.lower(*call).compile()
    compile_s = time.perf_counter() - t0
    for _ in range(2):
        jax.block_until_ready(compiled(*call))
    times = []
    for _ in range(args.reps):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(*call))
        times.append(time.perf_counter() - t0)
    times.sort()
    cores = len(os.sched_getaffinity(0))
    print(f"{args.config}: step min {times[0] * 1e3:.1f} ms, median "
          f"{times[len(times) // 2] * 1e3:.1f} ms on {cores} core(s) (compile {compile_s:.1f} s; "
          f"load {os.getloadavg()[0]:.2f})")  # fmt: skip

    ops, frames = parse_module(compiled.as_text())
    per_op = trace_ops(compiled, call, args.steps)
    by_kind, by_part = collections.defaultdict(float), collections.defaultdict(float)
    by_part_kind: dict[str, float] = collections.defaultdict(float)
    for name, sec in per_op.items():
        primitive, _, frame = ops.get(name, ("(not in the module)", "other", None))
        kind, part = kind_of(primitive), part_of(frame, frames)
        by_kind[kind] += sec
        by_part[part] += sec
        by_part_kind[f"{part}: {kind}"] += sec
    total = sum(per_op.values())
    print(f"traced ops: {total * 1e3:.1f} ms per step summed over {len(per_op)} ops "
          f"({args.steps} steps; load {os.getloadavg()[0]:.2f})")  # fmt: skip
    print(table("by kind", by_kind, total, args.top))
    print(table("by model part", by_part, total, args.top))
    print(table("by part and kind (largest)", by_part_kind, total, args.top))


if __name__ == "__main__":
    main()
