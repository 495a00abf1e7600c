"""Each stage's headline numbers as small DVC metrics files: `dvc metrics show` / `diff` on one screen.

One file per number, ``results/<scale>/metrics/<stage>/<name>.json`` (short
names: the path is the table's first column), each
with the same few keys:

    {"value": 0.015, "lo": 0.0091, "hi": 0.0246, "n": 1000, "paper": 0.014}

(`lo`/`hi`: its 95% interval, `n`: what it counts over, `paper`: the paper's
number where the paper states one for the same quantity; keys that do not
apply are left out). DVC draws metrics as one column per key, so same keys
in every file keep the table five columns wide whatever the number of
headline numbers; the whole result JSONs stay where they are, as outputs.
`write(out_dir, stage, result_dict)` is called by every stage after it saves
its result; `magictokens metrics --scale S` rewrites them from committed
results without running anything.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from .errors import MagicTokensError
from .papers import PAPER_A, PAPER_B

KEYS = ("value", "lo", "hi", "n", "paper")


def _number(value, ci=None, n=None, paper=None) -> dict | None:
    if value is None:
        return None
    out = {"value": value}
    if ci:
        out["lo"], out["hi"] = ci
    if n is not None:
        out["n"] = n
    if paper is not None:
        out["paper"] = paper
    return out


def reachability(res: dict) -> dict:
    """eps(10) of the true next token; reachable shares of the top-75 and uniform-rank targets at k <= 10."""
    tt, t75, ur = res["true_token"], res["top75"], res["uniform_rank"]

    def reached(fam):   # reachable = 1 - eps(10): the interval flips
        lo, hi = fam["ci95"]["10"]
        return _number(1 - fam["eps"]["10"], (1 - hi, 1 - lo), fam["n"])

    out = {"eps10_true_token": _number(tt["eps"]["10"], tt["ci95"]["10"], tt["n"]),
           "eps0_true_token": _number(tt["eps"]["0"], tt["ci95"]["0"], tt["n"],
                                      PAPER_A["gpt2_small_eps"][0]),
           "top75_reachable_k10": reached(t75) if t75["n"] else None,
           "uniform_rank_reachable_k10": reached(ur) if ur["n"] else None}
    if out["uniform_rank_reachable_k10"]:
        out["uniform_rank_reachable_k10"]["paper"] = PAPER_A["uniform_reachable_k10"]
    return out


def theorem(res: dict) -> dict:
    """The corrected bound: violations over every trial (0 = it holds) and its tightness (max ratio)."""
    per_k = res["summary"]["per_k"]
    return {"bound_violations": _number(res["violations"], n=res["n_trials"]),
            "bound_tightness_max": _number(max(v["max_ratio"] for v in per_k.values()), n=res["n_trials"]),
            "bound_tightness_median": _number(sorted(v["median_ratio"] for v in per_k.values())[len(per_k) // 2])}


def cotraining(res: dict) -> dict:
    """Mode accuracy, cosine SAM (with its interval and the paper's), XSTest over-refusal, the judge's agreement."""
    conf = res["confusion"]
    sam = (res.get("sam_stats") or {}).get("cotrained", {}).get("cosine_logits", {})
    return {"mode_accuracy": _number(res["mode_accuracy"]),
            "pos_judged_pos": _number(conf["positive"]["positive"]),     # each mode's token -> judged that mode
            "neg_judged_neg": _number(conf["negative"]["negative"]),
            "rej_judged_rej": _number(conf["rejective"]["rejective"]),
            "sam_cosine": _number(sam.get("sam"), sam.get("ci95"), sam.get("n_prompts"), PAPER_B["sam_cotrained"]),
            "xstest_overrefusal": _number(res["xstest_over_refusal"].get("cotrained_positive")),   # positive mode
            "judge_agreement": _number(res["judge_accuracy"], paper=PAPER_B["judge_accuracy"])}


def mode_reachability(res: dict) -> dict:
    """Per transition (u in the main placement): share of prompts whose mode is reached with k <= 10, judged."""
    out = {}
    for placement, trans in res["transitions"].items():
        for name, s in trans.items():
            if s.get("n"):
                lo, hi = s["ci95_judged"]["10"]
                src, dst = name.split("->")
                key = f"{src[:3]}_to_{dst[:3]}"         # positive->negative: pos_to_neg
                out[key] = _number(1 - s["eps_judged"]["10"], (1 - hi, 1 - lo), s["n"])
        break   # the main setting only (the first placement): the rest are in the result JSON
    out["random_token_switch"] = _number(res["random_token_switch_rate"])
    return out


STAGES = {"reachability": reachability, "theorem": theorem, "cotraining": cotraining,
          "mode_reachability": mode_reachability}


def write(out_dir: str | Path, stage: str, res: dict) -> list[Path]:
    """(Re)write results/<scale>/metrics/<stage>/*.json from a stage's result dict; stale files removed."""
    from .results import write_json

    if stage not in STAGES:
        raise MagicTokensError(f"no headline numbers for stage {stage!r}: use one of {sorted(STAGES)}")
    d = Path(out_dir) / "metrics" / stage
    shutil.rmtree(d, ignore_errors=True)
    return [write_json(d / f"{name}.json", num) for name, num in STAGES[stage](res).items() if num is not None]


def write_saved(out_dir: str | Path, stage: str) -> Path:
    """After a stage saved `<out_dir>/<stage>.json`: its headline files, from exactly what the JSON holds."""
    path = Path(out_dir) / f"{stage}.json"
    write(out_dir, stage, json.loads(path.read_text()))
    return path


def write_scale(out_dir: str | Path) -> dict[str, int]:
    """Every stage whose result JSON is in `out_dir`: -> {stage: files written}."""
    out = {}
    for stage in STAGES:
        path = Path(out_dir) / f"{stage}.json"
        if path.exists():
            out[stage] = len(write(out_dir, stage, json.loads(path.read_text())))
    return out
