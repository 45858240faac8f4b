"""The README and docs/ hold together: links resolve, the Quick start is the two commands CI runs, every flag
of every command is on the commands page, and the package's dependencies are requirements.txt's."""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

import pytest

import commands
from helpers import REPO

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10 (pyproject.toml allows it): the same parser, from PyPI
    tomllib = pytest.importorskip("tomli")

pytestmark = pytest.mark.unit

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
README_MAX_LINES = 200


def heading_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives a page's headings: lower case, punctuation but '-' and '_' dropped, spaces to '-'."""
    anchors = set()
    in_code = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if in_code or not line.startswith("#"):
            continue
        title = line.lstrip("#").strip().lower()
        anchors.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return anchors


def broken_links(page: Path) -> list[str]:
    text = page.read_text()
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:: not ours to check offline
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(f"{page.name}: {target} (no such file)")
        elif anchor and linked.suffix == ".md" and anchor not in heading_anchors(linked.read_text()):
            broken.append(f"{page.name}: {target} (no such heading)")
    return broken


def test_every_relative_link_in_the_readme_and_docs_resolves():
    assert len(PAGES) > 10
    problems = [problem for page in PAGES for problem in broken_links(page)]
    assert not problems, problems


def test_the_link_check_finds_a_missing_page_and_a_missing_heading(tmp_path):
    page = tmp_path / "page.md"
    (tmp_path / "other.md").write_text("# Other\n\n## A heading, with punctuation\n")
    page.write_text(
        "[ok](other.md#a-heading-with-punctuation) [gone](nowhere.md) [bad](other.md#nope) [web](https://x.y)"
    )
    assert broken_links(page) == ["page.md: nowhere.md (no such file)", "page.md: other.md#nope (no such heading)"]


def quick_start_commands(readme: str) -> list[str]:
    section = readme.split("## Quick start", 1)[1]
    block = section.split("```", 2)[1]
    return [line for line in block.splitlines() if line.strip()]


def test_the_quick_start_block_holds_exactly_the_demo_and_the_ci_test_command():
    readme = (REPO / "README.md").read_text()
    first, second = quick_start_commands(readme)  # exactly two
    assert first == (
        "python3 -m venv .venv && .venv/bin/pip install -q -r requirements.txt && .venv/bin/python demo.py"
    )
    ci_lines = [line for line in (REPO / ".ci" / "run").read_text().splitlines() if line.strip()]
    assert ci_lines[-1] == second, ".ci/run must end with the README's test command"
    assert second.endswith("-m pytest") and "requirements-dev.txt" in second


def test_the_readme_is_a_welcome_not_a_reference():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= README_MAX_LINES
    assert "docs/app.png" in readme


def test_no_page_holds_a_placeholder():
    marks = r"QUICKSTART_|DEV_TIMES|TIER_TABLE|_FIGURES|SLOWEST_TEN|TODO|XXX"
    placeholders = {page.name for page in PAGES if re.search(marks, page.read_text())}
    assert not placeholders


def all_flags(parser: argparse.ArgumentParser) -> set[str]:
    """Every option string a user may type (sub-commands included), but --help/-h and hidden (renamed) spellings."""
    flags = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                flags |= all_flags(sub)
        elif action.help != argparse.SUPPRESS:
            flags |= {flag for flag in action.option_strings if flag.startswith("--") and flag != "--help"}
    return flags


def test_every_flag_of_every_command_is_on_the_commands_page():
    page = (REPO / "docs" / "commands.md").read_text()
    named = set(re.findall(r"`(--[\w-]+)`", page))
    missing = {
        name: sorted(all_flags(commands.command_parser(commands.command_module(name))) - named)
        for name in commands.COMMANDS
    }
    missing = {name: flags for name, flags in missing.items() if flags}
    assert not missing, f"docs/commands.md does not name: {missing}"


def test_the_flag_tables_are_the_parsers_own():
    from commands.reference import flag_tables

    page = (REPO / "docs" / "commands.md").read_text()
    section = page[page.index("### `tgm.py extract`") :]
    assert section.strip() == flag_tables().strip(), "regenerate: python -m commands.reference (docs/commands.md)"


def requirement_lines(path: Path) -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("-")]


def test_the_package_depends_on_exactly_what_requirements_txt_pins():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["dependencies"] == requirement_lines(REPO / "requirements.txt")
    dev = requirement_lines(REPO / "requirements-dev.txt")
    assert project["optional-dependencies"]["dev"] == dev


def test_the_tgm_command_is_the_dispatcher_of_tgm_py():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    module, _, function = project["scripts"]["tgm"].partition(":")
    assert (module, function) == ("commands", "cli")
    tgm_py = (REPO / "tgm.py").read_text()
    assert "from commands import cli" in tgm_py and "cli()" in tgm_py


# Words about how the project was made rather than what it is: issue numbers, work sessions, a
# machine lent for a while, a behaviour contract the repository does not hold. (Spelled in parts,
# so that this file does not match itself.)
HOW_IT_WAS_MADE = re.compile(
    "|".join(
        (
            r"\b" + "issue" + r"s? #?[0-9]+",
            r"\b(earlier|previous|next|this|that|each|every|later|other|latest) " + "session" + r"s?\b",
            r"\b" + "session" + r"s? (of|that|before|after|was|were|is lent)\b",
            r"\b" + "lent" + r"\b",
            r"\b" + "lease" + r"s?\b",
            "spec" + r" section",
            r"\b" + "spec" + r"\.md\b",
            "found" + " here",
            r"\.\./" + "shared/",
        )
    ),
    re.IGNORECASE,
)


SKIPPED_DIRS = {".git", ".venv", ".ci", "__pycache__", "demo_out", "train_log", "results", "test-artifacts",
                "bench_gpu_out", ".gpu_wheels", ".pytest_cache", ".ruff_cache", ".hypothesis", "fixtures"}  # fmt: skip


def project_text_files() -> list[Path]:
    """The project's own text files: code, docs, configs (not what runs make, nor test fixtures)."""
    found = []
    for folder, dirs, files in os.walk(REPO):  # Path.walk is Python 3.12's
        dirs[:] = [d for d in dirs if d not in SKIPPED_DIRS]
        found += [Path(folder) / f for f in files if Path(f).suffix in {".py", ".md", ".sh", ".yaml", ".toml", ".txt",
                                                                   ".js", ".html", ".css"}]  # fmt: skip
    return sorted(found)


def test_the_project_speaks_of_itself_only():
    found = []
    for path in project_text_files():
        if path == Path(__file__).resolve():  # its patterns are spelled in parts, its examples are not
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if HOW_IT_WAS_MADE.search(line):
                found.append(f"{path.relative_to(REPO)}:{number}: {line.strip()[:100]}")
    assert not found, "say the machine and date, the command or the page instead:\n" + "\n".join(found)


@pytest.mark.unit
def test_the_words_about_how_it_was_made_are_recognised():
    for line in ("as " + "issue 28 found", "the " + "session before", "on a " + "lent H200", "one " + "lease",
                 "see " + "spec section 5", "../" + "shared/parity"):  # fmt: skip
        assert HOW_IT_WAS_MADE.search(line), line
    for line in ("the release notes", "an excellent result", "a pytest session", "the parity case"):
        assert not HOW_IT_WAS_MADE.search(line), line
