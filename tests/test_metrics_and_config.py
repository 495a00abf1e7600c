import math

import pytest

from magictokens.config import build, load_params
from magictokens.errors import MagicTokensError
from magictokens.metrics import bootstrap_ci, k_epsilon_curve, pearson, reachable_fraction
from magictokens.reachability import ReachabilityConfig

pytestmark = pytest.mark.unit


def test_k_epsilon_by_hand():
    req = [0, 1, 1, 3, None]          # None = unsolved
    eps = k_epsilon_curve(req, [0, 1, 2, 3, 10])
    assert eps == {0: 0.8, 1: 0.4, 2: 0.4, 3: 0.2, 10: 0.2}
    assert reachable_fraction(req, 10) == pytest.approx(0.8)


def test_bootstrap_interval_brackets_the_estimate():
    req = [0] * 30 + [4] * 50 + [None] * 20
    ci = bootstrap_ci(req, [0, 4], seed=1)
    assert ci[0][0] <= 0.7 <= ci[0][1] and ci[4][0] <= 0.2 <= ci[4][1]
    assert 0.05 < ci[4][1] - ci[4][0] < 0.25
    assert bootstrap_ci([3] * 10, [1])[1] == [1.0, 1.0]


def test_pearson():
    assert pearson([1, 2, 3, 4], [2, 4, 6, 8]) == pytest.approx(1.0)
    assert pearson([1, 2, 3, 4], [8, 6, 4, 2]) == pytest.approx(-1.0)
    assert math.isnan(pearson([1, 2], [1, 2]))


def test_params_scales_merge_and_validate():
    d, p, s = (load_params(x) for x in ("default", "paper", "smoke"))
    assert p["reachability"]["backoff"]["gcg"]["search_width"] == 768      # paper budget
    assert p["reachability"]["backoff"]["greedy"]["candidates"] is None    # whole vocabulary
    assert p["model"] == d["model"] and s["model"] == "tiny-random-llama"
    for params in (d, p, s):
        build(ReachabilityConfig, params["reachability"], "reachability")


def test_params_typo_names_the_fix():
    with pytest.raises(MagicTokensError, match="did you mean 'true_token'"):
        load_params("default", overrides={"reachability": {"true_tokn": {}}})
    with pytest.raises(MagicTokensError, match="did you mean 'search_width'"):
        build(ReachabilityConfig, {"backoff": {"gcg": {"search_widht": 3}}}, "reachability")
    with pytest.raises(MagicTokensError, match="unknown scale"):
        load_params("huge")
    with pytest.raises(MagicTokensError, match=r"true_token.lengths.0 = 0: input should be greater than 0"):
        build(ReachabilityConfig, {"true_token": {"lengths": [0, 8]}}, "reachability")


def test_default_params_hash_leaves_out_a_later_key_at_its_old_value_only(tmp_path):
    import yaml

    from magictokens.config import HASH_LATER, default_params_hash
    from magictokens.results import REPO_ROOT
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    (*path, key), old = next(iter(HASH_LATER.items()))
    def with_value(v):
        d = yaml.safe_load(yaml.safe_dump(raw))
        sec = d["default"]
        for name in path:
            sec = sec[name]
        if v is None:
            sec.pop(key, None)
        else:
            sec[key] = v
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(d))
        return default_params_hash(tmp_path)
    before = with_value(None)                    # params.yaml as it was before the key existed
    assert with_value(old) == before             # added at the value those runs had: the same hash
    assert with_value(0.5) != before             # another value is another recipe
