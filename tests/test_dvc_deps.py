"""dvc.yaml lists everything each stage reads, derived from the code.

For every stage in dvc.yaml the test derives, with ``ast`` only (nothing is
imported or run):

* the ``src/magictokens`` modules the stage's notebook imports, transitively:
  ``import magictokens...`` / ``from magictokens... import`` in the notebook,
  then every relative or absolute package import of each module reached,
  including imports inside functions. Importing ``a.b.c`` runs the
  ``__init__`` of ``a`` and ``a.b`` (as Python does); importing a subpackage
  itself (``from magictokens.controllers import X``) takes every file in it;
* the pipeline module that runs the notebook: the console script named by the
  stage's ``cmd`` (``[project.scripts]`` in pyproject.toml), with its module
  level imports and the imports of its functions, except those inside the
  console entry function itself (they serve the other sub-commands:
  ``data``, ``search``, ``report``);
* the ``data/<folder>`` folders the stage reads: string literals (not
  docstrings) that are a path starting with a folder of ``data/``
  (``"safety/xstest/x.csv"``, as passed to ``data.data_path``) or that name
  ``data/<folder>``. A literal inside a module-level definition (function,
  class, constant such as ``data.WIKITEXT``) counts only where the stage
  uses that name: imported by name from a module it reaches, or referenced by
  another definition of the same module that is used (``read_wikitext`` ->
  ``WIKITEXT``); a name a package ``__init__`` re-exports is followed to the
  module defining it; a module imported whole counts with all its names.

and asserts that each is covered by a ``deps`` entry of the stage (a listed
directory covers its files), that every ``src/`` and ``data/`` dep exists and
is needed, and that removing any such dep is caught. No module list is
written here, so the test follows the code when modules are split or moved.
"""
from __future__ import annotations

import ast
import json
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
PACKAGE = "magictokens"
ALL = None  # "every name of the module"
LOOSE = "<module>"  # module-level statements that are not a named definition


# ----------------------------------------------------------------------------- the analysis


def _docstring_ids(tree: ast.AST) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                out.add(id(first.value))
    return out


def data_folders_named(text: str, folders: set[str]) -> set[str]:
    """Folders of data/ that one string literal names as a path."""
    found = {m for m in re.findall(r"(?<![\w.])data/([\w.-]+)", text) if m in folders}
    rel = text[2:] if text.startswith("./") else text
    rel = rel[len("data/"):] if rel.startswith("data/") else rel
    head = rel.split("/", 1)[0]
    if "/" in rel and head in folders:
        found.add(head)
    return found


@dataclass
class Module:
    """One parsed source file, cut into its top-level names.

    A unit is a top-level definition (function, class, assigned name), one
    name bound by a top-level ``from ... import``, or LOOSE (every other
    module-level statement, run whenever the module is imported).
    """

    name: str  # dotted, e.g. magictokens.controllers.gcg ("" for a notebook)
    path: Path
    is_package: bool
    units: dict[str, list[ast.AST]] = field(default_factory=dict)  # name -> statements
    bindings: dict[str, tuple[ast.ImportFrom, ast.alias]] = field(default_factory=dict)
    docstrings: set[int] = field(default_factory=set)  # ids of docstring constants (of `tree`'s nodes)
    tree: ast.Module | None = None

    @classmethod
    def parse(cls, name: str, path: Path) -> "Module":
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        mod = cls(name, path, path.name == "__init__.py", docstrings=_docstring_ids(tree), tree=tree)
        mod.units[LOOSE] = []
        for stmt in tree.body:
            names = []
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names = [stmt.name]
            elif isinstance(stmt, ast.Assign):
                names = [t.id for t in stmt.targets if isinstance(t, ast.Name)]
            elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                names = [stmt.target.id]
            elif isinstance(stmt, ast.ImportFrom) and all(a.name != "*" for a in stmt.names):
                for a in stmt.names:
                    local = a.asname or a.name
                    mod.bindings[local] = (stmt, a)
                    mod.units.setdefault(local, [])
                continue
            for n in names or [LOOSE]:
                mod.units.setdefault(n, []).append(stmt)
        return mod

    def _walk(self, unit: str):
        for stmt in self.units.get(unit, []):
            yield from ast.walk(stmt)

    def imports(self, unit: str) -> list[tuple[ast.AST, ast.alias | None]]:
        """(import statement, alias or None for all its names) run by one unit."""
        if unit in self.bindings:
            return [self.bindings[unit]]
        return [(n, None) for n in self._walk(unit) if isinstance(n, (ast.Import, ast.ImportFrom))]

    def references(self, unit: str) -> set[str]:
        """Top-level names of this module that a unit uses."""
        return {n.id for n in self._walk(unit) if isinstance(n, ast.Name) and n.id in self.units} - {unit}

    def literal_folders(self, unit: str, folders: set[str]) -> set[str]:
        out = set()
        for n in self._walk(unit):
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in self.docstrings:
                out |= data_folders_named(n.value, folders)
        return out


class Analysis:
    """Source files and data folders reached from entry files.

    Files follow Python: every package import anywhere in a reached module
    (functions included) and the ``__init__`` of each enclosing package; an
    import of a subpackage itself brings every file in it. Data folders
    follow names: a unit's literals count when the unit is used, and a name
    re-exported by ``from x import name`` (a package ``__init__``) is looked
    up where it is defined.
    """

    def __init__(self, src: Path, package: str, folders: set[str]):
        self.src, self.package, self.folders = src, package, folders
        self.parsed: dict[Path, Module] = {}
        self.entries: list[tuple[Path, str, set[str] | None]] = []
        self.no_follow: dict[Path, set[str]] = {}  # module file -> units whose imports are not followed

    def file_of(self, dotted: str) -> Path | None:
        base = self.src.joinpath(*dotted.split("."))
        for p in (base.with_suffix(".py"), base / "__init__.py"):
            if p.is_file():
                return p
        return None

    def dotted_of(self, path: Path) -> str:
        rel = path.relative_to(self.src).with_suffix("").parts
        return ".".join(rel[:-1] if rel[-1] == "__init__" else rel)

    def module(self, path: Path) -> Module:
        if path not in self.parsed:
            self.parsed[path] = Module.parse(self.dotted_of(path) if path.is_relative_to(self.src) else "", path)
        return self.parsed[path]

    def targets(self, mod: Module, node, only: ast.alias | None = None) -> list[tuple[str, set[str] | None]]:
        """(dotted module, names used or ALL) for one import statement; package modules only."""
        out = []
        if isinstance(node, ast.Import):
            return [(a.name, ALL) for a in node.names
                    if a.name == self.package or a.name.startswith(self.package + ".")]
        if node.level:
            parts = mod.name.split(".") if mod.is_package else mod.name.split(".")[:-1]
            parts = parts[: len(parts) - (node.level - 1)]
            base = ".".join(parts + ([node.module] if node.module else []))
        else:
            base = node.module or ""
        if not (base == self.package or base.startswith(self.package + ".")):
            return out
        for a in [only] if only else node.names:
            sub = f"{base}.{a.name}"
            if a.name != "*" and self.file_of(sub):
                out.append((sub, ALL))  # `from pkg import submodule`
            else:
                out.append((base, ALL if a.name == "*" else {a.name}))
        return out

    def add_entry(self, path: Path, names: set[str] | None = ALL, no_follow=frozenset()) -> None:
        self.no_follow[path] = set(no_follow)
        self.entries.append((path, self.dotted_of(path) if path.is_relative_to(self.src) else "", names))

    def _modules_run_by(self, dotted: str) -> list[Path]:
        """The files Python runs for `import dotted`: enclosing __init__s, then the module."""
        parts = dotted.split(".")
        out = [self.file_of(".".join(parts[:i])) for i in range(1, len(parts) + 1)]
        assert out[-1] is not None, f"import of {dotted}: no such module under {self.src}"
        return [p for p in out if p is not None]

    # -- files
    def files(self) -> set[Path]:
        seen: set[Path] = set()
        todo = [p for p, _, _ in self.entries]
        while todo:
            path = todo.pop()
            if path in seen:
                continue
            seen.add(path)
            mod = self.module(path)
            for unit in set(mod.units) - self.no_follow.get(path, set()):
                for node, alias in mod.imports(unit):
                    for dotted, _ in self.targets(mod, node, alias):
                        todo += self._modules_run_by(dotted)
                        target = self.file_of(dotted)
                        if target.name == "__init__.py" and dotted != self.package:  # a subpackage, whole
                            todo += sorted(target.parent.rglob("*.py"))
        return seen

    # -- data folders
    def data_folders(self) -> set[str]:
        used: dict[Path, set[str]] = {}
        todo: list[tuple[Path, set[str] | None]] = [(p, names) for p, _, names in self.entries]
        out: set[str] = set()
        while todo:
            path, names = todo.pop()
            mod = self.module(path)
            want = (set(mod.units) if names is ALL else set(names) & set(mod.units)) | {LOOSE}
            stack = list(want - used.setdefault(path, set()))
            while stack:
                unit = stack.pop()
                if unit in used[path] or unit in self.no_follow.get(path, ()):
                    continue
                used[path].add(unit)
                out |= mod.literal_folders(unit, self.folders)
                for node, alias in mod.imports(unit):
                    for dotted, got in self.targets(mod, node, alias):
                        files = self._modules_run_by(dotted)
                        todo += [(f, set()) for f in files[:-1]] + [(files[-1], got)]
                stack += mod.references(unit) - used[path]
        return out


# ----------------------------------------------------------------------------- this repository


def data_folder_names() -> set[str] | None:
    """Folders of data/: from the filled data/, else from data.dvc's manifest in the DVC cache."""
    data = REPO / "data"
    if data.is_dir() and any(p.is_dir() for p in data.iterdir()):
        return {p.name for p in data.iterdir() if p.is_dir()}
    dvcfile = REPO / "data.dvc"
    if dvcfile.exists():
        md5 = yaml.safe_load(dvcfile.read_text())["outs"][0]["md5"]
        manifest = REPO / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]
        if manifest.exists():
            return {e["relpath"].split("/", 1)[0] for e in json.loads(manifest.read_text()) if "/" in e["relpath"]}
    return None


def console_scripts() -> dict[str, str]:
    text = (REPO / "pyproject.toml").read_text()
    if sys.version_info >= (3, 11):
        import tomllib

        return tomllib.loads(text)["project"]["scripts"]
    block = text.split("[project.scripts]", 1)[1].split("\n[", 1)[0]  # pragma: no cover (py3.10)
    return dict(re.findall(r'^\s*([\w.-]+)\s*=\s*"([^"]+)"', block, re.M))


def stage_notebooks() -> dict[str, Path]:
    """stage name -> notebook, the way the pipeline finds them (notebooks/NN_<stage>.py)."""
    return {p.stem.split("_", 1)[1]: p for p in sorted((REPO / "notebooks").glob("[0-9][0-9]_*.py"))}


DVC = yaml.safe_load((REPO / "dvc.yaml").read_text())
STAGES = sorted(DVC["stages"])
FOLDERS = data_folder_names()


@dataclass
class Needs:
    files: set[str]  # repo-relative source files
    data: set[str]  # repo-relative data/<folder>


def stage_needs(stage: str) -> Needs:
    cmd = shlex.split(DVC["stages"][stage]["cmd"])
    scripts = console_scripts()
    assert cmd[0] in scripts, f"{stage}: cmd {cmd[0]!r} is not a console script of pyproject.toml"
    assert cmd[1] == "run", f"{stage}: expected `{cmd[0]} run <stage>`, got {cmd}"
    module, func = scripts[cmd[0]].split(":")
    notebook = stage_notebooks()[cmd[2]]
    an = Analysis(SRC, PACKAGE, FOLDERS or set())
    an.add_entry(notebook)
    entry = an.file_of(module)
    an.add_entry(entry, set(an.module(entry).units) - {func}, no_follow={func})
    files = {str(p.relative_to(REPO)) for p in an.files()}
    return Needs(files, {f"data/{f}" for f in an.data_folders()})


def deps(stage: str) -> list[str]:
    return [str(d).rstrip("/") for d in DVC["stages"][stage].get("deps", [])]


def covered(item: str, dep_list) -> bool:
    return any(item == d or item.startswith(d + "/") for d in dep_list)


def missing(needs: Needs, dep_list) -> list[str]:
    return sorted(x for x in needs.files | needs.data if not covered(x, dep_list))


def checked_deps(stage: str) -> list[str]:
    """The deps this test judges: source, notebooks and data folders (not other stages' outputs)."""
    keep = ("src/", "notebooks/") + (("data/",) if FOLDERS is not None else ())
    return [d for d in deps(stage) if d.startswith(keep)]


# ----------------------------------------------------------------------------- tests


@pytest.mark.parametrize("stage", STAGES)
def test_stage_deps_cover_imported_modules(stage):
    needs = stage_needs(stage)
    lost = sorted(x for x in needs.files if not covered(x, deps(stage)))
    assert not lost, f"dvc.yaml stage {stage!r} reads these but does not list them in deps: {lost}"


@pytest.mark.parametrize("stage", STAGES)
def test_stage_deps_cover_data_folders(stage):
    if FOLDERS is None:
        pytest.skip("data/ not filled and no DVC cache manifest: run `magictokens data`")
    needs = stage_needs(stage)
    lost = sorted(x for x in needs.data if not covered(x, deps(stage)))
    assert not lost, f"dvc.yaml stage {stage!r} reads these data folders but does not list them: {lost}"


@pytest.mark.parametrize("stage", STAGES)
def test_stage_source_and_data_deps_exist_and_are_used(stage):
    """No stale dep (a module split away, a folder no longer read): dvc would fail or rerun for nothing."""
    needs = stage_needs(stage)
    items = needs.files | needs.data
    for d in checked_deps(stage):
        if not d.startswith("data/"):
            assert (REPO / d).exists(), f"dvc.yaml stage {stage!r} lists {d}, which does not exist"
        assert any(covered(x, [d]) for x in items), \
            f"dvc.yaml stage {stage!r} lists {d}, which the stage does not read (derived: {sorted(items)})"


@pytest.mark.parametrize("stage", STAGES)
def test_removing_any_dep_is_caught(stage):
    """The check can fail: dropping any one source/notebook/data dep leaves something uncovered."""
    needs = stage_needs(stage)
    for d in checked_deps(stage):
        rest = [x for x in deps(stage) if x != d]
        assert missing(needs, rest), f"removing {d} from stage {stage!r} would go unnoticed"


def test_every_stage_runs_a_notebook_it_lists():
    books = stage_notebooks()
    for stage in STAGES:
        cmd = shlex.split(DVC["stages"][stage]["cmd"])
        assert cmd[2] in books, f"{stage}: no notebook for `{' '.join(cmd)}`"
        assert covered(str(books[cmd[2]].relative_to(REPO)), deps(stage))


def test_analysis_on_a_small_package(tmp_path):
    """The import/data walk itself, on a throw-away package with each import form."""
    pkg = tmp_path / "src" / "toy"
    (pkg / "sub").mkdir(parents=True)
    files = {
        "__init__.py": '"""Mentions data/unused_doc in a docstring only."""\n',
        "data.py": 'A = "alpha/a.txt"\nB = "beta/b.txt"\n\ndef read_a():\n    return A\n\n'
                   'def read_b():\n    return B\n',
        "lazy.py": 'def f():\n    from .data import read_b\n    return read_b()\n',
        "unused.py": 'X = "gamma/x"\n',
        "top.py": 'from . import lazy\nfrom .sub import thing\n\n'
                  'def g():\n    import toy.deep\n    return lazy.f() + thing\n',
        "deep.py": 'MSG = "needs data/delta/file"\n',
        "sub/__init__.py": 'from .a import thing\nfrom .b import other\n',
        "sub/a.py": 'from ..data import read_a\nthing = read_a()\n',
        "sub/b.py": 'other = "epsilon/e"\n',
    }
    for rel, text in files.items():
        (pkg / rel).write_text(text)
    folders = {"alpha", "beta", "gamma", "delta", "epsilon", "unused_doc"}
    nb = tmp_path / "nb.py"
    nb.write_text("import os\nfrom toy.top import g\n")
    an = Analysis(tmp_path / "src", "toy", folders)
    an.add_entry(nb)
    got = {p.relative_to(pkg).as_posix() for p in an.files() if p != nb}
    # function-level and relative imports are followed; a subpackage imported as a package comes
    # whole (sub/b.py too); unused.py is never imported
    assert got == {"__init__.py", "top.py", "lazy.py", "data.py", "deep.py",
                   "sub/__init__.py", "sub/a.py", "sub/b.py"}
    # alpha through the re-export sub.thing -> a.thing -> data.read_a -> data.A; beta through the
    # import inside lazy.f; delta named as data/delta; not epsilon (re-exported, never used),
    # gamma (module not imported) or unused_doc (a docstring)
    assert an.data_folders() == {"alpha", "beta", "delta"}

    only_a = Analysis(tmp_path / "src", "toy", folders)
    (tmp_path / "nb2.py").write_text("from toy.data import read_a\n")
    only_a.add_entry(tmp_path / "nb2.py")
    assert only_a.data_folders() == {"alpha"}  # read_b's file is not read

    cli = Analysis(tmp_path / "src", "toy", folders)  # an entry function whose imports serve other commands
    (pkg / "cli.py").write_text("from .data import read_a\n\ndef main():\n    from . import unused\n\n"
                               "if __name__ == '__main__':\n    main()\n")
    cli.add_entry(pkg / "cli.py", {"read_a"}, no_follow={"main"})
    assert {p.name for p in cli.files()} == {"__init__.py", "cli.py", "data.py"}
    assert cli.data_folders() == {"alpha"}


def test_cover_rule():
    needs = Needs({"src/toy/data.py"}, {"data/alpha"})
    assert missing(needs, ["src/toy", "data/alpha"]) == []  # a directory covers its files
    assert missing(needs, ["src/toy/top.py", "src/to"]) == ["data/alpha", "src/toy/data.py"]
