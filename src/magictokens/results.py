"""Where results go, what they record, and resumable per-instance files.

Scales write to ``results/<scale>/``; figures of the ``paper`` scale go to
``paper_figures/<stage>/`` (committed, citable), other scales to
``results/<scale>/figures/<stage>/``; running the default never touches
paper-scale outputs. Every JSON carries ``meta``: model, device, seed,
scale and package versions, so each number can be traced to its run.
Floats are saved to ``SIGNIFICANT`` significant digits (`rounded`): a rerun
that only moves the 16th digit leaves the files as they are.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import math
import numbers
import os
import platform
import subprocess
from pathlib import Path

import torch
from pydantic import TypeAdapter

from . import __version__
from .config import REPO_ROOT
from .errors import MagicTokensError
from .hardware import AUTO, hardware_meta

LEGACY_SEARCH_DTYPE = "bfloat16"   # rows written before rows named their dtype: all searched in the bf16 default

SIGNIFICANT = 6  # digits kept of every float in a results JSON: far above what a stage's numbers resolve


def results_dir(scale: str, root: str | Path | None = None) -> Path:
    d = Path(root or REPO_ROOT) / "results" / scale
    d.mkdir(parents=True, exist_ok=True)
    return d


def figures_dir(scale: str, stage: str, root: str | Path | None = None) -> Path:
    """paper scale -> paper_figures/<stage>/; others -> results/<scale>/figures/<stage>/."""
    root = Path(root or REPO_ROOT)
    d = (root / "paper_figures" if scale == "paper" else root / "results" / scale / "figures") / stage
    d.mkdir(parents=True, exist_ok=True)
    return d


def versions() -> dict:
    out = {"python": platform.python_version(), "torch": torch.__version__,
           "transformers": importlib.metadata.version("transformers")}   # no import of transformers: seconds
    try:
        out["magictokens"] = __version__
        out["git"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT,
                                    capture_output=True, text=True, timeout=5).stdout.strip() or None
    except Exception:  # not a git checkout: fine
        out["git"] = None
    return out


def device_name(device) -> str:
    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return f"cpu ({os.cpu_count()} cores, {platform.processor() or platform.machine()})"


def run_meta(model: str, device, seed: int, scale: str, **extra) -> dict:
    """What every result records of its run; `hardware`: the CPU's capability and the dtype 'auto' chose."""
    return {"model": model, "device": device_name(device), "seed": seed, "scale": scale,
            "versions": versions(), "hardware": hardware_meta(device), **extra}


def rounded(obj, digits: int = SIGNIFICANT):
    """A copy of a JSON-able value with every float cut to `digits` significant digits.

    Dicts (keys kept as they are), lists and tuples are walked; ints, bools,
    strings and None come back untouched, as do nan and +-inf; numpy integers
    become ints. Any other number (a numpy float, a 0-d tensor) goes through
    ``float`` first, as ``json.dumps(default=float)`` would have written it.
    """
    if obj is None or isinstance(obj, (str, bool)):
        return obj
    if type(obj).__name__ == "bool_":   # numpy's bool is neither a bool nor an Integral: keep it a bool
        return bool(obj)
    if isinstance(obj, numbers.Integral):
        return int(obj)
    if isinstance(obj, dict):
        return {k: rounded(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [rounded(v, digits) for v in obj]
    x = float(obj)
    return float(f"{x:.{digits}g}") if math.isfinite(x) else x


def write_json(path: str | Path, obj) -> Path:
    """Write atomically (tmp + rename): a crash never leaves half a metrics file. Floats `rounded`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(rounded(obj), indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)
    return path


def config_hash(obj) -> str:
    """Stable short hash of a JSON-able config: resumed rows must match it."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


class InstanceLog:
    """Append-only JSONL of finished instances, keyed by (config hash, instance id).

    A rerun with the same config skips what is already there; a crash loses at
    most the instance in flight (each line is flushed and fsynced).
    """

    def __init__(self, path: str | Path, config: dict, read_also=()):
        """`read_also`: other logs of the same run (shard logs) whose rows count as finished too."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.hash = config_hash(config)
        self.rows: dict[str, dict] = {}
        for p in [*read_also, self.path]:
            if not Path(p).exists():
                continue
            for line in Path(p).read_text().splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:  # a line cut by a crash: redo that instance
                    continue
                if row.get("config_hash") == self.hash:
                    self.rows[row["id"]] = row

    def done(self, instance_id: str) -> bool:
        return instance_id in self.rows

    def add(self, instance_id: str, row: dict) -> dict:
        row = {"id": instance_id, "config_hash": self.hash, **row}
        with open(self.path, "a") as f:
            f.write(json.dumps(row, default=float) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.rows[instance_id] = row
        return row


def recorded_search_dtype(paths, headers) -> str | None:
    """The search dtype that finished rows say they were made in, or None where no row finished.

    Reads every log in `paths` and its shard logs (`<stem>.shard*.jsonl`),
    keeping the rows whose config hash is one of `headers`' (`InstanceLog`'s
    resume keys, which leave the dtype out). Rows from before rows named their
    dtype were searched in `LEGACY_SEARCH_DTYPE`. Mixed dtypes (an explicit
    override once): the most common one.
    """
    seen: dict[str, int] = {}
    for path in map(Path, paths):
        shards = sorted(path.parent.glob(f"{path.stem}.shard*.jsonl"))
        for h in headers:   # read as a resume reads them: InstanceLog keeps the rows of its header's hash
            for row in InstanceLog(path, h, read_also=shards).rows.values():
                d = row.get("search_dtype", LEGACY_SEARCH_DTYPE)
                seen[d] = seen.get(d, 0) + 1
    return max(seen, key=seen.get) if seen else None


def resume_dtype(requested: str | None, recorded: str | None) -> str:
    """The search dtype of a (resumed) run: an explicit value wins; 'auto' keeps what finished rows were
    made in, so a run of record resumed on other hardware stays one run; else 'auto' (the hardware's)."""
    if requested not in (None, AUTO):
        return requested
    return recorded or AUTO


def read_stage_json(out_dir: str | Path, stage: str) -> dict:
    """results/<scale>/<stage>.json as a dict; one clear error if the stage never ran there."""
    path = Path(out_dir) / f"{stage}.json"
    if not path.exists():
        raise MagicTokensError(f"{path} not found: run `magictokens run {stage}` first")
    return json.loads(path.read_text())


def as_result(cls, d: dict):
    """A stage's result dataclass from its JSON dict: keys it does not know are dropped, the rest validated
    by type (pydantic), so a committed file that no longer fits its schema fails loudly."""
    names = {f.name for f in dataclasses.fields(cls)}
    return TypeAdapter(cls).validate_python({k: v for k, v in d.items() if k in names})
