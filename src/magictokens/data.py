"""The input data in ``data/`` (tracked by ``data.dvc``) and its readers.

``magictokens data`` fills ``data/`` on a fresh clone by copying a local
source directory: ``$MAGICTOKENS_DATA_SOURCE`` if set, else the ``shared/data``
folder beside the repository. The result hashes to what ``data.dvc`` records
(``dvc status data.dvc`` says so). With internet, ``--from-hub`` fetches
Wikitext-2 through ``datasets.load_dataset("wikitext", "wikitext-2-raw-v1")``
instead (the other sources are listed in data/README.md).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from .config import REPO_ROOT
from .errors import MagicTokensError

DATA_DIR = REPO_ROOT / "data"
WIKITEXT = "wikitext/wiki.test.raw"
AUTHORS_X0 = "magic_words/k10_gpt2_wiki5k_init.csv"


def default_source() -> Path:
    env = os.environ.get("MAGICTOKENS_DATA_SOURCE")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"


def fill_data(source: str | Path | None = None, dest: str | Path = DATA_DIR) -> Path:
    """Copy the source tree into `dest` (files already identical are kept)."""
    src = Path(source) if source else default_source()
    if not (src / WIKITEXT).exists():
        raise MagicTokensError(
            f"no data source at {src} (missing {WIKITEXT}): set MAGICTOKENS_DATA_SOURCE to a copy of "
            f"shared/data, or run `magictokens data --from-hub` with internet")
    dest = Path(dest)
    for path in sorted(src.rglob("*")):
        if path.is_file():
            out = dest / path.relative_to(src)
            if out.exists() and out.stat().st_size == path.stat().st_size and out.read_bytes() == path.read_bytes():
                continue
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, out)
    return dest


def fill_from_hub(dest: str | Path = DATA_DIR) -> Path:
    """With internet: Wikitext-2 raw test from the hub, written as data/wikitext/wiki.test.raw."""
    from datasets import load_dataset   # only the hub path needs it (and internet): not imported otherwise

    ds = load_dataset("wikitext", "wikitext-2-raw-v1", split="test")
    lines = [t for t in ds["text"] if t.strip()]
    out = Path(dest) / WIKITEXT
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(lines))
    return out


def data_path(rel: str, data_dir: str | Path | None = None) -> Path:
    """Path of one input file; one clear error if `data/` was never filled."""
    p = Path(data_dir or DATA_DIR) / rel
    if not p.exists():
        raise MagicTokensError(f"missing input {p}: run `magictokens data` (copies ../shared/data into data/)")
    return p


def read_wikitext(data_dir: str | Path | None = None) -> str:
    return data_path(WIKITEXT, data_dir).read_text(encoding="utf-8")
