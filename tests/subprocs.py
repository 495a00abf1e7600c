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
import subprocess
import tempfile
from pathlib import Path


def one_thread_env() -> dict:
    """This process's environment with one intra-op thread (OpenMP, MKL): a side-by-side job's."""
    return dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


class Started:
    """A command started in the background: `result()` waits for it -> its stdout (CalledProcessError,
    with its stderr, if it failed)."""

    def __init__(self, cmd: list[str], env: dict | None = None, timeout: float = 600, cwd=None):
        self.cmd, self.timeout = cmd, timeout
        self.out, self.err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.out, stderr=self.err, text=True, cwd=cwd)

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
