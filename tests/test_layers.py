"""The package layers: imports flow down, no cycles, one module spells the result-folder layout."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from helpers import REPO

# package -> the project packages it may import (besides itself)
pytestmark = pytest.mark.unit

ALLOWED = {
    "utils": set(),
    "model": {"utils"},
    "dataset": {"utils", "model"},
    "inference": {"utils", "model", "dataset"},
    "training": {"utils", "model", "dataset"},
    "evaluation": {"utils", "model", "dataset"},
    "pipeline": {"utils", "model", "dataset", "inference", "training", "evaluation", "matting", "config"},
    "matting": {"utils", "model", "dataset", "inference"},
    "webapp": {"utils", "model", "dataset", "inference", "training", "evaluation", "matting", "pipeline", "config"},
    "commands": {
        "utils",
        "model",
        "dataset",
        "inference",
        "training",
        "evaluation",
        "matting",
        "pipeline",
        "webapp",
        "config",
    },
}
PROJECT = set(ALLOWED) | {"config"} | {p.stem for p in REPO.glob("*.py")}


def project_imports(path: Path) -> set[str]:
    """Top-level project modules/packages imported by a file (at any depth of the file)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & PROJECT


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_packages_import_only_the_layers_below(package):
    for path in sorted((REPO / package).glob("*.py")):
        wrong = project_imports(path) - ALLOWED[package] - {package}
        assert not wrong, f"{path.relative_to(REPO)} imports {sorted(wrong)}"


def test_config_imports_only_the_foundation():
    assert project_imports(REPO / "config.py") <= {"utils"}


def test_no_import_cycles_between_modules():
    modules = {}
    for package in ALLOWED:
        for path in (REPO / package).glob("*.py"):
            modules[f"{package}.{path.stem}"] = path
    graph = {}
    for name, path in modules.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module in modules:
                deps.add(node.module)
        graph[name] = deps
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for dep in graph[node]:
            if state.get(dep) == 1:
                raise AssertionError(f"import cycle: {' -> '.join([*trail, node, dep])}")
            if dep not in state:
                visit(dep, [*trail, node])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [])


LAYOUT_LITERALS = ("_tri.png", "_trimap.png", "_mem5")  # inside any string
LAYOUT_NAMES = ("conf.json", "envis")  # as a whole string: a path component
LAYOUT_OWNERS = {"inference/layout.py", "dataset/clip.py"}


def code_strings(path: Path) -> list[tuple[int, str]]:
    """String constants of a file, without docstrings and argparse help texts."""
    tree = ast.parse(path.read_text())
    skip = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(body, list)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
        ):
            skip.add(id(body[0].value))
        if isinstance(node, ast.keyword) and node.arg in ("help", "description"):
            skip |= {id(n) for n in ast.walk(node.value)}
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip
    ]


def test_the_result_layout_is_spelled_in_one_module():
    offenders = []
    for path in sorted(REPO.glob("*.py")) + sorted(REPO.glob("*/*.py")):
        rel = path.relative_to(REPO).as_posix()
        if rel in LAYOUT_OWNERS or (rel.startswith(("tests/", ".venv/")) and rel != "tests/helpers.py"):
            continue
        for line, text in code_strings(path):
            if any(literal in text for literal in LAYOUT_LITERALS) or text in LAYOUT_NAMES:
                offenders.append(f"{rel}:{line}: {text!r}")
    assert offenders == []
