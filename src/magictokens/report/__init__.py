"""The README's numbers, rendered from results/*.json (never typed by hand).

``magictokens report`` rewrites the block between ``<!-- results:begin -->``
and ``<!-- results:end -->`` in README.md; a test checks that the block is
what the committed results say.
"""
from __future__ import annotations

import re
from pathlib import Path

from ..config import REPO_ROOT
from .paper_a import render_bench, render_fast_bench, render_reachability, render_theorem
from .paper_b import (render_cotraining, render_judge, render_mode_reachability, render_seeds, render_sweep,
                      render_variants)
from .timing import render_repro_time, stage_seconds

__all__ = ["BEGIN", "END", "render", "update_readme", "render_reachability", "render_theorem", "render_cotraining",
           "render_mode_reachability", "render_seeds", "render_sweep", "render_variants", "render_judge",
           "render_fast_bench", "render_bench", "render_repro_time", "stage_seconds"]

BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def render(root: str | Path | None = None) -> str:
    root = Path(root or REPO_ROOT)
    lines: list[str] = []
    for scale in ("paper", "cpu", "default"):
        for fn in (render_reachability, render_theorem, render_cotraining, render_mode_reachability):
            lines += fn(scale, root)
    lines += render_repro_time(root)
    lines += render_sweep(root)
    lines += render_seeds(root)
    lines += render_variants(root)
    lines += render_fast_bench(root)
    lines += render_judge(root)
    lines += render_bench(root)
    if not lines:
        lines = ["(no results yet: run `dvc repro`)", ""]
    return "\n".join(lines).rstrip() + "\n"


def update_readme(path: str | Path | None = None, root: str | Path | None = None) -> bool:
    """Rewrite the results block; returns True if README changed."""
    path = Path(path or REPO_ROOT / "README.md")
    text = path.read_text()
    new = re.sub(re.escape(BEGIN) + r".*?" + re.escape(END), f"{BEGIN}\n{render(root)}{END}", text, flags=re.S)
    if new != text:
        path.write_text(new)
    return new != text
