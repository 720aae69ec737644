"""The `oasst-data` console script: imports the app itself, so a Ctrl-C during its imports
(rich, numpy, pyarrow: a few tenths of a second) ends as one during the work does, with
"interrupted" and exit status 130 instead of a KeyboardInterrupt traceback."""

from __future__ import annotations

import sys


def main() -> None:
    try:
        from .app import main as run_app

        run_app()
    except KeyboardInterrupt:  # one during the work is caught by the command (console.user_errors)
        sys.stderr.write("interrupted\n")
        raise SystemExit(130) from None
