"""What a bare `dvc repro` costs at a scale, from the times the stages recorded (never typed).

Per stage, the compute its committed result records:

- reachability: the sum of `seconds` over the instance rows of the method in
  use (`instances/reachability/<method>/*.jsonl`): every search and k = 0 check;
- theorem: `meta.runtime_s`;
- cotraining: `seconds_total` (self-distillation, three trainings, evaluation);
- mode_reachability: the sum of `seconds` over the rows of today's placements
  and search (`instances/mode_reachability/<placement>/<search>/*.jsonl`).

Model loading, notebook start-up and figure drawing are left out (seconds per
stage), so the sum is a floor of the wall time, labelled as such. The wall time
itself is `benchmarks/repro_time.py` (results/bench/repro_time.json): every
stage rerun from an empty results/default/, timed on the clock; its line says
when params.yaml's default has changed since it was measured.
"""
from __future__ import annotations

import json
from pathlib import Path

import hashlib

import yaml

from .common import _load

TARGET_MIN = 20.0   # issue 14: a bare `dvc repro` under 20 minutes on the 2-core CPU (issue 16: 30)


def _row_seconds(paths) -> tuple[float, int]:
    """Seconds summed over the rows of JSONL logs, read as `results.InstanceLog` reads them: per file the
    last row of each id counts (a rerun or a re-searched skipped prompt appends a new row), a line cut by a
    crash is skipped, header lines carry no time."""
    total, n = 0.0, 0
    for p in paths:
        rows: dict = {}
        for line in p.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and "seconds" in row:
                rows[row.get("id", len(rows))] = float(row["seconds"])
        total, n = total + sum(rows.values()), n + len(rows)
    return total, n


def stage_seconds(scale: str, root: Path) -> dict[str, dict]:
    """stage -> {"seconds": recorded compute, "what": where it was read, "threads": ...}; stages not run are absent."""
    out: dict[str, dict] = {}
    base = root / "results" / scale
    if (r := _load(scale, "reachability", root)) is not None:
        method = r["meta"].get("method", "backoff")
        s, n = _row_seconds(sorted((base / "instances" / "reachability" / method).glob("*.jsonl")))
        out["reachability"] = {"seconds": s, "what": f"{n} instance rows ({method})"}
    if (t := _load(scale, "theorem", root)) is not None and "runtime_s" in t["meta"]:
        out["theorem"] = {"seconds": float(t["meta"]["runtime_s"]), "what": "runtime_s"}
    if (c := _load(scale, "cotraining", root)) is not None and "seconds_total" in c:
        out["cotraining"] = {"seconds": float(c["seconds_total"]), "what": "seconds_total",
                             "threads": c["meta"].get("threads")}
    if (m := _load(scale, "mode_reachability", root)) is not None and "search" in m["meta"]:
        dirs = [base / "instances" / "mode_reachability" / p / m["meta"]["search"] for p in m["meta"]["placements"]]
        s, n = _row_seconds(sorted(f for d in dirs for f in d.glob("*.jsonl")))
        out["mode_reachability"] = {"seconds": s, "what": f"{n} search rows" + (", a partial run" if m.get("partial") else ""),
                                    "threads": m["meta"].get("threads")}
    return out


def default_params_hash(root: Path) -> str | None:
    """sha256 (12 hex) of params.yaml's `default` section (benchmarks/repro_time.py records the same)."""
    p = root / "params.yaml"
    if not p.exists():
        return None
    raw = yaml.safe_load(p.read_text())["default"]
    return hashlib.sha256(json.dumps(raw, sort_keys=True).encode()).hexdigest()[:12]


def _verdict(total: float, target_min: float) -> str:
    return (f"under the {target_min:.0f}-minute target" if total <= target_min else
            f"the {target_min:.0f}-minute target is missed by {total - target_min:.1f} min")


def render_measured_repro(root: Path, target_min: float = TARGET_MIN) -> list[str]:
    """One README line from results/bench/repro_time.json: the measured wall time of a bare `dvc repro`."""
    p = root / "results" / "bench" / "repro_time.json"
    if not p.exists():
        return []
    b = json.loads(p.read_text())
    m, total = b["meta"], b["total_s"] / 60
    now = default_params_hash(root)
    stale = ("" if now is None or now == m.get("default_params") else
             " **Stale**: params.yaml's default has changed since (rerun `python benchmarks/repro_time.py --from-scratch`).")
    load = m.get("load_avg_1min") or [float("nan")]
    return [f"**A bare `dvc repro` from scratch, measured** (`benchmarks/repro_time.py --from-scratch`: "
            f"results/default/ deleted, every stage rerun, wall clock; {m['device']}, {m['threads']} threads, "
            f"1-min load {min(load):.1f}-{max(load):.1f}, git {m['versions'].get('git')}, {m.get('date')}): "
            + ", ".join(f"{k} {v / 60:.1f} min" for k, v in b["stages_s"].items())
            + f"; total **{total:.1f} min**: {_verdict(total, target_min)}.{stale}", ""]


def render_repro_time(root: Path, scale: str = "default", target_min: float = TARGET_MIN) -> list[str]:
    """README lines: the measured wall time (if recorded), then the recorded compute of each stage and their sum."""
    st = stage_seconds(scale, root)
    measured = render_measured_repro(root, target_min) if scale == "default" else []
    if not st:
        return measured
    total = sum(v["seconds"] for v in st.values()) / 60
    missing = [s for s in ("reachability", "theorem", "cotraining", "mode_reachability") if s not in st]
    verdict = _verdict(total, target_min) if total > target_min or not missing else "incomplete"
    return measured + [f"**What a bare `dvc repro` costs ({scale} scale)**, from the compute each committed stage recorded "
            "(a floor: model loads, notebook start-up and figures are left out): "
            + ", ".join(f"{k} {v['seconds'] / 60:.1f} min ({v['what']}"
                        + (f", {v['threads']} threads" if v.get("threads") else "") + ")" for k, v in st.items())
            + f"; total {total:.1f} min: {verdict}"
            + (f" (not yet run in today's form: {', '.join(missing)})" if missing else "") + ".", ""]
