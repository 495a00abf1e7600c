"""The reachability notebook end to end under papermill, on the smoke scale."""
import json

import pytest
import torch

from magictokens.errors import MagicTokensError
from magictokens.metrics import wilson_interval
from magictokens.pipeline import run_stage

KS = ["0", "1", "2", "3", "4", "6", "8", "10"]


@pytest.mark.notebook
def test_reachability_notebook_smoke(tmp_path, tiny):
    out = run_stage("reachability", "smoke", out_root=tmp_path)
    assert out.exists()
    res = tmp_path / "results" / "smoke"
    d = json.loads((res / "reachability.json").read_text())
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

    # resumable: a second run reuses every finished instance
    log = res / "instances" / "reachability" / "fast" / "true_token.jsonl"
    n = len(log.read_text().splitlines())
    run_stage("reachability", "smoke", out_root=tmp_path)
    assert len(log.read_text().splitlines()) == n


@pytest.mark.notebook      # the typo is caught inside the notebook's kernel (papermill): not the quick tier
def test_notebook_params_typo_is_one_clear_error(tmp_path):
    with pytest.raises(MagicTokensError, match="did you mean 'n_per_len'") as e:
        run_stage("reachability", "smoke", out_root=tmp_path, overrides={"reachability": {"true_token": {"n_per_lenn": 1}}})
    assert "\n" not in str(e.value)          # one line, not the kernel's traceback


@pytest.mark.notebook
def test_search_command_fills_the_logs_the_notebook_reads(tmp_path):
    """`magictokens search` (no papermill) then the notebook: the notebook only aggregates."""
    from magictokens.stages.reachability import search

    assert search("smoke", tmp_path, minutes=0) == {"true_token": (0, 4), "top75": (0, 2), "uniform_rank": (0, 3)}
    done = search("smoke", tmp_path, families=["true_token"])
    assert done == {"true_token": (4, 4)}
    log = tmp_path / "results" / "smoke" / "instances" / "reachability" / "fast" / "true_token.jsonl"
    n = len(log.read_text().splitlines())
    run_stage("reachability", "smoke", out_root=tmp_path)
    assert len(log.read_text().splitlines()) == n          # nothing searched twice
    with pytest.raises(MagicTokensError, match="unknown family"):
        search("smoke", tmp_path, families=["nope"])


@pytest.mark.notebook
def test_cut_run_aggregates_finished_instances_and_says_partial(tmp_path):
    """search_minutes=0 starts no search: the stage plots what the logs hold, marked partial."""
    from magictokens.stages.reachability import search

    search("smoke", tmp_path, families=["true_token"])
    run_stage("reachability", "smoke", out_root=tmp_path, overrides={"reachability": {"search_minutes": 0}})
    d = json.loads((tmp_path / "results" / "smoke" / "reachability.json").read_text())
    assert d["partial"] is True and d["n_planned"] == {"true_token": 4, "top75": 2, "uniform_rank": 3}
    assert d["true_token"]["n"] == 4 and d["top75"]["n"] == 0 and d["uniform_rank"]["n"] == 0
    run_stage("reachability", "smoke", out_root=tmp_path)                 # no cut: completes, not partial
    d = json.loads((tmp_path / "results" / "smoke" / "reachability.json").read_text())
    assert d["partial"] is False and d["top75"]["n"] == 2


@pytest.mark.notebook
def test_method_paper_runs_the_authors_search_into_its_own_rows(tmp_path):
    """reachability.method=paper: Algorithm 1 at the scale's `backoff` budget, rows apart from the fast ones."""
    run_stage("reachability", "smoke", out_root=tmp_path, overrides={"reachability": {"method": "paper"}})
    res = tmp_path / "results" / "smoke"
    d = json.loads((res / "reachability.json").read_text())
    assert d["meta"]["method"] == "paper" and d["meta"]["budget"].startswith("greedy k<=2")
    rows = [json.loads(line) for line in (res / "instances" / "reachability" / "paper" / "true_token.jsonl")
            .read_text().splitlines()]
    assert len(rows) == 4 and all("greedy" in r["n_candidates"] for r in rows)
    assert not (res / "instances" / "reachability" / "fast").exists()
    with pytest.raises(MagicTokensError, match="method"):
        run_stage("reachability", "smoke", out_root=tmp_path, overrides={"reachability": {"method": "slow"}})
