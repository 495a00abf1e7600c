"""Notebook runs of the test suite that do not depend on each other, as jobs a fixture runs in two lanes side
by side (tests/conftest.py `side_jobs`; helpers, not a test file).

    python tests/notebook_jobs.py BASE JOB [JOB ...] [--cotrained ROOT]

Runs each JOB, one after another in this one process, under BASE/JOB as the test it serves would, and writes
BASE/JOB/job.json: what it saw between its steps (log lengths, a result before it was overwritten, the error a
run raised), so the test asserts on it afterwards. An error that a step must raise is caught and recorded; any
other ends the lane. A lane computes on one thread: its time is papermill kernels starting and Python, so two
lanes share a 2-core CPU well; one process per job would pay its imports (~8 s) each time, which on 2 cores
ate most of the gain (measured: 6 jobs in 6 processes at once 142-145 s against 172 s one test after another).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from magictokens.errors import MagicTokensError
from magictokens.pipeline import run_stage


def lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def error_of(fn, *args, **kw) -> str | None:
    """The message of the MagicTokensError that `fn` raises (None if it raises none)."""
    try:
        fn(*args, **kw)
    except MagicTokensError as exc:
        return str(exc)
    return None


def fast_log(root: Path, family: str) -> Path:
    return root / "results" / "smoke" / "instances" / "reachability" / "fast" / f"{family}.jsonl"


def result(root: Path) -> Path:
    return root / "results" / "smoke" / "reachability.json"


def reach_smoke(root: Path) -> dict:
    """The reachability notebook, then again: the second run must search nothing."""
    run_stage("reachability", "smoke", out_root=root)
    first = root / "first_reachability.json"
    shutil.copy(result(root), first)
    n = lines(fast_log(root, "true_token"))
    run_stage("reachability", "smoke", out_root=root)
    return {"first": str(first), "true_token_lines": [n, lines(fast_log(root, "true_token"))]}


def reach_search_then_cut(root: Path) -> dict:
    """`magictokens search` fills the logs; the notebook cut at 0 minutes aggregates them (partial), then
    completes without searching any of them again; an unknown family is one clear error."""
    from magictokens.stages.reachability import search

    out = {"search_minutes_0": search("smoke", root, minutes=0)}
    out["search_true_token"] = search("smoke", root, families=["true_token"])
    n = [lines(fast_log(root, "true_token"))]
    run_stage("reachability", "smoke", out_root=root, overrides={"reachability": {"search_minutes": 0}})
    out["cut"] = json.loads(result(root).read_text())
    n.append(lines(fast_log(root, "true_token")))
    run_stage("reachability", "smoke", out_root=root)
    n.append(lines(fast_log(root, "true_token")))
    out["true_token_lines"] = n
    out["unknown_family"] = error_of(search, "smoke", root, families=["nope"])
    return out


def reach_paper(root: Path) -> dict:
    """reachability.method=paper, then a method that does not exist."""
    run_stage("reachability", "smoke", out_root=root, overrides={"reachability": {"method": "paper"}})
    return {"slow_method": error_of(run_stage, "reachability", "smoke", out_root=root,
                                    overrides={"reachability": {"method": "slow"}})}


def reach_typo(root: Path) -> dict:
    """A misspelt parameter, caught inside the notebook's kernel."""
    return {"typo": error_of(run_stage, "reachability", "smoke", out_root=root,
                             overrides={"reachability": {"true_token": {"n_per_lenn": 1}}})}


def mode_smoke(root: Path, cotrained: str) -> dict:
    """The beyond study's notebook: first with no co-trained models (one clear error), then on a copy of the
    suite's smoke co-training (`cotrained`), then cut at 0 minutes after one of its logs is lost."""
    out = {"no_models": error_of(run_stage, "mode_reachability", "smoke", out_root=root)}
    shutil.copytree(cotrained, root, dirs_exist_ok=True)
    run_stage("mode_reachability", "smoke", out_root=root)
    res = root / "results" / "smoke"
    out["full"] = json.loads((res / "mode_reachability.json").read_text())
    (res / "instances" / "mode_reachability" / "system" / "fast" / "cotrained_negative_to_positive.jsonl").unlink()
    run_stage("mode_reachability", "smoke", out_root=root, overrides={"mode_reachability": {"search_minutes": 0}})
    out["cut"] = json.loads((res / "mode_reachability.json").read_text())
    return out


def theorem_smoke(root: Path) -> dict:
    return {"executed": str(run_stage("theorem", "smoke", out_root=root))}


JOBS = {f.__name__: f for f in (reach_smoke, reach_search_then_cut, reach_paper, reach_typo, mode_smoke,
                                 theorem_smoke)}


COST = {"mode_smoke": 45, "reach_search_then_cut": 50, "reach_smoke": 35, "reach_paper": 20, "theorem_smoke": 13,
        "reach_typo": 6}   # seconds each took as its own test on a 2-core AVX2 CPU: how the lanes are balanced


def lanes(names: list[str], n: int = 2) -> list[list[str]]:
    """The jobs dealt into n lanes, longest first into the least loaded (unknown jobs count 30 s)."""
    out: list[list[str]] = [[] for _ in range(n)]
    load = [0.0] * n
    for name in sorted(names, key=lambda j: -COST.get(j, 30)):
        i = load.index(min(load))
        out[i].append(name)
        load[i] += COST.get(name, 30)
    return [lane for lane in out if lane]


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("base")
    ap.add_argument("jobs", nargs="+", choices=sorted(JOBS))
    ap.add_argument("--cotrained", help="mode_smoke: the root of a finished smoke co-training")
    a = ap.parse_args(argv)
    for job in a.jobs:
        root = Path(a.base) / job
        root.mkdir(parents=True, exist_ok=True)
        saw = JOBS[job](root, a.cotrained) if job == "mode_smoke" else JOBS[job](root)
        (root / "job.json").write_text(json.dumps(saw))


if __name__ == "__main__":
    main(sys.argv[1:])
