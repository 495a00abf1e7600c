"""The fast back-off search and its parts, on the tiny in-process model: brute force, planted optima, hand values."""
import math

import pytest
import torch

from magictokens import reachability as R
from magictokens.controllers import coordinate, fast
from magictokens.controllers.filters import allowed_token_mask
from magictokens.errors import MagicTokensError
from magictokens.metrics import wilson_interval
from magictokens import scoring
from magictokens.scoring import Scorer, Scores, Verifier

pytestmark = pytest.mark.unit

SMALL = fast.FastConfig(ks=[1, 2, 3, 4], k1_candidates=8, short_steps=2,
                        coordinate=coordinate.CoordinateConfig(max_steps=3, width=16, width_max=32, topk=8, chunk=16))


def is_argmax(model, ids, x0, y) -> bool:
    """Ground truth, one plain fp32 forward: is y the unique argmax after ids + x0?"""
    with torch.no_grad():
        z = model(input_ids=torch.tensor([list(ids) + list(x0)])).logits[0, -1]
    others = z.clone()
    others[y] = -math.inf
    return bool(z[y] > others.max())


def brute_k1(model, tok, x0, y) -> bool:
    """Does any single allowed token make y the argmax? (every token, one forward each)"""
    allowed = torch.nonzero(allowed_token_mask(tok, model.config.vocab_size)).squeeze(1)
    with torch.no_grad():
        ids = torch.cat([allowed[:, None], torch.tensor(x0).expand(len(allowed), -1)], 1)
        z = model(input_ids=ids).logits[:, -1]
    top2 = z.topk(2, dim=-1)
    return bool(((top2.indices[:, 0] == y) & (top2.values[:, 0] > top2.values[:, 1])).any())


def test_every_reported_success_is_real_and_k1_matches_brute_force(tiny, tiny_ids):
    """With k1_candidates = the whole vocabulary, k=1 is found exactly when brute force finds it."""
    model, tok = tiny
    x0 = tiny_ids("the cat sat on")
    cfg = fast.FastConfig(**{**SMALL.__dict__, "k1_candidates": model.config.vocab_size})
    seen_k1 = seen_not_k1 = 0
    for y in range(4, 62):
        r = fast.run(model, tok, x0, y, cfg, verify_model=model, seed=y)
        if r.k is not None:
            assert len(r.ids) == r.k and is_argmax(model, r.ids, x0, y)
        if r.k == 0:
            continue
        k1 = brute_k1(model, tok, x0, y)
        assert (r.k == 1) == k1, (y, r.k, k1)
        seen_k1 += k1
        seen_not_k1 += not k1
    assert seen_k1 and seen_not_k1       # both cases were exercised


def test_required_k_is_the_first_grid_length_and_unsolved_keeps_the_best(tiny, tiny_ids):
    model, tok = tiny
    x0 = tiny_ids("a big old tree")
    for y in range(4, 40, 5):
        r = fast.run(model, tok, x0, y, SMALL, verify_model=model, seed=1)
        ks = [t.k for t in r.trace if t.method != "shorten"]
        assert ks == sorted(ks) and ks[0] == 0
        if r.k is None:
            assert len(r.ids) == 4 and not any(t.success for t in r.trace)
        elif r.k:
            # every grid length below the answer was searched and failed (shortening aside)
            assert all(not t.success for t in r.trace if t.k < r.k and t.method != "shorten")
        searched = [t for t in r.trace[1:] if t.method != "shorten"]   # trace lists a shortening only if it hit
        assert r.n_candidates["k1"] + r.n_candidates["coordinate"] == sum(t.n_candidates for t in searched)


def test_coordinate_search_finds_a_planted_optimum_and_never_ends_worse(tiny, tiny_ids):
    """Target = what a random 3-token prompt makes the argmax: reachable at k=3 by construction."""
    model, tok = tiny
    x0 = tiny_ids("the river")
    gen = torch.Generator().manual_seed(0)
    found = 0
    for trial in range(6):
        planted = torch.randint(4, 62, (3,), generator=gen).tolist()
        with torch.no_grad():
            y = int(model(input_ids=torch.tensor([planted + x0])).logits[0, -1].argmax())
        start = [5, 6, 7]
        cfg = coordinate.CoordinateConfig(max_steps=8, width=64, width_max=128, topk=16, chunk=32)
        r = coordinate.run(model, tok, x0, y, 3, cfg, init_ids=start, verify_model=model, seed=trial)
        start_obj = float(scoring.objective(Scorer(model, x0, y).score(torch.tensor([start])), cfg.objective)[0])
        assert r.best_obj <= start_obj + 1e-6
        if r.success:
            assert is_argmax(model, r.best_ids, x0, y)
        found += r.success
    assert found >= 4


def test_early_stop_scores_no_chunk_after_the_first_success(tiny, tiny_ids):
    """Every target of one x0 against brute force (all 58 one-token candidates scored at once).

    Targets no candidate reaches, targets first reached in the first chunk, and targets first reached in
    a later chunk with more successes after it are each exercised (asserted at the end).
    """
    model, tok = tiny
    x0 = tiny_ids("the cat")
    cands = torch.arange(4, 62)[:, None]
    chunk = 8
    seen = {"none": 0, "first chunk": 0, "later chunk": 0, "skipped successes": 0}
    for y in range(4, 62):
        scorer = Scorer(model, x0, y)
        all_scores = scorer.score(cands)
        wins = torch.nonzero(all_scores.margin > 0).flatten().tolist()
        s, win, n = scoring.score_until_success(scorer, Verifier(Scorer(model, x0, y), top=4), cands, chunk=chunk)
        if not wins:
            assert win == -1 and n == len(cands), y            # nothing to find: every chunk scored
            seen["none"] += 1
        else:
            lo = chunk * (wins[0] // chunk)                    # the chunk holding the first success
            assert n == min(lo + chunk, len(cands)), y         # stopped at its end
            # the verified success is that chunk's highest-margin candidate (an index into all of cands)
            assert win == lo + int(all_scores.margin[lo:lo + chunk].argmax()) and all_scores.margin[win] > 0, y
            seen["first chunk" if lo == 0 else "later chunk"] += 1
            seen["skipped successes"] += wins[-1] >= n          # a success the early stop never scored
        assert len(s.loss) == n                                # the scores are those of the scored prefix
        assert torch.allclose(s.loss, all_scores.loss[:n], atol=1e-5) and torch.equal(s.argmax, all_scores.argmax[:n])
    assert all(seen.values()), seen


def test_verifier_counts_search_false_positives_and_unchecked_near(tiny, tiny_ids):
    model, tok = tiny
    x0 = tiny_ids("one two")
    y = 20
    cands = torch.arange(4, 24)[:, None]                       # 20 candidates
    true = Scorer(model, x0, y).score(cands)
    fake = Scores(loss=true.loss, margin=torch.ones(20), argmax=true.argmax)   # "search" says all succeed
    v = Verifier(Scorer(model, x0, y), top=6)
    win, _, _ = v.first_success(cands, fake)
    order = torch.argsort(fake.margin, descending=True)[:6]
    assert v.n_checked == 6 and v.n_unchecked_near == 14
    assert v.n_false_positive == int((true.margin[order] <= 0).sum())
    assert (win >= 0) == bool((true.margin[order] > 0).any())


def test_deletions_and_padding():
    got = fast.deletions([1, 2, 3, 4], 2, limit=10).tolist()
    assert got == [[1, 2], [1, 3], [1, 4], [2, 3], [2, 4], [3, 4]]
    assert fast.deletions([1, 2, 3, 4], 2, limit=5) is None
    gen = torch.Generator().manual_seed(0)
    allowed = torch.tensor([10, 11, 12])
    p = fast.pad_left([7, 8], 5, 99, allowed, "target", gen)
    assert p[-2:] == [7, 8] and p[2] == 99 and set(p[:2]) <= {10, 11, 12}
    p = fast.pad_left([99, 8], 4, 99, allowed, "target", gen)        # y already there: random pads only
    assert p[-2:] == [99, 8] and set(p[:2]) <= {10, 11, 12}
    p = fast.pad_left([7, 8], 4, 99, allowed, "random", gen)
    assert set(p[:2]) <= {10, 11, 12}


@pytest.mark.parametrize("bad", [dict(ks=[0, 1]), dict(ks=[2, 1]), dict(ks=[]), dict(pad="!"), dict(k1_candidates=0),
                                 dict(coordinate=dict(objective="l2")), dict(coordinate=dict(width=0))])
def test_fast_config_errors(bad):
    with pytest.raises(MagicTokensError):
        fast.FastConfig(**bad)


def test_empty_x0_and_bad_target_fail_clearly(tiny):
    model, tok = tiny
    with pytest.raises(MagicTokensError, match="x0 is empty"):
        fast.run(model, tok, [], 5, SMALL)
    with pytest.raises(MagicTokensError, match="outside the vocabulary"):
        fast.run(model, tok, [5, 6], 10**6, SMALL)


def test_wilson_interval_hand_values():
    lo, hi = wilson_interval(0, 8)
    assert lo == 0 and abs(hi - 0.3244) < 1e-3            # not the bootstrap's degenerate [0, 0]
    lo, hi = wilson_interval(5, 10)
    assert abs(lo - 0.2366) < 1e-3 and abs(hi - 0.7634) < 1e-3
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


def test_instance_seeds_differ_per_instance_and_are_stable():
    a, b = R.instance_seed(0, "true_token-L8-0"), R.instance_seed(0, "true_token-L8-1")
    assert a != b and a == R.instance_seed(0, "true_token-L8-0") and R.instance_seed(1, "true_token-L8-0") != a
