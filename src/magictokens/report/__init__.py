"""The numbers of README.md and of the docs/ pages, rendered from results/*.json (never typed by hand).

``magictokens report`` rewrites every generated block (`pages.BLOCKS`): in
README.md the headline block between ``<!-- results:begin -->`` and
``<!-- results:end -->`` and the times block (``<!-- times:begin -->``), in
docs/paper_a.md, docs/paper_b.md, docs/beyond.md and docs/benchmarks.md the
rest of every result. Tests check that every block is what the committed
results say.
"""
from __future__ import annotations

from pathlib import Path

from ..config import REPO_ROOT
from .pages import BLOCKS, block_text, markers, page_blocks, render_block, rewrite, update_pages
from .paper_a import render_bench, render_fast_bench, render_fast_headline, render_reachability, render_theorem
from .paper_b import (render_cotraining, render_judge, render_mode_reachability, render_paper_b_status, render_seeds,
                      render_sweep, render_variants)
from .timing import cpu_kind, render_repro_time, render_times_by_cpu, stage_seconds

__all__ = ["BEGIN", "END", "BLOCKS", "render", "render_block", "update_readme", "update_pages", "markers",
           "block_text", "page_blocks", "rewrite", "render_reachability", "render_theorem", "render_cotraining",
           "render_mode_reachability", "render_paper_b_status", "render_seeds", "render_sweep", "render_variants",
           "render_judge", "render_fast_bench", "render_fast_headline", "render_bench", "render_repro_time",
           "render_times_by_cpu", "stage_seconds", "cpu_kind"]

BEGIN, END = markers("results")   # README's headline block: the marker names never change


def render(root: str | Path | None = None, block: str = "results") -> str:
    """One generated block (README's headline block by default), rendered from `root`'s results."""
    return render_block(block, root)


def update_readme(path: str | Path | None = None, root: str | Path | None = None) -> bool:
    """`magictokens report`: rewrite every generated block, README.md's and the docs/ pages'; True if any page
    changed. With `path`, only that file's README blocks are rewritten (a README outside the repository)."""
    if path is None:
        return bool(update_pages(REPO_ROOT, root))
    path = Path(path)
    text = path.read_text()
    new = rewrite(text, {b: render_block(b, root) for b in page_blocks()["README.md"]}, str(path))
    if new != text:
        path.write_text(new)
    return new != text
