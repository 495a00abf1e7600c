"""The test suite's subprocess jobs that do not depend on each other (notebook runs, the smoke co-training, the
committed figures' redraws), run in two lanes side by side with the tests (tests/conftest.py `SidePool`;
helpers, not a test file).

    python tests/notebook_jobs.py BASE JOB [JOB ...]

Runs each JOB, one after another in this one process, under BASE/JOB as the test it serves would, and writes
BASE/JOB/job.json when it is done: what it saw between its steps (log lengths, a result before it was
overwritten, the error a run raised), so the test asserts on it afterwards. An error that a step must raise is
caught and recorded; any other ends the lane. A lane computes on one thread: its time is papermill kernels
starting and Python, so two lanes share a 2-core CPU well; one process per job would pay its imports (~8 s)
each time, which on 2 cores ate most of the gain (measured: 6 jobs in 6 processes at once 142-145 s against
172 s one test after another). A job that needs another's output (DEPENDS) runs after it in the same lane.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path
from unittest import mock

from magictokens.config import REPO_ROOT
from magictokens.errors import MagicTokensError
from magictokens.pipeline import main as main_cli
from magictokens.pipeline import run_stage

# what each stage writes into results/<scale>/, and the scales whose results are committed (the redraw jobs)
RESULT_FILES = {"reachability": ("reachability.json", "speed.json", "reachability_points.csv"),
                "theorem": ("theorem.json",), "cotraining": ("cotraining.json", "cotraining_projection.csv"),
                "mode_reachability": ("mode_reachability.json",)}
RECORD = {"default": tuple(RESULT_FILES), "paper": ("reachability", "theorem"),   # paper B: not run at paper scale
          "cpu": ("cotraining", "mode_reachability")}                             # its record scale
# the hash seed of the smoke co-training's kernel; the lanes run under another (conftest), so the rerun in
# `cotraining_rerun` checks that the stage's numbers do not depend on it
SMOKE_HASH_SEED = "3"


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


def instance_logs(root: Path) -> dict:
    """{path under root: text} of every per-instance log a stage wrote."""
    return {str(p.relative_to(root)): p.read_text() for p in sorted((root / "results").rglob("*.jsonl"))
            if "instances" in p.parts}


def mode_smoke(root: Path) -> dict:
    """The beyond study's notebook: first with no co-trained models (one clear error), then on a copy of the
    suite's smoke co-training (the `smoke_cotraining` job), then cut at 0 minutes after one of its logs is lost."""
    out = {"no_models": error_of(run_stage, "mode_reachability", "smoke", out_root=root)}
    shutil.copytree(root.parent / "smoke_cotraining", root, dirs_exist_ok=True)
    (root / "job.json").unlink()                                        # the copied job's record, not this one's
    run_stage("mode_reachability", "smoke", out_root=root)
    res = root / "results" / "smoke"
    out["full"] = json.loads((res / "mode_reachability.json").read_text())
    out["logs"] = instance_logs(root)          # the full run's rows (tests/test_distributed.py compares a launch)
    (res / "instances" / "mode_reachability" / "system" / "fast" / "cotrained_negative_to_positive.jsonl").unlink()
    run_stage("mode_reachability", "smoke", out_root=root, overrides={"mode_reachability": {"search_minutes": 0}})
    out["cut"] = json.loads((res / "mode_reachability.json").read_text())
    return out


def smoke_cotraining(root: Path) -> dict:
    """The cotraining notebook on smoke params, once per suite: its own test checks it, the determinism tests
    and the launch test compare against it, and the beyond study's notebook job starts from a copy."""
    with mock.patch.dict(os.environ, {"PYTHONHASHSEED": SMOKE_HASH_SEED}):   # the kernel inherits it
        return {"executed": str(run_stage("cotraining", "smoke", out_root=root))}


def cotraining_rerun(root: Path) -> dict:
    """The smoke co-training once more, in this process (the lane's hash seed, not the kernel's)."""
    from magictokens.stages.cotraining import run

    run("smoke", root, progress=lambda *a: None)
    return {"hash_seed": os.environ.get("PYTHONHASHSEED")}


def redraw(root: Path, stage: str, scale: str) -> dict:
    """The stage's notebook with redraw=True on its committed result of `scale`: its files copied alone into
    results/<scale>/ of a root of its own, the model name made unloadable."""
    (root / "results" / scale).mkdir(parents=True, exist_ok=True)
    for name in RESULT_FILES[stage]:
        if (REPO_ROOT / "results" / scale / name).exists():
            shutil.copy(REPO_ROOT / "results" / scale / name, root / "results" / scale / name)
    # through the command line, as a user redraws: `magictokens run STAGE --scale S --redraw`
    assert main_cli(["run", stage, "--scale", scale, "--out-root", str(root), "--set", "model=no-such-model",
                     "--redraw"]) == 0
    return {}


def theorem_smoke(root: Path) -> dict:
    return {"executed": str(run_stage("theorem", "smoke", out_root=root))}


JOBS = {f.__name__: f for f in (smoke_cotraining, cotraining_rerun, reach_smoke, reach_search_then_cut, reach_paper,
                                 reach_typo, mode_smoke, theorem_smoke)}
JOBS.update({f"redraw-{stage}-{scale}": (lambda root, st=stage, sc=scale: redraw(root, st, sc))
             for scale, stages in RECORD.items() for stage in stages})
DEPENDS = {"mode_smoke": "smoke_cotraining"}   # runs after it, in its lane

COST = {"smoke_cotraining": 35, "cotraining_rerun": 25, "mode_smoke": 45, "reach_search_then_cut": 50,
        "reach_smoke": 35, "reach_paper": 20, "theorem_smoke": 13, "reach_typo": 6}
# seconds each took as its own test on a 2-core AVX2 CPU (how the lanes are balanced); a redraw ~12 s
REDRAW_COST = 12


def cost(name: str) -> float:
    return REDRAW_COST if name.startswith("redraw-") else COST.get(name, 30)


def lanes(names: list[str], n: int = 2) -> list[list[str]]:
    """The jobs dealt into n lanes in the order given (the order the tests first need them), each into the
    least loaded lane; a job in DEPENDS goes into its dependency's lane, after it (which must come first)."""
    out: list[list[str]] = [[] for _ in range(n)]
    load = [0.0] * n
    for name in names:
        dep = DEPENDS.get(name)
        if dep is not None and dep not in names[:names.index(name)]:
            raise ValueError(f"job {name} needs {dep}: select it too, before it")
        i = next(j for j, lane in enumerate(out) if dep in lane) if dep else load.index(min(load))
        out[i].append(name)
        load[i] += cost(name)
    return [lane for lane in out if lane]


def needed_jobs(items) -> list[str]:
    """The side jobs the items need, in the order the tests first ask for them (a dependency first)."""
    out: list[str] = []
    for item in items:
        names = [m.args[0] for m in item.iter_markers("side_job")]
        names += ["smoke_cotraining"] if "smoke_cotraining" in getattr(item, "fixturenames", ()) else []
        for name in names:
            for job in (DEPENDS.get(name), name):
                if job is not None and job not in out:
                    out.append(job)
    return out


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("base")
    ap.add_argument("jobs", nargs="+", choices=sorted(JOBS))
    a = ap.parse_args(argv)
    for job in a.jobs:
        root = Path(a.base) / job
        root.mkdir(parents=True, exist_ok=True)
        saw = JOBS[job](root)
        tmp = root / "job.json.tmp"
        tmp.write_text(json.dumps(saw))
        tmp.replace(root / "job.json")        # whole or absent: a test waiting on it never reads half a file


if __name__ == "__main__":
    main(sys.argv[1:])
