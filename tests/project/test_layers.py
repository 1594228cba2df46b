"""The one direction of imports (issue 19): cli → server / batch / indexing → recognizer →
backends → models → primitives, no circles, and nothing inside shiwu importing the package's
public API. The contracts live in pyproject.toml ([tool.importlinter]); this test runs them, so
a pytest run fails when a layer imports upward or a circle returns."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import grimp
import pytest

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src"


def lint_imports(src: Path) -> subprocess.CompletedProcess:
    """Run import-linter on the package under ``src`` with the repository's contracts."""
    env = {"PYTHONPATH": str(src), "PATH": str(Path(sys.executable).parent)}
    command = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command as c; "
               "sys.exit(c())", "--config", str(REPO / "pyproject.toml"), "--no-cache"]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_the_import_contracts_hold():
    done = lint_imports(SRC)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def _known_cycle_edges() -> set[tuple[str, str]]:
    contracts = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    ignored = [c.get("ignore_imports", []) for c in contracts if c["type"] == "acyclic_siblings"]
    return {tuple(part.strip() for part in line.split("->")) for lines in ignored for line in lines}


def module_cycles(package: str = "shiwu") -> list[list[str]]:
    """Every import circle between modules, counting a package's ``__init__`` as a module of its
    own (the circle issue 19 measured ran through ``shiwu/__init__``), with function-level
    imports included. The edges import-linter is told to ignore are left out here too."""
    graph = grimp.build_graph(package, include_external_packages=False)
    known = _known_cycle_edges()
    edges = {m: {w for w in graph.find_modules_directly_imported_by(m) if (m, w) not in known}
             for m in graph.modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for module in sorted(edges):
        if module not in index:
            visit(module)
    return cycles


def test_no_module_is_in_an_import_circle():
    assert module_cycles() == []


@pytest.mark.parametrize("module, planted", [
    # a model module importing the recognizer: a layer importing upward
    ("models/outputs.py", "from ..recognizer import Recognizer"),
    # a primitive importing a backend
    ("fsutil.py", "from .backends import BACKENDS"),
    # the circle issue 19 found: backends/auto reading __version__ from the package
    ("backends/auto.py", "from .. import __version__"),
    # export importing quantize back (quantize imports export)
    ("backends/export.py", "from .quantize import cached_onnx_int8"),
])
def test_the_contracts_catch_a_planted_violation(tmp_path, module, planted):
    copy = tmp_path / "src"
    shutil.copytree(SRC / "shiwu", copy / "shiwu", ignore=shutil.ignore_patterns("__pycache__", "*.tsv", "*.jpg"))
    target = copy / "shiwu" / module
    target.write_text(target.read_text() + f"\n{planted}  # planted by the test\n")
    done = lint_imports(copy)
    assert done.returncode != 0, done.stdout[-3000:]
    assert "BROKEN" in done.stdout
