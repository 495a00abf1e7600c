"""The suite's side jobs (tests/notebook_jobs.py, conftest's SidePool): dealt into lanes by need, a dependency
first and in its lane, and a lane that fails is one clear error for the test waiting on it."""
import pytest
from notebook_jobs import lanes, needed_jobs
from subprocs import SidePool

pytestmark = pytest.mark.unit


def test_lanes_follow_the_order_of_need_and_keep_a_dependency_in_its_lane():
    # costs 35, 35, 45, 6 (notebook_jobs.COST): by hand, each into the least loaded lane, mode_smoke after
    # smoke_cotraining whatever the loads (lane 0: 35 -> 80; lane 1: 35 -> 41)
    got = lanes(["smoke_cotraining", "reach_smoke", "mode_smoke", "reach_typo"])
    assert got == [["smoke_cotraining", "mode_smoke"], ["reach_smoke", "reach_typo"]]
    assert lanes(["reach_typo"]) == [["reach_typo"]]
    for names in (["mode_smoke"], ["mode_smoke", "smoke_cotraining"]):
        with pytest.raises(ValueError, match="mode_smoke needs smoke_cotraining: select it too, before it"):
            lanes(names)


class Item:
    def __init__(self, jobs=(), fixtures=()):
        self.jobs, self.fixturenames = jobs, fixtures

    def iter_markers(self, name):
        return [pytest.mark.side_job(j).mark for j in self.jobs] if name == "side_job" else []


def test_needed_jobs_in_order_of_first_need_with_dependencies_first():
    items = [Item(), Item(["reach_typo"]), Item(["mode_smoke"]), Item(fixtures=["tmp_path", "smoke_cotraining"]),
             Item(["reach_typo"])]
    assert needed_jobs(items) == ["reach_typo", "smoke_cotraining", "mode_smoke"]
    assert needed_jobs([Item(), Item(fixtures=["tiny"])]) == []


def test_a_lane_that_ends_before_a_job_is_one_error_with_its_stderr(tmp_path):
    pool = SidePool(tmp_path, ["no-such-job"])                     # the lane's argparse refuses it
    try:
        with pytest.raises(RuntimeError, match=r"side job no-such-job: its lane ended before it, exit 2:[\s\S]*"
                                               r"invalid choice: 'no-such-job'"):
            pool.wait("no-such-job")
        with pytest.raises(KeyError, match="mark the test that needs it"):
            pool.wait("theorem_smoke")
        pool.wait_all()
        assert not pool.alive()
    finally:
        pool.stop()
