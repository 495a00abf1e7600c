"""Independent subprocesses of a test, run side by side, and their results compared (helpers, not a test file).

Each process a test starts spends its first seconds of a 2-core CPU importing torch and transformers on one
core; two one-thread processes (OMP_NUM_THREADS=1) whose results do not depend on each other, started
together, take one core each (tests/test_distributed.py: the beyond runner's test 50 -> 35 s on an AVX2-only
CPU; the notebook jobs of tests/notebook_jobs.py, which conftest's `SidePool` runs in two lanes beside the
tests). Not for processes that compute on both cores: two 2-thread co-training runs side by side took 87 s
where one after the other took 47. Output goes to temporary files, not pipes, so a chatty process never
blocks on a full pipe.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def one_thread_env() -> dict:
    """This process's environment with one intra-op thread (OpenMP, MKL): a side-by-side job's."""
    return dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


class Started:
    """A command started in the background: `result()` waits for it -> its stdout (CalledProcessError,
    with its stderr, if it failed)."""

    def __init__(self, cmd: list[str], env: dict | None = None, timeout: float = 600, cwd=None, **popen):
        self.cmd, self.timeout = cmd, timeout
        self.out, self.err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.out, stderr=self.err, text=True, cwd=cwd, **popen)

    def result(self) -> str:
        try:
            code = self.proc.wait(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        self.out.seek(0), self.err.seek(0)
        out, err = self.out.read(), self.err.read()
        self.out.close(), self.err.close()
        if code:
            raise subprocess.CalledProcessError(code, self.cmd, out, err)
        return out


def run_together(jobs: list[tuple[list[str], dict | None]], timeout: float = 600, cwd=None) -> list[str]:
    """Start every (command, environment) at once, wait for all -> their stdouts, in order."""
    started = [Started(cmd, env, timeout, cwd) for cmd, env in jobs]
    try:
        return [s.result() for s in started]
    finally:
        for s in started:            # one failed: stop the others rather than leave them running
            if s.proc.poll() is None:
                s.proc.kill()


def comparable(d: dict) -> dict:
    """A stage's result without what differs from process to process: the machine and the wall times. Everything
    else must match between two runs of the same seed and threads."""
    d = dict(d)
    for key in ("meta", "seconds", "seconds_total"):
        d.pop(key, None)
    for log in [*d.get("train_logs", {}).values(), d.get("distil", {})]:
        log.pop("seconds", None), log.pop("tokens_per_s", None)
    return d


def stage_json(root: Path, stage: str) -> dict:
    """A smoke stage's result JSON under `root`, `comparable`."""
    return comparable(json.loads((root / "results" / "smoke" / f"{stage}.json").read_text()))


class SidePool:
    """The tests/notebook_jobs.py jobs that the selected tests need, started when collection ends, in two
    one-thread processes (lanes) that run beside the tests: a test that needs a job waits for that job only.
    The lanes run under another hash seed than the smoke co-training's kernel (notebook_jobs.SMOKE_HASH_SEED)."""

    def __init__(self, base: Path, names: list[str]):
        from notebook_jobs import lanes

        self.base = base
        script = Path(__file__).with_name("notebook_jobs.py")
        env = dict(one_thread_env(), PYTHONHASHSEED="1")
        # at the lowest priority: the lanes take the cores the tests leave idle (imports, Python, waits). At
        # equal priority a test computing on 2 threads beside them ran 6x slower (171 s against 28 s: its
        # threads wait for each other at every barrier while a lane holds a core)
        nice = ["nice", "-n", "19"] if shutil.which("nice") else []
        self.lanes, self.errors = {}, {}
        for lane in lanes(names):
            # a session of its own: `stop` ends the lane with the kernels it started
            started = Started([*nice, sys.executable, str(script), str(base), *lane], env, timeout=1800,
                              cwd=Path(__file__).resolve().parents[1], start_new_session=True)
            self.lanes.update({name: started for name in lane})

    def wait(self, name: str) -> tuple[Path, dict]:
        """(its root, what it saw) once job `name` is done; its lane's error if the lane stopped before it."""
        if name not in self.lanes:
            raise KeyError(f"job {name} was not started: mark the test that needs it with "
                           f"@pytest.mark.side_job({name!r}) or request its fixture")
        done, lane = self.base / name / "job.json", self.lanes[name]
        while not done.exists():
            if lane.proc.poll() is not None and not done.exists():   # the lane ended without it
                if lane not in self.errors:                           # its stderr, read once for every job
                    try:
                        lane.result()
                        self.errors[lane] = "it exited 0"
                    except subprocess.CalledProcessError as exc:
                        self.errors[lane] = f"exit {exc.returncode}:\n{exc.stderr[-4000:]}"
                raise RuntimeError(f"side job {name}: its lane ended before it, {self.errors[lane]}")
            time.sleep(0.2)
        return self.base / name, json.loads(done.read_text())

    def alive(self) -> bool:
        return any(lane.proc.poll() is None for lane in set(self.lanes.values()))

    def wait_all(self) -> None:
        """Until every lane has ended (a lane's error is raised by the test that needs its job)."""
        for lane in set(self.lanes.values()):
            lane.proc.wait()

    def stop(self) -> None:
        for lane in set(self.lanes.values()):
            if lane.proc.poll() is None:
                os.killpg(lane.proc.pid, signal.SIGKILL)
