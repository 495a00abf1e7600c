"""DVC's own views: `dvc metrics show` fits a screen, `dvc plots show` loads every plot, metrics are current."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from magictokens import headline
from magictokens.results import REPO_ROOT

pytestmark = pytest.mark.unit
DVC = [str(Path(sys.executable).with_name("dvc"))]


def dvc(*args, cwd=REPO_ROOT):
    if not Path(DVC[0]).exists():
        pytest.skip("dvc is not installed in this environment")
    return subprocess.run(DVC + list(args), cwd=cwd, capture_output=True, text=True, timeout=300)


def test_metrics_show_fits_120_columns():
    out = dvc("metrics", "show")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) > 10 and "value" in lines[0]
    assert max(map(len, lines)) <= 120, max(lines, key=len)
    assert "eps10_true_token" in out.stdout and "mode_accuracy" in out.stdout


def test_plots_show_loads_every_plot(tmp_path):
    out = dvc("plots", "show", "-o", str(tmp_path / "plots"))
    assert out.returncode == 0, out.stderr
    assert "failed" not in (out.stdout + out.stderr).lower(), out.stdout + out.stderr


def test_every_figure_of_record_is_a_declared_plot():
    declared = {p if isinstance(p, str) else next(iter(p)) for p in yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["plots"]}
    pngs = {str(p.relative_to(REPO_ROOT)) for d in ("paper_figures", "results/cpu/figures")
            for p in (REPO_ROOT / d).rglob("*.png")}
    assert declared == pngs


def test_committed_metrics_are_current(tmp_path):
    """results/<scale>/metrics/ is what `magictokens metrics` writes from today's result JSONs."""
    for scale in ("paper", "cpu"):
        src = REPO_ROOT / "results" / scale
        dst = tmp_path / scale
        dst.mkdir()
        for f in src.glob("*.json"):
            shutil.copy(f, dst / f.name)
        headline.write_scale(dst)
        made = {p.relative_to(dst): json.loads(p.read_text()) for p in (dst / "metrics").rglob("*.json")}
        have = {p.relative_to(src): json.loads(p.read_text()) for p in (src / "metrics").rglob("*.json")}
        assert made and made == have, scale


def test_reachable_share_flips_the_eps_interval():
    fam = {"n": 10, "eps": {"0": 0.9, "10": 0.3}, "ci95": {"0": [0.6, 0.98], "10": [0.1, 0.6]}}
    res = {"true_token": fam, "top75": fam, "uniform_rank": {**fam, "n": 0}}
    h = headline.reachability(res)
    assert h["top75_reachable_k10"] == {"value": pytest.approx(0.7), "lo": pytest.approx(0.4), "hi": pytest.approx(0.9),
                                        "n": 10}
    assert h["eps10_true_token"] == {"value": 0.3, "lo": 0.1, "hi": 0.6, "n": 10}
    assert h["uniform_rank_reachable_k10"] is None          # a family with no instance has no number
    assert set(h["eps0_true_token"]) <= set(headline.KEYS)


def test_unknown_stage_is_one_clear_error(tmp_path):
    from magictokens.errors import MagicTokensError

    with pytest.raises(MagicTokensError, match="no headline numbers"):
        headline.write(tmp_path, "no_such_stage", {})
