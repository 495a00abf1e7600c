"""The reachability notebook end to end under papermill, on the smoke scale."""
import json
from pathlib import Path

import pytest
import torch

from magictokens.metrics import wilson_interval

KS = ["0", "1", "2", "3", "4", "6", "8", "10"]


@pytest.mark.notebook
@pytest.mark.side_job("reach_smoke")
def test_reachability_notebook_smoke(side_job, tiny):
    tmp_path, saw = side_job                   # the notebook run twice, side by side with the other jobs
    assert (tmp_path / "results" / "smoke" / "executed" / "01_reachability.ipynb").exists()
    res = tmp_path / "results" / "smoke"
    d = json.loads(Path(saw["first"]).read_text())                            # the first run's result
    assert {"model", "device", "seed", "scale", "versions"} <= set(d["meta"])
    assert d["meta"]["scale"] == "smoke"
    assert list(d["true_token"]["eps"]) == KS and set(d["true_token"]["eps_by_len"]) == {"4", "6"}
    assert d["true_token"]["n"] == 4 and set(d["true_token"]["ci95"]) == set(KS)
    eps = [d["true_token"]["eps"][k] for k in KS]
    assert all(a >= b for a, b in zip(eps, eps[1:]))        # eps never rises with k
    assert d["top75"]["n"] == 2 and d["uniform_rank"]["n"] == 3
    assert {"loss_k", "rank_k"} <= set(d["correlations"])
    speed = json.loads((res / "speed.json").read_text())
    assert {"device", "model", "backoff_median_s", "backoff_p90_s", "k1_candidates_per_s",
            "coordinate_candidates_per_s", "evals_per_searched_median", "peak_mem_gb"} <= set(speed)
    assert d["meta"]["method"] == "fast" and "fp32 argmax" in d["meta"]["success_rule"]
    assert d["true_token"]["interval"] == "wilson"
    figs = sorted(p.name for p in (res / "figures" / "reachability").iterdir())
    for stem in ("fig1_true_token_k_eps", "fig1_true_token_k_eps_log", "fig2_top75_k_eps", "fig3_uniform_rank",
                 "fig4_base_loss_vs_k", "fig5_prompt_token_hist"):
        assert f"{stem}.pdf" in figs and f"{stem}.png" in figs
    assert 0 < speed["backoff_median_s"] <= speed["backoff_p90_s"]

    # rows vs aggregate (the JSON keeps 6 significant digits): every family's eps(k), Wilson interval and
    # k = 0 census from its own log rows
    logs = res / "instances" / "reachability" / "fast"
    rows = {fam: [json.loads(line) for line in (logs / f"{fam}.jsonl").read_text().splitlines() if line.strip()]
            for fam in ("true_token", "top75", "uniform_rank")}
    assert d["partial"] is False
    for fam, rs in rows.items():
        assert len(rs) == d[fam]["n"] == d["n_planned"][fam] == len({r["id"] for r in rs})
        for k in KS:
            fail = sum(r["k"] is None or r["k"] > int(k) for r in rs)
            assert d[fam]["eps"][k] == pytest.approx(fail / len(rs), abs=1e-5)
            assert d[fam]["ci95"][k] == pytest.approx(wilson_interval(fail, len(rs)), abs=1e-5)
            assert 0 <= d[fam]["ci95"][k][0] <= d[fam]["eps"][k] <= d[fam]["ci95"][k][1] <= 1
        assert d["k0_census"][fam]["n"] == len(rs)
        assert d["k0_census"][fam]["eps0"] == pytest.approx(d[fam]["eps"]["0"], abs=1e-5)   # finished run
    for L, n_len in d["true_token"]["n_by_len"].items():
        rs = [r for r in rows["true_token"] if str(r["meta"]["length"]) == L]
        assert len(rs) == n_len == 2 and all(len(r["x0_ids"]) == int(L) for r in rs)
        for k in KS:
            fail = sum(r["k"] is None or r["k"] > int(k) for r in rs)
            assert d["true_token"]["eps_by_len"][L][k] == pytest.approx(fail / len(rs), abs=1e-5)
    # every logged success is real: smoke's tiny-random-llama is the `tiny` fixture's model (seed 0)
    model, _ = tiny
    for r in (r for rs in rows.values() for r in rs):
        assert r["k"] is None or (r["k"] in (0, 1, 2, 3, 4) and len(r["ids"]) == r["k"])   # smoke grid
        assert (r["k"] == 0) == (r["base_rank"] == 0)
        if r["k"] is not None:
            with torch.no_grad():
                z = model(input_ids=torch.tensor([r["ids"] + r["x0_ids"]])).logits[0, -1]
            others = z.clone()
            others[r["target_id"]] = float("-inf")
            assert float(z[r["target_id"]] - others.max()) > -1e-5, r["id"]   # y the argmax (another process: 1e-5)

    # resumable: a second run reuses every finished instance, and aggregates them the same
    n_first, n_second = saw["true_token_lines"]
    assert n_first == n_second == len(rows["true_token"])
    again = json.loads((res / "reachability.json").read_text())
    assert {f: again[f]["eps"] for f in rows} == {f: d[f]["eps"] for f in rows}


@pytest.mark.notebook      # the typo is caught inside the notebook's kernel (papermill): not the quick tier
@pytest.mark.side_job("reach_typo")
def test_notebook_params_typo_is_one_clear_error(side_job):
    typo = side_job[1]["typo"]
    assert typo and "did you mean 'n_per_len'" in typo
    assert "\n" not in typo                 # one line, not the kernel's traceback


@pytest.mark.notebook
@pytest.mark.side_job("reach_search_then_cut")
def test_search_command_fills_the_logs_the_notebook_reads(side_job):
    """`magictokens search` (no papermill) then the notebook: the notebook only aggregates."""
    _, saw = side_job
    assert saw["search_minutes_0"] == {"true_token": [0, 4], "top75": [0, 2], "uniform_rank": [0, 3]}
    assert saw["search_true_token"] == {"true_token": [4, 4]}
    assert saw["true_token_lines"] == [4, 4, 4]          # nothing searched twice, by either notebook run
    assert saw["unknown_family"] and "unknown family" in saw["unknown_family"]


@pytest.mark.notebook
@pytest.mark.side_job("reach_search_then_cut")
def test_cut_run_aggregates_finished_instances_and_says_partial(side_job):
    """search_minutes=0 starts no search: the stage plots what the logs hold, marked partial."""
    tmp_path, saw = side_job
    d = saw["cut"]                                        # after `search --family true_token`, cut at 0 minutes
    assert d["partial"] is True and d["n_planned"] == {"true_token": 4, "top75": 2, "uniform_rank": 3}
    assert d["true_token"]["n"] == 4 and d["top75"]["n"] == 0 and d["uniform_rank"]["n"] == 0
    d = json.loads((tmp_path / "results" / "smoke" / "reachability.json").read_text())   # then no cut:
    assert d["partial"] is False and d["top75"]["n"] == 2                                # completes


@pytest.mark.notebook
@pytest.mark.side_job("reach_paper")
def test_method_paper_runs_the_authors_search_into_its_own_rows(side_job):
    """reachability.method=paper: Algorithm 1 at the scale's `backoff` budget, rows apart from the fast ones."""
    tmp_path, saw = side_job
    res = tmp_path / "results" / "smoke"
    d = json.loads((res / "reachability.json").read_text())
    assert d["meta"]["method"] == "paper" and d["meta"]["budget"].startswith("greedy k<=2")
    rows = [json.loads(line) for line in (res / "instances" / "reachability" / "paper" / "true_token.jsonl")
            .read_text().splitlines()]
    assert len(rows) == 4 and all("greedy" in r["n_candidates"] for r in rows)
    assert not (res / "instances" / "reachability" / "fast").exists()
    assert saw["slow_method"] and "method" in saw["slow_method"]
