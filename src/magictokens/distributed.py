"""One machine to many: which share of a stage's work this process owns.

`accelerate launch` (or torchrun, or a SLURM job that calls either) starts one
process per device and hands each its rank in the environment (RANK,
WORLD_SIZE, LOCAL_RANK). A search then takes every WORLD_SIZE-th instance (or
prompt) from its RANK, on device LOCAL_RANK, writes its own shard log
(`<name>.shard<i>of<n>.jsonl`), and after a barrier rank 0 merges the shard
logs into the one resumable log (`merge_after_launch`). `--shard I/N` (job
arrays without a launcher) takes the same share through the same code,
without the barrier: its shard logs are read on resume and merged by
`magictokens merge`. Generation over many prompts (paper B's evaluations)
goes through `map_ranks`: each process runs its slice, every process gets
the whole answer back in order.

    accelerate launch --multi_gpu --num_processes 8 -m magictokens.pipeline search --scale paper
"""
from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path
from typing import Callable, Iterable

import torch
import torch.distributed as dist

from .errors import MagicTokensError

# a process may wait at a barrier for hours (another's share, rank 0's training); torch's default
# is 30 minutes. A process that dies ends the launch anyway: the launcher stops the others.
TIMEOUT = timedelta(hours=24)


def world() -> tuple[int, int]:
    """(rank, world size) from a launcher's environment; (0, 1) when launched alone."""
    rank, size = os.environ.get("RANK"), os.environ.get("WORLD_SIZE")
    if rank is None and size is None:
        return 0, 1
    try:
        r, n = int(rank), int(size)
    except (TypeError, ValueError):
        r, n = -1, 0
    if not 0 <= r < n:
        raise MagicTokensError(f"RANK={rank!r}, WORLD_SIZE={size!r}: a launcher sets both (0 <= RANK < WORLD_SIZE); "
                               f"unset both to run one process, or start it with `accelerate launch`")
    return r, n


def launched() -> bool:
    """Started by a multi-process launcher (accelerate launch, torchrun)."""
    return world()[1] > 1


def local_device() -> str | None:
    """This process's GPU under a launcher (LOCAL_RANK, wrapped over the visible GPUs); None otherwise."""
    if "LOCAL_RANK" not in os.environ or not torch.cuda.is_available():
        return None
    return f"cuda:{int(os.environ['LOCAL_RANK']) % torch.cuda.device_count()}"


def _join() -> None:
    """The launch's process group, joined once (the launcher's rendezvous).

    gloo, also on GPUs: what moves is small Python objects and weights staged
    on the CPU, and several processes may share one GPU (which nccl refuses).
    """
    if not dist.is_initialized():
        dist.init_process_group("gloo", timeout=TIMEOUT)


def barrier() -> None:
    """Wait for every process of the launch."""
    if launched():
        _join()
        dist.barrier()


def own_share(shard: tuple[int, int] | None = None) -> tuple[int, int]:
    """(i, n): this process takes items i, i + n, i + 2n, ...: `shard` (`--shard I/N`) or (rank, world size)."""
    i, n = shard or world()
    if not 0 <= i < n:
        raise MagicTokensError(f"shard {i}/{n}: want 0 <= i < n")
    return i, n


def shard_path(log: Path, i: int, n: int) -> Path:
    """<dir>/<family>.jsonl -> <dir>/<family>.shard<i>of<n>.jsonl"""
    return log.with_name(f"{log.stem}.shard{i}of{n}{log.suffix}")


def shard_logs(log: Path) -> list[Path]:
    """Every shard log beside `log`, of any world size."""
    return sorted(log.parent.glob(f"{log.stem}.shard*of*{log.suffix}"))


def share_logs(log: Path, i: int, n: int) -> tuple[Path, list[Path]]:
    """(where share i of n writes: `log` itself when alone, else its shard log;
    the logs whose rows count as finished: `log` and every shard log beside it, of any run)."""
    log = Path(log)
    return (log if n == 1 else shard_path(log, i, n)), [log, *shard_logs(log)]


def merge(log: Path) -> int:
    """Append to `log` every shard row it lacks, then delete the shard logs.

    A row is skipped only when the very same line is already in `log` (a merge
    cut before its deletes): a shard row that redid an instance whose logged
    row no longer fits (same id, other content) is kept, and, coming later,
    wins on resume. Run it when no shard process is still writing (after the
    launch's barrier, or once a job array has finished). -> rows appended.
    """
    have = set(log.read_text().splitlines()) if log.exists() else set()
    new = []
    for s in shard_logs(log):
        for line in s.read_text().splitlines():
            try:
                json.loads(line)
            except json.JSONDecodeError:     # a line cut by a crash: that instance is redone
                continue
            if line not in have:
                have.add(line)
                new.append(line)
    if new:
        with open(log, "a") as f:
            f.write("".join(line + "\n" for line in new))
            f.flush()
            os.fsync(f.fileno())
    for s in shard_logs(log):
        s.unlink()
    return len(new)


def merge_after_launch(logs: Iterable[Path], shard: tuple[int, int] | None = None) -> bool:
    """Under a launch (no `--shard`): wait for every process, rank 0 merges each log's shard logs, wait again.

    -> True when merged: every process may then read the whole of each log.
    """
    if shard is not None or not launched():
        return False
    barrier()
    if world()[0] == 0:
        for log in logs:
            merge(Path(log))
    barrier()
    return True


def map_ranks(fn: Callable[[list], Iterable], items: list, chunk: int = 1) -> list:
    """fn(items) as a list, each process of a launch computing a slice; every process gets it all, in order.

    `fn` maps a list to one output per item (generated replies, logit rows).
    Chunks of `chunk` consecutive items are dealt round-robin over the ranks;
    with `chunk` = the batch size `fn` cuts its list into, every batch a
    process forms is one the single process forms (same rows, same padding),
    so the outputs are the single process's. Alone: just fn(items).
    Every process of the launch must make the same calls in the same order.
    """
    rank, n = world()
    if n == 1:
        return list(fn(items))
    starts = range(0, len(items), chunk)
    mine = [j for s in starts[rank::n] for j in range(s, min(s + chunk, len(items)))]
    out = list(fn([items[j] for j in mine])) if mine else []
    if len(out) != len(mine):
        raise ValueError(f"map_ranks: fn gave {len(out)} outputs for {len(mine)} items")
    _join()
    parts: list = [None] * n
    dist.all_gather_object(parts, (mine, out))
    merged: list = [None] * len(items)
    for idx, vals in parts:
        for j, v in zip(idx, vals):
            merged[j] = v
    return merged


@torch.no_grad()
def from_rank0(model):
    """Rank 0's weights into `model` (the same architecture) on every process of a launch; -> model.

    For a model that rank 0 alone trained: each tensor goes out through the
    CPU (gloo), so every process holds bit for bit the weights rank 0 does.
    """
    if launched():
        _join()
        for t in model.state_dict().values():
            buf = t.detach().cpu().contiguous()
            dist.broadcast(buf, src=0)
            t.copy_(buf)
    return model
