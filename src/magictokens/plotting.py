"""One seaborn theme for every figure; save as PDF (papers) + PNG (README).

Every figure carries a footer stamp (model, N, seed, scale, device) so a
figure cut out of the repo still says where it came from.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: CI, papermill
import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402

from .config import flatten  # noqa: E402

K_LABEL = "Prompt Length [k]"
EPS_LABEL = "Portion Incorrect [eps]"


def set_theme() -> None:
    sns.set_theme(context="paper", style="whitegrid", palette="colorblind", font_scale=1.1,
                  rc={"figure.dpi": 110, "savefig.dpi": 200, "axes.spines.top": False,
                      "axes.spines.right": False})


def stamp(fig, meta: dict, n: int | None = None, extra: str = "") -> None:
    """Footer: model, N, seed, scale, device."""
    parts = [f"model: {meta.get('model_note') or meta.get('model')}"]
    if n is not None:
        parts.append(f"N = {n}")
    parts += [f"seed {meta.get('seed')}", f"scale: {meta.get('scale')}", str(meta.get("device", ""))]
    sets = flatten(meta.get("overrides") or {})
    if sets:   # a run resized with --set is not the scale's own budget: say so (knobs by their own names)
        parts += [("--set " if i == 0 else "") + f"{k.rsplit('.', 1)[-1]}={v}" for i, (k, v) in enumerate(sets.items())]
    if extra:
        parts += extra.split(" | ")
    # wrap on " | " so a long budget string never runs off the figure
    width = int(fig.get_figwidth() * 17)   # ~characters per line at 6.5 pt
    lines, cur = [], ""
    for part in parts:
        cand = f"{cur} | {part}" if cur else part
        if cur and len(cand) > width:
            lines.append(cur)
            cand = part
        cur = cand
    lines.append(cur)
    fig.text(0.01, 0.005, "\n".join(lines), fontsize=6.5, color="0.35", ha="left", va="bottom")


def save_figure(fig, name: str, figdir: str | Path) -> list[Path]:
    """Save `fig` as <figdir>/<name>.pdf and .png; returns the paths."""
    figdir = Path(figdir)
    figdir.mkdir(parents=True, exist_ok=True)
    footer = max((len(t.get_text().splitlines()) for t in fig.texts), default=1)
    fig.tight_layout(rect=(0, 0.012 + 0.022 * footer * 4.2 / fig.get_figheight(), 1, 1))
    paths = [figdir / f"{name}.pdf", figdir / f"{name}.png"]
    for p in paths:
        # fixed metadata: re-running with the same numbers gives the same PDF bytes
        fig.savefig(p, metadata={"CreationDate": None} if p.suffix == ".pdf" else None)
    plt.close(fig)
    return paths


def log_floor(n: int) -> float:
    """Where a log axis draws eps = 0: half the smallest non-zero eps that N instances can show."""
    return 0.5 / max(int(n), 1)


def plot_k_eps(ax, eps: dict, label: str, ci: dict | None = None, log: bool = False, floor: float = 1e-4, **kw):
    """One k-epsilon curve: eps = {k: value} (keys str or int); ci = {k: [lo, hi]}.

    On a log axis zeros are drawn at `floor` (give `log_floor(N)`, so the floor follows N).
    """
    ks = sorted(int(k) for k in eps)
    ys = [eps[str(k)] if str(k) in eps else eps[k] for k in ks]
    if log:  # a zero has no log: draw it at the floor
        ys = [max(y, floor) for y in ys]
    line, = ax.plot(ks, ys, marker="o", label=label, **kw)
    if ci:
        lo = [max(ci[str(k)][0], floor if log else 0) for k in ks]
        hi = [ci[str(k)][1] for k in ks]
        ax.fill_between(ks, lo, hi, color=line.get_color(), alpha=0.15, linewidth=0)
    ax.set_xlabel(K_LABEL)
    ax.set_ylabel(EPS_LABEL)
    ax.set_xticks(ks)
    if log:
        ax.set_yscale("log")
    else:
        ax.set_ylim(-0.02, 1.02)
    return line
