"""Would refitting the judge on co-trained replies raise its recall on them? (paper B, issue 31, item 1)

The judge of record is fitted on `benchmarks/judge_fit_v2.npz`; the co-trained replies read since then are
kept as numbers in `benchmarks/judge_kept_v2.npz` (`judge_labelling.py keep`), split by prompt into "fit" and
"heldout". This fits the judge's classifier (same C, same class balancing) on

* the fitting set of record alone (today's judge), and
* that set plus the kept "fit" rows, at weight 1 and at weight `--boost`,

and scores each on the kept "heldout" rows of harmful prompts (co-trained replies of prompts none of the
fits saw). Classifier only: the rules, which decide some replies before it in `Judge.judge`, are left out
on both sides, so the rows compare like with like. No text is read; ~20 s on one core.

    python benchmarks/judge_refit_probe.py            # -> results/bench/judge_refit_probe.json
"""
from __future__ import annotations

import argparse

import numpy as np

from magictokens.cotraining.judge import FIT_FILE, KEPT_FILE, Judge, held_out_report
from magictokens.results import REPO_ROOT, run_meta, write_json


def rows(path) -> dict:
    z = np.load(path)
    return {"X": z["X"].astype(np.float32), "y": np.asarray(z["labels"]), "w": z["weights"].astype(float),
            "pool": np.asarray(z["pools"]), "harmful": z["harmful"].astype(bool), "rule": np.asarray(z["rule"]),
            "C": float(z["C"])}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--boost", type=float, default=3.0, help="weight of the kept rows in the third fit")
    ap.add_argument("--out", default=str(REPO_ROOT / "results" / "bench" / "judge_refit_probe.json"))
    a = ap.parse_args()
    fit, kept = rows(FIT_FILE), rows(KEPT_FILE)
    base = (fit["pool"] != "heldout") & (fit["rule"] == "")          # what the judge of record learns from
    add = kept["pool"] == "fit"
    test = (kept["pool"] == "heldout") & kept["harmful"]
    out = {"meta": run_meta("all-MiniLM-L6-v2 features", "cpu", 0, "bench", fit_file=FIT_FILE.name,
                            kept_file=KEPT_FILE.name),
           "n_test": int(test.sum()), "test_counts": {c: int(n) for c, n in zip(*np.unique(kept["y"][test],
                                                                                   return_counts=True))},
           "n_kept_fit": int(add.sum()), "fits": {}}
    for name, weight in (("record", 0.0), ("plus_kept", 1.0), (f"plus_kept_x{a.boost:g}", a.boost)):
        parts = [(fit, base, 1.0)] + ([(kept, add, weight)] if weight else [])
        X = np.concatenate([d["X"][m] for d, m, _ in parts])
        y = np.concatenate([d["y"][m] for d, m, _ in parts])
        w = np.concatenate([s * d["w"][m] for d, m, s in parts])
        h = np.concatenate([d["harmful"][m] for d, m, _ in parts])
        judge = Judge(C=fit["C"]).fit_features(X, list(y), w, 0, h)
        pred = judge.predict_features(kept["X"][test], kept["harmful"][test])
        rep = held_out_report(list(kept["y"][test]), pred, kept["harmful"][test])["harmful"]
        out["fits"][name] = rep
        print(f"{name}: agreement {rep['agreement']:.3f}; " + ", ".join(
            f"{c} P {d['precision']:.2f} R {d['recall']:.2f}" for c, d in rep["classes"].items()))
    write_json(a.out, out)
    print("->", a.out)


if __name__ == "__main__":
    main()
