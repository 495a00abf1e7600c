"""Where the authors' k = 1 prompts sit in the fast search's k = 1 ranking (issue 32; not a timed test).

    python benchmarks/k1_rank_probe.py        # -> results/bench/k1_rank.json

On every head-to-head instance the authors' search solved at k = 1 (their
greedy step scores the whole vocabulary), the rank of their token among the
allowed tokens by the one-hot gradient at u = (y), the order the fast search's
k = 1 step (top-N) and the `below` step's `k1_sweep` score in; for the ce and
the margin objective. A rank r means a gradient-ordered sweep reaches that
token after r + 1 scored tokens past y (another success may come earlier).
Then, for the c1x16 rows (`bench_below.py`), the median evaluations per
searched instance if every row that ends at k = 2 also swept k = 1 with a
budget of B more tokens (no early stop: an upper bound on the cost).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_below import FAMILIES, ROWS, variant_rows  # noqa: E402

from magictokens.controllers.filters import allowed_token_mask  # noqa: E402
from magictokens.models import DEFAULT_MODEL, load_search_pair  # noqa: E402
from magictokens.reachability import headtohead as H  # noqa: E402
from magictokens.results import device_name, versions, write_json  # noqa: E402
from magictokens.scoring import onehot_gradient  # noqa: E402

BUDGETS = (0, 4096, 7168, 16384, 48111)     # 48111: every allowed token past the fast search's top-1024


def main():
    pairs, _ = ROWS.pairs(FAMILIES)
    rows = [{**r, "id": r["id"].rsplit("@", 1)[0]} for r in variant_rows("c1x16")]
    replaced = H.replaced(pairs, rows)          # pair by pair: ids of old instance sets repeat with other x0
    assert [a["id"] for a, _ in replaced] == [a["id"] for a, _ in pairs]
    sm, vm, tok = load_search_pair(DEFAULT_MODEL, "float32", "float32", "cpu")
    vm = vm or sm                           # fp32 search: the search model is the fp32 one
    V = vm.get_input_embeddings().weight.shape[0]
    allowed = allowed_token_mask(tok, V, False)
    out = []
    for (p, f), (_, g1) in zip(pairs, replaced):
        if p["k"] != 1:
            continue
        u, y, x0 = p["ids"][0], p["target_id"], torch.tensor(p["x0_ids"])
        row = {"id": p["id"], "k_fast": f["k"], "k_c1x16": g1["k"]}
        for obj in ("ce", "margin"):
            g = onehot_gradient(vm, torch.tensor([y]), x0, y, None, obj)[0].cpu()
            g[~allowed] = float("inf")
            row[f"rank_{obj}"] = int((g < g[u]).sum())
        out.append(row)
        print(row, flush=True)
    searched = [f for p, f in replaced if p["k"] != 0]
    medians = {str(b): float(np.median([H.evals(f) + (b if f["k"] == 2 else 0) for f in searched]))
               for b in BUDGETS}
    write_json(ROWS.out / "k1_rank.json", {
        "meta": {"model": DEFAULT_MODEL, "device": device_name("cpu"), "versions": versions(),
                 "rows": "results/bench/below/c1x16.jsonl"},
        "authors_k1": out,
        "n_c1x16_at_k2": sum(f["k"] == 2 for f in searched),
        "median_evals_if_k2_rows_sweep": medians})
    print(medians)


if __name__ == "__main__":
    main()
