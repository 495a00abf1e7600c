"""One machine to many: which share of a stage's instances this process owns.

`accelerate launch` (or torchrun, or a SLURM job that calls either) starts one
process per device and hands each its rank in the environment (RANK,
WORLD_SIZE, LOCAL_RANK). A search then takes every WORLD_SIZE-th instance of
each family's seeded order from its RANK, on device LOCAL_RANK, writes its own
shard log (`<family>.shard<i>of<n>.jsonl`), and after a barrier rank 0 merges
the shard logs into the one resumable log. `--shard I/N` (job arrays without a
launcher) takes the same share through the same code, without the barrier:
its shard logs are read on resume and merged by `magictokens merge`.

    accelerate launch --multi_gpu --num_processes 8 -m magictokens.pipeline search --scale paper
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """(rank, world size) from a launcher's environment; (0, 1) when launched alone."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def launched() -> bool:
    """Started by a multi-process launcher (accelerate launch, torchrun)."""
    return world()[1] > 1


def local_device() -> str | None:
    """This process's GPU under a launcher (LOCAL_RANK, wrapped over the visible GPUs); None otherwise."""
    if "LOCAL_RANK" not in os.environ or not torch.cuda.is_available():
        return None
    return f"cuda:{int(os.environ['LOCAL_RANK']) % torch.cuda.device_count()}"


def barrier() -> None:
    """Wait for every process of the launch (the launcher's rendezvous).

    gloo, also on GPUs: the barrier moves no tensors, and several processes may
    share one GPU (which nccl refuses).
    """
    if not launched():
        return
    if not dist.is_initialized():
        dist.init_process_group("gloo")
    dist.barrier()


def shard_path(log: Path, i: int, n: int) -> Path:
    """<dir>/<family>.jsonl -> <dir>/<family>.shard<i>of<n>.jsonl"""
    return log.with_name(f"{log.stem}.shard{i}of{n}{log.suffix}")


def shard_logs(log: Path) -> list[Path]:
    """Every shard log beside `log`, of any world size."""
    return sorted(log.parent.glob(f"{log.stem}.shard*of*{log.suffix}"))


def merge(log: Path) -> int:
    """Append to `log` every shard row it lacks (by id and config hash), then delete the shard logs.

    Run it when no shard process is still writing (after the launch's barrier,
    or once a job array has finished). -> rows appended.
    """
    have = set()
    if log.exists():
        for line in log.read_text().splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue
            have.add((r.get("id"), r.get("config_hash")))
    new = []
    for s in shard_logs(log):
        for line in s.read_text().splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:     # a line cut by a crash: that instance is redone
                continue
            if (r.get("id"), r.get("config_hash")) not in have:
                have.add((r.get("id"), r.get("config_hash")))
                new.append(line)
    if new:
        with open(log, "a") as f:
            f.write("".join(line + "\n" for line in new))
            f.flush()
            os.fsync(f.fileno())
    for s in shard_logs(log):
        s.unlink()
    return len(new)
