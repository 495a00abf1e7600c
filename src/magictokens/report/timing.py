"""What a bare `dvc repro` costs at a scale, from the times the stages recorded (never typed).

Per stage, the compute its committed result records:

- reachability: the sum of `seconds` over the instance rows of the method in
  use (`instances/reachability/<method>/*.jsonl`): every search and k = 0 check;
- theorem: `meta.runtime_s`;
- cotraining: `seconds_total` (self-distillation, three trainings, evaluation);
- mode_reachability: the sum of `seconds` over the rows of today's placements
  and search (`instances/mode_reachability/<placement>/<search>/*.jsonl`).

Model loading, notebook start-up and figure drawing are left out (seconds per
stage), so the sum is a floor of the wall time, labelled as such.
"""
from __future__ import annotations

import json
from pathlib import Path

from .common import _load


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


def render_repro_time(root: Path, scale: str = "default", target_min: float = 30.0) -> list[str]:
    """One README line: the recorded compute of each stage of `dvc repro` at `scale` and their sum vs the target."""
    st = stage_seconds(scale, root)
    if not st:
        return []
    total = sum(v["seconds"] for v in st.values()) / 60
    missing = [s for s in ("reachability", "theorem", "cotraining", "mode_reachability") if s not in st]
    verdict = (f"under the {target_min:.0f}-minute target" if total <= target_min and not missing else
               f"the {target_min:.0f}-minute target is missed by {total - target_min:.0f} min" if total > target_min
               else "incomplete")
    return [f"**What a bare `dvc repro` costs ({scale} scale)**, from the compute each committed stage recorded "
            "(a floor: model loads, notebook start-up and figures are left out): "
            + ", ".join(f"{k} {v['seconds'] / 60:.1f} min ({v['what']}"
                        + (f", {v['threads']} threads" if v.get("threads") else "") + ")" for k, v in st.items())
            + f"; total {total:.1f} min: {verdict}"
            + (f" (not yet run in today's form: {', '.join(missing)})" if missing else "") + ".", ""]
