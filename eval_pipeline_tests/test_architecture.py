"""The package's shape, checked on its source with a small AST walk (no import is executed).

Rules:

- no import cycle inside ``eval_pipeline``: module-level and function-local imports are
  both edges (a cycle hidden in a function is still a cycle), and so is
  ``importlib.import_module("eval_pipeline....")`` with a literal name;
- nothing under ``eval_pipeline/core/`` imports ``dagster``: domain logic is plain Python;
- no module over ``MAX_LINES`` lines, except those in ``SIZE_EXCEPTIONS``;
- no function-local import of the project's own modules, except those in
  ``LOCAL_IMPORT_ALLOWLIST`` (a function-local import is how a cycle hides).

An import edge goes to the module named, or to the package when the name is not a module
(``from eval_pipeline.core.ab import stats`` is an edge to ``...ab.stats``; ``from
eval_pipeline.core.regression.cases import Case`` to ``...regression.cases``). The
packages a dotted import runs on the way (``__init__.py``) are not edges: ours are empty.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "eval_pipeline"
MAX_LINES = 500

# Modules allowed over MAX_LINES, by path under eval_pipeline/, each with its reason.
SIZE_EXCEPTIONS = {
    "core/ab/stats.py": "one idea: the pre-specified A/B decision rule (its docstring) applied "
    "to scores, pass/fail and pairwise picks; split, the rule would no longer read in one place",
}

# (importing module, imported module) -> why the import must stay inside a function.
LOCAL_IMPORT_ALLOWLIST: dict[tuple[str, str], str] = {}


@dataclass(frozen=True)
class Edge:
    importer: str
    imported: str
    line: int
    local: bool  # inside a function: runs on the call, not on import


def module_names(package_dir: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of the package."""
    root = package_dir.parent
    out = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The module ``name`` refers to: itself, else its longest prefix that is a module."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def _local_nodes(tree: ast.AST) -> set[int]:
    """ids of the nodes inside a function body."""
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            inside.update(id(n) for n in ast.walk(node) if n is not node)
    return inside


def _imported_names(node: ast.AST, module: str, is_package: bool) -> list[str]:
    """Absolute dotted names an import statement (or import_module call) may refer to."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            package = module.split(".") if is_package else module.split(".")[:-1]
            package = package[: len(package) - (node.level - 1)]
            base = ".".join(package + ([base] if base else []))
        # `from pkg import name`: name is a submodule or an attribute of pkg.
        return [f"{base}.{a.name}" for a in node.names] + [base]
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute | ast.Name)
        and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    ):
        return [node.args[0].value]
    return []


def raw_imports(package_dir: Path) -> list[tuple[str, str, int, bool]]:
    """(importer, absolute name as written, line, local) for every import in the package,
    third-party ones included."""
    out = []
    for module, path in module_names(package_dir).items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        local = _local_nodes(tree)
        is_package = path.name == "__init__.py"
        for node in ast.walk(tree):
            names = _imported_names(node, module, is_package)
            if isinstance(node, ast.ImportFrom):
                names = names[-1:]  # the module written; its names are resolved below
            for name in names:
                out.append((module, name, node.lineno, id(node) in local))
    return out


def import_edges(package_dir: Path) -> list[Edge]:
    """Every import of one of the package's modules by another, function-local ones too."""
    modules = module_names(package_dir)
    edges = set()
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        local = _local_nodes(tree)
        is_package = path.name == "__init__.py"
        for node in ast.walk(tree):
            names = _imported_names(node, module, is_package)
            if isinstance(node, ast.ImportFrom):
                # A name that is a submodule is an edge to it; otherwise to the module itself.
                *attrs, base = names
                targets = {_resolve(n, modules) for n in attrs if n in modules}
                if len(targets) < len(attrs):
                    targets.add(_resolve(base, modules))
            else:
                targets = {_resolve(n, modules) for n in names}
            for target in targets - {None, module}:
                edges.add(Edge(module, target, node.lineno, id(node) in local))
    return sorted(edges, key=lambda e: (e.importer, e.line, e.imported))


def find_cycles(edges: list[Edge]) -> list[list[str]]:
    """Each import cycle as a path ``[a, b, ..., a]``, one per strongly connected component
    (Tarjan's algorithm)."""
    graph: dict[str, set[str]] = {}
    for e in edges:
        graph.setdefault(e.importer, set()).add(e.imported)
        graph.setdefault(e.imported, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return [_cycle_path(graph, c) for c in components]


def _cycle_path(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """One cycle through the component's first module (breadth-first, so a shortest one)."""
    start = min(component)
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & component):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return [*reversed(path), start]
                if w not in parents:
                    parents[w] = v
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"no cycle through {start} in {sorted(component)}")


def dagster_imports_under(package_dir: Path, subpackage: str) -> list[str]:
    """``module:line`` of every dagster import in modules under ``subpackage``."""
    prefix = f"{package_dir.name}.{subpackage}"
    return [
        f"{module}:{line}"
        for module, name, line, _ in raw_imports(package_dir)
        if (module == prefix or module.startswith(prefix + "."))
        and name.split(".")[0].startswith("dagster")
    ]


def oversized(package_dir: Path, limit: int) -> dict[str, int]:
    """Path under the package -> line count, for modules over ``limit`` lines."""
    out = {}
    for path in sorted(package_dir.rglob("*.py")):
        n = len(path.read_text(encoding="utf-8").splitlines())
        if n > limit:
            out[path.relative_to(package_dir).as_posix()] = n
    return out


def local_imports(edges: list[Edge]) -> list[Edge]:
    return [e for e in edges if e.local]


def _show(edges: list[Edge]) -> str:
    return "\n".join(f"  {e.importer}:{e.line} imports {e.imported}" for e in edges)


# --- the rules, on eval_pipeline ----------------------------------------------------------


@pytest.fixture(scope="module")
def edges() -> list[Edge]:
    return import_edges(PACKAGE_DIR)


def test_the_walk_sees_the_package(edges):
    # Guards the rules below against passing on an empty or misread graph.
    assert len(module_names(PACKAGE_DIR)) > 50
    pairs = {(e.importer, e.imported) for e in edges}
    assert ("eval_pipeline.cli.ab", "eval_pipeline.core.ab.run") in pairs
    assert ("eval_pipeline.core.ab.run", "eval_pipeline.core.ab.stats") in pairs


def test_no_import_cycle_inside_the_package(edges):
    cycles = find_cycles(edges)
    assert not cycles, "import cycles:\n" + "\n".join("  " + " -> ".join(c) for c in cycles)


def test_core_never_imports_dagster():
    found = dagster_imports_under(PACKAGE_DIR, "core")
    assert not found, f"dagster imported under eval_pipeline/core: {found}"


def test_no_module_over_the_size_limit_without_a_reason():
    over = oversized(PACKAGE_DIR, MAX_LINES)
    unexplained = {p: n for p, n in over.items() if p not in SIZE_EXCEPTIONS}
    assert not unexplained, (
        f"modules over {MAX_LINES} lines: {unexplained}; split them by idea, or add them to "
        "SIZE_EXCEPTIONS with the reason they are one idea"
    )


def test_size_exceptions_are_still_needed():
    over = oversized(PACKAGE_DIR, MAX_LINES)
    stale = sorted(set(SIZE_EXCEPTIONS) - set(over))
    assert not stale, (
        f"no longer over {MAX_LINES} lines (or gone): remove from SIZE_EXCEPTIONS: {stale}"
    )


def test_no_function_local_import_of_the_project(edges):
    found = [
        e for e in local_imports(edges) if (e.importer, e.imported) not in LOCAL_IMPORT_ALLOWLIST
    ]
    assert not found, "function-local imports of eval_pipeline modules:\n" + _show(found)


def test_local_import_allowlist_entries_are_still_needed(edges):
    used = {(e.importer, e.imported) for e in local_imports(edges)}
    stale = sorted(set(LOCAL_IMPORT_ALLOWLIST) - used)
    assert not stale, f"remove from LOCAL_IMPORT_ALLOWLIST: {stale}"


# --- the checker finds what it should, on a fake package -----------------------------------


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "fakepkg"
    for rel, text in {"__init__.py": "", **files}.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def test_a_cycle_through_a_function_local_import_is_found(tmp_path):
    pkg = _package(
        tmp_path,
        {
            "core/__init__.py": "",
            "core/a.py": "from fakepkg.core import b\n",
            "core/b.py": "def f():\n    from fakepkg.core.c import X\n    return X\n",
            "core/c.py": "from . import a\nX = 1\n",
            "core/d.py": "from fakepkg.core import a\n",  # into the cycle, not part of it
        },
    )
    edges = import_edges(pkg)
    assert find_cycles(edges) == [
        ["fakepkg.core.a", "fakepkg.core.b", "fakepkg.core.c", "fakepkg.core.a"]
    ]
    assert local_imports(edges) == [Edge("fakepkg.core.b", "fakepkg.core.c", 2, True)]


def test_cycles_from_relative_imports_and_import_module_are_found(tmp_path):
    pkg = _package(
        tmp_path,
        {
            "x.py": "from .y import thing\n",
            "y.py": "import importlib\ndef load():\n    return importlib.import_module('fakepkg.x')\n",
            "z.py": "import fakepkg.y\n",
        },
    )
    assert find_cycles(import_edges(pkg)) == [["fakepkg.x", "fakepkg.y", "fakepkg.x"]]


def test_an_acyclic_package_has_no_cycle(tmp_path):
    pkg = _package(
        tmp_path,
        {"a.py": "from fakepkg import b\nimport json\n", "b.py": "from fakepkg.c import X\n",
         "c.py": "X = 1\n"},
    )  # fmt: skip
    edges = import_edges(pkg)
    assert {(e.importer, e.imported) for e in edges} == {
        ("fakepkg.a", "fakepkg.b"),
        ("fakepkg.b", "fakepkg.c"),
    }
    assert find_cycles(edges) == []


def test_dagster_under_core_and_oversized_modules_are_found(tmp_path):
    pkg = _package(
        tmp_path,
        {
            "core/__init__.py": "",
            "core/ok.py": "import json\n",
            "core/bad.py": "import os\n\ndef f():\n    import dagster as dg\n",
            "core/worse.py": "from dagster_duckdb import X\n",
            "defs/__init__.py": "",
            "defs/fine.py": "import dagster\n",  # outside core: allowed
            "big.py": "x = 1\n" * 11,
        },
    )
    assert sorted(dagster_imports_under(pkg, "core")) == [
        "fakepkg.core.bad:4",
        "fakepkg.core.worse:1",
    ]
    assert oversized(pkg, 10) == {"big.py": 11}
