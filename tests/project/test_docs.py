"""The documentation: the mkdocs site builds with --strict, every page is reachable from the nav,
every relative link and every script or test file named in the docs exists, every option of every
command is documented in both languages, and the READMEs keep the two commands `.ci/run` reads."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

from shiwu.cli import build_parser
import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
READMES = [ROOT / "README.md", ROOT / "README.en.md"]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
# a repository file named in prose or a command: `python benchmarks/speed/x.py`, `tests/batch/test_x.py`
REPO_FILE = re.compile(r"\b((?:benchmarks|tests)/[\w./-]+\.(?:py|md|json))\b")


def markdown_files() -> list[Path]:
    return sorted(DOCS.rglob("*.md")) + READMES + sorted((ROOT / "benchmarks").rglob("*.md"))


def prose(path: Path) -> str:
    """The text outside fenced code blocks and HTML comments (links there are not links)."""
    kept, fenced = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            kept.append(line)
    return re.sub(r"<!--.*?-->", "", "\n".join(kept), flags=re.S)


def nav_pages(node) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, list):
        return [page for item in node for page in nav_pages(item)]
    if isinstance(node, dict):
        return [page for value in node.values() for page in nav_pages(value)]
    return []


@pytest.mark.slow
def test_site_builds_strict(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "site" / "zh" / "index.html").is_file()
    assert (tmp_path / "site" / "en" / "index.html").is_file()


def test_every_page_is_in_the_nav():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    in_nav = set(nav_pages(config["nav"]))
    pages = {path.relative_to(DOCS).as_posix() for path in DOCS.rglob("*.md")}
    assert pages - in_nav == set(), "pages missing from mkdocs.yml's nav"
    assert in_nav - pages == set(), "nav entries without a page"


def test_both_languages_have_the_same_pages():
    zh = {path.name for path in (DOCS / "zh").glob("*.md")}
    en = {path.name for path in (DOCS / "en").glob("*.md")}
    assert zh == en


def test_relative_links_resolve():
    broken = []
    for path in markdown_files():
        for target in LINK.findall(prose(path)):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            file = target.split("#", 1)[0]
            if not (path.parent / file).exists():
                broken.append(f"{path.relative_to(ROOT)}: {target}")
    assert broken == []


def test_named_scripts_and_results_exist():
    missing = []
    for path in markdown_files():
        for name in REPO_FILE.findall(path.read_text(encoding="utf-8")):
            if not (ROOT / name).exists():
                missing.append(f"{path.relative_to(ROOT)}: {name}")
    assert missing == []


def command_options() -> dict[str, set[str]]:
    commands = next(action for action in build_parser()._actions
                    if isinstance(action, argparse._SubParsersAction))
    return {name: {option for action in parser._actions for option in action.option_strings
                   if option.startswith("--") and option != "--help"}
            for name, parser in commands.choices.items()}


def test_every_command_and_option_is_documented_in_both_languages():
    for language in ("zh", "en"):
        text = "\n".join(path.read_text(encoding="utf-8") for path in (DOCS / language).glob("*.md"))
        undocumented = [f"shiwu {name} {option}" for name, options in command_options().items()
                        for option in sorted(options | {""})
                        if not re.search(rf"shiwu {name}\b", text)
                        or (option and not re.search(rf"{re.escape(option)}(?![\w-])", text))]
        assert undocumented == [], language


def command_after(marker: str, text: str) -> str:
    block = re.search(rf"<!-- {marker} -->\s*```bash\n(.*?)\n```", text, re.S)
    assert block, marker
    return block.group(1)


def test_readmes_keep_the_two_commands_and_stay_short():
    zh, en = (path.read_text(encoding="utf-8") for path in READMES)
    for marker in ("run-command", "test-command"):
        assert command_after(marker, zh) == command_after(marker, en)
    assert "pip install" in command_after("test-command", zh) and "pytest" in command_after("test-command", zh)
    for text in (zh, en):  # the commands come first: inside the first section
        assert text.index("<!-- run-command -->") < text.index("<!-- test-command -->")
        assert text[:text.index("<!-- test-command -->")].count("\n## ") == 1
    for path in READMES:
        assert len(path.read_text(encoding="utf-8").splitlines()) <= 250, path.name
    assert "README.en.md" in zh and "README.md" in en


# the design notes live outside the repository: no page, test or benchmark may send a reader there
OUTSIDE_FILE = "DESIGN" + ".md"


def test_nothing_refers_to_a_file_outside_the_repository():
    for path in markdown_files() + sorted((ROOT / "tests").rglob("*.py")) + sorted((ROOT / "benchmarks").rglob("*.py")):
        assert OUTSIDE_FILE not in path.read_text(encoding="utf-8"), path
