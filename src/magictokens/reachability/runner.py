"""Paper A's resumable search runner: every instance of every family through a
back-off search, one JSONL row per finished instance.

Each instance runs `method: fast` (controllers/fast.py, the CPU method of
record) or `method: paper` (controllers/backoff.py, the authors' Algorithm 1
and budget, for a GPU); its row is appended to
`instances/reachability/<method>/<family>.jsonl` as soon as it finishes, so a
rerun resumes. Each instance searches with its own seed (`instance_seed`).
Row format and resume keys (`resume_header`) are stable: committed rows of a
long run must resume under later code (tests/test_reachability.py).

Every sequence scored is [special prefix] + u + x0: the special tokens the
tokenizer puts before any text by default (`instances.special_prefix`,
Gemma-3's <bos>) stay in front of the control prompt u, since a model trained
with <bos> first is out of distribution without it. SmolLM2 has none, and a
run without one writes the rows and resume headers it always wrote; a run
with one keys (and records) its `prefix_ids`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import os
import random
import time
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..controllers import greedy
from ..distributed import merge_after_launch, own_share, share_logs
from ..models import dtype_of, fingerprint
from ..results import InstanceLog
from .instances import Instance, special_prefix


def instance_seed(seed: int, instance_id: str) -> int:
    """Each instance's own search seed: a hash of the run seed and its id (stable across runs and shards)."""
    return int(hashlib.sha256(f"{seed}:{instance_id}".encode()).hexdigest()[:8], 16)


def log_dir(out_dir: str | Path, method: str) -> Path:
    """Where a method's per-instance rows live: <results>/instances/reachability/<method>/."""
    return Path(out_dir) / "instances" / "reachability" / method


def resume_header(config, seed: int, weights: str, prefix_ids=()) -> dict:
    """What keys a finished row (`InstanceLog`): the method and its budget, the seed, the weights.

    Batch sizes are left out (`resume_key`): they only chunk the candidates of
    a step into forwards, so they change speed and memory, not the search. A
    GPU run at 8192 candidates per forward thus resumes rows a CPU run made at
    256 (each row still records its own batch sizes, beside its timings).
    The method's part comes from the config (`FastConfig.resume_entry`,
    `BackoffConfig.resume_entry`); key order is kept, though the hash sorts keys.
    `prefix_ids` (the tokenizer's special prefix, `special_prefix`) keys rows
    only when there is one: without it (SmolLM2) the header is the one every
    committed row was written under.
    """
    header = {**config.resume_entry(), "seed": seed, "seeding": "per_instance", "weights": weights}
    return {**header, "prefix_ids": [int(t) for t in prefix_ids]} if len(prefix_ids) else header


def batch_sizes_of(config) -> dict:
    """Candidates per forward of each part of the search (`config.batch_sizes()`), recorded in every row."""
    return config.batch_sizes()


def run_families(families: dict[str, list[Instance]], search_model, tokenizer, config,
                 log_dir: str | Path, verify_model=None, seed: int = 0,
                 deadline: float | None = None, shard: tuple[int, int] | None = None) -> dict[str, list[dict]]:
    """Back-off search on every instance not yet in its family's log (`log_dir/<family>.jsonl`).

    `config`: a `fast.FastConfig` (fast search) or a `backoff.BackoffConfig`
    (the authors' Algorithm 1). -> {family: finished rows, in instance order}.
    Families are interleaved round-robin, each in a seeded random order, so a
    run cut by `deadline` (a time.time() value: start no new instance after it,
    e.g. one time-limited GPU call) has finished a random subset of *every*
    family, not all of the first family and none of the rest; the next run
    resumes.

    `shard=(i, n)`: search only every n-th instance of each family's seeded
    order, starting at i; by default the launcher's (rank, world size)
    (`accelerate launch`, torchrun: `distributed.world`), else (0, 1). With
    n > 1 a process writes `<family>.shard<i>of<n>.jsonl` beside the family's
    log and counts every log there as finished, so any mix of single-process,
    `--shard` and launched runs resumes one set of rows; a launched run merges
    them into `<family>.jsonl` when all its processes are done (rank 0, after a
    barrier), a `--shard` job array with `magictokens merge`. Rows record n:
    their seconds are shared-device timings when n processes share a device.

    Every search scores [special prefix] + u + x0 (`special_prefix(tokenizer)`:
    Gemma-3's [<bos>], SmolLM2's []); a non-empty prefix is part of the resume
    header and of every row (`prefix_ids`), an empty one of neither.
    """
    weights = fingerprint(verify_model if verify_model is not None else search_model)
    prefix = special_prefix(tokenizer)
    header = resume_header(config, seed, weights, prefix)
    batch_sizes = batch_sizes_of(config)
    search_dtype = dtype_of(search_model)   # rows say which: a resumed run keeps it (results.resume_dtype)
    i_shard, n_shards = own_share(shard)
    main = {name: Path(log_dir) / f"{name}.jsonl" for name in families}
    logs = {}
    for name in families:
        path, finished_logs = share_logs(main[name], i_shard, n_shards)
        logs[name] = InstanceLog(path, header, read_also=finished_logs)

    def finished(name: str, x: Instance) -> bool:  # same id *and* same content (N or seed may have changed)
        row = logs[name].rows.get(x.id)
        return row is not None and row["x0_ids"] == list(x.x0_ids) and row["target_id"] == x.target_id

    todo = {}
    for name, insts in families.items():
        # results do not depend on the order; a cut run's finished set does. The order is
        # fixed by the seed alone, so a shard holds the same instances in every call.
        order = list(insts)
        random.Random(f"order-{seed}").shuffle(order)
        todo[name] = [(name, x) for x in order[i_shard::n_shards] if not finished(name, x)]
    queue = [job for group in itertools.zip_longest(*todo.values()) for job in group if job is not None]

    # Whole-vocabulary greedy: the k=1 sweep of an x0 scores every target of that x0 at
    # once (top-75: 75 targets, uniform rank: 185), computed when the first of them needs it.
    targets_of: dict[tuple, list[int]] = {}
    for _, x in queue:
        targets_of.setdefault(tuple(x.x0_ids), []).append(x.target_id)
    sweeps: dict[tuple, dict] = {}

    def first_step(x: Instance):
        key = tuple(x.x0_ids)
        if key in sweeps:   # reused: its cost was counted by the instance that ran it
            return dataclasses.replace(sweeps[key][x.target_id], n_scored=0, seconds=0.0)
        sweeps[key] = greedy.shared_first_steps(search_model, tokenizer, x.x0_ids, targets_of[key], config.greedy,
                                                prefix_ids=prefix)
        return sweeps[key][x.target_id]

    share = config.shares_first_step
    for name, x in tqdm(queue, desc="back-off: " + ", ".join(families), unit="inst", disable=not queue):
        if deadline is not None and time.time() > deadline:
            break
        x_seed = instance_seed(seed, x.id)
        shared = share and len(targets_of[tuple(x.x0_ids)]) > 1
        r = config.search(search_model, tokenizer, x.x0_ids, x.target_id, verify_model=verify_model, seed=x_seed,
                          prefix_ids=prefix, **({"first_step": lambda x=x: first_step(x)} if shared else {}))
        logs[name].add(x.id, {"kind": x.kind, "x0_ids": list(x.x0_ids), "target_id": x.target_id, "meta": x.meta,
                              **asdict(r), "instance_seed": x_seed, **({"prefix_ids": prefix} if prefix else {}),
                              # timings depend on what else the machine ran: keep the load beside them
                              "load_avg_1min": os.getloadavg()[0], "shards": n_shards, "batch_sizes": batch_sizes,
                              "threads": torch.get_num_threads(), "search_dtype": search_dtype})
    if merge_after_launch(main.values(), shard):      # every process of the launch is done: one log per family
        logs = {name: InstanceLog(main[name], header) for name in families}
    return {name: [logs[name].rows[x.id] for x in insts if finished(name, x)] for name, insts in families.items()}


def run_instances(instances: list[Instance], search_model, tokenizer, config,
                  log_path: str | Path, verify_model=None, seed: int = 0, deadline: float | None = None) -> list[dict]:
    """One family: `run_families` with the log at `log_path`."""
    log_path = Path(log_path)
    return run_families({log_path.stem: instances}, search_model, tokenizer, config, log_path.parent,
                        verify_model=verify_model, seed=seed, deadline=deadline)[log_path.stem]
