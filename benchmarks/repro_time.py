"""The wall time of a bare `dvc repro` at the default scale, measured from scratch (not a timed test).

    python benchmarks/repro_time.py --from-scratch     # deletes results/default/, then reruns every stage

Every stage of `dvc.yaml` is run in pipeline order with `dvc repro --single-item
<stage>` (which also refreshes `dvc.lock`), each one timed on the wall clock:
model loads, notebook start-up and figures included, which the recorded
compute of `report/timing.py` leaves out. `--from-scratch` first deletes
`results/default/` so no row resumes: the time a researcher's first `dvc
repro` takes on this machine. Writes results/bench/repro_time_<cpu>.json (`hardware.cpu_slug`: one file per CPU
kind; the first machine's is repro_time.json) with the CPU's capability, the
thread count, the 1-minute load average around the run, the git revision and
a hash of params.yaml's `default` section, so a stale measurement can be told
apart; `magictokens report` puts the line in README. Run it alone: it uses
both cores.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

from magictokens.config import default_params_hash   # the hash README's line checks staleness by (Report reads it too)
from magictokens.hardware import cpu_slug, hardware_meta
from magictokens.results import REPO_ROOT, device_name, versions, write_json

OUT = REPO_ROOT / "results" / "bench" / "repro_time.json"   # the first machine's (AVX512-BF16); others: out_path()


def out_path() -> Path:
    """results/bench/repro_time_<cpu>.json, one file per CPU kind (bf16 native or not changes the time 2-6x)."""
    return OUT.with_name(f"repro_time_{cpu_slug()}.json")


def stages(root: Path = REPO_ROOT) -> list[str]:
    """dvc.yaml's stages in file order (each depends only on stages above it)."""
    return list(yaml.safe_load((root / "dvc.yaml").read_text())["stages"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--from-scratch", action="store_true",
                    help="delete results/default/ first (required: a bare dvc repro starts with no rows)")
    a = ap.parse_args()
    if not a.from_scratch:
        sys.exit("repro_time.py measures a run from scratch: pass --from-scratch (it deletes results/default/)")
    dvc = shutil.which("dvc") or str(Path(sys.executable).parent / "dvc")
    shutil.rmtree(REPO_ROOT / "results" / "default", ignore_errors=True)
    seconds, load = {}, [os.getloadavg()[0]]
    t_all = time.time()
    for stage in stages():
        t0 = time.time()
        subprocess.run([dvc, "repro", "--single-item", stage], cwd=REPO_ROOT, check=True)
        seconds[stage] = time.time() - t0
        load.append(os.getloadavg()[0])
        print(f"{stage}: {seconds[stage] / 60:.1f} min", flush=True)
    total = time.time() - t_all
    out = out_path()
    write_json(out, {"meta": {"device": device_name("cpu"), "threads": torch.get_num_threads(),
                              "hardware": hardware_meta("cpu"),
                              "versions": versions(), "default_params": default_params_hash(REPO_ROOT),
                              "load_avg_1min": load, "date": time.strftime("%Y-%m-%d")},
                     "from_scratch": True, "stages_s": seconds, "total_s": total})
    print(f"bare dvc repro: {total / 60:.1f} min -> {out}")


if __name__ == "__main__":
    main()
