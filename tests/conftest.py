import json
import shutil
import sys
import time
from pathlib import Path

import pytest
import torch

from magictokens.models import build_tiny_model

# Every test belongs to a tier (markers registered in pyproject.toml):
#   unit      in-process, seconds: `pytest -m unit` is the quick check
#   notebook  runs a stage / notebook end to end on smoke params
#   slow      real pretrained model, or the longest notebooks
# A plain `pytest` still runs all of them.
TIERS = ("unit", "notebook", "slow")


@pytest.hookimpl(tryfirst=True)   # before `-m` deselects: an untiered test is caught by any selection
def pytest_collection_modifyitems(config, items):
    untiered = [item.nodeid for item in items if not any(item.get_closest_marker(t) for t in TIERS)]
    mixed = [item.nodeid for item in items
             if item.get_closest_marker("unit") and (item.get_closest_marker("notebook") or item.get_closest_marker("slow"))]
    if untiered:
        raise pytest.UsageError("tests without a tier marker (add `pytestmark = pytest.mark.unit` or "
                                "@pytest.mark.notebook / @pytest.mark.slow): " + ", ".join(untiered))
    if mixed:
        raise pytest.UsageError("tests marked unit and notebook/slow (unit is the quick tier): " + ", ".join(mixed))


@pytest.fixture(scope="session")
def tiny():
    """(model, tokenizer): 2-layer random Llama over a 64-word vocabulary."""
    torch.manual_seed(0)
    return build_tiny_model(seed=0)


@pytest.fixture(scope="session")
def tiny_ids(tiny):
    _, tok = tiny
    return lambda text: tok(text, add_special_tokens=False).input_ids


class SidePool:
    """The tests/notebook_jobs.py jobs that the selected tests need, started when collection ends, in two
    one-thread processes (lanes) that run beside the tests: a test that needs a job waits for that job only.
    The lanes run under another hash seed than the smoke co-training's kernel (notebook_jobs.SMOKE_HASH_SEED)."""

    def __init__(self, base: Path, names: list[str]):
        from notebook_jobs import lanes
        from subprocs import Started, one_thread_env

        self.base = base
        script = Path(__file__).with_name("notebook_jobs.py")
        env = dict(one_thread_env(), PYTHONHASHSEED="1")
        # at the lowest priority: the lanes take the cores the tests leave idle (imports, Python, waits). At
        # equal priority a test computing on 2 threads beside them ran 6x slower (171 s against 28 s: its
        # threads wait for each other at every barrier while a lane holds a core)
        nice = ["nice", "-n", "19"] if shutil.which("nice") else []
        self.lanes = {}
        for lane in lanes(names):
            started = Started([*nice, sys.executable, str(script), str(base), *lane], env, timeout=1800,
                              cwd=Path(__file__).resolve().parents[1])
            self.lanes.update({name: started for name in lane})

    def wait(self, name: str) -> tuple[Path, dict]:
        """(its root, what it saw) once job `name` is done; its lane's error if the lane stopped before it."""
        if name not in self.lanes:
            raise KeyError(f"job {name} was not started: mark the test that needs it with "
                           f"@pytest.mark.side_job({name!r}) or request its fixture")
        done, lane = self.base / name / "job.json", self.lanes[name]
        while not done.exists():
            if lane.proc.poll() is not None:     # the lane ended without it: raise its error (stderr)
                lane.result()
                if not done.exists():
                    raise RuntimeError(f"job {name}'s lane ended without it")
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
                lane.proc.kill()


def needed_jobs(items) -> list[str]:
    """The side jobs the items need, in the order the tests first ask for them (a dependency first)."""
    from notebook_jobs import DEPENDS

    out: list[str] = []
    for item in items:
        names = [m.args[0] for m in item.iter_markers("side_job")]
        names += ["smoke_cotraining"] if "smoke_cotraining" in getattr(item, "fixturenames", ()) else []
        for name in names:
            for job in (DEPENDS.get(name), name):
                if job is not None and job not in out:
                    out.append(job)
    return out


def pytest_collection_modifyitems(items):
    """Tests that compute on both cores (`needs_cores`) go last, after the side jobs (see `cores`)."""
    items.sort(key=lambda item: item.get_closest_marker("needs_cores") is not None)   # stable: else in order


def pytest_collection_finish(session):
    names = needed_jobs(session.items)
    if names:
        base = session.config._tmp_path_factory.mktemp("side_jobs")
        session.config.stash[POOL] = SidePool(base, names)


def pytest_sessionfinish(session):
    pool = session.config.stash.get(POOL, None)
    if pool is not None:
        pool.stop()


POOL = pytest.StashKey[SidePool]()


@pytest.fixture(scope="session")
def side_pool(request) -> SidePool:
    return request.config.stash[POOL]


@pytest.fixture(autouse=True)
def cores(request):
    """While the side lanes run, this process computes on one thread: a test on two threads beside them waits
    at every barrier for a thread a lane has displaced, even at the lanes' lowest priority (measured on a 2-core
    AVX2-only CPU: the real-model LoRA determinism test 28 -> 84 s, test_below's exhaustive test 6 -> 32 s).
    A `needs_cores` test (two threads or two processes of its own) waits for the lanes to end instead."""
    pool = request.config.stash.get(POOL, None)
    if pool is not None and pool.alive() and request.node.get_closest_marker("needs_cores"):
        pool.wait_all()
    busy = pool is not None and pool.alive()
    torch.set_num_threads(1 if busy else THREADS)
    yield
    torch.set_num_threads(THREADS)


THREADS = torch.get_num_threads()     # this process's own count, as the environment set it


@pytest.fixture(scope="session")
def smoke_cotraining(side_pool) -> tuple[Path, Path]:
    """(out_root, executed notebook) of the cotraining notebook run once on smoke params (a side job): its own
    test checks it, the determinism and launch tests compare against it, the beyond study's job starts from it."""
    root, saw = side_pool.wait("smoke_cotraining")
    return root, Path(saw["executed"])


@pytest.fixture
def side_job(request, side_pool) -> tuple:
    """(root, what it saw) of the job this test is marked with."""
    return side_pool.wait(request.node.get_closest_marker("side_job").args[0])
