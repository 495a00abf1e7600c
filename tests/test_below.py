"""The `below` step of the fast search: never longer, exhaustive at k = 1, and the same on a stored row."""
import dataclasses
from dataclasses import asdict

import pytest

from magictokens.controllers import below, coordinate, fast, resume_key
from magictokens.errors import MagicTokensError
from magictokens.reachability.below_rows import below_row

from test_fast import SMALL, brute_k1, is_argmax

pytestmark = pytest.mark.unit

# a base search too weak to find k = 1 or k = 2 often, so the step below has work to do
WEAK = dataclasses.replace(SMALL, k1_candidates=2, short_steps=1, shorten=False,
                           coordinate=dataclasses.replace(SMALL.coordinate, max_steps=1, width=4, width_max=4))
ON = dataclasses.replace(WEAK, below=below.BelowConfig(k1_sweep=10_000, starts=2, steps=3, levels=3))


def test_grid_below_and_deletions():
    assert below.grid_below([1, 2, 3, 4, 6], 6) == 4
    assert below.grid_below([1, 2, 3, 4, 6], 1) is None
    assert below.grid_below([2, 4], 3) == 2
    assert below.deletions_of([5, 6, 7], 2).tolist() == [[5, 6], [5, 7], [6, 7]]


@pytest.mark.parametrize("bad", [dict(k1_sweep=-1), dict(starts=-2), dict(steps=0), dict(levels=0),
                                 dict(sweep_chunk=0)])
def test_below_config_errors(bad):
    with pytest.raises((MagicTokensError, ValueError)):
        below.BelowConfig(**bad)


def test_old_rows_keep_their_resume_key():
    """The step off (its default) leaves the key every committed fast row was written under."""
    assert "below" not in resume_key(fast.FastConfig())
    assert "below" in resume_key(dataclasses.replace(fast.FastConfig(), below=below.BelowConfig(starts=1)))
    assert fast.FastConfig(below={"starts": 1}).below.starts == 1


def test_below_never_longer_always_real_and_exhaustive_at_k1(tiny, tiny_ids):
    """Against the weak base search on the same instances: k never rises, every success is a real argmax,
    and where the whole vocabulary was swept at k = 1, it succeeded exactly when brute force says it can."""
    model, tok = tiny
    x0 = tiny_ids("the cat sat on")
    lowered, exact = 0, {True: 0, False: 0}
    for y in range(4, 40):
        base = fast.run(model, tok, x0, y, WEAK, verify_model=model, seed=y)
        r = fast.run(model, tok, x0, y, ON, verify_model=model, seed=y)
        req = lambda k: 99 if k is None else k   # noqa: E731
        assert req(r.k) <= req(base.k)
        lowered += req(r.k) < req(base.k)
        if r.k is not None:
            assert len(r.ids) == r.k and is_argmax(model, r.ids, x0, y)
        swept = [t for t in r.trace if t.method == "below_k1"]
        if swept:                          # the whole vocabulary swept at k = 1: exact
            assert swept[0].success == brute_k1(model, tok, x0, y) == (r.k == 1), y
            exact[swept[0].success] += 1
        assert r.n_candidates["below"] >= 0 and sum(r.n_candidates.values()) >= sum(base.n_candidates.values())
    assert lowered > 0 and exact[True] and exact[False]     # both answers of the sweep were exercised


def test_the_step_on_a_stored_row_is_the_search_with_the_step(tiny, tiny_ids):
    """below_row(row of the search without the step) == the row of the search with it: same k, prompt,
    trace and counts (timings aside), so a run of record may extend committed rows."""
    model, tok = tiny
    x0 = tiny_ids("the cat sat on")
    n_changed = 0
    for y in range(4, 30):
        seed = 1000 + y
        old = {**asdict(fast.run(model, tok, x0, y, WEAK, verify_model=model, seed=seed)),
               "x0_ids": list(x0), "target_id": y, "instance_seed": seed, "config_hash": "h"}
        new = asdict(fast.run(model, tok, x0, y, ON, verify_model=model, seed=seed))
        got = below_row(old, model, tok, ON, verify_model=model)
        assert got["k"] == new["k"] and got["ids"] == new["ids"], y
        assert got["n_candidates"] == new["n_candidates"] and got["n_gradients"] == new["n_gradients"]
        assert got["verify"] == new["verify"]
        strip = lambda tr: [{k: v for k, v in t.items() if k != "seconds"} for t in tr]   # noqa: E731
        assert strip(got["trace"]) == strip(new["trace"])
        n_changed += got["k"] != old["k"]
    assert n_changed > 0


def test_the_step_off_or_nothing_below_copies_the_row(tiny, tiny_ids):
    model, tok = tiny
    x0 = tiny_ids("the cat sat on")
    row = {**asdict(fast.run(model, tok, x0, 7, WEAK, verify_model=model, seed=3)),
           "x0_ids": list(x0), "target_id": 7, "instance_seed": 3, "config_hash": "h", "id": "i"}
    for cfg in (WEAK, ON):
        got = below_row({**row, "k": 1, "ids": [5]} if cfg is ON else row, model, tok, cfg, verify_model=model)
        assert got["n_candidates"]["below"] == 0 and "id" not in got and "config_hash" not in got
        assert got["trace"] == row["trace"]


def test_k1_rest_skips_what_the_fast_step_scored(tiny, tiny_ids):
    model, tok = tiny
    x0 = tiny_ids("the cat sat on")
    from magictokens.controllers.filters import allowed_token_mask
    from magictokens.scoring import Scorer
    allowed = allowed_token_mask(tok, model.config.vocab_size)
    scorer = Scorer(model, x0, 9)
    rest0 = below.k1_rest(model, scorer, allowed, 0, "ce")
    rest5 = below.k1_rest(model, scorer, allowed, 5, "ce")
    assert 9 not in rest0.tolist() and len(rest0) == int(allowed.sum()) - 1
    assert rest5.tolist() == [t for t in rest0.tolist() if t in rest5.tolist()] and len(rest5) <= len(rest0) - 4
    assert coordinate.CoordinateConfig().objective == "ce"


def _row(i, k, evals, below=0, paper=False):
    return {"id": f"i{i}", "x0_ids": [i], "target_id": 1, "k": k, "trace": [{"k": k, "method": "gcg", "success": True, "n_candidates": evals}],
            "n_candidates": {"gcg": evals} if paper else {"k1": evals, "below": below}}


def test_variant_summary_hand_values():
    """4 pairs: paper k (2, 4, None, 0) vs fast (3, 4, 6, 0); the variant lowers the first to 2 for 100 more."""
    from magictokens.reachability import headtohead as H
    paper = [_row(0, 2, 9, paper=True), _row(1, 4, 9, paper=True), _row(2, None, 9, paper=True),
             _row(3, 0, 1, paper=True)]
    fast = [_row(0, 3, 10), _row(1, 4, 20), _row(2, 6, 30), _row(3, 0, 1)]
    pairs = list(zip(paper, fast))
    s = H.variant_summary(pairs)
    assert (s["n_le"], s["n_lt"], s["n_gt"], s["n_searched"]) == (3, 1, 1, 3)
    assert s["evals_median"] == 20 and s["n_short_of_target"] == 1       # ceil(0.9 * 4) - 3
    v = H.replaced(pairs, [_row(0, 2, 10, below=100)])
    s2 = H.variant_summary(v)
    assert (s2["n_le"], s2["n_gt"], s2["evals_median"], s2["evals_below_max"]) == (4, 0, 30, 100)
    assert s2["share_k_le_paper"] == 1.0 and s2["share_wilson"][1] == pytest.approx(1.0)
    assert H.replaced(pairs, [{**_row(0, 2, 10), "x0_ids": [99]}]) == pairs    # other content: not the same instance
