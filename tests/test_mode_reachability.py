import json

import pytest

from magictokens import mode_reachability as MR
from magictokens.errors import MagicTokensError
from magictokens.pipeline import run_stage


def test_parse_transition():
    assert MR.parse_transition("positive->negative") == ("positive", "negative")
    assert MR.parse_transition("none->negative") == (None, "negative")
    for bad in ("positive-negative", "positive->evil", "x->negative"):
        with pytest.raises(MagicTokensError, match="SOURCE->TARGET"):
            MR.parse_transition(bad)
    with pytest.raises(MagicTokensError):
        MR.ModeReachConfig(transitions=["positive->nowhere"])


def test_slot_sits_before_the_source_token(tiny):
    _, tok = tiny
    prefix, suffix = MR.slot_ids(tok, "the cat", "dog")
    assert prefix[0] == tok.bos_token_id
    assert prefix + suffix == [tok.bos_token_id] + tok("dog\nUser: the cat\nAssistant:", add_special_tokens=False).input_ids
    assert tok.decode(suffix[:1]) == "dog"     # u goes right before the operator's token
    p2, s2 = MR.slot_ids(tok, "the cat", None)
    assert p2 == prefix and s2 == suffix[1:]


def test_slot_with_a_chat_template():
    from transformers import AutoTokenizer

    from magictokens.models import _materialize_packaged

    tok = AutoTokenizer.from_pretrained(_materialize_packaged("smollm2-135m-instruct"))
    prefix, suffix = MR.slot_ids(tok, "How do I bake bread?", "rfcd9lbo")
    assert tok.decode(prefix).endswith("<|im_start|>system\n")
    assert tok.decode(suffix).startswith(" rfcd9lbo<|im_end|>")
    assert tok.decode(suffix).endswith("<|im_start|>assistant\n")


def test_judged_curve_and_random_strings():
    trace = [{"k": 0}, {"k": 1}, {"k": 2}]
    assert MR.judged_required_k(trace, {0: "positive", 1: "negative", 2: "negative"}, "negative") == 1
    assert MR.judged_required_k(trace, {0: "positive", 1: "rejective"}, "negative") is None
    rows = [{"k": 0, "k_judged": None}, {"k": 2, "k_judged": 2}, {"k": None, "k_judged": None}, {"k": 4, "k_judged": 1}]
    s = MR.summarize_transition(rows)
    assert s["n"] == 4 and s["eps"]["0"] == 0.75 and s["eps"]["4"] == 0.25
    assert s["eps_judged"]["1"] == 0.75 and s["eps_judged"]["2"] == 0.5
    a = MR.random_strings(5, 8, seed=1, exclude=["aaaaaaaa"])
    assert a == MR.random_strings(5, 8, seed=1) and len(set(a)) == 5 and all(len(x) == 8 for x in a)


def test_load_trained_without_weights_is_one_clear_error(tmp_path):
    with pytest.raises(MagicTokensError, match="run the cotraining stage first"):
        MR.load_trained("tiny-random-llama", tmp_path, "cotrained")
    with pytest.raises(MagicTokensError, match="unknown trained model"):
        MR.load_trained("tiny-random-llama", tmp_path, "dpo_only")


def test_mode_reachability_notebook_smoke(tmp_path):
    """cotraining (tiny model) then mode reachability on its trained models."""
    with pytest.raises(MagicTokensError, match="run the cotraining stage first"):
        run_stage("mode_reachability", "smoke", out_root=tmp_path)
    run_stage("cotraining", "smoke", out_root=tmp_path)
    run_stage("mode_reachability", "smoke", out_root=tmp_path)
    d = json.loads((tmp_path / "results" / "smoke" / "mode_reachability.json").read_text())
    assert set(d["transitions"]) == {"positive->negative", "negative->positive"}
    for s in list(d["transitions"].values()) + list(d["baselines"].values()):
        assert s["n"] == 2 and {"1", "2", "3", "4", "6", "8", "10"} <= set(s["eps"]) and set(s["eps_judged"]) == set(s["eps"])
    assert set(d["baselines"]) == {"sft", "sft_dpo"}
    assert 0.0 <= d["random_token_switch_rate"] <= 1.0
    figs = {p.name for p in (tmp_path / "results" / "smoke" / "figures" / "mode_reachability").iterdir()}
    assert {"mode_k_eps_first_token.png", "mode_k_eps_judged.pdf"} <= figs
