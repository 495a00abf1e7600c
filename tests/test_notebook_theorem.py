"""notebooks/02_theorem.py executes end to end on smoke parameters (tiny random Llama)."""
import json

from magictokens.pipeline import run_stage


def test_theorem_notebook_smoke(tmp_path):
    executed = run_stage("theorem", "smoke", out_root=tmp_path)
    assert executed.exists()
    out = json.loads((tmp_path / "results" / "smoke" / "theorem.json").read_text())
    assert {"meta", "heads", "violations", "n_trials", "summary", "rope"} <= set(out)
    assert out["meta"]["scale"] == "smoke" and out["meta"]["model"] == "tiny-random-llama"
    assert out["violations"] == 0 and out["n_trials"] > 0
    assert out["rope"]["violations"] == 0 and out["range_violations"] == 0
    row = out["heads"][0]
    assert {"layer", "head", "k", "bound", "achieved", "ratio"} <= set(row)
    assert all(0 < r["ratio"] <= 1 + 1e-9 and r["achieved"] <= r["bound"] * (1 + 1e-9) for r in out["heads"])
    figs = tmp_path / "results" / "smoke" / "figures" / "theorem"
    for name in ("bound_vs_k", "tightness_per_layer"):
        assert (figs / f"{name}.pdf").exists() and (figs / f"{name}.png").exists()
