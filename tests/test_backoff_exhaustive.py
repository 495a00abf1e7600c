"""The back-off searches against brute force: every prompt of 0, 1 and 2 tokens on the tiny model.

The tiny model allows A = 58 tokens, so all 1 + A + A^2 = 3,423 prompts of length <= 2 take
one batched forward each. For every target y that gives the truth: the shortest k <= 2 for
which some prompt u (k tokens) makes y the unique argmax of P(. | u + x0), or "more than 2".
Each search must then

* never report a k below the truth (a shorter success would be a false one),
* report only real successes (re-checked here by a plain fp32 forward), and
* with a budget that covers every prompt of length <= 2, find exactly the truth.
"""
import itertools

import pytest
import torch

from magictokens.controllers import backoff, coordinate, fast, gcg, greedy
from magictokens.controllers.filters import allowed_token_mask

pytestmark = pytest.mark.unit

X0 = "the cat sat on"
NEAR_TIE = 1e-4       # targets whose best margin at some k <= 2 lies within this of 0 are left out


def plain_next(model, prompts: torch.Tensor, x0: list[int]) -> torch.Tensor:
    """(N, k) prompts -> (N, V) fp32 next-token logits after prompt + x0 (no Scorer, no cache)."""
    ids = torch.cat([prompts, torch.tensor(x0).expand(len(prompts), -1)], dim=1)
    with torch.no_grad():
        return torch.cat([model(input_ids=b).logits[:, -1].float() for b in ids.split(1024)])


def margins(logits: torch.Tensor) -> torch.Tensor:
    """(N, V) logits -> (N, V): m[n, y] = z_y - max_{v != y} z_v, > 0 iff y is the unique argmax."""
    top = logits.topk(2, dim=-1).values
    best_other = torch.where(logits == top[:, :1], top[:, 1:], top[:, :1])
    return logits - best_other


def is_argmax(model, ids, x0, y) -> bool:
    z = plain_next(model, torch.tensor([list(ids)], dtype=torch.long).reshape(1, len(ids)), x0)[0]
    return bool(margins(z[None])[0, y] > 0)


@pytest.fixture(scope="module")
def truth(tiny, tiny_ids):
    """-> (x0, allowed ids, {y: shortest k <= 2 or None}) for every allowed y not near a tie."""
    model, tok = tiny
    x0 = tiny_ids(X0)
    allowed = torch.nonzero(allowed_token_mask(tok, model.config.vocab_size)).squeeze(1).tolist()
    best = []                                        # best[k][y] = max over all k-token prompts of y's margin
    for k in range(3):
        prompts = torch.tensor(list(itertools.product(allowed, repeat=k)), dtype=torch.long).reshape(len(allowed) ** k, k)
        best.append(margins(plain_next(model, prompts, x0)).max(dim=0).values)
    shortest = {}
    for y in allowed:
        ks = [k for k in range(3) if best[k][y] > 0]
        k_true = ks[0] if ks else None
        deciding = range(3) if k_true is None else range(k_true + 1)
        if all(abs(float(best[k][y])) > NEAR_TIE for k in deciding):
            shortest[y] = k_true
    assert len(shortest) >= len(allowed) - 2, "too many near-ties for an exact comparison"
    found = {k: sum(v == k for v in shortest.values()) for k in (0, 1, 2, None)}
    assert found[0] == 1 and min(found[1], found[2], found[None]) >= 4, found   # every case is exercised
    return x0, allowed, shortest


def pick(shortest: dict, n2: int, n_more: int) -> list[int]:
    """Every target reached with k <= 1, `n2` spread-out targets of k = 2 and `n_more` of k > 2
    (those cost a search's whole budget)."""
    out = [y for y, k in shortest.items() if k is not None and k <= 1]
    for case, n in ((2, n2), (None, n_more)):
        ys = [y for y, k in shortest.items() if k == case]
        out += ys[:: max(1, len(ys) // n)][:n]
    return out


def check(model, x0, y, k_true, r, exact: bool):
    assert r.k is None or len(r.ids) == r.k
    if r.k is not None:
        assert k_true is not None and r.k >= k_true, (y, k_true, r.k)     # never below the truth
        assert is_argmax(model, r.ids, x0, y), (y, r.ids)                 # a real success
    if exact:
        assert r.k == k_true, (y, k_true, r.k)


def test_backoff_nested_greedy_is_exact_at_k1_and_never_below_the_truth(tiny, truth):
    """Algorithm 1's shape at k <= 2: greedy over the whole vocabulary for k = 1, 2 (no GCG).

    k = 1 sweeps every token, so k <= 1 is exact; k = 2 only extends the k = 1 prompt
    (nested), so it may miss a pair: there only "never below the truth" holds.
    """
    model, tok = tiny
    x0, allowed, shortest = truth
    cfg = backoff.BackoffConfig(greedy_ks=[1, 2], gcg_ks=[],
                                greedy=greedy.GreedyConfig(candidates=None, init_token="the"))
    for y in pick(shortest, n2=8, n_more=4):
        r = backoff.run(model, tok, x0, y, cfg, verify_model=model)
        check(model, x0, y, shortest[y], r, exact=shortest[y] is None or shortest[y] <= 1)


def test_backoff_with_a_full_budget_finds_the_exact_shortest_k(tiny, truth):
    """greedy k = 1 over the whole vocabulary, then GCG at k = 2 with every allowed token as a
    swap and 2 swaps per candidate: each candidate whose two swaps hit different positions is a
    uniform draw of a pair, 4 A^2 of them per step, so after 5 steps a given pair is missed with
    probability e^-20 (the draw is seeded: the outcome is fixed)."""
    model, tok = tiny
    x0, allowed, shortest = truth
    A = len(allowed)
    cfg = backoff.BackoffConfig(
        greedy_ks=[1], gcg_ks=[2], greedy=greedy.GreedyConfig(candidates=None, init_token="the"),
        gcg=gcg.GCGConfig(num_steps=5, search_width=8 * A * A, topk=A, n_replace=2, batch_size=4096, init_token="the"))
    for y in pick(shortest, n2=6, n_more=2):
        r = backoff.run(model, tok, x0, y, cfg, verify_model=model)
        check(model, x0, y, shortest[y], r, exact=True)


def test_fast_with_a_full_budget_finds_the_exact_shortest_k(tiny, truth):
    """k = 1 scores every allowed token (k1_candidates >= V); k = 2 is a coordinate search with
    every allowed token as a swap, 2 swaps per candidate at every step and a visited set, so no
    pair is scored twice: a search that fails at k = 2 must have scored all A^2 pairs, which
    the candidate count certifies."""
    model, tok = tiny
    x0, allowed, shortest = truth
    A, V = len(allowed), model.config.vocab_size
    steps = 12
    cfg = fast.FastConfig(ks=[1, 2], k1_candidates=V, short_steps=steps,
                          coordinate=coordinate.CoordinateConfig(max_steps=steps, width=4 * A * A, width_max=4 * A * A,
                                                                 topk=A, multi_steps=steps, chunk=4096,
                                                                 batch_size=4096))
    for y in pick(shortest, n2=6, n_more=2):
        r = fast.run(model, tok, x0, y, cfg, verify_model=model, seed=y)
        check(model, x0, y, shortest[y], r, exact=True)
        if shortest[y] is None:
            # k = 1: A tokens; k = 2: each of the A^2 pairs once (the start prompt included), nothing else
            assert sum(r.n_candidates.values()) == A + A * A, r.n_candidates
