#!/usr/bin/env python3
"""Everything besides the three published scripts, as one command: ``python tgm.py COMMAND ...``.

Run ``python tgm.py`` for the list of commands and ``python tgm.py COMMAND --help`` for one's flags
(commands/ holds one module per command).
"""

from commands import cli, main

__all__ = ["main"]

if __name__ == "__main__":
    cli()
