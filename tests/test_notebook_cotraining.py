"""notebooks/03_cotraining.py runs under papermill on smoke parameters."""
import json

import pytest

from magictokens.pipeline import run_stage


@pytest.mark.slow
def test_cotraining_notebook_smoke(tmp_path):
    executed = run_stage("cotraining", "smoke", out_root=tmp_path)
    assert executed.exists()
    out = json.loads((tmp_path / "results" / "smoke" / "cotraining.json").read_text())
    for key in ("meta", "judge_accuracy", "confusion", "mode_accuracy", "sam", "safety_score",
                "xstest_over_refusal", "mmlu"):
        assert key in out, key
    for key in ("model", "device", "seed", "scale", "versions", "n_train", "n_eval"):
        assert key in out["meta"], key
    assert set(out["confusion"]) == {"positive", "negative", "rejective", "random", "none"}
    for row in out["confusion"].values():
        assert set(row) == {"positive", "negative", "rejective"}
        assert sum(row.values()) == pytest.approx(1.0)
    assert set(out["sam"]) == {"cotrained", "sft", "sft_dpo", "base"}
    assert set(out["safety_score"]) == {"cotrained_positive", "sft", "sft_dpo", "base"}
    assert set(out["xstest_over_refusal"]) == set(out["safety_score"])
    assert {"base", "cotrained"} <= set(out["mmlu"])
    assert 0.0 <= out["judge_accuracy"] <= 1.0
    figs = tmp_path / "results" / "smoke" / "figures" / "cotraining"
    for name in ("fig1_mode_controllability", "fig2_safety_alignment_margin", "fig3_safety_score", "fig4_mmlu"):
        assert (figs / f"{name}.pdf").exists() and (figs / f"{name}.png").exists()
