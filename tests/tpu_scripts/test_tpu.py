"""tpu_scripts.tpu: every subcommand's --dry-run prints the exact gcloud commands."""

from __future__ import annotations

import shlex
import subprocess
import sys

import pytest

from tpu_scripts import tpu

BASE = ["--name", "stiv", "--zone", "us-east5-a", "--project", "proj", "--dry-run"]
Z = "--zone=us-east5-a --project=proj"


def _printed(capsys, *argv) -> list[str]:
    assert tpu.main(list(argv)) == 0
    return capsys.readouterr().out.strip().splitlines()


def test_create_tpu_vm_and_queued_resource(capsys):
    assert _printed(capsys, "create", *BASE, "--accelerator", "v5p-32") == [
        f"gcloud compute tpus tpu-vm create stiv {Z} --accelerator-type=v5p-32 "
        "--version=v2-alpha-tpuv5"
    ]
    out = _printed(capsys, "create", *BASE, "--accelerator", "v6e-16", "--queued", "--spot")
    assert out == [
        f"gcloud compute tpus queued-resources create stiv --node-id=stiv {Z} "
        "--accelerator-type=v6e-16 --runtime-version=v2-alpha-tpuv6e --spot",
        f"gcloud compute tpus queued-resources describe stiv {Z} '--format=value(state.state)'",
    ]
    with pytest.raises(ValueError, match="unknown family 'v9'"):
        tpu.main(["create", *BASE, "--accelerator", "v9-8"])


def test_install_ships_the_checkout_to_all_workers(capsys):
    out = _printed(capsys, "install", *BASE, "--source", "/src")
    assert out[0] == "git -C /src archive --format=tar.gz --output=/tmp/stiv_jax_src.tar.gz HEAD"
    assert out[1] == (
        "gcloud compute tpus tpu-vm scp /tmp/stiv_jax_src.tar.gz stiv:/tmp/stiv_jax_src.tar.gz "
        f"{Z} --worker=all"
    )
    ssh = shlex.split(out[2])
    assert ssh[:9] == [
        "gcloud",
        "compute",
        "tpus",
        "tpu-vm",
        "ssh",
        "stiv",
        *Z.split(),
        "--worker=all",
    ]
    assert ssh[9] == (
        "--command=mkdir -p ~/stiv_jax ~/stiv_logs && tar -xzf /tmp/stiv_jax_src.tar.gz "
        "-C ~/stiv_jax && cd ~/stiv_jax && python3 -m pip install -q -e '.[tpu]'"
    )
    out = _printed(capsys, "install", *BASE, "--source", "/src", "--bucket", "my-bkt")
    assert shlex.split(out[2])[9].endswith(
        "'.[tpu]' && sudo mkdir -p /gcs/my-bkt && sudo chown $(id -u):$(id -g) /gcs/my-bkt && "
        "(mountpoint -q /gcs/my-bkt || gcsfuse --implicit-dirs my-bkt /gcs/my-bkt)"
    )


def test_train_and_sample_launch_on_all_workers(capsys):
    out = _printed(
        capsys, "train", *BASE, "--config", "configs/stiv.py:variant=XL/2,res=256",
        "--workdir", "/gcs/b/run", "--", "--config.train.steps=10",
    )  # fmt: skip
    (cmd,) = out
    args = shlex.split(cmd)
    assert args[:9] == [
        "gcloud",
        "compute",
        "tpus",
        "tpu-vm",
        "ssh",
        "stiv",
        *Z.split(),
        "--worker=all",
    ]
    assert args[9] == (
        "--command=mkdir -p ~/stiv_logs && cd ~/stiv_jax && STIV_DISTRIBUTED=1 nohup python3 -m "
        "stiv_jax.train --config configs/stiv.py:variant=XL/2,res=256 --workdir /gcs/b/run "
        "--config.train.steps=10 > ~/stiv_logs/train.log 2>&1 < /dev/null & "
        "echo $! > ~/stiv_logs/train.pid"
    )
    (cmd,) = _printed(
        capsys, "sample", *BASE, "--config", "c.py:variant=S", "--workdir", "w",
        "--prompts", "p.jsonl", "--out", "o",
    )  # fmt: skip
    assert (
        "nohup python3 -m stiv_jax.sample --config c.py:variant=S --workdir w --prompts p.jsonl --out o > ~/stiv_logs/sample.log"
        in cmd
    )


def test_url_run_paths_are_refused():
    with pytest.raises(ValueError, match="--workdir 'gs://b/run' is a URL; expected a path"):
        tpu.main(["train", *BASE, "--config", "c.py", "--workdir", "gs://b/run"])
    with pytest.raises(ValueError, match="--out 'gs://b/o' is a URL"):
        tpu.main(["sample", *BASE, "--config", "c.py", "--workdir", "w", "--prompts", "p",
                  "--out", "gs://b/o"])  # fmt: skip


def test_logs_stop_delete(capsys):
    assert _printed(capsys, "logs", *BASE) == [
        f"gcloud compute tpus tpu-vm ssh stiv {Z} --worker=0 "
        "'--command=tail -n 200 -F ~/stiv_logs/train.log'"
    ]
    assert _printed(capsys, "stop", *BASE) == [
        f"gcloud compute tpus tpu-vm ssh stiv {Z} --worker=all "
        "'--command=kill -TERM $(cat ~/stiv_logs/train.pid) 2>/dev/null || true'"
    ]
    assert _printed(capsys, "delete", *BASE) == [
        f"gcloud compute tpus tpu-vm delete stiv {Z} --quiet"
    ]
    assert _printed(capsys, "delete", *BASE, "--queued") == [
        f"gcloud compute tpus queued-resources delete stiv {Z} --force --quiet"
    ]


def test_cli_entry_point_dry_run():
    out = subprocess.run(
        [sys.executable, "-m", "tpu_scripts.tpu", "delete", *BASE],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert out.stdout.strip() == f"gcloud compute tpus tpu-vm delete stiv {Z} --quiet"
