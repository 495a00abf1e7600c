"""notebooks/02_theorem.py executes end to end on smoke parameters (tiny random Llama)."""
import itertools
import json
import statistics
from pathlib import Path

import pytest


pytestmark = pytest.mark.notebook


@pytest.mark.side_job("theorem_smoke")
def test_theorem_notebook_smoke(side_job):
    tmp_path, saw = side_job                   # run side by side with the other notebook jobs
    assert Path(saw["executed"]).exists()
    out = json.loads((tmp_path / "results" / "smoke" / "theorem.json").read_text())
    assert {"meta", "heads", "violations", "n_trials", "summary", "rope"} <= set(out)
    assert out["meta"]["scale"] == "smoke" and out["meta"]["model"] == "tiny-random-llama"
    assert out["violations"] == 0 and out["n_trials"] > 0
    assert out["rope"]["violations"] == 0 and out["range_violations"] == 0
    row = out["heads"][0]
    assert {"layer", "head", "k", "bound", "achieved", "ratio"} <= set(row)
    assert all(0 < r["ratio"] <= 1 + 1e-9 and r["achieved"] <= r["bound"] * (1 + 1e-9) for r in out["heads"])

    # rows vs smoke params (params.yaml smoke: layers [0, 1], heads [0, 1], ks [1, 2, 4], n_x0 2,
    # restarts 4, n_random 8): one row per (layer, head, k, x0), each trial counted once
    layers, heads, ks, n_x0, restarts, n_random = [0, 1], [0, 1], [1, 2, 4], 2, 4, 8
    keys = sorted((r["layer"], r["head"], r["k"], r["x0"]) for r in out["heads"])
    assert keys == sorted(itertools.product(layers, heads, ks, range(n_x0)))
    assert out["n_trials"] == len(out["heads"]) * (restarts + n_random)
    assert out["rope"]["n_trials"] == out["n_trials"]
    assert sorted((r["layer"], r["head"], r["k"], r["x0"]) for r in out["rope"]["heads"]) == keys
    for r in out["heads"] + out["rope"]["heads"]:          # the JSON keeps 6 significant digits: rel 1e-5
        assert r["bound"] > 0 and r["ratio"] == pytest.approx(r["achieved"] / r["bound"], rel=1e-5)
    assert {(h["layer"], h["head"]) for h in out["head_info"]} == set(itertools.product(layers, heads))
    assert all(h["sigma_q"] > 0 and h["sigma_k"] > 0 and h["sigma_v"] > 0 and h["M_u"] > 0 for h in out["head_info"])
    # aggregate vs rows: the per-layer and per-k summaries are the max / median of the rows' ratios
    for part in (out, out["rope"]):
        for by, key in (("per_layer", "layer"), ("per_k", "k")):
            assert set(part["summary"][by]) == {str(v) for v in (layers if key == "layer" else ks)}
            for v, agg in part["summary"][by].items():
                ratios = [r["ratio"] for r in part["heads"] if str(r[key]) == v]
                assert agg["max_ratio"] == pytest.approx(max(ratios), rel=1e-5)
                assert agg["median_ratio"] == pytest.approx(statistics.median(ratios), rel=1e-5)
    figs = tmp_path / "results" / "smoke" / "figures" / "theorem"
    for name in ("bound_vs_k", "tightness_per_layer"):
        assert (figs / f"{name}.pdf").exists() and (figs / f"{name}.png").exists()
