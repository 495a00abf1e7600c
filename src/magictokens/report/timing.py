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

from ..config import default_params_hash   # in config so benchmarks/repro_time.py can record it without importing Report
from .common import _load

TARGET_MIN = 20.0   # issue 14: a bare `dvc repro` under 20 minutes on the 2-core CPU (issue 16: 30)
TARGET_MIN_BY_KIND = {"AVX2-only": 40.0}   # issue 30: bf16 emulated there, fp32 used: 40 minutes


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
    """stage -> {"seconds": recorded compute, "what": where it was read, "threads": ..., "kind": the CPU kind
    (`cpu_kind`) its result was made on}; stages not run are absent."""
    out: dict[str, dict] = {}
    base = root / "results" / scale
    if (r := _load(scale, "reachability", root)) is not None:
        method = r["meta"].get("method", "backoff")
        s, n = _row_seconds(sorted((base / "instances" / "reachability" / method).glob("*.jsonl")))
        out["reachability"] = {"seconds": s, "what": f"{n} instance rows ({method})", "kind": cpu_kind(r["meta"])}
    if (t := _load(scale, "theorem", root)) is not None and "runtime_s" in t["meta"]:
        out["theorem"] = {"seconds": float(t["meta"]["runtime_s"]), "what": "runtime_s", "kind": cpu_kind(t["meta"])}
    if (c := _load(scale, "cotraining", root)) is not None and "seconds_total" in c:
        out["cotraining"] = {"seconds": float(c["seconds_total"]), "what": "seconds_total",
                             "threads": c["meta"].get("threads"), "kind": cpu_kind(c["meta"])}
    if (m := _load(scale, "mode_reachability", root)) is not None and "search" in m["meta"]:
        dirs = [base / "instances" / "mode_reachability" / p / m["meta"]["search"] for p in m["meta"]["placements"]]
        s, n = _row_seconds(sorted(f for d in dirs for f in d.glob("*.jsonl")))
        out["mode_reachability"] = {"seconds": s, "what": f"{n} search rows" + (", a partial run" if m.get("partial") else ""),
                                    "threads": m["meta"].get("threads"), "kind": cpu_kind(m["meta"])}
    return out


# ----------------------------------------------------------------------------- times by CPU kind
# bf16 is native on an AVX512-BF16 (or AMX, or Arm BF16) CPU and emulated on an AVX2-only one (hardware.py), so
# a time means little without the kind of CPU it was measured on. Results record it (`meta.hardware`, written by
# results.run_meta since hardware.py landed); every committed result written before that was measured on the
# project's first machine, an AVX512-BF16 CPU, which is what a result without `hardware` is read as.
AVX512_BF16, AVX2_ONLY = "AVX512-BF16", "AVX2-only"
LEGACY_CPU_KIND = AVX512_BF16
CPU_KINDS = (AVX512_BF16, AVX2_ONLY)   # the README table's columns, always shown (a kind not measured says so)
NOT_MEASURED = "not measured yet"


def cpu_kind(meta: dict | None, device: str | None = None) -> str:
    """The kind of machine a result was measured on: a GPU's name, or the CPU's bf16 capability."""
    meta = meta or {}
    dev = str(device or meta.get("device") or "cpu")
    if not dev.startswith("cpu"):
        return dev
    hw = meta.get("hardware")
    if not hw:
        return LEGACY_CPU_KIND
    c = hw.get("cpu", {})
    if c.get("amx_bf16"):
        return "AMX-BF16"
    if c.get("avx512_bf16"):
        return AVX512_BF16
    if c.get("arm_bf16"):
        return "Arm BF16"
    return f"{c.get('isa', 'unknown ISA')}-only"


def repro_kind(meta: dict, root: Path) -> str:
    """The CPU kind of a `benchmarks/repro_time.py` measurement. Its JSON may not say (`hardware`), but a run
    from scratch rewrote results/default/: a stage result of the same git revision was made by that very run
    and does say."""
    if meta.get("hardware"):
        return cpu_kind(meta)
    for stage in ("reachability", "theorem", "cotraining", "mode_reachability"):
        r = _load("default", stage, root)
        if r and r.get("meta", {}).get("versions", {}).get("git") == meta.get("versions", {}).get("git"):
            return cpu_kind(r["meta"])
    return cpu_kind(meta)


def _minutes(s: float) -> str:
    return f"{s / 60:.1f} min" if s < 5400 else f"{s / 3600:.1f} h"


def times_by_cpu(root: Path) -> dict[str, dict[str, str]]:
    """measurement -> {CPU kind: cell}, from every committed result that records a time."""
    rows: dict[str, dict[str, str]] = {}

    def put(row: str, kind: str, cell: str):
        rows.setdefault(row, {})[kind] = cell
    bench = root / "results" / "bench"
    for p in sorted(bench.glob("repro_time*.json")):       # benchmarks/repro_time.py --from-scratch
        b = json.loads(p.read_text())
        now = default_params_hash(root)
        stale = "" if now is None or now == b["meta"].get("default_params") else " (stale: params changed since)"
        put("bare `dvc repro` from scratch, wall clock", repro_kind(b["meta"], root), _minutes(b["total_s"]) + stale)
    for p in sorted(bench.glob("test_time*.json")):        # benchmarks/test_time.py
        b = json.loads(p.read_text())
        forced = (b["meta"].get("hardware") or {}).get("auto_dtype_forced")
        put("full test suite (`python -m pytest -q`), wall clock"
            + (f", dtype auto forced to {forced} (`test_time.py --auto-dtype {forced}`)" if forced else ""), cpu_kind(b["meta"]),
            f"{_minutes(b['total_s'])} ({b['summary']}, {b['meta']['threads']} threads, git {b['meta']['versions'].get('git')})")
    by_kind: dict[str, dict] = {}
    for stage, v in stage_seconds("default", root).items():
        by_kind.setdefault(v["kind"], {})[stage] = v["seconds"]
    for kind, st in by_kind.items():
        part = "" if len(st) == 4 else f" ({', '.join(st)} only)"
        put("bare `dvc repro`, compute the stages recorded (a floor)", kind, _minutes(sum(st.values())) + part)
    from .paper_b import _recipe      # (lazy: paper_b renders much more than this table needs)
    seeds: dict[str, list[float]] = {}
    cached: dict[str, int] = {}        # seeds whose self-distillation came from an earlier run's targets
    earlier: dict[str, int] = {}       # seeds trained by another recipe than seed 0's record (other steps, rows)
    dirs = [root / "results" / "cpu"] + sorted((root / "results" / "seeds").glob("seed*/results/cpu"))
    seed0 = json.loads((dirs[0] / "cotraining.json").read_text()) if (dirs[0] / "cotraining.json").exists() else {}
    for d in dirs:
        c = json.loads((d / "cotraining.json").read_text()) if (d / "cotraining.json").exists() else {}
        if "seconds_total" in c:
            kind = cpu_kind(c["meta"])
            earlier[kind] = earlier.get(kind, 0) + bool(c.get("params") and seed0.get("params")
                                                        and _recipe(c) != _recipe(seed0))
            # a re-evaluation reuses trained adapters (seconds_total then leaves their training out): the seed's
            # cost is what its parts recorded, a reused adapter's training time included
            seeds.setdefault(kind, []).append(max(float(c["seconds_total"]), sum(c.get("seconds", {}).values())))
            cached[kind] = cached.get(kind, 0) + (c.get("seconds", {}).get("self_distil", 1e9) < 60)
    distil = json.loads((bench / "distil_cpu.json").read_text()) if (bench / "distil_cpu.json").exists() else None
    for p in sorted(bench.glob("distil_cpu*.json")):       # benchmarks/distil_yield.py
        b = json.loads(p.read_text())
        put("paper B self-distillation alone, cpu scale (`benchmarks/distil_yield.py`)", cpu_kind(b["meta"]),
            f"{_minutes(b['seconds'])} ({b['distil']['n_generated']} candidates"
            f" + {sum(v['candidates'] for v in b['distil'].get('read_resample', {}).values())} resampled, "
            f"{b['meta']['threads']} threads)")
    for kind, v in seeds.items():
        note = ""
        if cached.get(kind):     # a run that reused cached targets did not pay for them: say what they cost
            apart = (f", {_minutes(distil['seconds'])} alone in `benchmarks/distil_yield.py`"
                     if distil and cpu_kind(distil["meta"]) == kind else "")
            note = f"; {cached[kind]} without self-distillation: targets of an earlier run{apart}"
        if earlier.get(kind):
            note += f"; {earlier[kind]} by an earlier recipe than seed 0's"
        put("paper B co-training, cpu scale, per training seed", kind,
            (f"{_minutes(min(v))}" if len(v) == 1 or round(min(v) / 60) == round(max(v) / 60)
             else f"{min(v) / 60:.0f}-{max(v) / 60:.0f} min") + f" ({len(v)} seed{'s' if len(v) > 1 else ''}{note})")
    if (m := stage_seconds("cpu", root).get("mode_reachability")):
        put("beyond study, cpu scale, compute recorded", m["kind"], f"{_minutes(m['seconds'])} ({m['what']})")
    row = "paper A, paper scale: one searched instance, median"
    if (sp := _load("paper", "speed", root)) and sp.get("n_searched"):
        put(row, cpu_kind(sp.get("meta"), sp.get("device")),
            f"{sp['seconds_per_searched_median']:.1f} s (N={sp['n_searched']})")
    for p in sorted(bench.glob("paper_sample*.json")):     # benchmarks/paper_sample.py: where no run of record is
        b = json.loads(p.read_text())
        if b.get("n_searched") and (kind := cpu_kind(b["meta"])) not in rows.get(row, {}):
            put(row, kind, f"{b['seconds_per_searched_median']:.1f} s (a sample: N={b['n_searched']} of the first "
                f"{b['family']} instances, {b['ratio_to_record_median']:.1f}x the record's seconds on each, "
                f"{'/'.join(b['search_dtype'])} vs {'/'.join(b['record_search_dtype'])})")
    if (r := stage_seconds("paper", root).get("reachability")):
        put("paper A, paper scale: all searches, compute recorded", r["kind"], f"{_minutes(r['seconds'])} ({r['what']})")
    for p in sorted(bench.glob("cpu*.json")):              # benchmarks/bench_search.py
        b = json.loads(p.read_text())
        g = (b.get("gflops") or {}).get("search_dtype") or {}
        peak = f", {g['ratio_to_peak']:.0%} of the CPU's peak" if g.get("ratio_to_peak") else ""
        int8 = (f", {b['score_per_s_int8_dynamic']:.1f} int8-dynamic" if "score_per_s_int8_dynamic" in b else "")
        put("candidates scored per second (`bench_search.py`)",
            cpu_kind(b.get("meta") or {"hardware": b.get("hardware")}, b.get("device")),
            f"{b['score_per_s_search_dtype']:.1f} in {b['search_dtype']}{peak}"
            + (f", {b['score_per_s_fp32']:.1f} in float32" if b["search_dtype"] != "float32" else "") + int8)
    return rows


def render_times_by_cpu(root: Path) -> list[str]:
    """README's table of measured times, one column per CPU kind: the AVX512-BF16 and AVX2-only columns are
    always there, and a kind with no committed measurement says "not measured yet" (never a number by hand)."""
    rows = times_by_cpu(root)
    if not rows:
        return []
    kinds = list(CPU_KINDS) + sorted({k for cells in rows.values() for k in cells} - set(CPU_KINDS))
    head = {AVX512_BF16: "AVX512-BF16 CPU (bf16 native)", AVX2_ONLY: "AVX2-only CPU (bf16 emulated: fp32 used)"}
    out = ["**Measured times, by CPU kind** (each cell from a committed result, which names its cores; the kind is "
           "read from each result's `meta.hardware`, and results recorded before it was written are the AVX512-BF16 machine's):", "",
           "| measurement | " + " | ".join(head.get(k, k) for k in kinds) + " |", "|---|" + "---|" * len(kinds)]
    out += [f"| {row} | " + " | ".join(cells.get(k, NOT_MEASURED) for k in kinds) + " |" for row, cells in rows.items()]
    empty = [k for k in kinds if not any(k in cells for cells in rows.values())]
    if empty:
        out += ["", f"*{', '.join(empty)}: {NOT_MEASURED}. This column fills itself when results measured on that "
                "kind of CPU (their metadata records `hardware`) are committed and `magictokens report` runs.*"]
    return out + [""]


def _verdict(total: float, target_min: float) -> str:
    return (f"under the {target_min:.0f}-minute target" if total <= target_min else
            f"the {target_min:.0f}-minute target is missed by {total - target_min:.1f} min")


def render_measured_repro(root: Path, target_min: float = TARGET_MIN) -> list[str]:
    """One README line per results/bench/repro_time*.json (one per CPU kind): the measured wall time of a bare
    `dvc repro`, against the target of its kind (`TARGET_MIN_BY_KIND`)."""
    out = []
    for p in sorted((root / "results" / "bench").glob("repro_time*.json")):
        out += _measured_repro_line(json.loads(p.read_text()), root, target_min)
    return out


def _measured_repro_line(b: dict, root: Path, target_min: float) -> list[str]:
    m, total = b["meta"], b["total_s"] / 60
    kind = repro_kind(m, root)
    target_min = TARGET_MIN_BY_KIND.get(kind, target_min)
    now = default_params_hash(root)
    stale = ("" if now is None or now == m.get("default_params") else
             " **Stale**: params.yaml's default has changed since (rerun `python benchmarks/repro_time.py --from-scratch`).")
    load = m.get("load_avg_1min") or [float("nan")]
    return [f"**A bare `dvc repro` from scratch, measured on an {kind} CPU** (`benchmarks/repro_time.py --from-scratch`: "
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
    kinds = {v["kind"] for v in st.values()}
    if len(kinds) == 1:   # the target of the CPU kind the stages ran on
        target_min = TARGET_MIN_BY_KIND.get(kinds.pop(), target_min)
    missing = [s for s in ("reachability", "theorem", "cotraining", "mode_reachability") if s not in st]
    verdict = _verdict(total, target_min) if total > target_min or not missing else "incomplete"
    return measured + [f"**What a bare `dvc repro` costs ({scale} scale)**, from the compute each committed stage recorded "
            "(a floor: model loads, notebook start-up and figures are left out): "
            + ", ".join(f"{k} {v['seconds'] / 60:.1f} min ({v['what']}"
                        + (f", {v['threads']} threads" if v.get("threads") else "") + ")" for k, v in st.items())
            + f"; total {total:.1f} min: {verdict}"
            + (f" (not yet run in today's form: {', '.join(missing)})" if missing else "") + ".", ""]
