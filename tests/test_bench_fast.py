"""benchmarks/bench_fast.py's computations, now library code: pairing, misses, the k = 1 calibration
(the exhaustive sweep and its recall), the report's numbers on a small fixture, and the search configs
that describe themselves to the runner."""
import json
import math
import random

import numpy as np
import pytest
import torch

from magictokens import reachability as R
from magictokens.controllers import exhaustive
from magictokens.controllers.backoff import BackoffConfig
from magictokens.controllers.coordinate import CoordinateConfig
from magictokens.controllers.fast import FastConfig
from magictokens.controllers.filters import VERIFY_NEAR, allowed_token_mask
from magictokens.controllers.gcg import GCGConfig
from magictokens.controllers.greedy import GreedyConfig
from magictokens.controllers.results import resume_key
from magictokens.reachability import headtohead as H
from magictokens.reachability.calibration import calibration_summary, recall_within_top_n
from magictokens.reachability.fastbench import BenchRows, report
from magictokens.scoring import Scorer, onehot_gradient

pytestmark = pytest.mark.unit

FAMILIES = ("true_token", "top75", "uniform_rank")


def row(i, x0, y, k, h="F", kind="true_token", **kw):
    return {"id": i, "x0_ids": list(x0), "target_id": y, "k": k, "config_hash": h, "kind": kind,
            "meta": {"length": len(x0)}, **kw}


# ----------------------------------------------------------------------------- pairing


def test_pairing_by_content_with_colliding_ids():
    """Ids collide three ways: across instance sets (same id, other x0), across targets (same id and x0,
    other y) and within the reruns (an older rerun of the same content, superseded by the later one)."""
    paper = [row("t-1", [1, 2], 5, 2, "P"),      # old instance set
             row("t-1", [3, 4], 6, 4, "P"),      # today's: same id, other x0
             row("t-2", [3, 4], 7, None, "P"),   # same x0, other target
             row("u-1", [9], 8, 1, "P", kind="uniform_rank"),
             row("u-2", [9], 3, 0, "P", kind="uniform_rank")]
    reruns = [row("t-1", [1, 2], 5, 9, "F"), row("t-1", [1, 2], 5, 1, "F")]   # the later rerun wins
    run = [row("t-1", [3, 4], 6, 6, "F"), row("t-2", [3, 4], 7, 3, "F"),
           row("t-1", [1, 2], 5, 8, "F"),                                     # a rerun exists: ignored
           row("u-1", [9], 99, 1, "F", kind="uniform_rank"),                  # target moved: no pair
           row("u-2", [9], 3, 0, "other config", kind="uniform_rank")]        # not the reruns' config
    pairs, info = H.pair_rows(paper, reruns, run)
    assert [(p["id"], p["x0_ids"], p["k"], f["k"]) for p, f in pairs] == [
        ("t-1", [1, 2], 2, 1), ("t-1", [3, 4], 4, 6), ("t-2", [3, 4], None, 3)]   # paper order kept
    assert info == {"fast_source": {"head2head rerun": 1, "paper-scale run row": 2}, "unmatched": ["u-1", "u-2"]}
    # without reruns, a run row of any config is a fast side (nothing says which config is current)
    pairs, info = H.pair_rows(paper, [], run)
    assert [f["k"] for _, f in pairs] == [8, 6, 3, 0] and info["unmatched"] == ["u-1"]
    # what `head2head` still has to search: the paper rows with no run row of the same content
    assert [(x.id, x.target_id) for x in H.unpaired_instances(paper, run)] == [("u-1", 8)]
    # shares, brute force: k_fast <= k_paper with None longer than any k
    pairs, _ = H.pair_rows(paper, reruns, run)
    assert H.share_no_longer(pairs) == pytest.approx(2 / 3)                    # 1 <= 2, 6 > 4, 3 <= inf


def test_recheck_picks_run_rows_and_counts_identical_searches():
    paper = [row(f"t-{i}", [i], 50 + i, k, "P") for i, k in enumerate([2, 0, 3, 4, 1])]
    paper[4]["kind"] = "top75"
    run = [row(f"t-{i}", [i], 50 + i, 2, "F", ids=[i, i], n_candidates={"coordinate": 10 * i}) for i in range(5)]
    reruns = [row("t-2", [2], 52, 2, "F")]
    pairs, _ = H.pair_rows(paper, reruns, run)
    # searched (k != 0), true token, fast side a run row (t-2 has a rerun): t-0, t-3; n cuts
    assert [x.id for x in H.recheck_instances(pairs, reruns, 5)] == ["t-0", "t-3"]
    assert [x.id for x in H.recheck_instances(pairs, reruns, 1)] == ["t-0"]
    again = [dict(run[0], seconds=99.0),                                     # same search, other timing
             dict(run[3], n_candidates={"coordinate": 31}),                  # other effort
             row("t-9", [9], 1, 2, "F", ids=[], n_candidates={})]            # pairs with nothing: not counted
    assert H.recheck_result(pairs, again) == {"n": 2, "identical": 1}


# ----------------------------------------------------------------------------- misses


def trace_row(i, k, steps):
    return {"id": i, "k": k, "trace": [{"k": kk, "method": m, "success": ok, "n_candidates": n}
                                       for kk, m, ok, n in steps]}


def test_explain_misses_on_hand_built_rows():
    pairs = [  # fast longer, its k = 1 spent in two steps (k1_top, then shorten back at k=1)
        (trace_row("a", 1, [(0, "none", False, 1), (1, "greedy", True, 100)]),
         trace_row("a", 3, [(0, "none", False, 1), (1, "k1_top", False, 40), (3, "coordinate", True, 9),
                            (1, "shorten", False, 2)])),
        # both unsolved: not longer
        (trace_row("b", None, [(0, "none", False, 1), (4, "gcg", False, 7)]),
         trace_row("b", None, [(0, "none", False, 1), (4, "coordinate", False, 5)])),
        # paper unsolved, fast solved: shorter
        (trace_row("c", None, [(0, "none", False, 1)]), trace_row("c", 6, [(6, "coordinate", True, 3)])),
        # fast unsolved, paper solved at 4 after a failed 2: longer, stage is the first success
        (trace_row("d", 4, [(0, "none", False, 1), (2, "greedy", False, 8), (4, "gcg", True, 6)]),
         trace_row("d", None, [(0, "none", False, 1), (2, "coordinate", False, 11)])),
        (trace_row("e", 2, [(2, "greedy", True, 5)]), trace_row("e", 2, [(2, "coordinate", True, 4)]))]
    m = H.explain_misses(pairs)
    assert m["higher_by_paper_stage"] == {"gcg k=4": 1, "greedy k=1": 1}
    assert [(x["id"], x["k_paper"], x["k_fast"], x["paper_stage"], x["evals_at_k_paper"]) for x in m["higher"]] == [
        ("a", 1, 3, "greedy k=1", {"paper": 100, "fast": 42}),
        ("d", 4, None, "gcg k=4", {"paper": 6, "fast": 0})]         # fast never got to k=4
    # brute force: 3 of 5 agree; ceil(target * 5) must agree
    for target in (0.0, 0.2, 0.6, 0.61, 0.8, 0.9, 1.0):
        assert H.explain_misses(pairs, target)["n_short_of_target"] == max(0, math.ceil(round(target * 5, 9)) - 3)
    assert H.solving_stage(pairs[1][0]) == "none"


def test_k_cells_count_every_pair_once():
    pairs = [({"k": 1}, {"k": 2}), ({"k": 1}, {"k": 2}), ({"k": None}, {"k": 0}), ({"k": 4}, {"k": None})]
    levels, cells = H.k_cells(pairs)
    assert levels == [0, 1, 2, 4, None] and cells.sum() == len(pairs)
    assert cells[levels.index(2), levels.index(1)] == 2                     # rows: fast k; columns: paper k
    assert cells[levels.index(0), levels.index(None)] == 1 and cells[levels.index(None), levels.index(4)] == 1


# ----------------------------------------------------------------------------- calibration


def test_recall_against_a_brute_force_count():
    """A hand-built sweep over a 12-token vocabulary: each instance has its solvers S and two gradient
    rankings (permutations); recall(N) counted directly from the top-N sets, not from the min ranks."""
    rng = random.Random(3)
    V, ns = 12, (1, 2, 3, 5, 8, 12)
    sweeps = []
    for i in range(40):
        S = rng.sample(range(V), rng.choice([0, 0, 1, 2, 4]))
        orders = {name: rng.sample(range(V), V) for name in ("ce_at_y", "margin_at_y")}
        sweeps.append((S, orders))
    rows = [{"solving": S, "min_rank": {n: min((o.index(t) for t in S), default=None) for n, o in orders.items()},
             "authors_check_solves": bool(S) and S[0] % 2 == 0, "n_near_checked": 512 if i % 7 == 0 else 3,
             "seconds": float(i), "meta": {"length": 8 + 2 * (i % 2)}} for i, (S, orders) in enumerate(sweeps)]
    solvable = [(S, o) for S, o in sweeps if S]
    rec = recall_within_top_n(rows, ns)
    for name in ("ce_at_y", "margin_at_y"):
        for n in ns:
            found = sum(bool(set(o[name][:n]) & set(S)) for S, o in solvable)
            assert rec[name][str(n)] == pytest.approx(found / len(solvable)), (name, n)
    assert rec["ce_at_y"][str(V)] == 1.0                                     # the whole vocabulary finds every solver
    c = calibration_summary(rows, near_cap=512, ns=ns, n_planned=50)
    assert c["n"] == 40 and c["n_k1_solvable"] == len(solvable) and c["n_planned"] == 50
    assert c["n_near_capped"] == 6 and c["lengths"] == [8, 10] and c["sweep_seconds_median"] == 19.5
    assert c["authors_check_share_of_solvable"] == pytest.approx(
        sum(S[0] % 2 == 0 for S, _ in solvable) / len(solvable))
    none = calibration_summary([dict(r, solving=[]) for r in rows[:3]], near_cap=512, ns=ns)
    assert none["n_k1_solvable"] == 0 and math.isnan(none["recall_within_top_n"]["ce_at_y"]["1"])


def test_exhaustive_sweep_matches_brute_force_on_the_tiny_model(tiny, tiny_ids, monkeypatch):
    """Every allowed token scored alone, independently: the sweep's solvers, best ranks and the authors' check."""
    model, tok = tiny
    monkeypatch.setattr(exhaustive, "RANKINGS", {"ce_at_y": ("target", "ce"), "ce_at_the": ("the", "ce"),
                                                 "margin_at_y": ("target", "margin")})   # no "!" in the tiny vocabulary
    x0 = tiny_ids("the cat")            # 16 of its 58 targets are k=1-solvable, 10 by more than one token
    allowed = torch.nonzero(allowed_token_mask(tok, 62)).squeeze(1)
    seen = {"unsolvable": 0, "one solver": 0, "several": 0}
    for y in range(4, 62):
        s = Scorer(model, x0, y).score(allowed[:, None])
        brute = {int(t) for t, m in zip(allowed, s.margin) if m > 0}
        sw = exhaustive.run(model, tok, x0, y, exhaustive.SweepConfig(near_cap=62), verify_model=model)
        assert sw.n_allowed == len(allowed) and set(sw.solving) == brute, y
        assert sw.authors_check_solves == (int(allowed[int(s.loss.argmin())]) in brute)
        for name, (place, obj) in exhaustive.RANKINGS.items():
            pid = y if place == "target" else tok(place, add_special_tokens=False).input_ids[0]
            g = onehot_gradient(model, torch.tensor([pid]), torch.tensor(x0), y, None, obj)[0]
            order = [int(t) for t in allowed[torch.argsort(g[allowed])]]      # allowed tokens, best first
            want = min((order.index(t) for t in brute), default=None)
            assert sw.min_rank[name] == want, (y, name)
        seen["unsolvable" if not brute else "one solver" if len(brute) == 1 else "several"] += 1
        if len(brute) > 1:      # a shortlist capped at 1 looks at the best search margin only
            capped = exhaustive.run(model, tok, x0, y, exhaustive.SweepConfig(near_cap=1), verify_model=model)
            assert capped.n_near_checked == 1 and len(capped.solving) == 1 and set(capped.solving) < brute
    assert all(seen.values()), seen


# ----------------------------------------------------------------------------- the report


def write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def searched_row(i, x0, y, k, h, evals, secs, kind="true_token", **kw):
    return row(i, x0, y, k, h, kind=kind, n_candidates={"m": evals}, seconds=secs, load_avg_1min=1.0, threads=2,
               ids=[1] * (k or 0), trace=[{"k": 0, "method": "none", "success": k == 0, "n_candidates": 1}]
               + ([{"k": k, "method": "gcg", "success": True, "n_candidates": evals}] if k else []), **kw)


def test_report_numbers_on_a_small_fixture(tmp_path):
    paper_dir = tmp_path / "results/paper/instances/reachability"
    bench = tmp_path / "results/bench/fast"
    # the authors' budget: 4 true-token rows (one a k=0), 1 top-75 row, 1 whose target moved
    P = [searched_row("t-0", [1], 10, 2, "P", 1000, 100.0), searched_row("t-1", [2], 11, 4, "P", 3000, 300.0),
         searched_row("t-2", [3], 12, 0, "P", 1, 0.1), searched_row("t-3", [4], 13, None, "P", 9000, 900.0)]
    T = [searched_row("p-0", [5], 14, 1, "P", 500, 50.0, kind="top75"),
         searched_row("p-1", [6], 15, 1, "P", 700, 70.0, kind="top75")]
    write_jsonl(paper_dir / "paper/true_token.jsonl", P)
    write_jsonl(paper_dir / "paper/top75.jsonl", T)
    # the paper-scale fast run; p-1's row has another target (no pair)
    F = [searched_row("t-0", [1], 10, 1, "F", 10, 1.0), searched_row("t-1", [2], 11, 6, "F", 30, 3.0),
         searched_row("t-2", [3], 12, 0, "F", 1, 0.1), searched_row("t-3", [4], 13, 4, "F", 90, 9.0)]
    write_jsonl(paper_dir / "fast/true_token.jsonl", F)
    write_jsonl(paper_dir / "fast/top75.jsonl", [searched_row("p-0", [5], 14, 2, "F", 20, 2.0, kind="top75"),
                                                 searched_row("p-1", [6], 99, 1, "F", 5, 0.5, kind="top75")])
    # a rerun of t-0 under an older config, then none: the part's newest config is the run's (F)
    write_jsonl(bench / "head2head.jsonl", [searched_row("t-0", [1], 10, 6, "old", 1, 1.0),
                                            searched_row("t-3", [4], 13, 2, "F", 80, 8.0)])
    write_jsonl(bench / "recheck.jsonl", [dict(F[0], seconds=5.0), dict(F[1], ids=[7])])
    write_jsonl(bench / "vs_default_default.jsonl", [searched_row("t-0", [1], 10, 2, "D", 40, 4.0),
                                                     searched_row("t-1", [2], 11, None, "D", 60, 6.0)])
    write_jsonl(bench / "calibration.jsonl", [
        {"id": f"c-{i}", "config_hash": "C", "meta": {"length": 8}, "solving": s, "seconds": 2.0,
         "min_rank": {"ce_at_y": r}, "authors_check_solves": a, "n_near_checked": n}
        for i, (s, r, a, n) in enumerate([([5], 100, True, 3), ([6, 7], 300, False, 512), ([], None, False, 0)])])
    (bench / "gpu_paper_rows.json").write_text(json.dumps(
        {"rows": [["t-1", "P"]], "calls": [{"device": "GPU9", "n_rows": 1, "shard_wall_s": [4.0, 6.0]}]}))

    b = report(BenchRows(tmp_path), FAMILIES, near_cap=512, meta={"device": "test"})
    out = b.numbers
    h = out["head2head"]
    # pairs, in the order the paper rows are read (top75.jsonl, then true_token.jsonl): p-0 (run row), t-0 (run
    # row), t-1 (run row), t-2 (k=0), t-3 (the rerun of the newest config, not its run row); p-1 unmatched
    assert [(p["id"], f["k"]) for p, f in b.pairs] == [("p-0", 2), ("t-0", 1), ("t-1", 6), ("t-2", 0), ("t-3", 2)]
    assert h["n"] == 5 and h["n_searched"] == 4 and h["unmatched"] == ["p-1"]
    assert h["fast_source"] == {"paper-scale run row": 4, "head2head rerun": 1}
    assert h["k_paper"] == [1, 2, 4, 0, None] and h["k_fast"] == [2, 1, 6, 0, 2]
    assert h["share_k_fast_le_paper"] == pytest.approx(3 / 5) and (h["n_k_fast_lt_paper"], h["n_k_fast_gt_paper"]) == (2, 2)
    assert h["share_by_family"] == {"top75": {"n": 1, "share_k_fast_le_paper": 0.0},
                                    "true_token": {"n": 4, "share_k_fast_le_paper": 0.75}}
    assert h["evals_paper_median"] == np.median([1000, 3000, 9000, 500]) and h["evals_fast_median"] == np.median([10, 30, 80, 20])
    assert h["paper_rows_by_device"] == {"cpu": 4, "GPU9": 1}
    assert h["seconds_paper_median"] == 100.0 and h["n_searched_paper_cpu"] == 3        # t-0, t-3, p-0 on the CPU
    assert h["seconds_paper_median_gpu"] == 300.0 and h["gpu_shards"] == [None]
    assert h["gpu_throughput"] == {"n_calls": 1, "rows": 1, "wall_s": 6.0, "s_per_instance": 6.0, "device": "GPU9"}
    assert h["recheck"] == {"n": 2, "identical": 1}
    assert h["misses"]["n_short_of_target"] == math.ceil(0.9 * 5) - 3
    v = out["vs_default"]
    assert v["n"] == 2 and v["k_fast_le_default"] == 1.0
    assert v["fast"]["eps"]["1"] == 0.5 and v["default"]["eps"]["2"] == 0.5 and v["default"]["eps"]["10"] == 0.5
    assert v["evals_median"] == {"fast": 20.0, "default": 50.0}
    c = out["calibration"]
    assert (c["n"], c["n_k1_solvable"], c["n_near_capped"]) == (3, 2, 1)
    assert c["recall_within_top_n"]["ce_at_y"]["256"] == 0.5 and c["recall_within_top_n"]["ce_at_y"]["512"] == 1.0
    run = out["paper_scale_run"]
    assert (run["n"], run["n_searched"], run["evals_median"], run["seconds_median"]) == (6, 5, 20.0, 2.0)
    assert out["targets"] == {"evals_median_le_5000": True, "seconds_median_le_60": True, "k_le_paper_on_90pct": False}
    assert list(out) == ["meta", "head2head", "vs_default", "calibration", "paper_scale_run", "targets"]
    assert len(b.lines) == 5 and "k_fast <= k_paper on 60%" in b.lines[0]
    assert "1 hit the 512-candidate fp32 shortlist cap" in b.lines[2] and b.lines[4].startswith("targets: ")
    # no rows: no sections, nothing printed
    empty = report(BenchRows(tmp_path / "none"), FAMILIES, near_cap=512, meta={})
    assert empty.numbers == {"meta": {}} and empty.lines == [] and empty.pairs == []


# ----------------------------------------------------------------------------- configs that describe themselves


def test_search_configs_describe_themselves_as_the_runner_did():
    """The former `isinstance(config, FastConfig)` branches of runner.py and stats.py, written out: each config's
    own resume entry, batch sizes and budget label give the same header, row fields and label."""
    f, b = FastConfig(), BackoffConfig()
    assert R.resume_header(f, 0, "w") == {"method": "fast", "fast": resume_key(f), "seed": 0,
                                          "seeding": "per_instance", "weights": "w"}
    assert R.resume_header(b, 0, "w") == {"backoff": resume_key(b), "seed": 0, "seeding": "per_instance", "weights": "w"}
    assert R.batch_sizes_of(f) == {"coordinate": f.coordinate.batch_size}
    assert R.batch_sizes_of(b) == {"greedy": b.greedy.batch_size, "gcg": b.gcg.batch_size}
    assert R.budget_label(b) == "greedy k<=3 (all vocab) | GCG k=4,6,8,10 width x topk x steps = 768x128x34"
    assert R.budget_label(f).startswith("fast search: k=1 grad top-1024 | coordinate k=2,3 x6 steps, k=4,6,8,10 x16")
    assert not f.shares_first_step and b.shares_first_step
    assert not BackoffConfig(greedy=GreedyConfig(candidates=128)).shares_first_step
    # one default for the fp32 look; rows made before the field existed resume at its old value only
    assert GreedyConfig().verify_near == GCGConfig().verify_near == CoordinateConfig().verify_near == VERIFY_NEAR
    assert "verify_near" not in resume_key(GCGConfig()) and "verify_near" in resume_key(GCGConfig(verify_near=-1.0))
