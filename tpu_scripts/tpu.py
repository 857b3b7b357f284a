"""Cloud TPU VM lifecycle for stiv_jax: create, install, train, sample, logs, stop, delete.

  python -m tpu_scripts.tpu create  --name stiv --zone us-east5-a --accelerator v5p-32 [--queued]
  python -m tpu_scripts.tpu install --name stiv --zone us-east5-a [--bucket BUCKET]
  python -m tpu_scripts.tpu train   --name stiv --zone us-east5-a \
      --config configs/stiv.py:variant=XL/2,res=256 --workdir /gcs/BUCKET/run [-- --config.a=b]
  python -m tpu_scripts.tpu sample  --name stiv --zone us-east5-a --config ... --workdir ... \
      --prompts /gcs/BUCKET/prompts.jsonl --out /gcs/BUCKET/samples
  python -m tpu_scripts.tpu logs    --name stiv --zone us-east5-a [--job train] [--worker 0]
  python -m tpu_scripts.tpu stop    --name stiv --zone us-east5-a   (SIGTERM: save and exit)
  python -m tpu_scripts.tpu delete  --name stiv --zone us-east5-a [--queued]

Every subcommand takes `--dry-run` (print the exact commands, run nothing) and
`--project`. Jobs run on all workers at once (`gcloud compute tpus tpu-vm ssh
--worker=all`), detached with `nohup`, logging to `~/stiv_logs/<job>.log` and writing their
pid to `~/stiv_logs/<job>.pid` (what `stop` signals). `STIV_DISTRIBUTED=1` makes every
worker call `jax.distributed.initialize()` (see `stiv_jax.parallel.initialize_distributed`).
Run directories must be one path that every worker sees: `install --bucket B` mounts
gs://B at /gcs/B on every worker with gcsfuse (which must be installed on the workers),
and `--workdir/--prompts/--out` take such paths; a gs:// URL is refused.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Sequence

REMOTE_DIR = "~/stiv_jax"  # where `install` unpacks the package on every worker
LOG_DIR = "~/stiv_logs"
TARBALL = "/tmp/stiv_jax_src.tar.gz"
DEFAULT_RUNTIME = {"v4": "tpu-ubuntu2204-base", "v5litepod": "v2-alpha-tpuv5-lite",
                   "v5p": "v2-alpha-tpuv5", "v6e": "v2-alpha-tpuv6e"}  # fmt: skip


def runtime_for(accelerator: str) -> str:
    """Default TPU VM software version for an accelerator type such as `v5p-32`."""
    family = accelerator.rsplit("-", 1)[0]
    if family not in DEFAULT_RUNTIME:
        raise ValueError(
            f"accelerator {accelerator!r}: unknown family {family!r}; expected one of "
            f"{sorted(DEFAULT_RUNTIME)} (or pass --version)"
        )
    return DEFAULT_RUNTIME[family]


def _common(a: argparse.Namespace) -> list[str]:
    out = [f"--zone={a.zone}"]
    if a.project:
        out.append(f"--project={a.project}")
    return out


def ssh(a: argparse.Namespace, command: str, worker: str = "all") -> list[str]:
    return [
        "gcloud", "compute", "tpus", "tpu-vm", "ssh", a.name, *_common(a),
        f"--worker={worker}", f"--command={command}",
    ]  # fmt: skip


def create_commands(a: argparse.Namespace) -> list[list[str]]:
    version = a.version or runtime_for(a.accelerator)
    if a.queued:
        cmd = [
            "gcloud", "compute", "tpus", "queued-resources", "create", a.queued_id or a.name,
            f"--node-id={a.name}", *_common(a), f"--accelerator-type={a.accelerator}",
            f"--runtime-version={version}",
        ]  # fmt: skip
        if a.spot:
            cmd.append("--spot")
        wait = [
            "gcloud", "compute", "tpus", "queued-resources", "describe", a.queued_id or a.name,
            *_common(a), "--format=value(state.state)",
        ]  # fmt: skip
        return [cmd, wait]
    cmd = [
        "gcloud", "compute", "tpus", "tpu-vm", "create", a.name, *_common(a),
        f"--accelerator-type={a.accelerator}", f"--version={version}",
    ]  # fmt: skip
    if a.spot:
        cmd.append("--spot")
    return [cmd]


# GCS bucket names: 3-63 of a-z 0-9 - _ . (up to 222 with dots), starting and ending with a
# letter or digit; `/gcs/<name>` is built from it, so nothing else may pass ("../../etc").
_BUCKET = re.compile(r"[a-z0-9][a-z0-9_.-]{1,220}[a-z0-9]")


def bucket_name(name: str) -> str:
    """`name` unchanged if it is a valid GCS bucket name, else a one-line ValueError."""
    if not _BUCKET.fullmatch(name) or ".." in name or ("." not in name and len(name) > 63):
        raise ValueError(
            f"--bucket {name!r} is not a GCS bucket name; expected 3-63 characters of a-z, 0-9, "
            "-, _, . starting and ending with a letter or digit (no gs://, no path)"
        )
    return name


def install_commands(a: argparse.Namespace) -> list[list[str]]:
    pack = ["git", "-C", a.source, "archive", "--format=tar.gz", f"--output={TARBALL}", "HEAD"]
    scp = [
        "gcloud", "compute", "tpus", "tpu-vm", "scp", TARBALL, f"{a.name}:{TARBALL}",
        *_common(a), "--worker=all",
    ]  # fmt: skip
    remote = (
        f"mkdir -p {REMOTE_DIR} {LOG_DIR} && tar -xzf {TARBALL} -C {REMOTE_DIR} && "
        f"cd {REMOTE_DIR} && python3 -m pip install -q -e '.[tpu]'"
    )
    if a.bucket:  # the same run directory on every worker (Orbax, metrics, videos)
        b = shlex.quote(bucket_name(a.bucket))
        remote += (
            f" && sudo mkdir -p /gcs/{b} && sudo chown $(id -u):$(id -g) /gcs/{b} && "
            f"(mountpoint -q /gcs/{b} || gcsfuse --implicit-dirs {b} /gcs/{b})"
        )
    return [pack, scp, ssh(a, remote)]


def _shared_path(path: str, flag: str) -> str:
    if "://" in path:
        raise ValueError(
            f"{flag} {path!r} is a URL; expected a path every worker sees, e.g. /gcs/BUCKET/... "
            "after `install --bucket BUCKET`"
        )
    return path


def job_command(job: str, module: str, args: Sequence[str]) -> str:
    """Remote shell line: detached job on every worker, log + pid under LOG_DIR."""
    py = shlex.join(["python3", "-m", module, *args])
    return (
        f"mkdir -p {LOG_DIR} && cd {REMOTE_DIR} && "
        f"STIV_DISTRIBUTED=1 nohup {py} > {LOG_DIR}/{job}.log 2>&1 < /dev/null & "
        f"echo $! > {LOG_DIR}/{job}.pid"
    )


def train_commands(a: argparse.Namespace) -> list[list[str]]:
    args = ["--config", a.config, "--workdir", _shared_path(a.workdir, "--workdir"), *a.extra]
    return [ssh(a, job_command("train", "stiv_jax.train", args))]


def sample_commands(a: argparse.Namespace) -> list[list[str]]:
    paths = {"--workdir": a.workdir, "--prompts": a.prompts, "--out": a.out}
    args = ["--config", a.config]
    for flag, path in paths.items():
        args += [flag, _shared_path(path, flag)]
    return [ssh(a, job_command("sample", "stiv_jax.sample", [*args, *a.extra]))]


def logs_commands(a: argparse.Namespace) -> list[list[str]]:
    return [ssh(a, f"tail -n 200 -F {LOG_DIR}/{a.job}.log", worker=a.worker)]


def stop_commands(a: argparse.Namespace) -> list[list[str]]:
    # SIGTERM, not SIGKILL: the trainer saves a checkpoint on every host and exits.
    return [ssh(a, f"kill -TERM $(cat {LOG_DIR}/{a.job}.pid) 2>/dev/null || true")]


def delete_commands(a: argparse.Namespace) -> list[list[str]]:
    if a.queued:
        return [[
            "gcloud", "compute", "tpus", "queued-resources", "delete", a.queued_id or a.name,
            *_common(a), "--force", "--quiet",
        ]]  # fmt: skip
    return [["gcloud", "compute", "tpus", "tpu-vm", "delete", a.name, *_common(a), "--quiet"]]


BUILDERS = {
    "create": create_commands,
    "install": install_commands,
    "train": train_commands,
    "sample": sample_commands,
    "logs": logs_commands,
    "stop": stop_commands,
    "delete": delete_commands,
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tpu_scripts.tpu", description=__doc__.split("\n")[0]
    )
    sub = p.add_subparsers(dest="action", required=True)
    for action in BUILDERS:
        s = sub.add_parser(action)
        s.add_argument("--name", required=True, help="TPU VM (node) name")
        s.add_argument("--zone", required=True, help="e.g. us-east5-a")
        s.add_argument("--project", default="", help="GCP project (default: gcloud's)")
        s.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
        if action in ("create", "delete"):
            s.add_argument("--queued", action="store_true", help="use a queued resource")
            s.add_argument("--queued-id", default="", help="queued resource id (default: name)")
        if action == "create":
            s.add_argument("--accelerator", required=True, help="e.g. v5p-32, v6e-16")
            s.add_argument("--version", default="", help="TPU VM runtime (default by family)")
            s.add_argument("--spot", action="store_true", help="spot capacity")
        if action == "install":
            here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
            s.add_argument("--source", default=here, help="git checkout to ship (HEAD)")
            s.add_argument("--bucket", default="", help="GCS bucket to mount at /gcs/BUCKET")
        if action in ("train", "sample"):
            s.add_argument("--config", required=True, help="configs/stiv.py:variant=...")
            s.add_argument("--workdir", required=True, help="run dir (/gcs/BUCKET/... on pods)")
        if action == "sample":
            s.add_argument("--prompts", required=True, help="prompts JSONL")
            s.add_argument("--out", required=True, help="output dir for videos")
        if action in ("logs", "stop"):
            s.add_argument("--job", default="train", choices=("train", "sample"))
        if action == "logs":
            s.add_argument("--worker", default="0", help="worker index, or all")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:  # everything after `--` goes to the remote program
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1 :]
    a = parser().parse_args(argv)
    a.extra = extra
    commands = BUILDERS[a.action](a)
    for cmd in commands:
        print(shlex.join(cmd), flush=True)
        if not a.dry_run:
            subprocess.run(cmd, check=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ValueError as e:  # bad flag values: one line, no traceback
        sys.exit(f"error: {e}")
