import sys
from pathlib import Path

import pytest
import torch
from notebook_jobs import needed_jobs
from subprocs import SidePool

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
