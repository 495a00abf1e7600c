"""Results JSONs keep floats to what they mean (results.SIGNIFICANT significant digits)."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from magictokens.results import SIGNIFICANT, rounded, write_json

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[1]


def test_floats_are_cut_to_significant_digits_and_nothing_else_changes():
    assert SIGNIFICANT == 6
    obj = {"a": 0.123456789, "b": 123456.789, "c": 1.23456789e-12, "d": -98765432.1, "e": 0.1, "f": 2.5,
           "int": 12345678901234567890, "neg": -7, "flag": True, "off": False, "none": None,
           "text": "0.123456789", "nan": float("nan"), "inf": float("inf"), "minf": float("-inf"),
           1: [0.333333333333, (0.666666666666, 3)], "nested": {"x": [{"y": 1 / 3}]}}
    got = rounded(obj)
    assert got["a"] == 0.123457 and got["b"] == 123457.0 and got["c"] == 1.23457e-12 and got["d"] == -98765400.0
    assert got["e"] == 0.1 and got["f"] == 2.5
    assert got["int"] == 12345678901234567890 and type(got["int"]) is int and got["neg"] == -7
    assert got["flag"] is True and got["off"] is False and got["none"] is None
    assert got["text"] == "0.123456789"  # strings are not numbers
    assert math.isnan(got["nan"]) and got["inf"] == math.inf and got["minf"] == -math.inf
    assert got[1] == [0.333333, [0.666667, 3]] and got["nested"] == {"x": [{"y": 0.333333}]}
    assert list(got) == list(obj)  # keys and their order kept
    assert obj["a"] == 0.123456789  # a copy: the caller's object is not changed


def test_numpy_and_torch_scalars():
    got = rounded({"f32": np.float32(0.1), "f64": np.float64(2 / 3), "i64": np.int64(7), "t": torch.tensor(1 / 7),
                   "b": np.bool_(True)})
    assert got["f32"] == 0.1 and got["f64"] == 0.666667 and got["t"] == 0.142857
    assert got["i64"] == 7 and type(got["i64"]) is int
    assert json.dumps(got)  # plain JSON types only


def test_rounding_is_idempotent():
    rng = np.random.default_rng(0)
    xs = [float(v) for v in np.concatenate([rng.normal(size=2000), rng.lognormal(0, 12, size=2000)])]
    once = rounded(xs)
    assert rounded(once) == once
    assert all(abs(a - b) <= 5e-6 * abs(b) for a, b in zip(once, xs))


def test_write_json_rounds_so_a_16th_digit_change_rewrites_nothing(tmp_path):
    a = {"eps": {"1": 0.1 + 0.2, "2": 2 / 3}, "n": 20, "meta": {"model": "tiny", "seed": 0}}
    b = {"eps": {"1": 0.30000000000000004 + 1e-16, "2": 2 / 3 - 1e-16}, "n": 20, "meta": {"model": "tiny", "seed": 0}}
    assert a != b
    pa, pb = write_json(tmp_path / "a.json", a), write_json(tmp_path / "b.json", b)
    assert pa.read_bytes() == pb.read_bytes()
    assert json.loads(pa.read_text()) == {"eps": {"1": 0.3, "2": 0.666667}, "n": 20,
                                          "meta": {"model": "tiny", "seed": 0}}
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("path", sorted(str(p.relative_to(REPO)) for p in REPO.glob("results/*/*.json")))
def test_committed_results_are_saved_rounded(path):
    """Every committed results JSON reads back unchanged through `rounded` (written by write_json)."""
    text = (REPO / path).read_text()
    obj = json.loads(text)
    assert json.dumps(rounded(obj), indent=2) + "\n" == text, f"{path}: re-save it through results.write_json"
