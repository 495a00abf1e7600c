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

K_LABEL = "Prompt Length [k]"
EPS_LABEL = "Portion Incorrect [eps]"


def set_theme() -> None:
    sns.set_theme(context="paper", style="whitegrid", palette="colorblind", font_scale=1.1,
                  rc={"figure.dpi": 110, "savefig.dpi": 200, "axes.spines.top": False,
                      "axes.spines.right": False})


def stamp(fig, meta: dict, n: int | None = None, extra: str = "") -> None:
    """Footer: model, N, seed, scale, device."""
    parts = [f"model: {meta.get('model')}"]
    if n is not None:
        parts.append(f"N = {n}")
    parts += [f"seed {meta.get('seed')}", f"scale: {meta.get('scale')}", str(meta.get("device", ""))]
    if extra:
        parts.append(extra)
    fig.text(0.01, 0.005, " | ".join(parts), fontsize=6.5, color="0.35", ha="left", va="bottom")


def save_figure(fig, name: str, figdir: str | Path) -> list[Path]:
    """Save `fig` as <figdir>/<name>.pdf and .png; returns the paths."""
    figdir = Path(figdir)
    figdir.mkdir(parents=True, exist_ok=True)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    paths = [figdir / f"{name}.pdf", figdir / f"{name}.png"]
    for p in paths:
        # fixed metadata: re-running with the same numbers gives the same PDF bytes
        fig.savefig(p, metadata={"CreationDate": None} if p.suffix == ".pdf" else None)
    plt.close(fig)
    return paths
