"""One error type for user mistakes, and the wrapper every script's ``main`` runs under."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


class UserError(Exception):
    """A mistake the user can fix (a path, a key, a file): the message says what and how."""


def run_cli(main: Callable[[], None], debug: bool | None = None) -> None:
    """Run a script's ``main``: a UserError becomes a one-paragraph message and exit code 2.

    ``--debug`` anywhere on the command line shows the traceback of a UserError too.
    Unexpected exceptions keep their traceback (exit 1); Ctrl-C exits 130 without one.
    """
    if debug is None:
        debug = "--debug" in sys.argv
    try:
        main()
    except UserError as exc:
        if debug:
            raise
        logging.shutdown()
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except KeyboardInterrupt:
        if debug:
            raise
        print("interrupted: outputs written so far are complete; rerun to finish", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
