"""Results JSONs keep floats to what they mean (results.SIGNIFICANT significant digits)."""
import json
import math
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path

import numpy as np
import pytest
import torch

from magictokens.results import SIGNIFICANT, rounded, write_json

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[1]


def cut_by_hand(x: float, digits: int) -> float:
    """x to `digits` significant digits in decimal arithmetic on x's exact binary value, ties to even."""
    d = Decimal(x)
    if d == 0:
        return x
    return float(d.quantize(Decimal(1).scaleb(d.adjusted() - digits + 1), rounding=ROUND_HALF_EVEN))


def test_floats_are_cut_to_significant_digits_against_decimal_arithmetic():
    """Every float, at the default (SIGNIFICANT) and at other digit counts, against decimal arithmetic by hand."""
    rng = np.random.default_rng(3)
    xs = [float(v) for v in np.concatenate([rng.normal(size=500), -rng.lognormal(0, 30, size=500),
                                            rng.lognormal(0, 30, size=500)])]
    xs += [0.0, -0.0, 5e-324, 1.7976931348623157e308, 0.125, 0.375, 2.5, 9.9999996, 999999.5, 123456.5]   # edges, ties
    assert rounded(xs) == [cut_by_hand(x, SIGNIFICANT) for x in xs]
    for digits in (1, 2, 3, 9, 12):
        assert rounded(xs, digits) == [cut_by_hand(x, digits) for x in xs], digits
    assert rounded([0.125, 2.5], 2) == [0.12, 2.5] and rounded([0.375, 2.5], 1) == [0.4, 2.0]   # ties to even, by hand
    assert sum(rounded(x) != x for x in xs) > 1400       # most of these floats do lose digits


def test_floats_are_cut_to_six_digits_and_nothing_else_changes():
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
    # plain JSON types only (np.float64 is a float subclass json would pass through; np.bool_, np.int64,
    # np.float32 and tensors it would refuse), and the JSON text reads back as the same values
    assert [type(got[k]) for k in ("f32", "f64", "i64", "t")] == [float, float, int, float]
    assert got["b"] is True or (type(got["b"]) is float and got["b"] == 1.0)   # np.bool_: today 1.0, not true
    assert json.loads(json.dumps(got)) == got


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
