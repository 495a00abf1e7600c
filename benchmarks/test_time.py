"""The wall time of the full test suite, as README's test command runs it (not a timed test).

    python benchmarks/test_time.py       # runs `python -m pytest -q` (what .ci/run runs), times it
    python benchmarks/test_time.py --auto-dtype float32   # the same with "auto" forced to fp32: on an
                                         # AVX512-BF16 CPU, the path an AVX2-only CPU takes

Writes results/bench/test_time_<cpu>.json (`hardware.cpu_slug`: one file per
CPU kind; bf16 native or not changes the suite's time several-fold) with the
CPU's capability (and `auto_dtype_forced` where --auto-dtype set
$MAGICTOKENS_AUTO_DTYPE: file test_time_<cpu>_auto-<dtype>.json), the thread count, the 1-minute load average before and
after, the git revision, the pytest summary line and the 10 slowest tests;
`magictokens report` puts it in README's table of times. Run it alone: the
suite uses both cores.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time

import torch

from magictokens.hardware import AUTO_DTYPE_ENV, cpu_slug, hardware_meta
from magictokens.results import REPO_ROOT, device_name, versions, write_json


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--auto-dtype", choices=["float32", "bfloat16"],
                    help=f"force what dtype 'auto' means (sets ${AUTO_DTYPE_ENV} for the suite)")
    args = ap.parse_args()
    if args.auto_dtype:
        os.environ[AUTO_DTYPE_ENV] = args.auto_dtype    # this process's meta and the suite's subprocesses
    load = [os.getloadavg()[0]]
    t0 = time.time()
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "--durations=10", "-p", "no:cacheprovider"],
                         cwd=REPO_ROOT, capture_output=True, text=True)
    total = time.time() - t0
    load.append(os.getloadavg()[0])
    lines = run.stdout.splitlines()
    summary = next((ln.strip("= ") for ln in reversed(lines) if re.search(r"\d+ (passed|failed)", ln)), "")
    slow = [ln.strip() for ln in lines if re.match(r"^\d+\.\d+s (call|setup|teardown) ", ln)][:10]
    failed = [ln.split()[1] for ln in lines if ln.startswith(("FAILED ", "ERROR "))]   # pytest's short summary
    out = REPO_ROOT / "results" / "bench" / f"test_time_{cpu_slug()}{'_auto-' + args.auto_dtype if args.auto_dtype else ''}.json"
    write_json(out, {"meta": {"device": device_name("cpu"), "threads": torch.get_num_threads(),
                              "hardware": hardware_meta("cpu"), "versions": versions(), "load_avg_1min": load,
                              "date": time.strftime("%Y-%m-%d")},
                     "command": "python -m pytest -q", "returncode": run.returncode, "summary": summary,
                     "total_s": total, "slowest": slow, "failed": failed})
    print(f"test suite: {total / 60:.1f} min, {summary} -> {out}")
    if failed:
        print("failed:\n  " + "\n  ".join(failed))
    sys.exit(run.returncode)


if __name__ == "__main__":
    main()
