"""The "Every flag" section of docs/commands.md, made from the commands' own parsers.

    python -m commands.reference > /tmp/flags.md   # then paste it over the section

``tests/test_docs.py`` checks that the page holds exactly this, so a flag added or a help text
changed without the page fails the suite.
"""

from __future__ import annotations

import argparse
import html

import commands

SKIPPED = {"--debug", "--help"}  # every command has them; the page says so once


def _row(action: argparse.Action) -> str | None:
    if action.help == argparse.SUPPRESS:
        return None
    names = [name for name in action.option_strings if name.startswith("--") and name not in SKIPPED]
    if action.option_strings and not names:
        return None
    flag = "`, `".join(names) if names else (action.metavar or action.dest).upper()
    default = action.default
    shown = "" if default is None or default is False or default == argparse.SUPPRESS else f"`{default}`"
    text = (action.help or "").replace("%%", "%")  # argparse's escape of a literal percent sign
    return f"| `{flag}` | {shown} | {html.escape(text, quote=False)} |"


def _sections(parser: argparse.ArgumentParser, title: str) -> list[str]:
    rows, subparsers = [], None
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            subparsers = action
        elif (row := _row(action)) is not None:
            rows.append(row)
    if subparsers is not None:
        return [text for name, sub in subparsers.choices.items() for text in _sections(sub, f"{title} {name}")]
    lines = [f"### `{title}`", ""]
    if parser.description:
        lines += [html.escape(parser.description.strip().splitlines()[0], quote=False), ""]
    lines += ["| flag | default | what it does |", "|---|---|---|", *rows, ""]
    return ["\n".join(lines)]


def flag_tables() -> str:
    """One table per command (per sub-command), in the order of ``commands.COMMANDS``."""
    parts = []
    for name in commands.COMMANDS:
        parts += _sections(commands.command_parser(commands.command_module(name)), f"tgm.py {name}")
    return "\n".join(parts)


if __name__ == "__main__":
    print(flag_tables(), end="")
