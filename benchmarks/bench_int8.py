"""int8 dynamic quantisation of the search model, at the same k? (not a timed test)

    python benchmarks/bench_int8.py [--n 8] [--minutes M]     # resumable: rows in results/bench/int8.jsonl

On `--n` head-to-head instances (paper-scale instances with an authors'-budget
row, `reachability.headtohead`; drawn seeded among those the paper-scale fast
run solved with at most its median evaluations, so that a sample costs
minutes, not hours), the fast search runs twice in one process, same seed,
same fp32 verification: once scoring in fp32, once in int8
(`models.int8_search_model`). Reports per instance k, evaluations and
seconds, and overall: the share with k_int8 <= k_fp32 and == k_fp32, and the
candidates/s ratio int8 / fp32 measured over the rows. Each instance's row is
appended to results/bench/int8.jsonl as it finishes (a rerun resumes; a row
holds both runs, so every ratio is like for like); the summary goes to
results/bench/int8.json. About 6 minutes an instance on a 2-core AVX2 CPU.
Run it alone (both cores).
"""
from __future__ import annotations

import argparse
import random
import statistics
import time

import torch

from magictokens.config import build, load_params
from magictokens.controllers import FastConfig, resume_key, run_fast
from magictokens.hardware import hardware_meta
from magictokens.models import DEFAULT_MODEL, int8_search_model, load_model
from magictokens.reachability import headtohead as H
from magictokens.reachability.fastbench import BenchRows
from magictokens.reachability.runner import instance_seed
from magictokens.results import REPO_ROOT, InstanceLog, device_name, versions, write_json

FAMILIES = ("true_token", "top75", "uniform_rank")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--minutes", type=float, default=None, help="start no new instance after this many minutes")
    a = ap.parse_args()
    deadline = time.time() + 60 * a.minutes if a.minutes is not None else None
    pairs, _ = BenchRows().pairs(FAMILIES)
    solved = [fast for _, fast in pairs if fast["k"] is not None]
    cap = statistics.median(H.evals(r) for r in solved)
    pool = sorted((r for r in solved if H.evals(r) <= cap), key=lambda r: r["id"])
    picked = random.Random(a.seed).sample(pool, min(a.n, len(pool)))
    cfg = build(FastConfig, load_params("paper")["reachability"]["fast"], "reachability.fast")
    fp32, tok = load_model(DEFAULT_MODEL, dtype="float32", device="cpu")
    q = int8_search_model(fp32)
    log = InstanceLog(REPO_ROOT / "results" / "bench" / "int8.jsonl",
                      {"fast": resume_key(cfg), "seed": a.seed, "model": DEFAULT_MODEL, "sample": "le_median_evals"})
    for r in picked:
        if log.done(r["id"]):
            continue
        if deadline is not None and time.time() > deadline:
            break
        x = H.instance_of(r)
        seed = instance_seed(0, x.id)
        out = {"id": x.id, "k_committed": r["k"], "evals_committed": H.evals(r)}
        for name, model in (("fp32", fp32), ("int8", q)):
            res = run_fast(model, tok, x.x0_ids, x.target_id, cfg, verify_model=fp32 if model is q else None, seed=seed)
            out[name] = {"k": res.k, "evals": int(sum(res.n_candidates.values())), "seconds": res.seconds}
        log.add(x.id, out)
        print(out, flush=True)
    rows = [log.rows[r["id"]] for r in picked if log.done(r["id"])]
    if not rows:
        return
    ks = [(o["int8"]["k"], o["fp32"]["k"]) for o in rows]
    inf = lambda k: float("inf") if k is None else k
    rate = {n: sum(o[n]["evals"] for o in rows) / sum(o[n]["seconds"] for o in rows) for n in ("fp32", "int8")}
    summary = {"n": len(rows), "k_int8_le_fp32": sum(inf(i) <= inf(f) for i, f in ks) / len(rows),
               "k_int8_eq_fp32": sum(i == f for i, f in ks) / len(rows),
               "evals_median": {n: statistics.median(o[n]["evals"] for o in rows) for n in ("fp32", "int8")},
               "seconds_median": {n: statistics.median(o[n]["seconds"] for o in rows) for n in ("fp32", "int8")},
               "candidates_per_s": rate, "int8_vs_fp32_candidates_per_s": rate["int8"] / rate["fp32"],
               "int8_vs_fp32_seconds_total": sum(o["int8"]["seconds"] for o in rows) / sum(o["fp32"]["seconds"] for o in rows)}
    write_json(REPO_ROOT / "results" / "bench" / "int8.json",
               {"meta": {"device": device_name("cpu"), "threads": torch.get_num_threads(), "hardware": hardware_meta("cpu"),
                         "versions": versions(), "model": DEFAULT_MODEL, "n_pool": len(pool), "evals_cap": cap,
                         "seed": a.seed, "n_planned": len(picked)},
                "summary": summary, "rows": rows})
    print(summary)


if __name__ == "__main__":
    main()
