"""`magictokens.reach` / `magictokens reach`: one (x0, y) question, checked against brute force."""
import json

import pytest
import torch

import magictokens
from magictokens.controllers import FastConfig
from magictokens.controllers.filters import allowed_token_mask
from magictokens.errors import MagicTokensError
from magictokens.pipeline import main
from magictokens.shortest_prompt import ReachConfig, special_prefix

pytestmark = pytest.mark.unit

X0 = "the cat sat on"


def next_probs(model, ids):
    with torch.inference_mode():
        return torch.softmax(model(input_ids=torch.tensor([ids])).logits[0, -1].float(), -1)


def brute_force_k1(model, tok, x0_ids, y):
    """Every allowed single token u: is y the argmax after u + x0? -> the list of such u."""
    vocab = model.get_input_embeddings().weight.shape[0]
    allowed = torch.nonzero(allowed_token_mask(tok, vocab, False)).squeeze(1).tolist()
    return [u for u in allowed if int(next_probs(model, [u] + x0_ids).argmax()) == y]


def test_k0_when_x0_already_predicts_the_target(tiny):
    model, tok = tiny
    x0_ids = tok(X0, add_special_tokens=False).input_ids
    y = int(next_probs(model, x0_ids).argmax())
    r = magictokens.reach(model, tok, X0, tok.decode([y]), progress=False)
    assert r.k == 0 and r.prompt_ids == [] and r.rank_before == 0 == r.rank_after
    assert r.prob_before == pytest.approx(float(next_probs(model, x0_ids)[y]), rel=1e-4)
    assert r.evaluations == 0


def test_k1_answers_agree_with_the_whole_vocabulary(tiny):
    """With k1_candidates >= |V| the k = 1 stage is exhaustive: reach says k = 1 exactly when brute force does."""
    model, tok = tiny
    x0_ids = tok(X0, add_special_tokens=False).input_ids
    p0 = next_probs(model, x0_ids)
    checked = {True: 0, False: 0}
    for y in torch.argsort(p0, descending=True)[1:12].tolist():
        text = tok.decode([y])
        if tok(text, add_special_tokens=False).input_ids != [y]:
            continue
        r = magictokens.reach(model, tok, X0, text, ReachConfig(max_k=1), progress=False)
        solvers = brute_force_k1(model, tok, x0_ids, y)
        assert (r.k == 1) == bool(solvers), (y, r.k, solvers)
        checked[bool(solvers)] += 1
        if r.k == 1:
            assert r.prompt_ids[0] in solvers and r.rank_after == 0
            p = next_probs(model, r.prompt_ids + x0_ids)[y]
            assert r.prob_after == pytest.approx(float(p), rel=1e-4) and r.prob_after > r.prob_before
        else:
            assert r.k is None and r.rank_after > 0
        assert r.rank_before == int((p0 > p0[y]).sum())
    assert checked[True] and checked[False]   # both answers were exercised


def test_bad_questions_get_one_clear_error(tiny):
    model, tok = tiny
    with pytest.raises(MagicTokensError, match="tokens.*pass the first token"):
        magictokens.reach(model, tok, X0, " dog sat", progress=False)
    with pytest.raises(MagicTokensError, match="target is empty"):
        magictokens.reach(model, tok, X0, "", progress=False)
    with pytest.raises(MagicTokensError, match="x0 is empty"):
        magictokens.reach(model, tok, "", " dog", progress=False)
    with pytest.raises(MagicTokensError, match="max_k must be >= 1"):
        ReachConfig(max_k=0)


def test_grid_stops_at_max_k():
    assert ReachConfig(max_k=10).grid() == [1, 2, 3, 4, 6, 8, 10]
    assert ReachConfig(max_k=5).grid() == [1, 2, 3, 4, 5]
    assert ReachConfig(max_k=1).grid() == [1]


def test_default_search_is_the_method_of_record():
    """reach's defaults are params.yaml's default-scale fast search (the figures' method)."""
    from magictokens.config import build, load_params

    fast = build(FastConfig, load_params("default")["reachability"]["fast"], "reachability.fast")
    assert ReachConfig().search == fast


def test_special_prefix():
    class Tok:
        def __init__(self, bos):
            self.bos = bos

        def __call__(self, text, add_special_tokens=True):
            ids = [7, 8] if text == "a" else []
            return type("E", (), {"input_ids": ([2] if self.bos and add_special_tokens else []) + ids})()

    assert special_prefix(Tok(True)) == [2] and special_prefix(Tok(False)) == []


def test_cli_prints_the_answer_and_appends_a_row(tmp_path, capsys):
    out = tmp_path / "reach.jsonl"
    args = ["reach", "--model", "tiny-random-llama", "--x0", X0, "--target", " dog", "--max-k", "2",
            "--out", str(out)]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "cost:" in text and "evaluations" in text and "->" in text
    assert main(args) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 2 and rows[0]["target"] == " dog" and rows[0]["max_k"] == 2
    assert rows[0]["meta"]["hardware"]["cpu"]["isa"] and rows[0]["search_dtype"] in ("float32", "bfloat16")
    assert rows[0]["prompt_ids"] == rows[1]["prompt_ids"]   # seeded: the same answer twice
    assert main(["reach", "--model", "tiny-random-llama", "--x0", X0, "--target", " dog sat", "--out", ""]) == 2
    assert "pass the first token" in capsys.readouterr().err
