import json

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
def test_slot_sits_before_the_source_token(tiny):
    _, tok = tiny
    prefix, suffix = MR.slot_ids(tok, "the cat", "dog")
    assert prefix[0] == tok.bos_token_id
    assert prefix + suffix == [tok.bos_token_id] + tok("dog\nUser: the cat\nAssistant:", add_special_tokens=False).input_ids
    assert tok.decode(suffix[:1]) == "dog"     # u goes right before the operator's token
    p2, s2 = MR.slot_ids(tok, "the cat", None)
    assert p2 == prefix and s2 == suffix[1:]


@pytest.mark.unit
def test_slot_with_a_chat_template():
    from transformers import AutoTokenizer

    from magictokens.models import _materialize_packaged

    tok = AutoTokenizer.from_pretrained(_materialize_packaged("smollm2-135m-instruct"))
    prefix, suffix = MR.slot_ids(tok, "How do I bake bread?", "rfcd9lbo")
    assert tok.decode(prefix).endswith("<|im_start|>system\n")
    assert tok.decode(suffix).startswith(" rfcd9lbo<|im_end|>")
    assert tok.decode(suffix).endswith("<|im_start|>assistant\n")


@pytest.mark.unit
def test_judged_curve_and_random_strings():
    trace = [{"k": 0}, {"k": 1}, {"k": 2}]
    assert MR.judged_required_k(trace, {0: "positive", 1: "negative", 2: "negative"}, "negative") == 1
    assert MR.judged_required_k(trace, {0: "positive", 1: "rejective"}, "negative") is None
    rows = [{"k": 0, "k_judged": None}, {"k": 2, "k_judged": 2}, {"k": None, "k_judged": None}, {"k": 4, "k_judged": 1}]
    s = MR.summarize_transition(rows)
    assert s["n"] == 4 and s["eps"]["0"] == 0.75 and s["eps"]["4"] == 0.25
    assert s["eps_judged"]["1"] == 0.75 and s["eps_judged"]["2"] == 0.5
    # prompts where the target mode itself does not hold are left out, and counted
    s = MR.summarize_transition(rows, holds=[False, True, True, False])
    assert s["n"] == 2 and s["n_prompts"] == 4 and s["eps"]["0"] == 1.0 and s["eps"]["2"] == 0.5
    assert s["eps_judged"]["2"] == 0.5
    a = MR.random_strings(5, 8, seed=1, exclude=["aaaaaaaa"])
    assert a == MR.random_strings(5, 8, seed=1) and len(set(a)) == 5 and all(len(x) == 8 for x in a)


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
def test_mode_reachability_notebook_smoke(tmp_path):
    """cotraining (tiny model) then mode reachability on its trained models."""
    with pytest.raises(MagicTokensError, match="run the cotraining stage first"):
        run_stage("mode_reachability", "smoke", out_root=tmp_path)
    run_stage("cotraining", "smoke", out_root=tmp_path)
    run_stage("mode_reachability", "smoke", out_root=tmp_path)
    d = json.loads((tmp_path / "results" / "smoke" / "mode_reachability.json").read_text())
    assert set(d["transitions"]) == {"positive->negative", "negative->positive"}
    for s in list(d["transitions"].values()) + list(d["baselines"].values()):
        assert s["n_prompts"] == 2 and 0 <= s["n"] <= 2 and {"1", "2", "3", "4", "6", "8", "10"} <= set(s["eps"]) and set(s["eps_judged"]) == set(s["eps"])
    assert set(d["baselines"]) == {"sft", "sft_dpo"}
    assert 0.0 <= d["random_token_switch_rate"] <= 1.0
    # the target is where the modes' responses part: k = 0 can never already reach it
    logs = (tmp_path / "results" / "smoke" / "instances" / "mode_reachability").glob("*.jsonl")
    rows = [json.loads(line) for f in logs for line in f.read_text().splitlines()]
    assert rows and all(r["k"] != 0 for r in rows if r["target_id"] is not None)
    assert all(r["k"] == 0 and r["trace"] == [] for r in rows if r["target_id"] is None)
    figs = {p.name for p in (tmp_path / "results" / "smoke" / "figures" / "mode_reachability").iterdir()}
    assert {"mode_k_eps_first_token.png", "mode_k_eps_judged.pdf"} <= figs


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
    the state carries the shared opening, and k = 0 never counts as reached."""
    import copy

    import torch

    from magictokens.controllers import backoff
    from magictokens.controllers.gcg import GCGConfig
    from magictokens.controllers.greedy import GreedyConfig

    model, tok = tiny
    other = copy.deepcopy(model)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.5 * torch.randn_like(p))
    cfg = MR.ModeReachConfig(n_prompts=3, transitions=["positive->negative"], max_new_tokens=6, opening_tokens=4,
                             backoff=backoff.BackoffConfig(greedy_ks=[1], gcg_ks=[2],
                                                           greedy=GreedyConfig(candidates=None, batch_size=64, init_token="the"),
                                                           gcg=GCGConfig(num_steps=2, search_width=16, topk=8, init_token="the")))

    class Judge:  # every response reads as the negative mode
        def judge(self, responses, harmful):
            return ["negative"] * len(responses)

    tokens = {"positive": "dog", "negative": "cat"}
    prompts = ["the cat sat", "a dog ran", "the bird"]
    rows = MR.run_transition("positive->negative", model, None, tok, Judge(), prompts, tokens, cfg,
                             tmp_path / "log.jsonl", target_model=other, label="t")
    searched = [r for r in rows if r["target_id"] is not None]
    assert searched, "the perturbed model should answer differently on some prompt"
    for r, p in zip(rows, prompts):
        if r["target_id"] is None:
            continue
        want = MR.greedy_ids(other, tok, MR.prompt_ids(tok, p, "cat"), 4)
        prefix, suffix = MR.slot_ids(tok, p, "dog")
        have = MR.greedy_ids(model, tok, prefix + suffix, 4)
        d = MR.divergence(want, have)
        assert r["target_id"] == want[d] and r["shared"] == d and r["k"] != 0
        assert r["k_judged"] == min(int(k) for k in r["judged"])     # the judge says negative everywhere
