import pytest

from magictokens.report import BEGIN, BLOCKS, END, block_text, render, update_pages
from magictokens.config import REPO_ROOT

pytestmark = pytest.mark.unit

README_MAX_LINES = 250   # README is the entry point; the details live in docs/


def test_readme_numbers_are_the_committed_results():
    """README's results block is exactly what `magictokens report` renders from results/*.json."""
    text = (REPO_ROOT / "README.md").read_text()
    block = text.split(BEGIN, 1)[1].split(END, 1)[0]
    assert block.strip() == render().strip(), "run `magictokens report` and commit README.md"


@pytest.mark.parametrize("block", list(BLOCKS))
def test_every_page_block_is_the_committed_results(block):
    """Every generated block, README's and the docs pages', is what `magictokens report` renders now."""
    page = BLOCKS[block][0]
    text = block_text((REPO_ROOT / page).read_text(), block)
    assert text is not None, f"{page} lost its <!-- {block}:begin/end --> markers"
    assert text.strip() == render(block=block).strip(), f"run `magictokens report` and commit {page}"


def test_readme_is_the_short_entry_point():
    """README stays under 250 lines, generated blocks included; the details go to docs/."""
    n = len((REPO_ROOT / "README.md").read_text().splitlines())
    assert n < README_MAX_LINES, f"README.md has {n} lines: move details to a docs/ page"


def test_readme_prose_agrees_with_paper_b_verdict():
    """README's prose says paper B is not reproduced exactly while the generated verdict says so."""
    text = (REPO_ROOT / "README.md").read_text()
    block = text.split(BEGIN, 1)[1].split(END, 1)[0]
    prose = text.replace(block, "")
    assert ("not reproduced yet" in prose) == ("**Paper B: the co-trained model is not reproduced yet**" in block)


def test_report_rewrites_readme_and_docs_and_then_is_current(tmp_path):
    """`magictokens report` on copies of the pages: emptied blocks on README and a docs page come back, a second
    run changes nothing, text outside the blocks is kept, and a page without its markers is an error."""
    from magictokens.errors import MagicTokensError

    pages = sorted({page for page, _ in BLOCKS.values()})
    assert "README.md" in pages and any(p.startswith("docs/") for p in pages)
    for page in pages:
        (tmp_path / page).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / page).write_text((REPO_ROOT / page).read_text())
    for block in ("results", "paper_b"):
        page = tmp_path / BLOCKS[block][0]
        text = page.read_text()
        page.write_text(text.replace(block_text(text, block), "OUTDATED-BLOCK\n") + "\nkept outside\n")
    assert sorted(update_pages(tmp_path, REPO_ROOT)) == ["README.md", "docs/paper_b.md"]
    assert update_pages(tmp_path, REPO_ROOT) == []
    for page in pages:
        kept = (tmp_path / page).read_text()
        assert "OUTDATED-BLOCK" not in kept
        if page in ("README.md", "docs/paper_b.md"):
            assert kept == (REPO_ROOT / page).read_text() + "\nkept outside\n"
    (tmp_path / "docs" / "beyond.md").write_text("# beyond, markers lost\n")
    with pytest.raises(MagicTokensError, match="beyond:begin"):
        update_pages(tmp_path, REPO_ROOT)


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
    assert "**Partial run**" in render(tmp_path)                       # README's headline says so too
    out = render(tmp_path, "paper_a")
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
    assert "(6 searches shared the device" in render(tmp_path, "paper_a")
    assert "searches shared the device" not in render(tmp_path)        # speed is a detail: docs/paper_a.md


def test_fast_bench_block_reports_ratios_and_targets(tmp_path):
    import json

    b = {"meta": {"device": "cpu", "model": "m"},
         "head2head": {"n": 15, "n_searched": 14, "share_k_fast_le_paper": 0.8, "n_k_fast_lt_paper": 3,
                       "n_k_fast_gt_paper": 3, "evals_paper_median": 150000, "evals_fast_median": 3000,
                       "seconds_paper_median": 900, "seconds_fast_median": 20.0,
                       "misses": {"n_short_of_target": 2, "higher_by_paper_stage": {"gcg k=4": 2, "greedy k=1": 1},
                                  "higher": [{"evals_at_k_paper": {"paper": p, "fast": f}}
                                             for p, f in ((26000, 5000), (6000, 4000), (49135, 1025))]}},
         "targets": {"evals_median_le_5000": True, "seconds_median_le_60": True, "k_le_paper_on_90pct": False}}
    (tmp_path / "results" / "bench").mkdir(parents=True)
    (tmp_path / "results" / "bench" / "fast.json").write_text(json.dumps(b))
    head = render(tmp_path)                                           # README: one line
    assert ("the 15 instances with a paper-budget row): required k no larger on 0.80 (lower on 3, higher on 3); "
            "median 150000 -> 3000 candidate evaluations per searched instance. Targets: evals_median_le_5000 met") in head
    out = render(tmp_path, "benchmarks")                              # docs/benchmarks.md: every part
    assert "no larger on 0.80 (lower on 3, higher on 3); median 150000 -> 3000 evaluations" in out
    assert "evals_median_le_5000 met" in out and "k_le_paper_on_90pct missed" in out
    assert "left out" not in out and "on the GPU" not in out
    # paper-budget rows made on a GPU: their seconds are reported apart, and unpaired rows are named
    b["head2head"].update(paper_rows_by_device={"cpu": 5, "H100": 10}, seconds_paper_median_gpu=30.0, gpu_shards=[6],
                          share_by_family={"top75": {"n": 5, "share_k_fast_le_paper": 0.6}},
                          unmatched=["uniform-x0-L16-3-r24575"],
                          gpu_throughput={"rows": 98, "n_calls": 2, "wall_s": 591, "s_per_instance": 6.03},
                          fast_source={"head2head rerun": 5, "paper-scale run row": 10}, recheck={"n": 3, "identical": 2})
    (tmp_path / "results" / "bench" / "fast.json").write_text(json.dumps(b))
    out = render(tmp_path, "benchmarks")
    assert ("(14 need a search; its rows made 5 on this CPU, 10 on H100): required k no larger on 0.80 (lower on 3, "
            "higher on 3; by family top75 0.60 of 5); median 150000 -> 3000 evaluations per searched instance, and on "
            "this CPU 900 -> 20.0 s; on the GPU the authors' budget took median 30 s per instance with [6] processes "
            "sharing it (98 instances in 2 runs, 591 s of wall time: 6.0 s each).") in out
    assert "1 paper-budget row(s) left out, with no fast row of the same x0 and target (uniform-x0-L16-3-r24575): a" in out
    assert ("The fast side of 10 of them is the paper-scale run's own row of the same x0 and target (same config and "
            "per-instance seed); searched again, 2 of 3 reproduced its k, prompt and evaluations exactly") in out
    assert ("longer prompt (3; 2 more would have to agree for the 90% target), the authors' search succeeded at: "
            "gcg k=4 (2), greedy k=1 (1); at the authors' k it spent median 26000 evaluations to our 4000.") in out
    # a calibration short of its plan says so, and names the sweeps whose fp32 shortlist was capped
    rec = {str(n): 0.5 for n in (256, 1024, 8192)}
    b["calibration"] = {"n": 12, "n_planned": 100, "n_near_capped": 1, "n_k1_solvable": 2, "lengths": [8, 10],
                        "recall_within_top_n": {"ce_at_y": rec}, "authors_check_share_of_solvable": 1.0}
    (tmp_path / "results" / "bench" / "fast.json").write_text(json.dumps(b))
    out = render(tmp_path, "benchmarks")
    assert ("Calibration of k = 1: 12 of 100 planned exhaustive sweeps (|x0| in [8, 10]; 1 hit the fp32 shortlist "
            "cap, so their best solver rank is an upper bound), 2 solvable at k = 1") in out
    b["calibration"].update(n=100, n_near_capped=0)
    (tmp_path / "results" / "bench" / "fast.json").write_text(json.dumps(b))
    assert "Calibration of k = 1: 100 exhaustive sweeps (|x0| in [8, 10]), 2 solvable" in render(tmp_path, "benchmarks")


def test_head_to_head_pairs_by_content_not_id():
    """An old paper-budget row and today's share an id but not an x0: each pairs with the fast row of its own
    content (a head2head rerun for the old one, the paper-scale run's row for today's); a row whose target
    moved finds none and is listed, not paired with the wrong instance."""
    from magictokens.reachability import headtohead as bf

    def row(i, x0, y, h, k):
        return {"id": i, "x0_ids": x0, "target_id": y, "config_hash": h, "k": k}
    old, new, moved = row("t-1", [1, 2], 5, "p0", 2), row("t-1", [3, 4], 6, "p1", 4), row("u-1", [7], 8, "p1", 1)
    rerun, run_t, run_u = row("t-1", [1, 2], 5, "F", 1), row("t-1", [3, 4], 6, "F", 6), row("u-1", [7], 9, "F", 1)
    pairs, info = bf.pair_rows([old, new, moved], [rerun], [run_t, run_u])
    assert [(p["k"], f["k"]) for p, f in pairs] == [(2, 1), (4, 6)]
    assert info == {"fast_source": {"head2head rerun": 1, "paper-scale run row": 1}, "unmatched": ["u-1"]}
    run_t["config_hash"] = "another fast config"              # a run row of another config is no fast side
    assert bf.pair_rows([old, new, moved], [rerun], [run_t, run_u])[1]["unmatched"] == ["t-1", "u-1"]
    # a rerun counts as the same search only with the same k, prompt and evaluations (seconds may differ)
    a = {"k": 2, "ids": [1, 2], "n_candidates": {"coordinate": 40}, "seconds": 1.0}
    assert bf.same_search(a, {**a, "seconds": 9.0})
    assert not bf.same_search(a, {**a, "n_candidates": {"coordinate": 41}})
    assert not bf.same_search(a, {**a, "ids": [2, 1]})


def test_explain_misses_counts_stages_and_shortfall():
    """Hand-built rows: 4 pairs, fast longer on 2 (one of them unsolved), so 90% needs all 4 and 2 more agree."""
    from magictokens.reachability import headtohead as bf

    def row(i, k, steps):
        return {"id": i, "k": k, "trace": [{"k": kk, "method": m, "success": ok, "n_candidates": n}
                                           for kk, m, ok, n in steps]}
    pairs = [(row("a", 1, [(0, "none", False, 1), (1, "greedy", True, 49135)]),
              row("a", 2, [(0, "none", False, 1), (1, "k1_top", False, 1025), (2, "coordinate", True, 577)])),
             (row("b", 4, [(0, "none", False, 1), (4, "gcg", True, 6404)]),
              row("b", None, [(0, "none", False, 1), (4, "coordinate", False, 4929)])),
             (row("c", 0, [(0, "none", True, 1)]), row("c", 0, [(0, "none", True, 1)])),
             (row("d", 6, [(0, "none", False, 1), (6, "gcg", True, 9000)]),
              row("d", 4, [(0, "none", False, 1), (4, "coordinate", True, 300)]))]
    m = bf.explain_misses(pairs)
    assert m["n_short_of_target"] == 2
    assert m["higher_by_paper_stage"] == {"gcg k=4": 1, "greedy k=1": 1}
    assert [x["evals_at_k_paper"] for x in m["higher"]] == [{"paper": 49135, "fast": 1025},
                                                            {"paper": 6404, "fast": 4929}]


def test_seeds_table_mean_spread_and_pooled_interval(tmp_path):
    """Two seeds of the same result: mean = the value, sd = 0 (so a t interval of width 0); the pooled Wilson
    interval, in its own column, is over 2n prompts."""
    import json
    import shutil

    from magictokens.metrics import wilson_interval
    from magictokens.report import render_seeds

    src = REPO_ROOT / "results" / "variants" / "paper_recipe" / "cotraining.json"
    d = json.loads(src.read_text())
    for sub, seed in (("results/cpu", 0), ("results/seeds/seed1/results/cpu", 1)):
        (tmp_path / sub).mkdir(parents=True)
        d["meta"]["seed"], d["params"]["seed"] = seed, seed
        (tmp_path / sub / "cotraining.json").write_text(json.dumps(d))
    assert render_seeds(tmp_path)[0].startswith("**Paper B over 2 training seeds")
    text = "\n".join(render_seeds(tmp_path))
    n, share = d["data"]["n_eval_harmful"], d["confusion"]["negative"]["negative"]
    lo, hi = wilson_interval(2 * round(share * n), 2 * n)
    assert (f"| negative token -> judged negative (n={n} per seed) | {share:.3f} ± 0.000 ({share:.3f}-{share:.3f}) "
            f"| {lo:.3f}-{hi:.3f} |") in text                    # t interval over seeds (sd 0), then pooled Wilson
    assert "same params otherwise" in text
    p = d["sam_stats"]["cotrained"]["cosine_logits"]["p_value"]
    assert "| SAM null (label permutation), cotrained: 95% quantile; p per seed | " in text
    assert f"; p {p:.3f}, {p:.3f} |" in text
    refit = {**d, "judge": {**(d.get("judge") or {}), "fit_sha": "another-judge"}}
    (tmp_path / "results/seeds/seed1/results/cpu/cotraining.json").write_text(json.dumps(refit))
    assert render_seeds(tmp_path) == []     # same params, targets picked by another judge: another recipe
    d["params"]["lr_typo"] = 1      # seed 1 made by another recipe: never pooled with seed 0, and said so
    (tmp_path / "results/seeds/seed1/results/cpu/cotraining.json").write_text(json.dumps(d))
    assert render_seeds(tmp_path) == []
    from magictokens.report.paper_b import render_paper_b_status
    status = render_paper_b_status(tmp_path)[0]
    assert "1 training seed (0)" in status and "Seed 1 was trained by an earlier recipe (other params or judge)" in status
    shutil.rmtree(tmp_path / "results" / "seeds")
    assert render_seeds(tmp_path) == []                       # one seed: no table


def test_beyond_result_says_when_its_cotrained_model_is_not_the_committed_one(tmp_path):
    import json

    from magictokens.report import render_mode_reachability
    from magictokens.stages.mode_reachability import cotraining_fingerprint

    cot = json.loads((REPO_ROOT / "results" / "cpu" / "cotraining.json").read_text())
    mr = json.loads((REPO_ROOT / "results" / "cpu" / "mode_reachability.json").read_text())
    (tmp_path / "results" / "cpu").mkdir(parents=True)
    (tmp_path / "results" / "cpu" / "cotraining.json").write_text(json.dumps(cot))

    def header(run):
        mr["meta"]["cotraining_run"] = run
        (tmp_path / "results" / "cpu" / "mode_reachability.json").write_text(json.dumps(mr))
        return render_mode_reachability("cpu", tmp_path)[0]

    assert "another co-trained model" not in header(cotraining_fingerprint(cot))
    assert "another co-trained model" in header("0123456789ab")
    assert "not recorded" in header(None)
    cot["train_logs"]["cotrained"]["loss_last"] += 0.1          # a retrained model: another fingerprint
    assert cotraining_fingerprint(cot) != mr["meta"]["cotraining_run"]


def test_repro_time_sums_what_the_stages_recorded(tmp_path):
    """Hand-made results: 100 s + 20 s of reachability rows, 30 s theorem, 600 s co-training = 12.5 min;
    the beyond stage's rows count only under today's placements and search (a stale file is left out)."""
    import json

    from magictokens.report import render_repro_time, stage_seconds

    base = tmp_path / "results" / "default"
    rows = base / "instances" / "reachability" / "fast"
    rows.mkdir(parents=True)
    (rows / "true_token.jsonl").write_text(json.dumps({"id": "a", "seconds": 7}) + "\n"   # a rerun replaced it
                                           + json.dumps({"id": "a", "seconds": 100}) + "\n"
                                           + json.dumps({"id": "b", "seconds": 20}) + "\n" + '{"id": "c", "sec')
    (base / "instances" / "reachability" / "backoff").mkdir()   # another method's rows: not this result's
    (base / "instances" / "reachability" / "backoff" / "true_token.jsonl").write_text(json.dumps({"seconds": 999}))
    (base / "reachability.json").write_text(json.dumps({"meta": {"method": "fast"}}))
    (base / "theorem.json").write_text(json.dumps({"meta": {"runtime_s": 30}}))
    (base / "cotraining.json").write_text(json.dumps({"meta": {"threads": 2}, "seconds_total": 600}))
    st = stage_seconds("default", tmp_path)
    assert {k: v["seconds"] for k, v in st.items()} == {"reachability": 120, "theorem": 30, "cotraining": 600}
    line = render_repro_time(tmp_path)[0]
    assert "total 12.5 min" in line and "not yet run in today's form: mode_reachability" in line

    mr = base / "instances" / "mode_reachability"
    (mr / "user_before" / "fast").mkdir(parents=True)
    (mr / "user_before" / "fast" / "cotrained_positive_to_negative.jsonl").write_text(
        json.dumps({"header": 1}) + "\n" + json.dumps({"seconds": 1050}) + "\n")
    (mr / "system" / "backoff").mkdir(parents=True)
    (mr / "system" / "backoff" / "old.jsonl").write_text(json.dumps({"seconds": 5000}) + "\n")
    (base / "mode_reachability.json").write_text(json.dumps({"meta": {"search": "fast", "placements": ["user_before"]}}))
    line = render_repro_time(tmp_path, target_min=30)[0]
    assert "mode_reachability 17.5 min (1 search rows" in line
    assert "total 30.0 min: under the 30-minute target" in line
    (base / "theorem.json").write_text(json.dumps({"meta": {"runtime_s": 90}}))
    assert "total 31.0 min: the 30-minute target is missed by 1.0 min" in render_repro_time(tmp_path, target_min=30)[0]
    assert "the 20-minute target is missed by 11.0 min" in render_repro_time(tmp_path)[0]   # issue 14's target


def test_measured_repro_line_and_its_staleness(tmp_path):
    """benchmarks/repro_time.py's JSON: per-stage minutes, the total against 20 minutes, and "Stale" once
    params.yaml's default section is not the one measured."""
    import json
    import shutil
    import sys

    from magictokens.report.timing import default_params_hash, render_measured_repro

    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
    import repro_time

    shutil.copy(REPO_ROOT / "params.yaml", tmp_path / "params.yaml")
    assert default_params_hash(tmp_path) == repro_time.default_params_hash(tmp_path)   # one hash, two writers
    assert repro_time.stages(REPO_ROOT) == ["reachability", "theorem", "cotraining", "mode_reachability"]
    assert render_measured_repro(tmp_path) == []
    b = {"meta": {"device": "cpu (2 cores)", "threads": 2, "versions": {"git": "abc1234"}, "date": "2026-11-25",
                  "default_params": default_params_hash(tmp_path), "load_avg_1min": [0.5, 2.1]},
         "from_scratch": True, "stages_s": {"reachability": 600, "theorem": 60, "cotraining": 420}, "total_s": 1080}
    (tmp_path / "results" / "bench").mkdir(parents=True)
    (tmp_path / "results" / "bench" / "repro_time.json").write_text(json.dumps(b))
    line = render_measured_repro(tmp_path)[0]
    assert "reachability 10.0 min, theorem 1.0 min, cotraining 7.0 min; total **18.0 min**: under the 20-minute" in line
    assert "Stale" not in line and "load 0.5-2.1" in line
    (tmp_path / "params.yaml").write_text((tmp_path / "params.yaml").read_text().replace("seed: 0", "seed: 1", 1))
    assert "**Stale**" in render_measured_repro(tmp_path)[0]
    b["total_s"] = 1500
    (tmp_path / "results" / "bench" / "repro_time.json").write_text(json.dumps(b))
    assert "the 20-minute target is missed by 5.0 min" in render_measured_repro(tmp_path)[0]


def test_every_figure_and_file_readme_links_exists():
    """README's and the docs pages' images and linked repository files exist (figures move when a scale is
    renamed); each link is read from the page's own folder."""
    import re

    pages = [REPO_ROOT / "README.md"] + sorted((REPO_ROOT / "docs").glob("*.md"))
    assert len(pages) > 1
    missing = []
    for page in pages:
        links = re.findall(r"\]\(([^)#\s]+)\)", page.read_text())
        local = [x for x in links if not re.match(r"[a-z]+://", x)]
        if page.name == "README.md":
            assert any(x.endswith(".png") for x in local)
        missing += [f"{page.relative_to(REPO_ROOT)}: {x}" for x in local if not (page.parent / x).exists()]
    assert not missing, f"pages link to missing files: {missing}"


def test_seed_times_say_how_many_seeds_are_of_an_earlier_recipe(tmp_path):
    """A seed's time is a measurement whatever its recipe, but a seed trained by another recipe than seed 0's
    record (other params: other rows and steps) is counted as such beside the times."""
    import json

    from magictokens.report import render_times_by_cpu

    params = {"seed": 0, "distil": {"read_per_pair": {"positive": 3}}}
    for sub, seed, rpp in (("results/cpu", 0, {"positive": 3}), ("results/seeds/seed1/results/cpu", 1, {}),
                           ("results/seeds/seed2/results/cpu", 2, {"positive": 3})):
        (tmp_path / sub).mkdir(parents=True)
        rec = {"meta": {"device": "cpu (2 cores, x86_64)", "threads": 2}, "seconds_total": 1800 + 60 * seed,
               "params": {**params, "seed": seed, "distil": {"read_per_pair": rpp}}, "judge": {"fit_sha": "a"}}
        (tmp_path / sub / "cotraining.json").write_text(json.dumps(rec))
    text = "\n".join(render_times_by_cpu(tmp_path))
    assert "| paper B co-training, cpu scale, per training seed | 30-32 min (3 seeds; 1 by an earlier recipe than seed 0's) |" in text
    rec = tmp_path / "results/seeds/seed1/results/cpu/cotraining.json"
    d = json.loads(rec.read_text())
    d["params"]["distil"]["read_per_pair"] = {"positive": 3}
    rec.write_text(json.dumps(d))
    assert "30-32 min (3 seeds) |" in "\n".join(render_times_by_cpu(tmp_path))


def test_times_table_has_a_column_per_cpu_kind(tmp_path):
    """Results without `meta.hardware` are the earlier AVX512-BF16 machine's; results that record an AVX2-only
    CPU fill its column; a kind with no result says "not measured yet" (never a number by hand); a repro_time
    measurement takes the kind of the default-scale results its own run wrote (same git revision)."""
    import json

    from magictokens.report import cpu_kind, render_times_by_cpu
    from magictokens.report.timing import AVX2_ONLY, AVX512_BF16, NOT_MEASURED

    avx2 = {"cpu": {"isa": "AVX2", "avx512_bf16": False, "amx_bf16": False, "arm_bf16": False}, "auto_dtype": "float32"}
    assert cpu_kind({}) == AVX512_BF16 and cpu_kind({"hardware": avx2}) == AVX2_ONLY
    assert cpu_kind({"hardware": {"cpu": {**avx2["cpu"], "isa": "AVX512", "avx512_bf16": True}}}) == AVX512_BF16
    assert cpu_kind({"device": "NVIDIA H100 80GB HBM3"}) == "NVIDIA H100 80GB HBM3"
    assert render_times_by_cpu(tmp_path) == []                       # nothing measured: no table

    for sub, secs, hw in (("results/cpu", 1800, None), ("results/seeds/seed1/results/cpu", 2400, avx2)):
        (tmp_path / sub).mkdir(parents=True)
        meta = {"device": "cpu (2 cores, x86_64)", "threads": 2, **({"hardware": hw} if hw else {})}
        (tmp_path / sub / "cotraining.json").write_text(json.dumps({"meta": meta, "seconds_total": secs}))
    text = "\n".join(render_times_by_cpu(tmp_path))
    assert "| AVX512-BF16 CPU (bf16 native) | AVX2-only CPU (bf16 emulated: fp32 used) |" in text
    assert "| paper B co-training, cpu scale, per training seed | 30.0 min (1 seed) | 40.0 min (1 seed) |" in text
    assert NOT_MEASURED not in text

    # a re-evaluation that reused its trained adapters: the seed costs what its parts recorded (1200 + 1200 s)
    rec = tmp_path / "results/cpu/cotraining.json"
    rec.write_text(json.dumps({**json.loads(rec.read_text()), "seconds_total": 600,
                               "seconds": {"train_cotrained": 1200, "eval_controllability": 1200}}))
    assert "| per training seed | 40.0 min (1 seed) |" in "\n".join(render_times_by_cpu(tmp_path)).replace(
        "paper B co-training, cpu scale, ", "")
    rec.write_text(json.dumps({**json.loads(rec.read_text()), "seconds_total": 1800, "seconds": {}}))

    (tmp_path / "results/seeds/seed1/results/cpu/cotraining.json").unlink()
    text = "\n".join(render_times_by_cpu(tmp_path))
    assert f"| 30.0 min (1 seed) | {NOT_MEASURED} |" in text and f"*{AVX2_ONLY}: {NOT_MEASURED}." in text

    # benchmarks/repro_time.py records no hardware: its run's own default results (same git) tell the kind
    (tmp_path / "results" / "bench").mkdir(parents=True)
    b = {"meta": {"device": "cpu (2 cores)", "versions": {"git": "abc1234"}, "default_params": None},
         "stages_s": {"reachability": 600}, "total_s": 1200}
    (tmp_path / "results" / "bench" / "repro_time.json").write_text(json.dumps(b))
    (tmp_path / "results" / "default").mkdir(parents=True)
    (tmp_path / "results" / "default" / "theorem.json").write_text(json.dumps(
        {"meta": {"runtime_s": 60, "versions": {"git": "abc1234"}, "hardware": avx2}}))
    text = "\n".join(render_times_by_cpu(tmp_path))
    assert f"| bare `dvc repro` from scratch, wall clock | {NOT_MEASURED} | 20.0 min |" in text
    assert f"| bare `dvc repro`, compute the stages recorded (a floor) | {NOT_MEASURED} | 1.0 min (theorem only) |" in text
    b["meta"]["versions"]["git"] = "an older run"
    (tmp_path / "results" / "bench" / "repro_time.json").write_text(json.dumps(b))
    assert "| bare `dvc repro` from scratch, wall clock | 20.0 min |" in "\n".join(render_times_by_cpu(tmp_path))

    # benchmarks/test_time.py --auto-dtype float32 on a bf16 CPU: its own row, in the bf16 CPU's column
    bf16 = {"cpu": {**avx2["cpu"], "isa": "AVX512", "avx512_bf16": True}, "auto_dtype": "bfloat16"}
    for name, hw, secs in (("test_time_bf16.json", bf16, 300), ("test_time_bf16_auto-float32.json",
                           {**bf16, "auto_dtype": "float32", "auto_dtype_forced": "float32"}, 540)):
        (tmp_path / "results" / "bench" / name).write_text(json.dumps(
            {"meta": {"device": "cpu", "threads": 2, "hardware": hw, "versions": {"git": "abc1234"}},
             "summary": "9 passed", "total_s": secs}))
    text = "\n".join(render_times_by_cpu(tmp_path))
    assert "| full test suite (`python -m pytest -q`), wall clock | 5.0 min (9 passed, 2 threads, git abc1234) |" in text
    assert ("| full test suite (`python -m pytest -q`), wall clock, dtype auto forced to float32 "
            "(`test_time.py --auto-dtype float32`) | 9.0 min (9 passed, 2 threads, git abc1234) |") in text

    # benchmarks/paper_sample.py fills a kind that has no run of record; the record's own cell wins
    row = "| paper A, paper scale: one searched instance, median |"
    sample = {"meta": {"device": "cpu", "hardware": avx2}, "family": "true_token", "n_searched": 30,
              "seconds_per_searched_median": 70.0, "ratio_to_record_median": 3.04, "search_dtype": ["float32"],
              "record_search_dtype": ["bfloat16"]}
    (tmp_path / "results" / "bench" / "paper_sample_avx2.json").write_text(json.dumps(sample))
    assert (f"{row} {NOT_MEASURED} | 70.0 s (a sample: N=30 of the first true_token instances, 3.0x the record's "
            "seconds on each, float32 vs bfloat16) |") in "\n".join(render_times_by_cpu(tmp_path))
    (tmp_path / "results" / "paper").mkdir(parents=True)
    (tmp_path / "results" / "paper" / "speed.json").write_text(json.dumps(
        {"meta": {"hardware": avx2}, "n_searched": 1000, "seconds_per_searched_median": 80.0}))
    assert f"{row} {NOT_MEASURED} | 80.0 s (N=1000) |" in "\n".join(render_times_by_cpu(tmp_path))

    # benchmarks/distil_yield.py: the self-distillation alone, per kind
    (tmp_path / "results" / "bench" / "distil_cpu_avx2.json").write_text(json.dumps(
        {"meta": {"device": "cpu", "hardware": avx2, "threads": 2}, "seconds": 3000,
         "distil": {"n_generated": 2000, "read_resample": {"positive": {"candidates": 80}, "negative": {"candidates": 8}}}}))
    assert (f"| paper B self-distillation alone, cpu scale (`benchmarks/distil_yield.py`) | {NOT_MEASURED} | "
            "50.0 min (2000 candidates + 88 resampled, 2 threads) |") in "\n".join(render_times_by_cpu(tmp_path))


def test_paper_b_status_says_reproduced_only_past_the_bar(tmp_path):
    """The README's paper B verdict is computed from the results against `BAR`, never typed: a run short of it
    is "not reproduced yet" with what fails; one past every bar is "reproduced"."""
    import json

    from magictokens.report import render_paper_b_status
    from magictokens.report.paper_b import BAR

    d = json.loads((REPO_ROOT / "results" / "variants" / "paper_recipe" / "cotraining.json").read_text())
    (tmp_path / "results" / "cpu").mkdir(parents=True)
    path = tmp_path / "results" / "cpu" / "cotraining.json"
    d["mode_accuracy"], d["xstest_over_refusal"]["cotrained_positive"] = 0.5, 0.1
    d["judge"].update(agreement=0.95, agreement_ci95=[0.9, 0.97], n=100)
    path.write_text(json.dumps(d))
    out = "\n".join(render_paper_b_status(tmp_path))
    assert f"**Paper B: the co-trained model is not reproduced yet** (mode accuracy below {BAR['mode_accuracy']:.2f})" in out
    assert "| mode accuracy (mean of the diagonal below) | 0.500 | >= 0.90 | - |" in out
    assert "1 training seed (0)" in out and "± " not in out.split("|", 1)[1]
    d["mode_accuracy"] = 0.95
    path.write_text(json.dumps(d))
    out = "\n".join(render_paper_b_status(tmp_path))
    assert "**Paper B: reproduced by the repository's bar**" in out and "not reproduced" not in out
    d["judge"]["agreement"] = 0.8                                      # a judge too weak to cite fails it
    path.write_text(json.dumps(d))
    assert "(judge agreement below 0.90)" in render_paper_b_status(tmp_path)[0]


def test_beyond_headline_names_the_rows_with_nothing_to_reach(tmp_path):
    """README's beyond table leaves out rows with N = 0 and names them: a row whose target mode never held on the
    prompts done (0 of n > 0) as nothing to reach, a row a cut run never started (0 of 0) as not searched yet;
    the docs page keeps every row and the answers in words."""
    import json
    import shutil

    from magictokens.report import render_mode_reachability

    (tmp_path / "results" / "cpu").mkdir(parents=True)
    d = json.loads((REPO_ROOT / "results" / "cpu" / "mode_reachability.json").read_text())
    rows = [s for p in d["transitions"].values() for s in p.values()] + \
           [s for p in d["baselines"].values() for s in p.values()]
    assert any(s["n"] for s in rows) and any(not s["n_prompts"] for s in rows)   # the committed run is cut
    held = next(s for s in rows if s["n"])
    held.update(n=0, n_prompts=7)                                                 # the mode never held on 7 done
    (tmp_path / "results" / "cpu" / "mode_reachability.json").write_text(json.dumps(d))
    shutil.copy(REPO_ROOT / "results" / "cpu" / "cotraining.json", tmp_path / "results" / "cpu")
    head = "\n".join(render_mode_reachability("cpu", tmp_path, detail=False))
    full = "\n".join(render_mode_reachability("cpu", tmp_path))
    never, unrun = head.split("Nothing to reach", 1)[1].split("Not searched yet", 1)
    empty = [ln for ln in full.splitlines() if ln.startswith("| ") and "| 0 of " in ln]
    assert any("| 0 of 7 |" in ln for ln in empty) and any("| 0 of 0 |" in ln for ln in empty)
    for ln in empty:
        name = ln.split(" | ")[0][2:]
        assert ln not in head
        assert name in (never if "| 0 of 7 |" in ln else unrun) and name not in (unrun if "| 0 of 7 |" in ln else never)
    assert "\n- " not in head and "\n- " in full


def test_sweep_line_says_only_what_the_sweep_and_params_now_hold(tmp_path):
    """The sweep's line: its rows and best, what params.yaml held when it ran (its JSON), and what params.yaml
    holds now for the swept scale (the sweep's best or not) and the cpu scale (not swept); never a claim about
    a record's epochs."""
    import json
    import shutil

    import yaml

    from magictokens.report import render_sweep

    (tmp_path / "results" / "bench").mkdir(parents=True)
    shutil.copy(REPO_ROOT / "results" / "bench" / "cotraining_sweep.json", tmp_path / "results" / "bench")
    sweep = json.loads((tmp_path / "results" / "bench" / "cotraining_sweep.json").read_text())
    best, then, swept = sweep["best"], sweep["meta"]["params_in_use"], sweep["meta"]["scale"]
    line = render_sweep(tmp_path)[0]                                 # no params.yaml: only the sweep's JSON
    assert f"Best there: lr {best['lr']} x {best['epochs']} epochs" in line
    assert f"params.yaml's {swept} scale held lr {then['lr']} x {then['epochs']} when the sweep ran" in line
    assert "params.yaml now" not in line and "record" not in line
    params = {"default": {"cotraining": {"n_train_harmful": 5, "n_train_benign": 6,
                                         "train": {"lr": best["lr"], "epochs": best["epochs"]}}},
              "cpu": {"cotraining": {"n_train_harmful": 50, "train": {"epochs": best["epochs"] + 7}}}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    line = render_sweep(tmp_path)[0]
    assert (f"params.yaml now: {swept} scale (5 + 6 training prompts) lr {best['lr']} x {best['epochs']} epochs "
            f"(the sweep's best)") in line
    assert (f"cpu scale (50 + 6 training prompts) lr {best['lr']} x {best['epochs'] + 7} epochs (not swept: the "
            f"sweep scored the {swept} scale's training set only).") in line
    params["default"]["cotraining"]["train"]["epochs"] = best["epochs"] + 1
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    assert "**not the sweep's best**" in render_sweep(tmp_path)[0]
    # a second sweep of record gets its own line naming its file and judge; a probe (--set overrides) gets none,
    # nor does a one-cell run with no overrides (a probe's plain cell: one point chooses nothing)
    v2 = dict(sweep, meta={**sweep["meta"], "judge": "rules+cross-encoder", "overrides": []},
              rows=[dict(best, lr=0.123, score=0.5), dict(best, lr=0.5, score=0.4)],
              best=dict(best, lr=0.123, score=0.5))
    (tmp_path / "results" / "bench" / "cotraining_sweep_v2.json").write_text(json.dumps(v2))
    (tmp_path / "results" / "bench" / "cotraining_sweep_probe.json").write_text(
        json.dumps(dict(v2, meta={**v2["meta"], "overrides": ["a.b=1"]})))
    (tmp_path / "results" / "bench" / "cotraining_sweep_plain.json").write_text(
        json.dumps(dict(v2, rows=v2["rows"][:1])))
    lines = [x for x in render_sweep(tmp_path) if x]
    assert len(lines) == 2 and "`cotraining_sweep_v2.json`" in lines[1]
    assert "judged by the rules+cross-encoder judge" in lines[1] and "Best there: lr 0.123" in lines[1]
    assert "**not the sweep's best**" in lines[1] and "by reading" not in lines[1]
    # the readings of its cells (a check of a pool of its replies) join its line, never the other sweep's
    (tmp_path / "results" / "bench" / "judge_v2.json").write_text(json.dumps({"check": {"pool_x": {
        "n": 7, "mode_accuracy_read_by_run": {"cotraining_sweep_v2-lr0.123x2": {
            "per_token": {"positive": 0.25, "negative": 0.5, "rejective": 1.0}, "mean": 0.583333}}}}}))
    lines = [x for x in render_sweep(tmp_path) if x]
    assert ("Mode accuracy there by reading (pool_x, 7 replies read): lr 0.123 x 2 epochs 0.583 (positive 0.250, "
            "negative 0.500, rejective 1.000).") in lines[1]
    assert "by reading" not in lines[0]
    # a pool that read only some tokens' replies: each token's share, no mean
    (tmp_path / "results" / "bench" / "judge_v2.json").write_text(json.dumps({"check": {"pool_y": {
        "n": 5, "read_per_token_by_run": {"cotraining_sweep_v2-lr0.123x2": {"positive": 0.4, "negative": 0.775}}}}}))
    lines = [x for x in render_sweep(tmp_path) if x]
    assert ("read as its mode there (pool_y, 5 replies read; tokens not listed were not read): lr 0.123 x 2 "
            "epochs positive 0.400, negative 0.775.") in lines[1] and "Mode accuracy there" not in lines[1]
    # a sweep of another training seed (`--set seed=1`) is a sweep of record, and says its seed
    (tmp_path / "results" / "bench" / "cotraining_sweep_v3_seed1.json").write_text(
        json.dumps(dict(v2, meta={**v2["meta"], "seed": 1, "overrides": ["seed=1"]})))
    lines = [x for x in render_sweep(tmp_path) if x]
    assert len(lines) == 3 and "`cotraining_sweep_v3_seed1.json`" in lines[2] and ", training seed 1;" in lines[2]
    assert "training seed" not in lines[0] + lines[1]


def test_sam_beside_the_papers_number_is_the_cosine_one(tmp_path):
    """Wherever SAM is printed beside paper B's number it is the cosine SAM (the paper's metric); the Euclidean
    one, made different here, appears only in its own labelled clause or row, never next to the paper's."""
    import json

    from magictokens.papers import PAPER_B
    from magictokens.report import render_cotraining, render_paper_b_status, render_seeds, render_variants

    cos, euc, paper = "0.222", "0.777", f"{PAPER_B['sam_cotrained']:.3f}"
    d = json.loads((REPO_ROOT / "results" / "variants" / "paper_recipe" / "cotraining.json").read_text())
    d["sam"]["cotrained"] = d["sam_stats"]["cotrained"]["euclidean_probs"]["sam"] = float(euc)
    d["sam_stats"]["cotrained"]["cosine_logits"]["sam"] = float(cos)
    for sub in ("results/cpu", "results/seeds/seed1/results/cpu", "results/variants/v"):
        (tmp_path / sub).mkdir(parents=True)
        (tmp_path / sub / "cotraining.json").write_text(json.dumps(d))

    sentence = next(ln for ln in render_cotraining("cpu", tmp_path) if "Safety Alignment Margin" in ln)
    head, rest = sentence.split("paper B's own number", 1)
    assert f"cotrained {cos} (" in head and euc not in head and paper in rest
    assert f"Euclidean on probabilities, the earlier metric (not the paper's metric: not comparable with its " \
           f"number): cotrained {euc}" in rest
    status = render_paper_b_status(tmp_path)
    row = next(ln for ln in status if ln.startswith("| SAM, cosine"))
    assert row.split(" | ")[1].startswith(cos) and paper in row and euc not in row
    assert all(euc not in ln for ln in status if paper in ln)
    assert any(ln.startswith("| SAM, Euclidean on probabilities, the earlier metric") and euc in ln
               and paper not in ln for ln in status)
    seeds = render_seeds(tmp_path)
    assert all(euc not in ln for ln in seeds if paper in ln)
    assert any(f"paper B's: {paper}" in ln and f"| {cos} ± 0.000" in ln for ln in seeds)
    variant = "\n".join(render_variants(tmp_path))
    near = variant.split(f"paper B's: {paper}", 1)[0].rsplit("SAM", 1)[1]
    assert cos in near and euc not in near


def test_seeds_table_uses_the_t_interval_over_seeds(tmp_path):
    """Three seeds: the interval over seeds is mean +- t(0.975, 2) sd / sqrt(3), not the pooled Wilson interval
    (which ignores the seed-to-seed spread and sits apart, in its own labelled column)."""
    import json
    import math

    from scipy.stats import t as student_t

    from magictokens.metrics import wilson_interval
    from magictokens.report import render_seeds

    d = json.loads((REPO_ROOT / "results" / "variants" / "paper_recipe" / "cotraining.json").read_text())
    n = d["data"]["n_eval_harmful"]
    shares = [round(x * n) / n for x in (0.2, 0.4, 0.6)]
    accs = [0.4, 0.5, 0.6]
    for seed, (share, acc) in enumerate(zip(shares, accs)):
        sub = "results/cpu" if seed == 0 else f"results/seeds/seed{seed}/results/cpu"
        (tmp_path / sub).mkdir(parents=True)
        d["meta"]["seed"], d["params"]["seed"] = seed, seed
        d["confusion"]["negative"]["negative"], d["mode_accuracy"] = share, acc
        (tmp_path / sub / "cotraining.json").write_text(json.dumps(d))
    text = "\n".join(render_seeds(tmp_path))
    assert "95% t interval over seeds" in text and "pooled Wilson 95% (ignores seed spread)" in text

    def t_interval(v):
        m = sum(v) / 3
        sd = math.sqrt(sum((x - m) ** 2 for x in v) / 2)
        half = student_t.ppf(0.975, 2) * sd / math.sqrt(3)
        # shares and mode accuracy: the interval stops at [0, 1]
        return f"{m:.3f} ± {sd:.3f} ({max(0.0, m - half):.3f}-{min(1.0, m + half):.3f})", 2 * half

    assert f"| mode accuracy (mean diagonal) | {t_interval(accs)[0]} | - |" in text
    lo, hi = wilson_interval(sum(round(s * n) for s in shares), 3 * n)
    cell, width = t_interval(shares)
    assert f"| negative token -> judged negative (n={n} per seed) | {cell} | {lo:.3f}-{hi:.3f} |" in text
    assert width > 2 * (hi - lo)          # the seeds disagree far more than the pooled count's interval says


def test_a_param_added_later_at_its_old_value_keeps_a_record_todays_recipe(monkeypatch):
    """distil.read_promote came after records were made: a record without it is today's recipe while the param is
    off (the value those records were made under), and an earlier recipe once it is on."""
    import copy
    import json as _json

    from magictokens import config
    from magictokens.cotraining import CoTrainingConfig
    from magictokens.report.paper_b import made_with_cpu_scale
    rec = _json.loads((REPO_ROOT / "results" / "cpu" / "cotraining.json").read_text())
    rec["judge"]["fit_sha"] = None          # the judge is the other half of a recipe: checked at the end
    real = config.stage_params
    today = {}

    def params_with(*a, **k):               # today's cpu params, read_promote set by the test
        P = copy.deepcopy(real(*a, **k))
        P[0]["cotraining"]["distil"]["read_promote"] = today["read_promote"]
        return P
    monkeypatch.setattr(config, "stage_params", params_with)
    assert real("cpu", "cotraining", CoTrainingConfig)[0]["cotraining"]["distil"]["read_promote"] \
        == rec["params"]["distil"]["read_promote"]              # the record of seed 0 is today's recipe
    old = {**rec, "params": {**rec["params"], "distil": {k: v for k, v in rec["params"]["distil"].items()
                                                         if k != "read_promote"}}}
    on = {**old, "params": {**old["params"], "distil": {**old["params"]["distil"], "read_promote": True}}}
    today["read_promote"] = False
    assert made_with_cpu_scale(old) and not made_with_cpu_scale(on)
    today["read_promote"] = True
    assert not made_with_cpu_scale(old) and made_with_cpu_scale(on)
    # same params, targets picked by another fit of the judge than the committed one: another recipe
    from magictokens.report.paper_b import _judge_sha_today
    assert made_with_cpu_scale({**on, "judge": {**on["judge"], "fit_sha": _judge_sha_today()}})
    assert not made_with_cpu_scale({**on, "judge": {**on["judge"], "fit_sha": "0123456789abcdef"}})


def test_read_per_pair_off_keeps_the_records_made_before_it_todays_recipe(monkeypatch):
    """distil.read_per_pair came after the records: at {} (off) a record without it is today's recipe, with a
    mode on it is an earlier one."""
    import copy
    import json as _json

    from magictokens import config
    from magictokens.report.paper_b import made_with_cpu_scale
    rec = _json.loads((REPO_ROOT / "results" / "cpu" / "cotraining.json").read_text())
    rec["judge"]["fit_sha"] = None
    rec["params"]["distil"].pop("read_per_pair", None)     # a record made before the key existed
    real, today = config.stage_params, {}

    def params_with(*a, **k):
        P = copy.deepcopy(real(*a, **k))
        P[0]["cotraining"]["distil"]["read_per_pair"] = today["rpp"]
        return P
    monkeypatch.setattr(config, "stage_params", params_with)
    today["rpp"] = {}
    assert made_with_cpu_scale(rec)
    today["rpp"] = {"positive": 3}
    assert not made_with_cpu_scale(rec)


def test_a_top_level_param_added_later_keeps_a_record_todays_recipe_only_at_its_old_value(monkeypatch):
    """repetition_penalty (the cotraining section's own key, not a sub-section's) came after the records."""
    import copy
    import json as _json

    from magictokens import config
    from magictokens.report.paper_b import made_with_cpu_scale
    rec = _json.loads((REPO_ROOT / "results" / "cpu" / "cotraining.json").read_text())
    real = config.stage_params
    today = {}

    def params_with(*a, **k):
        P = copy.deepcopy(real(*a, **k))
        P[0]["cotraining"]["repetition_penalty"] = today["rp"]
        return P
    monkeypatch.setattr(config, "stage_params", params_with)
    rec["judge"]["fit_sha"] = None          # the judge is the other half of a recipe (test above)
    rec["params"]["repetition_penalty"] = 1.0
    today["rp"] = 1.0
    assert made_with_cpu_scale(rec)
    old = {**rec, "params": {k: v for k, v in rec["params"].items() if k != "repetition_penalty"}}
    assert made_with_cpu_scale(old)              # predates the key, made at its old value
    today["rp"] = 1.2
    assert not made_with_cpu_scale(old)
    assert made_with_cpu_scale({**rec, "params": {**rec["params"], "repetition_penalty": 1.2}})


def test_readings_of_a_run_say_when_the_record_is_another_model(tmp_path):
    """A check's readings describe the run whose replies were read: once that seed is retrained, the report
    says the record now is another model (fingerprint of its training logs), for seed 0 and another seed; the
    same model decoded another way is named as such (its replies were not read)."""
    import copy
    import json

    from magictokens.report.paper_b import _read_run
    from magictokens.stages.mode_reachability import cotraining_fingerprint

    cot = json.loads((REPO_ROOT / "results" / "cpu" / "cotraining.json").read_text())
    for seed, d in ((0, tmp_path / "results" / "cpu"), (3, tmp_path / "results/seeds/seed3/results/cpu")):
        d.mkdir(parents=True)
        (d / "cotraining.json").write_text(json.dumps(cot))
        run = {"scale": "cpu", "seed": seed, "git": "abc1234", "fingerprint": cotraining_fingerprint(cot),
               "decoding": {"repetition_penalty": 1.2, "no_repeat_ngram_size": 3}}
        assert _read_run(tmp_path, run) == f" (the run of record, seed {seed}, git abc1234)"
        # the same model whose replies were decoded plain greedy (a check made before decoding was recorded)
        words = _read_run(tmp_path, {k: v for k, v in run.items() if k != "decoding"})
        assert "the model of record" in words and "decoded plain greedy" in words
        assert "repetition penalty 1.2 and no repeated 3-gram" in words and "do not describe them" in words
        later = copy.deepcopy(cot)
        later["train_logs"]["cotrained"]["loss_last"] += 0.1          # retrained: another model
        (d / "cotraining.json").write_text(json.dumps(later))
        assert "is another model, not read yet" in _read_run(tmp_path, run)
    assert "is another model" in _read_run(tmp_path, dict(run, seed=4))    # a seed with no record at all


def test_readings_of_a_seed_made_by_an_earlier_recipe_are_named_so_and_left_out_of_the_readme(tmp_path):
    """Seed 0 retrained by a new recipe while seed 3's record is still the old recipe's: seed 3's readings are
    of its run of record, but that record is left out of every across-seed number, so the check says so and
    README's short judge line leaves it to docs/paper_b.md; with both seeds of one recipe it is the record."""
    import copy
    import json

    from magictokens.cotraining.config import decoding_of
    from magictokens.report.paper_b import _read_run, render_judge_v2
    from magictokens.stages.mode_reachability import cotraining_fingerprint

    cot = json.loads((REPO_ROOT / "results" / "cpu" / "cotraining.json").read_text())
    seed3 = copy.deepcopy(cot)
    seed3["meta"]["seed"] = seed3["params"]["seed"] = 3
    d0, d3 = tmp_path / "results" / "cpu", tmp_path / "results/seeds/seed3/results/cpu"
    for d, rec in ((d0, cot), (d3, seed3)):
        d.mkdir(parents=True)
        (d / "cotraining.json").write_text(json.dumps(rec))
    run = {"scale": "cpu", "seed": 3, "git": "abc1234", "fingerprint": cotraining_fingerprint(seed3),
           "decoding": decoding_of(seed3["params"])}
    (tmp_path / "results" / "bench").mkdir(parents=True)
    b = json.loads((REPO_ROOT / "results" / "bench" / "judge_v2.json").read_text())
    b["check"] = {"pool_x": {**b["check"]["pool_v36"], "run": run}}
    (tmp_path / "results" / "bench" / "judge_v2.json").write_text(json.dumps(b))
    n = b["check"]["pool_x"]["n"]
    assert _read_run(tmp_path, run) == " (the run of record, seed 3, git abc1234)"      # one recipe
    assert f"Against {n} replies" in render_judge_v2(tmp_path, short=True)[0]
    seed3["params"]["distil"] = {**seed3["params"]["distil"], "read_per_pair": {}}     # seed 0 moved on
    (d3 / "cotraining.json").write_text(json.dumps(seed3))
    run["fingerprint"] = cotraining_fingerprint(seed3)
    b["check"]["pool_x"]["run"] = run
    (tmp_path / "results" / "bench" / "judge_v2.json").write_text(json.dumps(b))
    assert "made by an earlier recipe than seed 0's" in _read_run(tmp_path, run)
    short, full = render_judge_v2(tmp_path, short=True)[0], render_judge_v2(tmp_path)[0]
    assert f"Against {n} replies" not in short and "1 more readings" in short
    assert f"Against {n} replies" in full and "earlier recipe than seed 0's" in full


def test_readme_judge_line_keeps_readings_of_the_models_of_record_only(tmp_path):
    """README's judge line (short) names the checks whose replies came from a model of record now, and sends
    the rest (earlier runs, probes) to docs/paper_b.md by count; the docs page keeps every one."""
    import json
    import shutil

    from magictokens.report.paper_b import render_judge_v2

    (tmp_path / "results" / "bench").mkdir(parents=True)
    b = json.loads((REPO_ROOT / "results" / "bench" / "judge_v2.json").read_text())
    b["check"] = {k: b["check"][k] for k in ("pool_v4", "pool_v9", "pool_v11")}
    (tmp_path / "results" / "bench" / "judge_v2.json").write_text(json.dumps(b))
    d = json.loads((REPO_ROOT / "results" / "default" / "cotraining.json").read_text())
    (tmp_path / "results" / "default").mkdir(parents=True)
    (tmp_path / "results" / "default" / "cotraining.json").write_text(json.dumps(d))
    shutil.copytree(REPO_ROOT / "results" / "cpu", tmp_path / "results" / "cpu",
                    ignore=lambda d, names: [n for n in names if n not in ("cotraining.json",)])
    from magictokens.stages.mode_reachability import cotraining_fingerprint
    recorded = cotraining_fingerprint(d) == b["check"]["pool_v4"]["run"]["fingerprint"]
    short, full = render_judge_v2(tmp_path, short=True)[0], render_judge_v2(tmp_path)[0]
    n4, n9, n11 = (b["check"][k]["n"] for k in ("pool_v4", "pool_v9", "pool_v11"))
    assert all(f"Against {n} replies" in full for n in (n4, n9, n11))
    assert f"Against {n9} replies" not in short and f"Against {n11} replies" not in short
    assert (f"Against {n4} replies" in short) == recorded
    assert f"{3 - recorded} more readings, of earlier runs and probes: [docs/paper_b.md]" in short
