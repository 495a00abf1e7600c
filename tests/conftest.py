import json
import sys
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


@pytest.fixture(scope="session")
def smoke_cotraining(tmp_path_factory):
    """(out_root, executed notebook) of the cotraining notebook run once on smoke params: its own test checks
    it and the beyond study's notebook test starts from a copy (one tiny co-training per suite, not two)."""
    from magictokens.pipeline import run_stage
    root = tmp_path_factory.mktemp("smoke_cotraining")
    # its kernel runs under hash seed 3: test_determinism reruns the stage under another and compares
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONHASHSEED", "3")
        mp.setenv("OMP_NUM_THREADS", "2")
        return root, run_stage("cotraining", "smoke", out_root=root)


@pytest.fixture(scope="session")
def side_jobs(request, tmp_path_factory) -> dict:
    """job name -> (its root, what it saw): the tests/notebook_jobs.py jobs that the collected tests name
    (`@pytest.mark.side_job(NAME)`), run once, in two one-thread processes side by side (each runs its lane of
    jobs one after another). The first test that asks waits for all of them; the rest find theirs done. Only the
    selected tests' jobs run."""
    from notebook_jobs import lanes
    from subprocs import one_thread_env, run_together

    names = sorted({m.args[0] for item in request.session.items for m in item.iter_markers("side_job")})
    base = tmp_path_factory.mktemp("side_jobs")
    script = Path(__file__).with_name("notebook_jobs.py")
    env = one_thread_env()
    # mode_smoke starts from the suite's one smoke co-training (2 threads, before the lanes start)
    extra = ["--cotrained", str(request.getfixturevalue("smoke_cotraining")[0])] if "mode_smoke" in names else []
    run_together([([sys.executable, str(script), str(base), *lane, *extra], env) for lane in lanes(names)],
                 cwd=Path(__file__).resolve().parents[1])
    return {name: (base / name, json.loads((base / name / "job.json").read_text())) for name in names}


@pytest.fixture
def side_job(request, side_jobs) -> tuple:
    """(root, what it saw) of the job this test is marked with."""
    return side_jobs[request.node.get_closest_marker("side_job").args[0]]
