"""No module over 400 lines (the house rule in docs/architecture.md): a module that grows past
it is doing more than one thing and is split by what it does, in src/, tests/ and benchmarks/
alike. The scikit-image photos and generated data are not modules and are not counted."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LIMIT = 400


def long_modules(root: Path) -> dict[str, int]:
    """{path relative to the repository: lines} of the Python modules under ``root`` over LIMIT."""
    sizes = {str(path.relative_to(REPO)): len(path.read_text(encoding="utf-8").splitlines())
             for path in root.rglob("*.py") if "__pycache__" not in path.parts}
    return {path: lines for path, lines in sizes.items() if lines > LIMIT}


def test_no_module_is_over_400_lines():
    modules = sorted(str(p.relative_to(REPO)) for folder in ("src", "tests", "benchmarks")
                     for p in (REPO / folder).rglob("*.py"))
    assert "src/shiwu/recognizer.py" in modules and "tests/project/test_module_size.py" in modules
    for folder in ("src", "tests", "benchmarks"):
        assert long_modules(REPO / folder) == {}, f"split these by what they do: {long_modules(REPO / folder)}"


def test_a_long_module_is_found(tmp_path, monkeypatch):
    monkeypatch.setattr(__import__(__name__), "REPO", tmp_path)
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "short.py").write_text("x = 1\n" * LIMIT)
    (tmp_path / "pkg" / "long.py").write_text("x = 1\n" * (LIMIT + 1))
    assert long_modules(tmp_path / "pkg") == {"pkg/long.py": LIMIT + 1}
