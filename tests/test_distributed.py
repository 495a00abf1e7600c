"""Scale-out: `accelerate launch` processes share the searches and the generation and leave exactly one
run's rows and results (paper A's searches, paper B's evaluation, the beyond study)."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from notebook_jobs import instance_logs
from subprocs import comparable, one_thread_env, run_together, stage_json

REPO = Path(__file__).resolve().parents[1]
ACCELERATE = Path(sys.executable).with_name("accelerate")


def rows(root: Path) -> dict:
    d = root / "results" / "smoke" / "instances" / "reachability" / "fast"
    out = {}
    for p in sorted(d.glob("*.jsonl")):
        out[p.name] = sorted((r["id"], r["k"], tuple(r["ids"])) for r in map(json.loads, p.read_text().splitlines()))
    return out


env = one_thread_env


def search(root: Path, *extra) -> None:
    subprocess.run([sys.executable, "-m", "magictokens.pipeline", "search", "--scale", "smoke", "--out-root", str(root),
                    *extra], env=env(), check=True, capture_output=True, timeout=600, cwd=REPO)


def accelerate_cmd(*args, n: int = 2) -> list[str]:
    """The command that `accelerate launch`es n processes of a module (`-m NAME ...`) or a script."""
    if not ACCELERATE.exists():
        pytest.skip("accelerate's launcher is not installed in this environment")
    # --multi_gpu is accelerate's torchrun launcher; on a CPU-only machine it starts n CPU processes
    # (`--cpu --num_processes n` runs one process unless MPI is installed: accelerate issue #2741)
    return [str(ACCELERATE), "launch", "--multi_gpu", "--num_processes", str(n), "--num_machines", "1",
            "--mixed_precision", "no", "--dynamo_backend", "no", *map(str, args)]


def accelerate(*args, n: int = 2) -> str:
    """`accelerate launch` n processes of a module (`-m NAME ...`) or a script. -> stdout"""
    return subprocess.run(accelerate_cmd(*args, n=n), env=env(), check=True, capture_output=True, text=True,
                          timeout=900, cwd=REPO).stdout


def launch(root: Path, n: int = 2) -> str:
    return accelerate("-m", "magictokens.pipeline", "search", "--scale", "smoke", "--out-root", root, n=n)


@pytest.fixture(scope="module")
def solo(tmp_path_factory) -> dict:
    """The smoke searches' rows from one plain process: what every launch or mix must leave (searched once
    for the module's tests)."""
    root = tmp_path_factory.mktemp("solo")
    search(root)
    return rows(root)


@pytest.mark.notebook
@pytest.mark.needs_cores
def test_accelerate_launch_gives_the_rows_of_one_process_and_resumes(tmp_path, solo):
    out = launch(tmp_path / "launched")
    assert json.loads(out.strip().splitlines()[-1]) == {"true_token": [4, 4], "top75": [2, 2], "uniform_rank": [3, 3]}
    launched = rows(tmp_path / "launched")
    assert launched == solo and sum(map(len, solo.values())) == 9        # same ids, k and prompts; merged: no shards
    shards = [r for r in map(json.loads, (tmp_path / "launched" / "results" / "smoke" / "instances" / "reachability"
                                          / "fast" / "true_token.jsonl").read_text().splitlines())]
    assert {r["shards"] for r in shards} == {2}
    before = {p.name: p.read_text() for p in (tmp_path / "launched").rglob("*.jsonl")}
    launch(tmp_path / "launched")                                         # a second launch resumes: nothing new
    assert {p.name: p.read_text() for p in (tmp_path / "launched").rglob("*.jsonl")} == before


@pytest.mark.notebook
@pytest.mark.needs_cores
def test_a_mix_of_shard_launch_and_single_runs_merges_to_one_log(tmp_path, solo):
    mix = tmp_path / "mix"
    search(mix, "--shard", "0/3", "--family", "true_token")              # a job array's first task only
    launch(mix)                                                           # two processes take what is left
    search(mix)                                                           # and a plain run: nothing left
    subprocess.run([sys.executable, "-m", "magictokens.pipeline", "merge", "--scale", "smoke", "--out-root", str(mix)],
                   env=env(), check=True, capture_output=True, timeout=300, cwd=REPO)
    assert rows(mix) == solo
    assert not list((mix / "results").rglob("*.shard*.jsonl"))
    shutil.rmtree(mix)


# ----------------------------------------------------------------------------- launch-free pieces


@pytest.mark.unit
@pytest.mark.parametrize("rank, size", [(None, "2"), ("0", None), ("2", "2"), ("one", "2")])
def test_a_half_set_launcher_environment_is_one_clear_error(monkeypatch, rank, size):
    from magictokens.distributed import world
    from magictokens.errors import MagicTokensError

    for key, value in (("RANK", rank), ("WORLD_SIZE", size)):
        monkeypatch.delenv(key, raising=False)
        if value is not None:
            monkeypatch.setenv(key, value)
    with pytest.raises(MagicTokensError, match="a launcher sets both"):
        world()


@pytest.mark.unit
def test_alone_map_ranks_is_the_plain_map(monkeypatch):
    from magictokens.distributed import map_ranks, world

    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert world() == (0, 1)
    assert map_ranks(lambda xs: [len(x) for x in xs], ["a", "bbb", "cc"], chunk=2) == [1, 3, 2]


@pytest.mark.unit
def test_merge_keeps_a_redone_row_and_skips_a_repeated_line(tmp_path):
    from magictokens.distributed import merge, shard_path

    log = tmp_path / "t.jsonl"
    old = {"id": "a", "config_hash": "h", "x0": [1]}
    log.write_text(json.dumps(old) + "\n")
    redone = {"id": "a", "config_hash": "h", "x0": [2]}          # same id, other content: redone by a shard
    shard_path(log, 0, 2).write_text(json.dumps(old) + "\n" + json.dumps(redone) + "\n" + '{"id": "b", "conf')
    assert merge(log) == 1 and not list(tmp_path.glob("*.shard*"))
    assert [json.loads(x) for x in log.read_text().splitlines()] == [old, redone]     # the later row wins on resume


# ----------------------------------------------------------------------------- paper B and the beyond study

JOBS = REPO / "tests" / "launched_jobs.py"


def job_cmd(*args) -> list[str]:
    return [sys.executable, str(JOBS), *map(str, args)]


def job(*args) -> None:
    """tests/launched_jobs.py in one process."""
    subprocess.run(job_cmd(*args), env=env(), check=True, capture_output=True, timeout=300, cwd=REPO)


def beyond_rows(log: Path | str) -> list:
    """The rows of a beyond-study log (a path, or its text), sorted, without their times."""
    text = log.read_text() if isinstance(log, Path) else log
    return sorted((r["id"], r["prompt_index"], r["k"], r["target_id"], tuple(r["ids"]), tuple(r["judged"].items()))
                  for r in map(json.loads, text.splitlines()))


@pytest.mark.notebook
@pytest.mark.needs_cores
def test_map_ranks_under_a_launch_is_the_single_process_map_in_order(tmp_path):
    from launched_jobs import PROMPTS

    run_together([(job_cmd("replies", tmp_path / "alone"), env()),               # independent: side by side
                  (accelerate_cmd(JOBS, "replies", tmp_path / "launched"), env())], cwd=REPO)
    alone = json.loads((tmp_path / "alone" / "rank0.json").read_text())
    r0, r1 = (json.loads((tmp_path / "launched" / f"rank{i}.json").read_text()) for i in (0, 1))
    assert alone["did"] == PROMPTS and [p for p, _ in alone["replies"]] == PROMPTS
    # batches of 2 dealt round-robin: each process generated its own, every process holds all, in order
    assert r0["did"] == PROMPTS[0:2] + PROMPTS[4:6] and r1["did"] == PROMPTS[2:4] + PROMPTS[6:]
    assert r0["replies"] == r1["replies"] == alone["replies"]


@pytest.mark.notebook
@pytest.mark.needs_cores
def test_beyond_study_runner_shard_launch_and_single_runs_leave_the_rows_of_one_process(tmp_path):
    solo, log = tmp_path / "solo.jsonl", tmp_path / "mix" / "t.jsonl"
    run_together([(job_cmd("transition", solo), env()),                       # one process, side by side with
                  (job_cmd("transition", log, "0/3"), env())], cwd=REPO)      # a job array's first task: prompts
    assert len(beyond_rows(solo)) == 5 and any(r[3] is not None for r in beyond_rows(solo))   # 0 and 3, not merged
    assert not log.exists() and len((log.parent / "t.shard0of3.jsonl").read_text().splitlines()) == 2
    accelerate(JOBS, "transition", log)                 # two processes take what is left; rank 0 merges
    assert not list(log.parent.glob("*.shard*")) and beyond_rows(log) == beyond_rows(solo)
    # merged shard by shard: launch rank 0 (prompts 2, 4), the job array's task (0, 3), launch rank 1 (1)
    assert [json.loads(x)["prompt_index"] for x in log.read_text().splitlines()] == [2, 4, 0, 3, 1]
    before = log.read_text()
    accelerate(JOBS, "transition", log)                 # a second launch repeats no prompt
    job("transition", log)                              # nor does one process
    assert log.read_text() == before and not list(log.parent.glob("*.shard*"))


@pytest.mark.notebook
@pytest.mark.needs_cores
@pytest.mark.side_job("mode_smoke")
def test_paper_b_and_the_beyond_study_under_a_launch_give_the_results_of_one_process(tmp_path, side_job,
                                                                                      smoke_cotraining):
    launched = tmp_path / "launched"
    for stage in ("cotraining", "mode_reachability"):   # rank 0 executes the notebook, rank 1 runs the stage
        out = accelerate("-m", "magictokens.pipeline", "run", stage, "--scale", "smoke", "--out-root", launched)
        assert out.strip().splitlines()[-1].endswith(".ipynb")                 # one process printed, rank 0
    # one process, on 1 thread as each rank: the suite's smoke co-training, and the beyond study's notebook
    # on a copy of it (side jobs; the smoke params split the generation into batches the ranks share)
    assert stage_json(launched, "cotraining") == stage_json(smoke_cotraining[0], "cotraining")
    _, saw = side_job
    assert comparable(json.loads((launched / "results" / "smoke" / "mode_reachability.json").read_text())) \
        == comparable(saw["full"])
    rows = {name: beyond_rows(text) for name, text in instance_logs(launched).items()}
    assert rows == {name: beyond_rows(text) for name, text in saw["logs"].items()}
    assert len(rows) == 8 and all(len(r) == 2 for r in rows.values())         # 2 placements x 4 models, 2 prompts
    assert not list(launched.rglob("*.shard*"))
    # resuming under a launch (no prompt searched again) is the runner's: checked by the shard-launch test above
