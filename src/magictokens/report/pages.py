"""Which generated block goes on which page, and the rewrite of every page's blocks.

A block is the text between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->``
on its page (README's headline block keeps its historical name ``results``).
README.md is the entry point and carries the headline numbers and the times;
the docs/ pages carry the rest of every result. ``magictokens report`` calls
`update_pages`, which rewrites every block of every page from results/*.json
and leaves the text around the blocks alone; a page that lacks a block's
markers is an error (the block would silently stop being updated).
"""
from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from ..config import REPO_ROOT
from ..errors import MagicTokensError
from .paper_a import (render_below, render_bench, render_fast_bench, render_fast_headline, render_reachability,
                      render_theorem)
from .paper_b import (render_cotraining, render_judge, render_judge_v2, render_mode_reachability,
                      render_paper_b_status, render_seeds, render_sweep, render_variants)
from .timing import render_repro_time, render_times_by_cpu


def _first_scale(root: Path, name: str, scales: tuple[str, ...]) -> str | None:
    """The first of `scales` that has results/<scale>/<name>.json (the record first, then the small default)."""
    return next((s for s in scales if (root / "results" / s / f"{name}.json").exists()), None)


def headline(root: Path) -> list[str]:
    """README: paper A's k-eps curves and the theorem at the record's scale, the fast search in one line,
    paper B's status, the beyond study's table."""
    lines: list[str] = []
    if s := _first_scale(root, "reachability", ("paper", "default")):
        lines += render_reachability(s, root, detail=False)
    lines += render_fast_headline(root)
    lines += render_below(root)
    if s := _first_scale(root, "theorem", ("paper", "default")):
        lines += render_theorem(s, root)
    lines += render_paper_b_status(root) + render_judge_v2(root, short=True)
    if s := _first_scale(root, "mode_reachability", ("cpu", "default")):
        lines += render_mode_reachability(s, root, detail=False)
    return lines


def times(root: Path) -> list[str]:
    """README: the measured times, by CPU kind, and what a bare `dvc repro` costs."""
    return render_times_by_cpu(root) + render_repro_time(root)


def paper_a(root: Path) -> list[str]:
    out: list[str] = []
    for scale in ("paper", "default"):
        out += render_reachability(scale, root) + render_theorem(scale, root)
    return out


def paper_b(root: Path) -> list[str]:
    return (render_judge_v2(root) + render_cotraining("cpu", root) + render_seeds(root)
            + render_cotraining("default", root) + render_sweep(root) + render_variants(root) + render_judge(root))


def beyond(root: Path) -> list[str]:
    return render_mode_reachability("cpu", root) + render_mode_reachability("default", root)


def benchmarks(root: Path) -> list[str]:
    return render_fast_bench(root) + render_below(root, detail=True) + render_bench(root)


# block name -> (page, renderer); the order is the order `update_pages` writes them in
BLOCKS: dict[str, tuple[str, Callable[[Path], list[str]]]] = {
    "results": ("README.md", headline),
    "times": ("README.md", times),
    "paper_a": ("docs/paper_a.md", paper_a),
    "paper_b": ("docs/paper_b.md", paper_b),
    "beyond": ("docs/beyond.md", beyond),
    "benchmarks": ("docs/benchmarks.md", benchmarks),
}


def markers(block: str) -> tuple[str, str]:
    return f"<!-- {block}:begin -->", f"<!-- {block}:end -->"


def render_block(block: str, root: str | Path | None = None) -> str:
    """The text of one block, rendered from `root`'s results (the repository by default)."""
    root = Path(root or REPO_ROOT)
    lines = BLOCKS[block][1](root)
    if not lines:
        lines = ["(no results yet: run `dvc repro`)", ""]
    return "\n".join(lines).rstrip() + "\n"


def block_text(text: str, block: str) -> str | None:
    """What a page holds between a block's markers now (None: the markers are missing)."""
    begin, end = markers(block)
    m = re.search(re.escape(begin) + r"\n?(.*?)" + re.escape(end), text, flags=re.S)
    return m.group(1) if m else None


def rewrite(text: str, blocks: dict[str, str], page: str = "page") -> str:
    """`text` with every block in `blocks` (name -> rendered text) replaced; missing markers are an error."""
    for block, body in blocks.items():
        begin, end = markers(block)
        if block_text(text, block) is None:
            raise MagicTokensError(f"{page} has no {begin} ... {end} markers: put them back where the block goes")
        text = re.sub(re.escape(begin) + r".*?" + re.escape(end), lambda _: f"{begin}\n{body}{end}", text,
                      count=1, flags=re.S)
    return text


def page_blocks() -> dict[str, list[str]]:
    """page -> its block names, in `BLOCKS` order."""
    out: dict[str, list[str]] = {}
    for block, (page, _) in BLOCKS.items():
        out.setdefault(page, []).append(block)
    return out


def update_pages(pages_root: str | Path | None = None, root: str | Path | None = None) -> list[str]:
    """Rewrite every generated block of every page under `pages_root` from the results under `root` (both the
    repository by default); returns the pages that changed (relative paths), [] when all were current."""
    pages_root = Path(pages_root or REPO_ROOT)
    changed = []
    for page, blocks in page_blocks().items():
        path = pages_root / page
        if not path.exists():
            raise MagicTokensError(f"{page} is missing: it holds the generated block(s) {', '.join(blocks)}")
        text = path.read_text()
        new = rewrite(text, {b: render_block(b, root) for b in blocks}, page)
        if new != text:
            path.write_text(new)
            changed.append(page)
    return changed
