"""Stages: typed results that round-trip through results/, figures redrawn from them, params by type."""
from dataclasses import asdict
from pathlib import Path

import pytest
from notebook_jobs import RECORD, RESULT_FILES

from magictokens.config import REPO_ROOT, stage_params
from magictokens.errors import MagicTokensError
from magictokens.mode_reachability import ModeReachConfig
from magictokens.reachability import ReachabilityConfig
from magictokens.stages.reachability import FAMILIES, ReachabilityResult, aggregate
from magictokens.theory import TheoremConfig
from magictokens.cotraining import CoTrainingConfig

FIGS = ("fig1_true_token_k_eps", "fig1_true_token_k_eps_log", "fig2_top75_k_eps", "fig3_uniform_rank",
        "fig4_base_loss_vs_k", "fig5_prompt_token_hist")


def row(i, family, k, rank=None):
    return {"id": f"{family}-{i}", "k": k, "meta": {"length": 8 + i % 2, **({"rank": rank} if rank is not None else {})},
            "base_loss": 1.0 + i, "base_rank": i, "retokenizes": i % 2 == 0, "ids": [1] * (k or 0),
            "verify": {"checked": 2, "false_positive": 1, "unchecked_near": 0}}


@pytest.mark.unit
def test_result_round_trips_through_its_files(tmp_path):
    rows = {"true_token": [row(0, "t", 0), row(1, "t", 3), row(2, "t", None)],
            "top75": [row(0, "a", 1, rank=4)], "uniform_rank": []}
    census = {f: {"n": 5, "eps0": 0.6, "ci95": [0.2, 0.9], "mean_base_loss": 2.0} for f in FAMILIES}
    res = aggregate(rows, census, {"true_token": 5, "top75": 3, "uniform_rank": 2}, {"model": "m", "budget": "b"},
                    [(" the", 3), ("\n", 1)])
    res.speed = {"backoff_median_s": 1.5}
    res.save(tmp_path / "a")
    back = ReachabilityResult.load(tmp_path / "a")
    back.save(tmp_path / "b")                          # load -> save writes the same bytes: the files are the schema
    for name in ("reachability.json", "speed.json", "reachability_points.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert asdict(ReachabilityResult.load(tmp_path / "b")) == asdict(back)
    assert isinstance(back.true_token.ci95["0"], tuple) and back.histogram == [(" the", 3), ("\n", 1)]
    # hand-computed: true-token k = 0, 3, None -> eps(0) = 2/3, eps(3) = 1/3, eps(10) = 1/3
    assert back.true_token.eps["0"] == pytest.approx(2 / 3) and back.true_token.eps["3"] == pytest.approx(1 / 3)
    assert back.partial and back.n_planned["true_token"] == 5
    assert back.verify == {"checked": 8, "false_positive": 4, "unchecked_near": 0}
    assert back.retokenizes == 0.5                     # successes k >= 1: ids 1 (False) and top75-0 (True)
    assert [(p.family, p.k, p.rank) for p in back.points_of("top75")] == [("top75", 1, 4)]
    assert back.points_of("true_token")[2].k is None and back.uniform_rank.n == 0


@pytest.mark.unit
def test_missing_result_is_one_clear_error(tmp_path):
    with pytest.raises(MagicTokensError, match="run `magictokens run reachability` first"):
        ReachabilityResult.load(tmp_path)


@pytest.mark.unit
def test_every_committed_stage_result_has_its_redraw_test():
    """A stage result committed at a scale (results/<scale>/<stage>.json) is covered by RECORD."""
    committed = {(p.stem, p.parent.name) for sc in RECORD for p in (REPO_ROOT / "results" / sc).glob("*.json")
                 if p.stem in RESULT_FILES}
    assert committed == {(st, sc) for sc, stages in RECORD.items() for st in stages}


REDRAWS = [pytest.param(st, sc, marks=pytest.mark.side_job(f"redraw-{st}-{sc}"))   # tests/notebook_jobs.py
           for sc, stages in RECORD.items() for st in stages]


@pytest.mark.notebook
@pytest.mark.parametrize("stage,scale", REDRAWS)
def test_committed_figures_redraw_from_results_alone(side_job, stage, scale):
    """Each notebook with redraw=True reads its stage's files in results/<scale>/ only (the model
    name is made unloadable) and draws every committed figure byte for byte (PNG). The redraws are side jobs:
    a redraw computes on one core, beside the tests."""
    root, _ = side_job
    rel = Path("paper_figures") / stage if scale == "paper" else Path("results") / scale / "figures" / stage
    committed = sorted((REPO_ROOT / rel).glob("*.png"))
    assert committed, f"no committed figures in {rel}"
    for old in committed:
        new = root / rel / old.name
        assert new.exists(), old.name
        assert new.read_bytes() == old.read_bytes(), f"{rel / old.name} differs from its redraw"


BAD = [  # (section, config, overrides, the one line must contain)
    ("reachability", ReachabilityConfig, {"reachability": {"true_token": {"n_per_len": -1}}},
     "reachability.true_token.n_per_len = -1: input should be greater than or equal to 0"),
    ("reachability", ReachabilityConfig, {"reachability": {"backoff": {"gcg": {"search_width": "abc"}}}},
     "reachability.backoff.gcg.search_width = 'abc': input should be a valid integer"),
    ("reachability", ReachabilityConfig, {"reachability": {"true_token": {"n_per_len": True}}},
     "n_per_len = True: input should be a valid integer"),
    ("reachability", ReachabilityConfig, {"reachability": {"fast": {"coordinate": {"random_share": 1.5}}}},
     "random_share = 1.5: input should be less than or equal to 1"),
    ("reachability", ReachabilityConfig, {"reachability": {"fast": {"coordinate": {"objective": "mse"}}}},
     "objective = 'mse': input should be 'ce' or 'margin'"),
    ("reachability", ReachabilityConfig, {"reachability": {"method": "slow"}},
     "reachability.method = 'slow': input should be 'fast' or 'paper'"),
    ("reachability", ReachabilityConfig, {"reachability": {"fast": {"ks": [1, 0]}}},
     "reachability.fast.ks.1 = 0: input should be greater than 0"),
    ("reachability", ReachabilityConfig, {"reachability": {"true_token": {"lengths": []}}},
     "lengths = []: list should have at least 1 item"),
    ("reachability", ReachabilityConfig, {"reachability": {"search_minutes": -5}},
     "search_minutes = -5: input should be greater than or equal to 0"),
    ("reachability", ReachabilityConfig, {"seed": -3}, "seed = -3: input should be greater than or equal to 0"),
    ("reachability", ReachabilityConfig, {"model": 7}, "model = 7: input should be a valid string"),
    ("theorem", TheoremConfig, {"theorem": {"m_u": "big"}},
     "theorem.m_u = 'big': input should be 'x0_max' or 'rmsnorm' or input should be a valid number"),
    ("theorem", TheoremConfig, {"theorem": {"restarts": 0}}, "theorem.restarts = 0: input should be greater than 0"),
    ("cotraining", CoTrainingConfig, {"cotraining": {"train": {"lr": 0}}},
     "cotraining.train.lr = 0: input should be greater than 0"),
    ("cotraining", CoTrainingConfig, {"cotraining": {"baselines": ["sft", "rlhf"]}},
     "cotraining.baselines.1 = 'rlhf': input should be 'sft', 'sft_dpo' or 'base'"),
    ("cotraining", CoTrainingConfig, {"cotraining": {"train": {"lora": "yes"}}},
     "cotraining.train.lora = 'yes': input should be a valid boolean"),
    ("mode_reachability", ModeReachConfig, {"mode_reachability": {"n_prompts": 0}},
     "mode_reachability.n_prompts = 0: input should be greater than 0"),
    ("mode_reachability", ModeReachConfig, {"mode_reachability": {"placements": ["user"]}},
     "mode_reachability.placements.0 = 'user': input should be 'user_before', 'user_after' or 'system'"),
    ("mode_reachability", ModeReachConfig, {"mode_reachability": {"placements": ["system", "system"]}},
     "mode_reachability.placements = ['system', 'system']: value error, list each placement at most once"),
    ("mode_reachability", ModeReachConfig, {"mode_reachability": {"search": "gcg"}},
     "mode_reachability.search = 'gcg': input should be 'fast' or 'backoff'"),
    ("mode_reachability", ModeReachConfig, {"mode_reachability": {"baseline_placements": ["system"]}},
     "mode_reachability.baseline_placements = ['system']: system is not in placements ['user_before']"),
    ("mode_reachability", ModeReachConfig, {"mode_reachability": {"baseline_placements": ["sys"]}},
     "mode_reachability.baseline_placements.0 = 'sys': input should be 'user_before', 'user_after' or 'system'"),
]


@pytest.mark.unit
@pytest.mark.parametrize("section,cls,overrides,line", BAD, ids=[b[3].split(" =")[0] for b in BAD])
def test_bad_param_values_give_one_line(section, cls, overrides, line):
    with pytest.raises(MagicTokensError) as e:
        stage_params("default", section, cls, overrides)
    msg = str(e.value)
    assert "\n" not in msg and line in msg, msg


@pytest.mark.unit
def test_every_scale_of_params_yaml_validates():
    for section, cls in (("reachability", ReachabilityConfig), ("theorem", TheoremConfig),
                         ("cotraining", CoTrainingConfig), ("mode_reachability", ModeReachConfig)):
        for scale in ("default", "cpu", "paper", "smoke"):
            stage_params(scale, section, cls)


@pytest.mark.unit
def test_paper_b_records_were_made_with_todays_cpu_scale():
    """results/cpu (and its seeds) is paper B's CPU record: its recorded co-training params are the cpu
    scale's, or README's paper B block says, first, that they were made with an earlier recipe (so an edit to
    params.yaml never leaves a record presented as today's); and the default scale is not the cpu scale."""
    import json

    from magictokens.report.paper_b import EARLIER_RECIPE, made_with_cpu_scale

    runs = [REPO_ROOT / "results" / "cpu"] + sorted((REPO_ROOT / "results" / "seeds").glob("seed*/results/cpu"))
    recs = [json.loads((d / "cotraining.json").read_text()) for d in runs if (d / "cotraining.json").exists()]
    assert recs and all(r["meta"]["scale"] == "cpu" for r in recs)
    readme = (REPO_ROOT / "README.md").read_text()
    if not made_with_cpu_scale(recs[0]):
        assert EARLIER_RECIPE in readme, "stale cpu records presented as today's"
    elif not all(made_with_cpu_scale(r) for r in recs):     # seed 0 today's, another seed not: left out, said
        assert " trained by an earlier recipe (other params or judge): left out" in readme   # "Seed 2 was" / "Seeds .. were"
    else:
        assert len(recs) >= 3
    want = stage_params("cpu", "cotraining", CoTrainingConfig)[0]["cotraining"]
    assert stage_params("default", "cotraining", CoTrainingConfig)[0]["cotraining"] != want
    # the check itself can fail: a record with other params is not today's cpu scale
    assert not made_with_cpu_scale({**recs[0], "params": {**recs[0]["params"], "n_train_harmful": -1}})

@pytest.mark.notebook
def test_notebook_runs_skip_the_iri_grammar_and_still_validate_notebooks():
    """run_stage's imports leave out rfc3987_syntax (a 2.2 s grammar compile per notebook run); nbformat still
    validates a stage's notebook, and a valid one only (a fresh process: this one may have imported it)."""
    import subprocess
    import sys

    code = """
import sys
from magictokens.pipeline import skip_iri_grammar
skip_iri_grammar()
import jupytext, nbformat, papermill
nb = jupytext.read(sys.argv[1])
nbformat.validate(nb)
nb.cells[0]["cell_type"] = "no-such-type"
try:
    nbformat.validate(nb)
    print("invalid notebook passed")
except nbformat.ValidationError:
    print("ok", sys.modules["rfc3987_syntax"] is None)
"""
    out = subprocess.run([sys.executable, "-c", code, str(REPO_ROOT / "notebooks" / "04_mode_reachability.py")],
                         capture_output=True, text=True, check=True, timeout=120).stdout.split()
    assert out == ["ok", "True"]
