import json
import shutil

import pytest

from magictokens import mode_reachability as MR
from magictokens.errors import MagicTokensError
from magictokens.pipeline import run_stage


@pytest.mark.unit
def test_parse_transition():
    assert MR.parse_transition("positive->negative") == ("positive", "negative")
    assert MR.parse_transition("none->negative") == (None, "negative")
    for bad in ("positive-negative", "positive->evil", "x->negative"):
        with pytest.raises(MagicTokensError, match="SOURCE->TARGET"):
            MR.parse_transition(bad)
    with pytest.raises(MagicTokensError):
        MR.ModeReachConfig(transitions=["positive->nowhere"])


@pytest.mark.unit
def test_slot_ids_of_each_placement(tiny):
    """Tiny word-level tokenizer, template "{system}\nUser: {user}\nAssistant:" (no chat template):
    ids by hand (<bos>=1, <unk>=0 for "User:" and "Assistant:", the=4, cat=28, dog=29, bird=30)."""
    _, tok = tiny
    bos, unk, the, cat, dog, bird = 1, 0, 4, 28, 29, 30
    expected = {  # placement -> (prefix, suffix, decode(prefix + [bird] + suffix))
        "system": ([bos], [dog, unk, the, cat, unk], "<bos> bird dog <unk> the cat <unk>"),
        "user_before": ([bos, dog, unk], [the, cat, unk], "<bos> dog <unk> bird the cat <unk>"),
        "user_after": ([bos, dog, unk, the, cat], [unk], "<bos> dog <unk> the cat bird <unk>"),
    }
    assert set(expected) == set(MR.PLACEMENTS)
    for placement, (pre, suf, text) in expected.items():
        prefix, suffix = MR.slot_ids(tok, "the cat", "dog", placement)
        assert (prefix, suffix) == (pre, suf), placement
        assert tok.decode(prefix + [bird] + suffix) == text, placement
    # no source token (a baseline): the system placement's u is the whole system prompt; the user
    # placements keep the template's default (none here) and put u in the user turn
    assert MR.slot_ids(tok, "the cat", None, "system") == ([bos], [unk, the, cat, unk])
    assert MR.slot_ids(tok, "the cat", None, "user_before") == ([bos, unk], [the, cat, unk])
    with pytest.raises(MagicTokensError, match="use one of user_before, user_after, system"):
        MR.slot_ids(tok, "the cat", "dog", "assistant")


@pytest.mark.unit
def test_slot_ids_with_a_chat_template():
    """SmolLM2's ChatML template: decode(prefix + u + suffix) is the conversation, written out by hand,
    with u's text in the placement's place."""
    from transformers import AutoTokenizer

    from magictokens.chat import prompt_ids
    from magictokens.models import _materialize_packaged

    tok = AutoTokenizer.from_pretrained(_materialize_packaged("smollm2-135m-instruct"))
    p, a = "How do I bake bread?", "rfcd9lbo"
    end, asst = "<|im_end|>\n", "<|im_start|>assistant\n"
    expected = {  # placement -> (u text, the whole conversation)
        "user_before": ("abc", f"<|im_start|>system\n{a}{end}<|im_start|>user\nabc How do I bake bread?{end}{asst}"),
        "user_after": (" abc", f"<|im_start|>system\n{a}{end}<|im_start|>user\nHow do I bake bread? abc{end}{asst}"),
        "system": ("abc", f"<|im_start|>system\nabc {a}{end}<|im_start|>user\nHow do I bake bread?{end}{asst}"),
    }
    for placement, (u_text, text) in expected.items():
        prefix, suffix = MR.slot_ids(tok, p, a, placement)
        u = tok(u_text, add_special_tokens=False).input_ids
        assert tok.decode(prefix + u + suffix) == text, placement
        assert tok.decode(suffix).endswith(asst)
    # after the request, an empty u leaves exactly the conversation the model was trained on
    prefix, suffix = MR.slot_ids(tok, p, a, "user_after")
    assert prefix + suffix == prompt_ids(tok, p, a)


@pytest.mark.unit
def test_bad_placement_search_or_count_is_one_clear_error():
    for bad in (["user"], [], ["system", "system"]):
        with pytest.raises(MagicTokensError, match="placements = .*list each of user_before, user_after, system"):
            MR.ModeReachConfig(placements=bad)
    with pytest.raises(MagicTokensError, match="n_prompts must be >= 1, got 0"):
        MR.ModeReachConfig(n_prompts=0)
    with pytest.raises(MagicTokensError, match="search = 'gcg': use 'fast' or 'backoff'"):
        MR.ModeReachConfig(search="gcg")
    # the baselines go under every placement unless baseline_placements keeps them to some
    both = ["user_before", "system"]
    assert MR.baselines_at(MR.ModeReachConfig(placements=both), "system") == ["sft", "sft_dpo"]
    user_only = MR.ModeReachConfig(placements=both, baseline_placements=["user_before"])
    assert MR.baselines_at(user_only, "system") == [] and MR.baselines_at(user_only, "user_before") == ["sft", "sft_dpo"]
    assert MR.baselines_at(MR.ModeReachConfig(placements=both, baseline_placements=[]), "user_before") == []


@pytest.mark.unit
def test_judged_curve_and_random_strings():
    trace = [{"k": 0}, {"k": 1}, {"k": 2}]
    assert MR.judged_required_k(trace, {0: "positive", 1: "negative", 2: "negative"}, "negative") == 1
    assert MR.judged_required_k(trace, {0: "positive", 1: "rejective"}, "negative") is None
    rows = [{"k": 0, "k_judged": None}, {"k": 2, "k_judged": 2}, {"k": None, "k_judged": None}, {"k": 4, "k_judged": 1}]
    s = MR.summarize_transition(rows)
    assert s["n"] == 4 and s["eps"]["0"] == 0.75 and s["eps"]["4"] == 0.25
    assert s["eps_judged"]["1"] == 0.75 and s["eps_judged"]["2"] == 0.5
    assert s["reached"] == {"0": 1, "1": 1, "2": 2, "3": 2, "4": 3, "6": 3, "8": 3, "10": 3}
    # Wilson 95% of eps, by hand (z = 1.96): 2 of 4 -> 0.5 +- 0.350; 1 of 4 -> 0.3725 +- 0.3269
    assert s["ci95"]["2"] == pytest.approx([0.150, 0.850], abs=1e-3)
    assert s["ci95"]["4"] == pytest.approx([0.0456, 0.6994], abs=1e-3)
    # eps_judged(1) = 3 of 4 not reached: the mirror image of 1 of 4
    assert s["ci95_judged"]["1"] == pytest.approx([1 - 0.6994, 1 - 0.0456], abs=1e-3)
    assert s["reached_judged"]["1"] == 1
    # prompts where the target mode itself does not hold are left out, and counted
    s = MR.summarize_transition(rows, holds=[False, True, True, False])
    assert s["n"] == 2 and s["n_prompts"] == 4 and s["eps"]["0"] == 1.0 and s["eps"]["2"] == 0.5
    assert s["eps_judged"]["2"] == 0.5 and s["reached"]["10"] == 1
    # a cut run: rows of prompts 1 and 3 only; holds is read at each row's prompt_index
    part = [dict(rows[1], prompt_index=1), dict(rows[3], prompt_index=3)]
    s = MR.summarize_transition(part, holds=[True, False, True, True], n_planned=4)
    assert (s["n"], s["n_prompts"], s["n_planned"]) == (1, 2, 4) and s["reached"]["4"] == 1 and s["eps"]["2"] == 1.0
    # the price of the search, by hand: rows without a search record (skipped prompts) are not counted
    costed = [dict(rows[0], n_candidates={"k1": 100, "coordinate": 0}, seconds=1.0),
              dict(rows[1], n_candidates={"k1": 257, "coordinate": 2000, "shorten": 43}, seconds=20.0),
              dict(rows[2], n_candidates=5000, seconds=60.0), dict(rows[3], skipped="target mode does not hold")]
    c = MR.summarize_transition(costed)["cost"]    # judged within k <= 10: rows 1 and 3 -> J = 2
    assert c == {"n_searched": 3, "evals_median": 2300.0, "seconds_median": 20.0, "evals_total": 7400,
                 "seconds_total": 81.0, "evals_per_judged_success": 3700.0, "seconds_per_judged_success": 40.5}
    assert MR.search_cost(costed[:1], 0)["evals_per_judged_success"] is None      # no success: no price
    assert MR.search_cost([], 3)["evals_median"] is None
    a = MR.random_strings(5, 8, seed=1, exclude=["aaaaaaaa"])
    assert a == MR.random_strings(5, 8, seed=1) and len(set(a)) == 5 and all(len(x) == 8 for x in a)


@pytest.mark.unit
def test_question_in_numbers_and_words():
    """Hand-built summary: nothing at k <= 1, 3 of 10 at k = 2, 6 of 10 by k = 10 (4 judged)."""
    reached = {"0": 0, "1": 0, "2": 3, "3": 3, "4": 5, "6": 5, "8": 6, "10": 6}
    s = {"n": 10, "n_prompts": 12, "reached": reached, "reached_judged": {**reached, "10": 4}}
    rand = {"successes": 1, "n": 40, "by_mode": {"negative": MR.share(1, 40), "positive": MR.share(30, 40)}}
    q = MR.question("positive->negative (co-trained), u user_before", s, rand, 8, "negative")
    assert q["k_shortest"] == 2 and q["k_max"] == 10
    assert q["magic_token_space"] == 2_821_109_907_456 == 36 ** 8 and q["magic_token_alphabet"] == 36
    assert q["at_shortest"]["successes"] == 3 and q["at_shortest"]["share"] == 0.3
    assert q["at_shortest"]["ci95"] == pytest.approx([0.1078, 0.6032], abs=1e-3)     # Wilson 3 of 10
    assert q["within_k_max"]["ci95"] == pytest.approx([0.3127, 0.8318], abs=1e-3)    # Wilson 6 of 10
    assert q["within_k_max_judged"]["successes"] == 4 and q["random_token"]["successes"] == 1
    assert ("2 tokens reached the target mode's next token on 3 of 10 (30%, 95% CI 11%-60%), <= 10 tokens on "
            "6 of 10 (60%, 95% CI 31%-83%)") in q["words"]
    assert "one of 36^8 = 2.8e+12) gave negative on 1 of 40 (2%" in q["words"]
    assert "search cost" not in q["words"] and q["guesses_expected"] == (36 ** 8 + 1) / 2   # no cost recorded
    cost = {"n_searched": 10, "evals_median": 2300.0, "seconds_median": 20.0, "evals_total": 30000,
            "seconds_total": 300.0, "evals_per_judged_success": 7500.0, "seconds_per_judged_success": 75.0}
    qc = MR.question("x", {**s, "cost": cost}, rand, 8, "negative")
    assert ("judged negative on 4 of 10 (40%, 95% CI 17%-69%); the search cost a median of 2,300 candidate "
            "evaluations (20 s) per prompt, 7,500 evaluations (75 s) per negative response, failures included, "
            "where guessing the magic token takes 1.4e+12 tries on average") in qc["words"]
    # the target's own random-token rate: positive for a ->positive transition
    assert MR.question("x", s, rand, 8, "positive")["random_token"]["successes"] == 30
    none = MR.question("x", {**s, "reached": dict.fromkeys(reached, 0)}, rand, 4, "negative")
    assert none["k_shortest"] is None and none["at_shortest"] is None and none["magic_token_space"] == 36 ** 4
    assert "no prompt of <= 10 tokens" in none["words"] and "95% CI up to 28%" in none["words"]   # Wilson 0 of 10


@pytest.mark.unit
def test_random_token_rate_has_a_wilson_interval_and_the_prompts(tiny):
    model, tok = tiny
    seen = {}

    class Judge:  # negative on pairs 0, 1 (string 0) and 4 (string 1)
        def judge(self, responses, harmful, prompts=None):
            seen["prompts"] = prompts
            return ["negative" if i in (0, 1, 4) else "positive" for i in range(len(responses))]

    prompts = ["the cat", "a bird", "the fish"]
    r = MR.random_token_switch_rate(model, tok, Judge(), prompts, ["dog", "cat"], "negative", 3)
    assert seen["prompts"] == prompts * 2                      # string-major pairs, the prompt beside each
    assert r["rate"] == 0.5 and r["successes"] == 3 and r["n"] == 6 and r["max_per_string"] == pytest.approx(2 / 3)
    assert r["ci95"] == pytest.approx([0.1876, 0.8124], abs=1e-3)   # Wilson 3 of 6, by hand
    assert r["by_mode"]["positive"]["successes"] == 3 and r["by_mode"]["rejective"]["successes"] == 0


@pytest.mark.unit
def test_extra_held_out_prompts_never_come_from_training(monkeypatch):
    """n_prompts > n_eval_harmful: the stage's own eval prompts first, then the eval-only draw's next
    prompts, skipping any the cotraining stage trained on ("H3!" normalizes to "h3")."""
    from magictokens.cotraining import CoTrainingConfig
    from magictokens.mode_reachability import inputs
    from magictokens.cotraining.data import Prompt, SafetyData

    pool, calls = [f"h{i}" for i in range(6)], []

    def fake(n_th, n_tb, n_eh, n_eb, n_xs, seed=0, max_chars=600):
        calls.append((n_th, n_tb, n_eh, n_eb, n_xs))
        if n_eh > len(pool):
            raise MagicTokensError(f"only {len(pool)} prompts available for split 'eval'")
        ev = [Prompt(id=str(i), text=t, source="s", harmful=True, split="eval") for i, t in enumerate(pool[:n_eh])]
        train = [Prompt(id="t", text="H3!", source="s", harmful=True)] if n_th else []
        return SafetyData(train=train, eval_harmful=ev, eval_benign=[], xstest=[])

    monkeypatch.setattr(inputs, "build_safety_data", fake)
    ccfg = CoTrainingConfig(n_train_harmful=5, n_train_benign=2, n_eval_harmful=2, n_eval_benign=1, n_xstest=1)
    assert MR.held_out_prompts(ccfg, 2, 0) == ["h0", "h1"] and calls == [(5, 2, 2, 1, 1)]
    assert MR.held_out_prompts(ccfg, 4, 0) == ["h0", "h1", "h2", "h4"]
    assert calls[-2:] == [(0, 0, 4, 0, 0), (0, 0, 5, 0, 0)]    # eval-only draws, one more after the skip
    with pytest.raises(MagicTokensError, match="lower mode_reachability.n_prompts"):
        MR.held_out_prompts(ccfg, 6, 0)


@pytest.mark.unit
def test_extra_held_out_prompts_on_the_real_data():
    from magictokens.cotraining import CoTrainingConfig
    from magictokens.cotraining.data import _norm, build_safety_data

    ccfg = CoTrainingConfig(n_train_harmful=30, n_train_benign=10, n_eval_harmful=4, n_eval_benign=4, n_xstest=4)
    data = build_safety_data(30, 10, 4, 4, 4, seed=3, max_chars=ccfg.max_prompt_chars)
    got = MR.held_out_prompts(ccfg, 9, seed=3)
    assert got[:4] == [p.text for p in data.eval_harmful] and len(set(map(_norm, got))) == 9
    assert not {_norm(t) for t in got} & {_norm(p.text) for p in data.train + data.eval_benign + data.xstest}


@pytest.mark.unit
def test_divergence_is_the_first_differing_position():
    assert MR.divergence([5, 6, 7], [5, 9, 7]) == 1
    assert MR.divergence([5, 6, 7], [8, 6, 7]) == 0
    assert MR.divergence([5, 6], [5, 6, 7]) is None and MR.divergence([], [1]) is None


@pytest.mark.unit
def test_load_trained_without_weights_is_one_clear_error(tmp_path):
    with pytest.raises(MagicTokensError, match="run the cotraining stage first"):
        MR.load_trained("tiny-random-llama", tmp_path, "cotrained")
    with pytest.raises(MagicTokensError, match="unknown trained model"):
        MR.load_trained("tiny-random-llama", tmp_path, "dpo_only")


@pytest.mark.notebook
@pytest.mark.slow
@pytest.mark.side_job("mode_smoke")
def test_mode_reachability_notebook_smoke(side_job):
    """cotraining (tiny model: the suite's one smoke run, copied) then mode reachability on its trained models
    (tests/notebook_jobs.py mode_smoke, side by side with the other notebook jobs)."""
    tmp_path, saw = side_job
    assert saw["no_models"] and "run the cotraining stage first" in saw["no_models"]
    d = saw["full"]
    assert set(d["transitions"]) == set(d["baselines"]) == set(d["question"]) == {"user_before", "system"}
    for pl in d["transitions"]:
        assert set(d["transitions"][pl]) == {"positive->negative", "negative->positive"}
        assert set(d["baselines"][pl]) == {"sft", "sft_dpo"}
        for s in list(d["transitions"][pl].values()) + list(d["baselines"][pl].values()):
            assert s["n_prompts"] == 2 and 0 <= s["n"] <= 2 and {"1", "2", "3", "4", "6", "8", "10"} <= set(s["eps"])
            assert set(s["eps_judged"]) == set(s["eps"]) == set(s["ci95"]) == set(s["ci95_judged"])
        assert len(d["question"][pl]) == 4 and all(q["words"] for q in d["question"][pl].values())
    assert d["magic_token_space"] == 36 ** d["magic_tokens_length"]
    assert 0.0 <= d["random_token_switch_rate"] <= 1.0 and len(d["random_token"]["ci95"]) == 2
    # the target is where the modes' responses part: k = 0 can never already reach it
    root = tmp_path / "results" / "smoke" / "instances" / "mode_reachability"
    rows = [(f, json.loads(line)) for f in root.rglob("*.jsonl") for line in f.read_text().splitlines()]
    assert rows and all(f.parent == root / r["placement"] / "fast" for f, r in rows)
    rows = [r for _, r in rows]
    assert all(r["k"] != 0 for r in rows if r["target_id"] is not None)
    assert all(r["k"] == 0 and r["trace"] == [] for r in rows if r["target_id"] is None and "skipped" not in r)
    assert all(r["k"] is None and r["seconds"] == 0 for r in rows if "skipped" in r)   # target mode does not hold
    figs = {p.name for p in (tmp_path / "results" / "smoke" / "figures" / "mode_reachability").iterdir()}
    assert {"mode_k_eps_first_token.png", "mode_k_eps_judged.pdf"} <= figs
    assert d["partial"] is False
    # a cut at 0 minutes after one log is lost: that transition holds no prompt, the rest resume whole
    cut = saw["cut"]
    assert cut["partial"] is True and cut["transitions"]["system"]["negative->positive"]["n_prompts"] == 0
    assert cut["transitions"]["system"]["negative->positive"]["n_planned"] == 2
    assert cut["transitions"]["user_before"] == d["transitions"]["user_before"]
    assert not (root / "system" / "fast" / "cotrained_negative_to_positive.jsonl").exists() or \
        not (root / "system" / "fast" / "cotrained_negative_to_positive.jsonl").read_text().count('"prompt_index"')


@pytest.mark.unit
def test_weights_digest_sees_a_fine_tune_that_fingerprint_misses():
    """LoRA-style changes leave the embeddings alone: resumed rows must still not mix models."""
    import copy

    import torch

    from magictokens.models import fingerprint, load_model, weights_digest

    model, _ = load_model("tiny-random-llama")
    tuned = copy.deepcopy(model)
    with torch.no_grad():
        tuned.model.layers[-1].mlp.down_proj.weight.add_(1e-3)
    assert fingerprint(tuned) == fingerprint(model)          # why fingerprint is not enough here
    assert weights_digest(tuned) != weights_digest(model)
    assert weights_digest(copy.deepcopy(model)) == weights_digest(model)


@pytest.mark.unit
def test_transition_targets_the_divergence_token(tiny, tmp_path):
    """A target model that answers differently: y is where its response leaves the source's,
    the state carries the shared opening, k = 0 never counts as reached, the judge reads each
    response's prompt, and rows of another placement or search are never reused."""
    import copy

    import torch

    from magictokens.chat import prompt_ids
    from magictokens.controllers import backoff, fast
    from magictokens.controllers.coordinate import CoordinateConfig
    from magictokens.controllers.gcg import GCGConfig
    from magictokens.controllers.greedy import GreedyConfig

    model, tok = tiny
    other = copy.deepcopy(model)
    torch.manual_seed(0)          # the same perturbed model whichever tests ran before
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.5 * torch.randn_like(p))
    cfg = MR.ModeReachConfig(n_prompts=3, transitions=["positive->negative"], max_new_tokens=6, opening_tokens=4,
                             fast=fast.FastConfig(ks=[1, 2], k1_candidates=8, short_steps=2,
                                                  coordinate=CoordinateConfig(max_steps=2, width=16, width_max=16,
                                                                              topk=8, chunk=16)),
                             backoff=backoff.BackoffConfig(greedy_ks=[1], gcg_ks=[2],
                                                           greedy=GreedyConfig(candidates=None, batch_size=64, init_token="the"),
                                                           gcg=GCGConfig(num_steps=2, search_width=16, topk=8, init_token="the")))
    calls = []

    class Judge:  # every response reads as the negative mode
        def judge(self, responses, harmful, prompts=None):
            calls.append(prompts)
            return ["negative"] * len(responses)

    tokens = {"positive": "dog", "negative": "cat"}
    prompts = ["the cat sat", "a dog ran", "the bird"]
    log = tmp_path / "log.jsonl"

    def run(placement, c=cfg):
        return MR.run_transition("positive->negative", placement, model, None, tok, Judge(), prompts, tokens, c,
                                 log, target_model=other, label="t")

    rows = run("user_before")
    searched = [r for r in rows if r["target_id"] is not None]
    assert searched, "the perturbed model should answer differently on some prompt"
    assert all(r["placement"] == "user_before" and r["search"] == "fast" for r in rows)
    for r, p in zip(rows, prompts):
        if r["target_id"] is None:
            continue
        want = MR.greedy_ids(other, tok, prompt_ids(tok, p, "cat"), 4)
        prefix, suffix = MR.slot_ids(tok, p, "dog", "user_before")
        have = MR.greedy_ids(model, tok, prefix + suffix, 4)
        d = MR.divergence(want, have)
        assert r["target_id"] == want[d] and r["shared"] == d and r["k"] != 0
        assert r["k_judged"] == min(int(k) for k in r["judged"])     # the judge says negative everywhere
    # each judge call carries the prompt of every response it judges
    searched_prompts = {p for r, p in zip(rows, prompts) if r["target_id"] is not None}
    assert calls and all(set(c) <= set(prompts) and len(set(c)) == 1 for c in calls)
    assert {c[0] for c in calls} >= searched_prompts
    # resumed: nothing new; another placement or search: new rows, never the old ones
    n = len(log.read_text().splitlines())
    assert run("user_before") == rows and len(log.read_text().splitlines()) == n
    after = run("user_after")
    assert len(log.read_text().splitlines()) == n + 3 and all(r["placement"] == "user_after" for r in after)
    import dataclasses
    old = run("user_before", dataclasses.replace(cfg, search="backoff"))
    assert len(log.read_text().splitlines()) == n + 6 and all(r["search"] == "backoff" for r in old)
    # a prompt where the target mode does not hold is logged as skipped, never searched
    skipped = MR.run_transition("positive->negative", "user_before", model, None, tok, Judge(), prompts, tokens, cfg,
                                tmp_path / "holds.jsonl", target_model=other, label="t", holds=[False, True, False])
    assert [("skipped" in r, r["seconds"] == 0) for r in skipped][::2] == [(True, True), (True, True)]
    assert "skipped" not in skipped[1] and skipped[1]["k"] == rows[1]["k"]
    again = MR.run_transition("positive->negative", "user_before", model, None, tok, Judge(), prompts, tokens, cfg,
                              tmp_path / "holds.jsonl", target_model=other, label="t")   # now every prompt
    assert not any("skipped" in r for r in again) and again[1] == skipped[1]
    # a deadline passed: no new prompt starts, the finished ones stay; a cut is not part of the resume key
    def cut_run(path):
        return MR.run_transition("positive->negative", "user_before", model, None, tok, Judge(), prompts, tokens, cfg,
                                 path, target_model=other, label="t", deadline=0.0)
    assert cut_run(tmp_path / "fresh.jsonl") == [] and cut_run(log) == rows
    cut = dataclasses.replace(cfg, search_minutes=5.0)
    assert MR.resume_header("x", "system", cut, 0, "t", []) == MR.resume_header("x", "system", cfg, 0, "t", [])
    h = [MR.resume_header("x", pl, cfg, 0, "t", []) for pl in ("user_before", "system")]
    assert h[0] != h[1] and h[0]["fast"]["k1_candidates"] == 8 and "backoff" not in h[0]
    # judged responses decoded as the stage decodes: the processors' text is judged, rows judged greedy are not
    # reused (their key has no decoding: {} keeps it), and the target is still the raw argmax's
    dec = {"repetition_penalty": 1.3, "no_repeat_ngram_size": 2}
    assert MR.resume_header("x", "system", cfg, 0, "t", [], {}) == MR.resume_header("x", "system", cfg, 0, "t", [])
    seen = []

    class Reader(Judge):
        def judge(self, responses, harmful, prompts=None):
            seen.extend(zip(prompts, responses))
            return super().judge(responses, harmful, prompts)
    n = len(log.read_text().splitlines())
    decoded = MR.run_transition("positive->negative", "user_before", model, None, tok, Reader(), prompts, tokens, cfg,
                                log, target_model=other, label="t", decoding=dec)
    assert len(log.read_text().splitlines()) == n + 3
    assert [r["target_id"] for r in decoded] == [r["target_id"] for r in rows]
    r, p = next((r, p) for r, p in zip(decoded, prompts) if r["k"])      # a reached prompt: r["ids"] is its u
    prefix, suffix = MR.slot_ids(tok, p, "dog", "user_before")
    shared = MR.greedy_ids(other, tok, prompt_ids(tok, p, "cat"), 4)[:r["shared"]]
    n_new = max(1, cfg.max_new_tokens - r["shared"])
    with_dec = tok.decode(shared + MR.greedy_ids(model, tok, prefix + r["ids"] + suffix + shared, n_new, **dec),
                          skip_special_tokens=True).strip()
    assert (p, with_dec) in seen


@pytest.mark.unit
def test_result_before_placements_loads_as_the_system_placement(tmp_path):
    """A mode_reachability.json written before placements: u in the system prompt, back-off search;
    counts come back from eps and n, and the question is answered from them."""
    from magictokens.report import render_mode_reachability
    from magictokens.stages.mode_reachability import ModeReachStageResult

    eps = {"0": 1.0, "1": 1.0, "2": 1.0, "3": 1.0, "4": 0.5, "6": 0.25, "8": 0.25, "10": 0.25}
    s = {"n": 4, "n_prompts": 6, "eps": eps, "eps_judged": {**eps, "10": 0.5}}
    old = {"meta": {"model": "m", "seed": 0, "backoff": {"greedy_ks": [1, 2, 3], "gcg_ks": [4, 6, 8, 10]}},
           "magic_tokens_length": 8, "transitions": {"positive->negative": s}, "baselines": {"sft": s},
           "random_token_switch_rate": 0.05, "random_token": {"rate": 0.05, "n": 60, "max_per_string": 0.5},
           "target_mode_holds": {"negative": 0.5}}
    (tmp_path / "results" / "default").mkdir(parents=True)
    (tmp_path / "results" / "default" / "mode_reachability.json").write_text(json.dumps(old))
    r = ModeReachStageResult.load(tmp_path / "results" / "default")
    t = r.transitions["system"]["positive->negative"]
    assert list(r.transitions) == ["system"] and t["reached"]["4"] == 2 and t["reached"]["10"] == 3
    assert t["ci95"]["10"] == pytest.approx([0.0456, 0.6994], abs=1e-3)    # eps(10): 1 of 4 not reached, Wilson
    assert r.magic_token_space == 36 ** 8 and r.random_token["successes"] == 3
    q = r.question["system"]["positive->negative (co-trained)"]
    assert q["k_shortest"] == 4 and q["within_k_max"]["successes"] == 3 and q["within_k_max_judged"]["successes"] == 2
    assert "none->negative (sft)" in r.question["system"]
    # README's table of such a result reads as before (no placement label)
    lines = render_mode_reachability("default", tmp_path)
    assert "| positive->negative (co-trained) | 4 of 6 |" in lines[4]


@pytest.mark.unit
def test_report_labels_each_placement(tmp_path):
    from magictokens.report import render_mode_reachability
    from magictokens.stages.mode_reachability import ModeReachStageResult, questions

    rows = [{"k": 2, "k_judged": 2}, {"k": None, "k_judged": None}]
    summ = {pl: {"positive->negative": MR.summarize_transition(rows)} for pl in ("user_before", "system")}
    base = {pl: {"sft": MR.summarize_transition(rows)} for pl in summ}
    rand = {"rate": 0.25, "n": 4, "successes": 1, "ci95": MR.share(1, 4)["ci95"], "max_per_string": 0.5,
            "by_mode": {"negative": MR.share(1, 4)}}
    res = ModeReachStageResult(meta={"model": "m", "seed": 0, "search": "fast", "search_config": {}, "budget": "b"},
                               magic_tokens_length=8, transitions=summ, baselines=base, random_token_switch_rate=0.25,
                               random_token=rand, target_mode_holds={}, magic_token_space=36 ** 8,
                               question=questions(summ, base, rand, 8))
    res.save(tmp_path / "results" / "default")
    out = "\n".join(render_mode_reachability("default", tmp_path))
    assert "| positive->negative (co-trained, u user_before) | 2 of 2 |" in out
    assert "| none->negative (sft, u system) | 2 of 2 |" in out
    assert "switch rate (judged negative): 0.250 (95% CI 0.046-0.699, 1 of 4 (string, prompt) pairs)" in out
    assert "- positive->negative (co-trained), u user_before: 2 tokens reached" in out
    assert "Partial run" not in out
    empty = MR.summarize_transition([], [True, True], n_planned=2)
    assert MR.question("x", empty, rand, 8, "negative")["words"] == "x: not searched yet (a cut run stopped before it)."
    unheld = MR.summarize_transition([{"k": None, "k_judged": None}], [False])
    assert "never held" in MR.question("x", unheld, rand, 8, "negative")["words"]
    res.partial = True
    res.save(tmp_path / "results" / "default")
    assert "**Partial run**: cut by `search_minutes`" in render_mode_reachability("default", tmp_path)[0]


@pytest.mark.unit
def test_judged_decoding_is_the_stages_or_plain_greedy():
    """decoding: stage -> the cotraining stage's processors (only what differs from greedy); greedy -> none."""
    import dataclasses

    from magictokens.config import build
    from magictokens.cotraining import CoTrainingConfig

    ccfg = CoTrainingConfig(repetition_penalty=1.2, no_repeat_ngram_size=3)
    assert MR.judged_decoding(MR.ModeReachConfig(), ccfg) == {"repetition_penalty": 1.2, "no_repeat_ngram_size": 3}
    assert MR.judged_decoding(MR.ModeReachConfig(decoding="greedy"), ccfg) == {}
    plain = dataclasses.replace(ccfg, repetition_penalty=1.0, no_repeat_ngram_size=0)
    assert MR.judged_decoding(MR.ModeReachConfig(), plain) == {}
    with pytest.raises(MagicTokensError, match="decoding"):
        build(MR.ModeReachConfig, {"decoding": "beam"}, "mode_reachability")


@pytest.mark.unit
def test_committed_beyond_rows_resume_under_todays_cpu_params():
    """The cpu-scale beyond study is built over sessions: every committed row's config hash is the one
    today's params.yaml (cpu scale) gives with the weight digests its result recorded, so an edit that
    would orphan hours of rows (a search knob, max_new_tokens, opening_tokens, ...) fails here first."""
    from magictokens.config import REPO_ROOT, build, stage_params
    from magictokens.results import config_hash

    from magictokens.cotraining import CoTrainingConfig

    P, cfg = stage_params("cpu", "mode_reachability", MR.ModeReachConfig)
    ccfg = build(CoTrainingConfig, P["cotraining"], "cotraining")
    digests = json.loads((REPO_ROOT / "results/cpu/mode_reachability.json").read_text())["meta"]["weights_digest"]
    n = 0
    for placement in cfg.placements:
        for path in sorted((REPO_ROOT / "results/cpu/instances/mode_reachability" / placement / cfg.search).glob("*.jsonl")):
            rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            label, name = rows[0]["model"], rows[0]["transition"]
            weights = [digests[label], digests["cotrained"]]
            want = config_hash(MR.resume_header(name, placement, cfg, P["seed"], label, weights,
                                                MR.judged_decoding(cfg, ccfg)))
            assert {r["config_hash"] for r in rows} == {want}, path
            n += len(rows)
    assert n >= 59   # the rows committed when this test was written
    bumped = build(MR.ModeReachConfig, {**P["mode_reachability"], "opening_tokens": 17}, "mode_reachability")
    assert config_hash(MR.resume_header(name, placement, bumped, P["seed"], label, weights)) != want
