import pytest

from magictokens.report import BEGIN, END, render
from magictokens.config import REPO_ROOT

pytestmark = pytest.mark.unit


def test_readme_numbers_are_the_committed_results():
    """README's results block is exactly what `magictokens report` renders from results/*.json."""
    text = (REPO_ROOT / "README.md").read_text()
    block = text.split(BEGIN, 1)[1].split(END, 1)[0]
    assert block.strip() == render().strip(), "run `magictokens report` and commit README.md"


def test_a_cut_or_resized_run_says_so(tmp_path):
    """Partial reachability runs and --set overrides are written next to their numbers."""
    import json

    eps = {k: 0.5 for k in ("0", "1", "2", "3", "4", "6", "8", "10")}
    fam = {"n": 3, "eps": eps, "ci95": {}}
    d = {"meta": {"model": "m", "seed": 0, "device": "cpu", "versions": {},
                  "overrides": {"reachability": {"search_minutes": 0, "true_token": {"n_per_len": 2}}}},
         "true_token": fam, "top75": {**fam, "n": 0}, "uniform_rank": {**fam, "n": 0},
         "correlations": {}, "correlations_by_family": {}, "partial": True,
         "n_planned": {"true_token": 10, "top75": 4, "uniform_rank": 2},
         "k0_census": {"true_token": {"n": 10, "eps0": 0.7, "ci95": [0.4, 1.0], "mean_base_loss": 2.0}},
         "retokenizes": None, "verify": {}, "histogram": [], "paper": {"gpt2_small_eps": {"0": 0.753}}}
    (tmp_path / "results" / "paper").mkdir(parents=True)
    (tmp_path / "results" / "paper" / "reachability.json").write_text(json.dumps(d))
    out = render(tmp_path)
    assert "**Partial run**" in out and "3 of 10 true_token, 0 of 4 top75, 0 of 2 uniform_rank" in out
    assert "`--set reachability.search_minutes=0` `--set reachability.true_token.n_per_len=2`" in out
    assert "true_token 0.700 (95% CI 0.400-1.000, N=10) (paper GPT-2 small, true token: 0.753)" in out
    # a family the cut run never reached shows no numbers, not its placeholder eps
    assert "| ours: top-75 targets, N=0 (not searched) | - |" in out
    assert "Top-75 reachable at k <= 10: - (paper" in out and "uniform-rank: - (paper" in out
    assert "| ours: true next token, N=3 | 0.500 |" in out
    # shared-device timings are labelled as such
    s = {"device": "gpu", "backoff_median_s": 1.0, "backoff_p90_s": 2.0, "greedy_candidates_per_s": 1e5,
         "gcg_candidates_per_s": 1e4, "peak_mem_gb": 3.0, "parallel_searches": 6}
    (tmp_path / "results" / "paper" / "speed.json").write_text(json.dumps(s))
    assert "(6 searches shared the device" in render(tmp_path)


def test_fast_bench_block_reports_ratios_and_targets(tmp_path):
    import json

    b = {"meta": {"device": "cpu", "model": "m"},
         "head2head": {"n": 15, "n_searched": 14, "share_k_fast_le_paper": 0.8, "n_k_fast_lt_paper": 3,
                       "n_k_fast_gt_paper": 3, "evals_paper_median": 150000, "evals_fast_median": 3000,
                       "seconds_paper_median": 900, "seconds_fast_median": 20.0},
         "targets": {"evals_median_le_5000": True, "seconds_median_le_60": True, "k_le_paper_on_90pct": False}}
    (tmp_path / "results" / "bench").mkdir(parents=True)
    (tmp_path / "results" / "bench" / "fast.json").write_text(json.dumps(b))
    out = render(tmp_path)
    assert "no larger on 0.80 (lower on 3, higher on 3); median 150000 -> 3000 evaluations" in out
    assert "evals_median_le_5000 met" in out and "k_le_paper_on_90pct missed" in out
