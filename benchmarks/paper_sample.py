"""Paper A at paper scale on this machine, on a sample: the first instances of a family searched again
as the rows of record were (2 one-thread searches side by side), timed beside the committed rows.

    python benchmarks/paper_sample.py [--family true_token] [--minutes 40] [--root /tmp/paper_sample]

Runs `magictokens search --scale paper --shard i/2` twice at once (OMP_NUM_THREADS=1 each: how the rows of
record were made, `scripts/cpu_search.sh` beside other work) into ROOT, stops starting instances after
`--minutes`, merges, and compares every row with the committed row of the same instance
(results/paper/instances/reachability/fast/): the median seconds per searched instance here and there,
the per-instance ratio, and whether k agrees (the dtype `auto` picks may differ from the record's).
Writes results/bench/paper_sample_<cpu kind>.json (numbers only), which README's times table reads.
Resumable: a second call with the same ROOT searches only what is left.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from magictokens.config import REPO_ROOT, load_params
from magictokens.hardware import cpu_slug
from magictokens.reachability.fastbench import latest_rows
from magictokens.reachability.stats import against_record
from magictokens.results import LEGACY_SEARCH_DTYPE, run_meta, write_json


def rows(path: Path) -> dict:
    """id -> row of a search log (its newest config, the last row per id)."""
    return {r["id"]: r for r in latest_rows(path)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--family", default="true_token")
    ap.add_argument("--minutes", type=float, default=40.0)
    ap.add_argument("--root", default="/tmp/paper_sample")
    a = ap.parse_args()
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    cli = [sys.executable, "-m", "magictokens.pipeline"]
    t0 = time.time()
    procs = [subprocess.Popen([*cli, "search", "--scale", "paper", "--family", a.family, "--minutes", str(a.minutes),
                               "--shard", f"{i}/2", "--out-root", a.root], env=env, cwd=REPO_ROOT) for i in (0, 1)]
    if any(p.wait() for p in procs):
        sys.exit("a search process failed: its output is above; rerun the same command to resume")
    subprocess.run([*cli, "merge", "--scale", "paper", "--out-root", a.root], env=env, cwd=REPO_ROOT, check=True)
    rel = Path("results/paper/instances/reachability/fast") / f"{a.family}.jsonl"
    here = rows(Path(a.root) / rel)
    P = load_params("paper")
    out = {"meta": run_meta(P["model"], "cpu", P["seed"], "paper", threads=1, parallel_searches=2),
           "family": a.family, "minutes": a.minutes, "wall_s": round(time.time() - t0, 1),   # this call's
           # every call's search, resumed ones included: the seconds the rows recorded
           "seconds_recorded": round(sum(r["seconds"] for r in here.values()), 1),
           **against_record(here, rows(REPO_ROOT / rel), LEGACY_SEARCH_DTYPE)}
    path = REPO_ROOT / "results" / "bench" / f"paper_sample_{cpu_slug()}.json"
    write_json(path, out)
    print(json.dumps({k: v for k, v in out.items() if k != "meta"}, indent=1), f"\n-> {path.relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    main()
