"""The fast search's `below` step against the authors' budget (issue 32; not a timed test).

    python benchmarks/bench_below.py run [--variants A,B] [--shard I/N] [--minutes M]   # on every head-to-head fast row
    python benchmarks/bench_below.py verify                               # every lowered k checked again here, fp32
    python benchmarks/bench_below.py report                               # -> results/bench/below.json, ratios printed
    python benchmarks/bench_below.py record --variant V [--shard I/N] [--minutes M]
                                                    # V on every paper-scale fast row (the rows of record)

The question: which extra budget below the found k* (`controllers/below.py`)
makes k no longer than the authors' on >= 90% of the head-to-head instances at
a median <= 10,000 evaluations per searched instance (base search + step)?
The step only ever lowers k, so each variant is applied to the committed fast
rows (`reachability/below_rows.py`: the same row the search with the step would
write), not searched from scratch. `run` rows: results/bench/below/<variant>.jsonl,
one per head-to-head fast row, resumable. `record` writes where `magictokens
search --scale paper` would with that variant in params (`fast.below`), one
shard log per process. `report` names the variant of choice by a rule fixed
before any row was made: the highest share among those at median <= 10,000,
then the lower median.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

from tqdm.auto import tqdm

from magictokens import reachability as R
from magictokens.config import build, load_params
from magictokens.controllers.below import BelowConfig
from magictokens.distributed import share_logs, shard_logs
from magictokens.models import DEFAULT_MODEL, dtype_of, fingerprint, load_search_pair
from magictokens.reachability import headtohead as H
from magictokens.reachability.below_rows import below_row, device_of
from magictokens.reachability.fastbench import BenchRows, latest_rows, med
from magictokens.results import LEGACY_SEARCH_DTYPE, InstanceLog, config_hash, device_name, versions, write_json
from magictokens.stages.reachability import FAMILIES

ROWS = BenchRows()
OUT = ROWS.out / "below"
TARGET_SHARE, TARGET_EVALS = 0.9, 10_000
WHOLE = 1 << 20   # k1_sweep past the vocabulary: every allowed token
VARIANTS = {      # name -> BelowConfig fields
    "c1x16": dict(starts=1, steps=16),
    "c2x16": dict(starts=2, steps=16),
    "c1x32": dict(starts=1, steps=32),
    "c4x16": dict(starts=4, steps=16),
    "k1top8k": dict(k1_sweep=7168),
    "k1all": dict(k1_sweep=WHOLE),
    "c2x16_k1top8k_L2": dict(starts=2, steps=16, k1_sweep=7168, levels=2),
    "c2x16_k1all_L3": dict(starts=2, steps=16, k1_sweep=WHOLE, levels=3),
    # the measured best (c1x16) with what its misses need next: k = 1 below a k* = 2 and more than one level
    "c1x16_k1top8k_L3": dict(starts=1, steps=16, k1_sweep=7168, levels=3),
    "c1x16_k1all_L3": dict(starts=1, steps=16, k1_sweep=WHOLE, levels=3),
}


def paper_config():
    return build(R.ReachabilityConfig, load_params("paper")["reachability"], "reachability")


def variant_config(name: str):
    """The paper scale's fast config with the variant's `below` step."""
    return dataclasses.replace(paper_config().fast, below=BelowConfig(**VARIANTS[name]))


def content_id(r: dict) -> str:
    """A row's id made unique by its content: ids of old instance sets repeat with other x0 (headtohead.content_key)."""
    return f"{r['id']}@{config_hash([r['x0_ids'], r['target_id']])[:8]}"


def extend(rows, log: InstanceLog, cfg, sm, vm, tok, deadline, desc: str, key=lambda r: r["id"]) -> int:
    """below_row of every row not yet in `log` (same key and content); -> rows added."""
    added = 0
    for r in tqdm(rows, desc=desc, unit="row"):
        if deadline is not None and time.time() > deadline:
            break
        done = log.rows.get(key(r))
        if done is not None and H.content_key({**done, "id": r["id"]}) == H.content_key(r):
            continue
        log.add(key(r), {**below_row(r, sm, tok, cfg, vm), "device": device_of(sm), "search_dtype": dtype_of(sm)})
        added += 1
    return added


def run(a, sm, vm, tok, deadline):
    pairs, _ = ROWS.pairs(FAMILIES)
    rows = [f for _, f in pairs]
    assert len({content_id(r) for r in rows}) == len(rows), "head-to-head fast rows must differ in content"
    seed = load_params("paper")["seed"]
    i, n = a.shard
    for name in a.variants:
        cfg = variant_config(name)
        path, finished = share_logs(OUT / f"{name}.jsonl", i, n)     # --shard: every n-th row, its own log
        log = InstanceLog(path, R.resume_header(cfg, seed, fingerprint(vm or sm)), read_also=finished)
        extend(rows[i::n], log, cfg, sm, vm, tok, deadline, f"below {name} {i}/{n}", key=content_id)


def record(a, sm, vm, tok, deadline):
    """The variant on every row of the paper-scale fast run: rows of the run with `fast.below` set."""
    i, n = a.shard
    base = paper_config()
    seed = load_params("paper")["seed"]
    cfg = variant_config(a.variant)
    folder = R.log_dir(ROWS.root / "results" / "paper", base.method)
    base_hash = config_hash(R.resume_header(R.method_config(base), seed, fingerprint(vm or sm)))   # the run's rows
    for fam in FAMILIES:
        main = folder / f"{fam}.jsonl"
        path, finished = share_logs(main, i, n)
        log = InstanceLog(path, R.resume_header(cfg, seed, fingerprint(vm or sm)), read_also=finished)
        rows = [r for r in ROWS.paper_run(fam) if r["config_hash"] == base_hash]
        extend(rows[i::n], log, cfg, sm, vm, tok, deadline, f"record {a.variant} {fam} {i}/{n}")


def verify(a, sm, vm, tok, deadline):
    """Every prompt the step made shorter, checked again on this machine: one fp32 forward, is y the
    unique argmax? (the rows may come from a GPU; its fp32 verifier decided there) -> below/verify.json"""
    import torch
    judge = vm or sm
    out = {"device": device_name(judge.device), "variants": {}}
    for name in VARIANTS:
        rows = [r for r in variant_rows(name)
                if any(t["method"].startswith("below") and t["success"] for t in r["trace"])]
        ok = 0
        for r in tqdm(rows, desc=f"verify {name}", unit="row"):
            ids = torch.tensor([list(r.get("prefix_ids", [])) + r["ids"] + r["x0_ids"]], device=judge.device)
            with torch.inference_mode():
                z = judge(input_ids=ids, logits_to_keep=1).logits[0, -1].float()
            others = z.clone()
            others[r["target_id"]] = -float("inf")
            ok += bool(z[r["target_id"]] > others.max())
        out["variants"][name] = {"lowered": len(rows), "argmax_here": ok}
    write_json(OUT / "verify.json", out)
    print(out)


def variant_rows(name: str) -> list[dict]:
    """A variant's rows: its log and any shard logs beside it (`run --shard`), newest config, last per id."""
    main = OUT / f"{name}.jsonl"
    by = {r["id"]: r for p in [main, *shard_logs(main)] for r in latest_rows(p)}
    return list(by.values())


def report(a):
    pairs, _ = ROWS.pairs(FAMILIES)
    out = {"meta": {"rows": str(OUT.relative_to(ROWS.root)), "versions": versions(), "model": DEFAULT_MODEL,
                    "report_device": device_name("cpu"), "targets": {"share_k_le_paper": TARGET_SHARE,
                                                                     "evals_median": TARGET_EVALS}},
           "base": H.variant_summary(pairs, TARGET_SHARE), "variants": {}}
    for extra in ("gpu_calls", "verify"):      # where the rows were made; the lowered k checked again here
        if (OUT / f"{extra}.json").exists():
            out[extra] = json.loads((OUT / f"{extra}.json").read_text())
    for name, fields in VARIANTS.items():
        rows = [{**r, "id": r["id"].rsplit("@", 1)[0]} for r in variant_rows(name)]   # content_id -> id
        if not rows:
            continue
        s = H.variant_summary(H.replaced(pairs, rows), TARGET_SHARE)
        s.update(below=fields, n_rows=len(rows), complete=len(rows) == len(pairs), devices=sorted({r.get("device", "?") for r in rows}),
                 search_dtype=sorted({r.get("search_dtype", "?") for r in rows}),
                 seconds_below_median=med([r["seconds_by_method"].get("below", 0.0) for r in rows]))
        out["variants"][name] = s
    ok = [(s["share_k_le_paper"], -s["evals_median"], n) for n, s in out["variants"].items()
          if s["evals_median"] <= TARGET_EVALS and s["complete"]]
    out["choice"] = max(ok)[2] if ok else None
    write_json(ROWS.out / "below.json", out)
    print(f"{'variant':<20} {'rows':>7} {'share k<=paper':>15} {'95% CI':>14} {'<':>3} {'>':>3} {'evals med':>9} "
          f"{'mean':>7} {'below med':>9}")
    for name, s in [("(base)", out["base"]), *out["variants"].items()]:
        lo, hi = s["share_wilson"]
        rows = f"{s.get('n_rows', s['n'])}/{s['n']}"    # a partial variant: its other rows count as the base's
        print(f"{name:<20} {rows:>7} {s['share_k_le_paper']:>15.3f} {lo:>6.3f}-{hi:<6.3f} {s['n_lt']:>3} {s['n_gt']:>3} "
              f"{s['evals_median']:>9.0f} {s['evals_mean']:>7.0f} {s['evals_below_median']:>9.0f}")
    print("choice:", out["choice"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("part", choices=["run", "report", "record", "verify"])
    ap.add_argument("--variants", default=",".join(VARIANTS), help="run: comma-separated names")
    ap.add_argument("--variant", default=None, help="record: one name, or 'choice' (below.json's)")
    ap.add_argument("--shard", default="0/1", help="run / record: I/N, this process's share of the rows")
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--search-dtype", default=None,
                    help="default: the dtype the fast rows were searched in (a run of record keeps its dtype)")
    ap.add_argument("--minutes", type=float, default=None, help="start no new row after this many minutes")
    a = ap.parse_args()
    deadline = time.time() + 60 * a.minutes if a.minutes is not None else None
    if a.part == "report":
        return report(a)
    a.variants = [v for v in a.variants.split(",") if v]
    a.shard = tuple(int(x) for x in a.shard.split("/"))
    bad = [v for v in a.variants + ([a.variant] if a.variant not in (None, "choice") else []) if v not in VARIANTS]
    if bad:
        raise SystemExit(f"unknown variant(s) {bad}: choose from {list(VARIANTS)}")
    if a.part == "record":
        if a.variant == "choice":
            a.variant = json.loads((ROWS.out / "below.json").read_text())["choice"]
        if a.variant is None:
            raise SystemExit("record: --variant NAME (or 'choice' after a report that chose one)")
    sm, vm, tok = load_search_pair(a.model, a.search_dtype or LEGACY_SEARCH_DTYPE, "float32", "auto")
    {"run": run, "record": record, "verify": verify}[a.part](a, sm, vm, tok, deadline)


if __name__ == "__main__":
    main()
