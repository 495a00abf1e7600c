"""ARCHITECTURE.md kept true: the package's import contracts hold (lint-imports), every path the page names
exists, and the rules about notebooks/ and benchmarks/ hold (outside the package, lint-imports cannot see them)."""
import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "src" / "magictokens"   # the page's table writes package paths from here

# ARCHITECTURE.md, Never: what a notebook or a benchmark may not import (a module or anything under it).
REPORT = ("magictokens.pipeline", "magictokens.report")
BANNED = {
    "notebooks": REPORT + ("magictokens.controllers", "magictokens.scoring", "magictokens.models", "transformers"),
    "benchmarks": REPORT,
}


def test_import_contracts_hold():
    """The contracts of pyproject.toml ([tool.importlinter]): the floors and the package's "never" rules."""
    lint = Path(sys.executable).with_name("lint-imports")   # the dev extra's console script, beside this python
    assert lint.exists(), f"{lint} missing: install the dev extra (pip install -e '.[dev]' -c constraints.txt)"
    # --no-cache: leave no .import_linter_cache/ in the work tree
    r = subprocess.run([str(lint), "--no-cache", "--no-logo"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]


def expand(path: str) -> list[str]:
    """`a/{b,c}.py` -> [`a/b.py`, `a/c.py`]: the page lists a folder's modules in braces."""
    m = re.search(r"\{([^}]*)\}", path)
    return [path] if m is None else [q for alt in m.group(1).split(",")
                                     for q in expand(path[:m.start()] + alt + path[m.end():])]


def named_paths(text: str) -> list[str]:
    """The files and folders a markdown text names in backticks: a token with a '/' or a file suffix."""
    text = re.sub(r"```.*?```", "", text, flags=re.S)   # the flow picture draws outputs, not a list of paths
    tokens = [t for t in re.findall(r"`([^`\s]+)`", text)
              if ("/" in t or re.search(r"\.(py|npz|csv|json|md|toml|yaml|dvc|txt)$", t))
              and not t.startswith("../")]   # beside the repository, not versioned with it
    return [p for t in tokens for p in expand(t)]


def test_every_path_architecture_names_exists():
    paths = named_paths((ROOT / "ARCHITECTURE.md").read_text())
    assert len(paths) > 20, paths   # the table's files are found at all
    missing = [p for p in paths if not any((base / p).exists() for base in (ROOT, PKG))]
    assert not missing, f"ARCHITECTURE.md names paths that do not exist: {missing}"


def imported(path: Path) -> set[str]:
    """Every module a file imports, at any depth of its code (`from a import b` counts as a and a.b)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return out


OUTSIDE = sorted(p.relative_to(ROOT) for folder in BANNED for p in (ROOT / folder).glob("*.py"))


@pytest.mark.parametrize("rel", OUTSIDE, ids=str)
def test_notebooks_and_benchmarks_keep_their_nevers(rel):
    mods = imported(ROOT / rel)
    broken = sorted(m for m in mods for b in BANNED[rel.parts[0]] if m == b or m.startswith(b + "."))
    assert not broken, f"{rel} imports {broken}: ARCHITECTURE.md, Never"
