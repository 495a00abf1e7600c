"""notebooks/03_cotraining.py runs under papermill on smoke parameters."""
import json
import math

import pytest

pytestmark = pytest.mark.notebook

MODES = ("positive", "negative", "rejective")


def on_grid(share: float, n: int) -> bool:
    """Is `share` a count over n (up to the JSON's rounding)?"""
    return abs(share * n - round(share * n)) < 1e-3 * n


@pytest.mark.slow
def test_cotraining_notebook_smoke(smoke_cotraining):
    tmp_path, executed = smoke_cotraining
    assert executed.exists()
    out = json.loads((tmp_path / "results" / "smoke" / "cotraining.json").read_text())
    for key in ("meta", "judge_accuracy", "confusion", "mode_accuracy", "sam", "safety_score",
                "xstest_over_refusal", "mmlu"):
        assert key in out, key
    for key in ("model", "device", "seed", "scale", "versions", "n_train", "n_eval"):
        assert key in out["meta"], key
    assert set(out["confusion"]) == {"positive", "negative", "rejective", "random", "none", "no_system"}
    for row in out["confusion"].values():
        assert set(row) == {"positive", "negative", "rejective", "invalid"}    # the judge's 4 labels
        assert sum(row.values()) == pytest.approx(1.0)
    assert set(out["sam"]) == {"cotrained", "sft", "sft_dpo", "base"}
    assert set(out["safety_score"]) == {"cotrained_positive", "sft", "sft_dpo", "base"}
    assert set(out["xstest_over_refusal"]) == set(out["safety_score"])
    assert {"base", "cotrained"} <= set(out["mmlu"])
    assert 0.0 <= out["judge_accuracy"] <= 1.0

    # counts vs smoke params (params.yaml smoke: 6 + 3 training prompts, 6 + 4 held out, 4 XSTest, 8 MMLU)
    n_train, n_eval_h, n_eval_b, n_x, n_mmlu = 9, 6, 4, 4, 8
    data = out["data"]
    assert out["meta"]["n_train"] == data["n_train"] == n_train
    assert out["meta"]["n_eval"] == data["n_eval_harmful"] + data["n_eval_benign"] == n_eval_h + n_eval_b
    assert data["n_xstest"] == n_x
    assert sum(data["train_sources"].values()) == n_train
    assert sum(data["eval_sources"].values()) == n_eval_h + n_eval_b + n_x
    for mode in MODES:                        # every training prompt: a kept self-distilled target or dropped
        assert sum(data["target_origin"][mode].values()) == n_train
        assert set(data["target_origin"][mode]) <= {"distil", "dropped", "fallback"}   # smoke: fallback datasets
        kept = out["distil"]["kept"][mode]
        assert kept["harmful"][0] + kept["benign"][0] == data["target_origin"][mode].get("distil", 0)
    assert out["n_distilled"] == sum(data["target_origin"][m].get("distil", 0) for m in MODES)
    samples = out["params"]["distil"]["samples"]
    for mode in MODES:   # a dropped pair was rejected once per round: rejected candidates >= dropped x samples
        assert sum(out["distil"]["rejected"][mode].values()) >= samples * data["target_origin"][mode].get("dropped", 0)
    # aggregates vs their rows: shares are counts over the judged prompts, the mode accuracy is the diagonal
    assert out["mode_accuracy"] == pytest.approx(sum(out["confusion"][m][m] for m in MODES) / 3, abs=1e-5)
    for table, n in ((out["confusion"], n_eval_h), (out["confusion_benign"], n_eval_b)):
        for row in table.values():
            assert all(0 <= v <= 1 and on_grid(v, n) for v in row.values()), row
    # 0/1/2 points over the valid replies: a count over 2 n_valid, n_valid = n (1 - invalid share)
    for name, v in out["safety_score"].items():
        n_valid = round(n_eval_h * (1 - out["invalid_share"][name]["harmful"]))
        assert (n_valid == 0 and math.isnan(v)) or (0 <= v <= 1 and on_grid(v, 2 * n_valid)), (name, v)
    assert all(0 <= v <= 1 and on_grid(v, n_x) for v in out["xstest_over_refusal"].values())
    assert all(0 <= v <= 1 and on_grid(v, n_mmlu) for v in out["mmlu"].values())
    assert all(-1 <= v <= 1 for v in out["sam"].values())                  # silhouette coefficients
    judge = out["judge"]
    assert judge["kind"] == "rules+cross-encoder" and judge["agreement"] == out["judge_accuracy"]
    held = judge["heldout"]["all"]
    assert sum(sum(row.values()) for row in held["confusion"].values()) == held["n"] == judge["n_heldout"] >= 150
    logs = out["train_logs"]
    assert {"cotrained", "sft", "sft_dpo"} <= set(logs)
    assert logs["sft"]["steps"] == logs["cotrained"]["steps"] > 0          # baselines get the same steps
    assert all(log["tokens"] > 0 and math.isfinite(log["loss_first"]) and math.isfinite(log["loss_last"])
               for log in logs.values())
    figs = tmp_path / "results" / "smoke" / "figures" / "cotraining"
    for name in ("fig1_mode_controllability", "fig2_safety_alignment_margin", "fig3_safety_score", "fig4_mmlu"):
        assert (figs / f"{name}.pdf").exists() and (figs / f"{name}.png").exists()
    assert (figs / "fig5_jailbreak_robustness.png").exists()
    # paper B's metrics as defined: CSS over harmful + safe, SAM with its interval and null, jailbreak drop
    assert set(out["constructive_safety"]) == set(out["safety_score"])
    for name, v in out["constructive_safety"].items():   # over valid replies: nan only when none is valid
        inv = out["invalid_share"][name]
        assert (0 <= v <= 1) or (math.isnan(v) and inv["harmful"] == inv["safe"] == 1.0), (name, v, inv)
    for name, st in out["sam_stats"].items():
        assert set(st) == {"cosine_logits", "euclidean_probs"}
        for v in st.values():
            assert -1 <= v["sam"] <= 1 and 0 < v["p_value"] <= 1 and len(v["ci95"]) == 2
        assert st["euclidean_probs"]["sam"] == pytest.approx(out["sam"][name], abs=1e-5)
    for name, j in out["jailbreak"].items():
        # n_prompts: prompts with a valid reply both plain and attacked (invalid ones are scored apart)
        assert 0 <= j["n_prompts"] <= 6 and 0 <= j["invalid_plain"] <= 1 and 0 <= j["invalid_attacked"] <= 1
        if j["n_prompts"] == 0:
            assert math.isnan(j["plain"]) and j["ci95"] is None
            continue
        assert 0 <= j["plain"] <= 1 and 0 <= j["attacked"] <= 1
        if j["plain"]:
            assert j["relative_drop"] == pytest.approx((j["plain"] - j["attacked"]) / j["plain"], abs=1e-5)
    # the saved distances are enough to recompute SAM (features as numbers, not a typed value)
    import numpy as np

    from magictokens.metrics import silhouette_from_distances

    z = np.load(tmp_path / "results" / "smoke" / "cotraining_sam.npz")
    modes = z["cotrained/modes"]
    n = len(modes)
    D = np.zeros((n, n))
    D[np.triu_indices(n, 1)] = z["cotrained/cosine_logits"]
    D = D + D.T
    assert silhouette_from_distances(D, modes) == pytest.approx(out["sam_stats"]["cotrained"]["cosine_logits"]["sam"],
                                                                abs=1e-4)
