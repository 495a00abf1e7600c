"""Scale-out: `accelerate launch` processes share the searches and leave exactly one run's rows."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ACCELERATE = Path(sys.executable).with_name("accelerate")


def rows(root: Path) -> dict:
    d = root / "results" / "smoke" / "instances" / "reachability" / "fast"
    out = {}
    for p in sorted(d.glob("*.jsonl")):
        out[p.name] = sorted((r["id"], r["k"], tuple(r["ids"])) for r in map(json.loads, p.read_text().splitlines()))
    return out


def env():
    return dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


def search(root: Path, *extra) -> None:
    subprocess.run([sys.executable, "-m", "magictokens.pipeline", "search", "--scale", "smoke", "--out-root", str(root),
                    *extra], env=env(), check=True, capture_output=True, timeout=600, cwd=REPO)


def launch(root: Path, n: int = 2) -> str:
    # --multi_gpu is accelerate's torchrun launcher; on a CPU-only machine it starts n CPU processes
    # (`--cpu --num_processes n` runs one process unless MPI is installed: accelerate issue #2741)
    out = subprocess.run([str(ACCELERATE), "launch", "--multi_gpu", "--num_processes", str(n), "--num_machines", "1",
                          "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "magictokens.pipeline", "search",
                          "--scale", "smoke", "--out-root", str(root)],
                         env=env(), check=True, capture_output=True, text=True, timeout=900, cwd=REPO)
    return out.stdout


@pytest.mark.notebook
def test_accelerate_launch_gives_the_rows_of_one_process_and_resumes(tmp_path):
    if not ACCELERATE.exists():
        pytest.skip("accelerate's launcher is not installed in this environment")
    search(tmp_path / "solo")
    out = launch(tmp_path / "launched")
    assert json.loads(out.strip().splitlines()[-1]) == {"true_token": [4, 4], "top75": [2, 2], "uniform_rank": [3, 3]}
    solo, launched = rows(tmp_path / "solo"), rows(tmp_path / "launched")
    assert launched == solo and sum(map(len, solo.values())) == 9        # same ids, k and prompts; merged: no shards
    shards = [r for r in map(json.loads, (tmp_path / "launched" / "results" / "smoke" / "instances" / "reachability"
                                          / "fast" / "true_token.jsonl").read_text().splitlines())]
    assert {r["shards"] for r in shards} == {2}
    before = {p.name: p.read_text() for p in (tmp_path / "launched").rglob("*.jsonl")}
    launch(tmp_path / "launched")                                         # a second launch resumes: nothing new
    assert {p.name: p.read_text() for p in (tmp_path / "launched").rglob("*.jsonl")} == before


@pytest.mark.notebook
def test_a_mix_of_shard_launch_and_single_runs_merges_to_one_log(tmp_path):
    if not ACCELERATE.exists():
        pytest.skip("accelerate's launcher is not installed in this environment")
    search(tmp_path / "solo")
    mix = tmp_path / "mix"
    search(mix, "--shard", "0/3", "--family", "true_token")              # a job array's first task only
    launch(mix)                                                           # two processes take what is left
    search(mix)                                                           # and a plain run: nothing left
    subprocess.run([sys.executable, "-m", "magictokens.pipeline", "merge", "--scale", "smoke", "--out-root", str(mix)],
                   env=env(), check=True, capture_output=True, timeout=300, cwd=REPO)
    assert rows(mix) == rows(tmp_path / "solo")
    assert not list((mix / "results").rglob("*.shard*.jsonl"))
    shutil.rmtree(mix)
