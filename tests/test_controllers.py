import dataclasses
import itertools

import pytest
import torch

from magictokens.controllers import backoff, gcg, greedy
from magictokens.controllers.filters import allowed_token_mask
from magictokens.errors import MagicTokensError
from magictokens.scoring import Scorer

pytestmark = pytest.mark.unit


def brute_force_step(model, tok, prompt, x0, y):
    """One candidate at a time over the whole allowed vocabulary.

    Rule: the success (y the unique argmax) with the largest margin if any
    token succeeds, else the token with the highest log P(y).
    """
    allowed = allowed_token_mask(tok, model.config.vocab_size)
    rows = []
    with torch.no_grad():
        for t in torch.nonzero(allowed).squeeze(1).tolist():
            logits = model(input_ids=torch.tensor([[t] + prompt + x0])).logits[0, -1].float()
            others = logits.clone(); others[y] = float("-inf")
            rows.append((t, float(torch.log_softmax(logits, -1)[y]), float(logits[y] - others.max())))
    wins = [r for r in rows if r[2] > 0]
    t, lp, _ = max(wins, key=lambda r: r[2]) if wins else max(rows, key=lambda r: r[1])
    return t, lp


def test_a_shared_k1_sweep_decides_as_each_target_alone(tiny, tiny_ids):
    """One whole-vocabulary sweep for many targets of one x0 == a sweep per target (k=1 and the k=2 after it)."""
    model, tok = tiny
    x0 = tiny_ids("the red car was on the")
    order = torch.argsort(model(input_ids=torch.tensor([x0])).logits[0, -1], descending=True).tolist()
    targets = [order[0], order[1], order[5], order[30], order[-1]]
    cfg = greedy.GreedyConfig(k_max=2, batch_size=7, verify_top=3, stop_on_success=False, init_token="the")
    steps = greedy.shared_first_steps(model, tok, x0, targets, cfg)
    n_allowed = int(allowed_token_mask(tok, model.config.vocab_size).sum())
    for y in targets:
        alone = greedy.run(model, tok, x0, y, cfg, verify_model=model)
        shared = greedy.run(model, tok, x0, y, cfg, verify_model=model, first_step=steps[y])
        assert (shared.ids_by_k, shared.success_by_k) == (alone.ids_by_k, alone.success_by_k)
        assert shared.loss_by_k == pytest.approx(alone.loss_by_k, abs=1e-6)
        assert shared.n_candidates == alone.n_candidates == 2 * n_allowed
        assert len(steps[y].controls) <= cfg.verify_top + 1
    with pytest.raises(MagicTokensError, match="whole vocabulary"):
        greedy.shared_first_steps(model, tok, x0, targets, greedy.GreedyConfig(candidates=4, init_token="the"))


def test_batched_greedy_equals_brute_force(tiny, tiny_ids):
    model, tok = tiny
    x0, y = tiny_ids("the red car was on the"), tiny_ids("river")[0]
    cfg = greedy.GreedyConfig(k_max=2, batch_size=7, stop_on_success=False, init_token="the")
    r = greedy.run(model, tok, x0, y, cfg)
    t1, lp1 = brute_force_step(model, tok, [], x0, y)
    assert r.ids_by_k[1] == [t1]
    assert abs(r.loss_by_k[1] + lp1) < 1e-4
    t2, lp2 = brute_force_step(model, tok, [t1], x0, y)
    assert r.ids_by_k[2] == [t2, t1]          # nested: k=2 extends k=1 by prepending
    assert abs(r.loss_by_k[2] + lp2) < 1e-4


def test_greedy_never_uses_special_tokens(tiny, tiny_ids):
    model, tok = tiny
    r = greedy.run(model, tok, tiny_ids("one two three"), 30, greedy.GreedyConfig(k_max=3, stop_on_success=False, init_token="the"))
    special = set(tok.all_special_ids)
    assert all(t not in special for ids in r.ids_by_k.values() for t in ids)


def exhaustive_k2(model, x0, y, allowed):
    ids = torch.nonzero(allowed).squeeze(1).tolist()
    cands = torch.tensor(list(itertools.product(ids, ids)))
    s = Scorer(model, x0, y, batch_size=1024).score(cands)
    return cands, s


def test_gcg_reaches_a_planted_optimum(tiny, tiny_ids):
    """Pick a target that brute force says is reachable with 2 tokens but not with 0; GCG finds a success."""
    model, tok = tiny
    allowed = allowed_token_mask(tok, model.config.vocab_size)
    x0 = tiny_ids("the king was in the old")
    base = Scorer(model, x0, 0).score(torch.zeros(1, 0, dtype=torch.long))
    found = None
    for y in torch.nonzero(allowed).squeeze(1).tolist():
        if y == int(base.argmax[0]):
            continue
        cands, s = exhaustive_k2(model, x0, y, allowed)
        n_ok = int((s.margin > 0).sum())
        if 0 < n_ok <= 40:   # reachable, but rare: a real search problem
            found = (y, n_ok)
            break
    assert found is not None, "tiny model offers no planted optimum"
    y = found[0]
    cfg = gcg.GCGConfig(num_steps=60, search_width=64, topk=int(allowed.sum()), init_token="the", seed=0)
    r = gcg.run(model, tok, x0, y, 2, cfg)
    assert r.success
    s = Scorer(model, x0, y).score(torch.tensor([r.best_ids]))
    assert float(s.margin[0]) > 0                  # independent re-check


def test_gcg_never_worse_than_start_and_is_seeded(tiny, tiny_ids, monkeypatch):
    """The returned prompt is never worse than the start, for a search that succeeds and one that does not.

    GCG's order: a verified success beats any failure, even one of lower loss; among failures, lower
    loss wins; among the successes the verifier confirms (each step's highest-margin candidate, when
    its margin > 0), lower loss wins. Both outcomes, and in the succeeding run both a lower-loss success
    replacing the first and a lower-loss failure left aside, are exercised (asserted below); every
    candidate GCG scored is re-scored independently, so the run's best is known without GCG's bookkeeping.
    """
    model, tok = tiny
    x0 = tiny_ids("the cat and the dog")
    start = tiny_ids("the big red")        # "big red" right-aligned in k=3 slots, padded with init_token "the"
    cfg = gcg.GCGConfig(num_steps=8, search_width=16, topk=8, init_token="the", early_stop=False, seed=3)
    sampled = []                           # each step's candidates, exactly as GCG scored them (a pass-through spy)
    real_sample = gcg.sample_candidates
    monkeypatch.setattr(gcg, "sample_candidates", lambda *a, **kw: sampled.append(real_sample(*a, **kw)) or sampled[-1])
    runs = {}
    for y in (16, 25):
        sampled.clear()
        a = gcg.run(model, tok, x0, y, 3, cfg, init_ids=tiny_ids("big red"))
        assert len(sampled) == cfg.num_steps
        steps = [Scorer(model, x0, y).score(c) for c in sampled]      # independent re-score of every candidate
        # each step's verified success (no verify model: the search scores decide), as (loss, ids)
        wins = [(float(s.loss[int(s.margin.argmax())]), c[int(s.margin.argmax())].tolist())
                for c, s in zip(sampled, steps) if float(s.margin.max()) > 0]
        ref = Scorer(model, x0, y).score(torch.tensor([start, a.best_ids]))
        start_loss, best_loss, best_margin = float(ref.loss[0]), float(ref.loss[1]), float(ref.margin[1])
        assert float(ref.margin[0]) <= 0                              # the start fails: there is work to do
        assert a.start_loss == pytest.approx(start_loss, abs=1e-5)    # the start is the warm start above
        assert a.best_loss == pytest.approx(best_loss, abs=1e-5)      # the reported loss is best_ids' own
        assert a.success == (best_margin > 0)                         # success <=> y is the argmax after best_ids
        assert a.steps == len(a.history) == cfg.num_steps              # early_stop=False: every step ran
        assert len(a.best_ids) == 3 and not set(a.best_ids) & set(tok.all_special_ids)
        assert a.success == bool(wins)      # a success seen anywhere beats every failure (the start included)
        if a.success:
            # the lowest-loss verified success of the whole run (the first such on a tie), not merely the first found
            best_win = min(wins, key=lambda w: w[0])
            assert a.best_ids == best_win[1] and a.best_loss == pytest.approx(best_win[0], abs=1e-5)
            assert best_win[0] < wins[0][0] - 1e-3      # a later, lower-loss success did replace the first one
            first = next(i for i, st in enumerate(steps) if float(st.margin.max()) > 0)
            assert any(float(st.loss[st.margin <= 0].min()) < a.best_loss - 1e-3
                       for st in steps[first:] if (st.margin <= 0).any())   # and a lower-loss failure did not
        else:
            assert best_loss <= start_loss + 1e-6
            # the best ever seen: the minimum over the start and every step's best, not merely below them
            assert a.best_loss == pytest.approx(min([start_loss] + a.history), abs=1e-5)
            assert a.best_loss < start_loss - 1e-3      # and 8 steps did move it
        runs[y] = a
    assert {r.success for r in runs.values()} == {True, False}      # both branches above ran

    # seeded: the same seed repeats the run exactly, another seed takes another path
    again = gcg.run(model, tok, x0, 25, 3, cfg, init_ids=tiny_ids("big red"))
    other = gcg.run(model, tok, x0, 25, 3, dataclasses.replace(cfg, seed=4), init_ids=tiny_ids("big red"))
    assert (again.best_ids, again.history) == (runs[25].best_ids, runs[25].history)
    assert other.history != runs[25].history


def test_warm_start_is_right_aligned():
    assert gcg.warm_start([7, 8], 4, 1) == [1, 1, 7, 8]
    assert gcg.warm_start([5, 6, 7, 8, 9], 3, 1) == [7, 8, 9]


def test_backoff_returns_the_shortest_success(tiny, tiny_ids):
    model, tok = tiny
    x0 = tiny_ids("two big fish in the")
    cfg = backoff.BackoffConfig(greedy_ks=[1, 2], gcg_ks=[3, 4],
                                greedy=greedy.GreedyConfig(init_token="the"),
                                gcg=gcg.GCGConfig(num_steps=10, search_width=32, topk=16, init_token="the"))
    base = Scorer(model, x0, 0).score(torch.zeros(1, 0, dtype=torch.long))
    r0 = backoff.run(model, tok, x0, int(base.argmax[0]), cfg)
    assert r0.k == 0 and r0.ids == []
    solved = 0
    for y in range(4, 40):
        r = backoff.run(model, tok, x0, y, cfg)
        assert [t.k for t in r.trace] == sorted(t.k for t in r.trace)
        assert all(not t.success for t in r.trace[:-1])      # nothing shorter worked
        if r.k is None:
            continue
        solved += 1
        assert r.trace[-1].success and r.trace[-1].k == r.k and len(r.ids) == r.k
        s = Scorer(model, x0, y).score(torch.tensor([r.ids]))
        assert float(s.margin[0]) > 0
        if r.k >= 2:   # brute force: no single token works
            ones = Scorer(model, x0, y).score(torch.nonzero(allowed_token_mask(tok, model.config.vocab_size)))
            assert float(ones.margin.max()) <= 0
    assert solved >= 5


@pytest.mark.parametrize("bad", [dict(greedy_ks=[0]), dict(gcg_ks=[-1]), dict(greedy_ks=[2, 3]),
                                 dict(greedy_ks=[1, 2], gcg_ks=[2, 4])])
def test_backoff_config_errors(bad):
    with pytest.raises(MagicTokensError):
        backoff.BackoffConfig(**bad)


def test_bad_inputs_fail_with_one_clear_error(tiny, tiny_ids):
    model, tok = tiny
    x0 = tiny_ids("the cat")
    with pytest.raises(MagicTokensError, match="k must be >= 1"):
        gcg.run(model, tok, x0, 5, 0, gcg.GCGConfig(init_token="the"))
    with pytest.raises(MagicTokensError, match="k_max must be >= 1"):
        greedy.run(model, tok, x0, 5, greedy.GreedyConfig(k_max=0, init_token="the"))
    with pytest.raises(MagicTokensError, match="x0 is empty"):
        backoff.run(model, tok, [], 5)
    with pytest.raises(MagicTokensError, match="outside the vocabulary"):
        backoff.run(model, tok, x0, 10_000)
    with pytest.raises(MagicTokensError, match="outside the vocabulary"):
        backoff.run(model, tok, [99_999], 5)
    with pytest.raises(MagicTokensError, match="special"):
        greedy.run(model, tok, x0, 5, greedy.GreedyConfig(init_token="!"))
