"""The `oasst-data` console script: imports the app itself, so a Ctrl-C during its imports
(rich, numpy, pyarrow: a few tenths of a second) ends as one during the work does, with
"interrupted" and exit status 130 instead of a KeyboardInterrupt traceback.

SIGTERM and SIGHUP (what `timeout`, Slurm, `docker stop`, systemd and a closed terminal send) end
a run the way Ctrl-C does: Python's default for them exits at once, skipping the cleanup that
removes temp files, a build's staging folder and a stats spill folder (a 333 MB temp file was left).
"""

from __future__ import annotations

import signal
import sys


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised where the work is, so every `finally` and cleanup runs."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum

    @property
    def message(self) -> str:
        return f"terminated ({signal.Signals(self.signum).name})"

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def _raise_terminated(signum, frame) -> None:
    raise Terminated(signum)


def install_signal_handlers() -> None:
    for name in ("SIGTERM", "SIGHUP"):
        signum = getattr(signal, name, None)  # no SIGHUP on Windows
        if signum is not None and signal.getsignal(signum) is signal.SIG_DFL:  # an ignored SIGHUP (nohup) stays ignored
            signal.signal(signum, _raise_terminated)


def main() -> None:
    install_signal_handlers()
    try:
        from .app import main as run_app

        run_app()
    except Terminated as stop:  # one during the work is caught by the command (console.user_errors)
        sys.stderr.write(stop.message + "\n")
        raise SystemExit(stop.exit_code) from None
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        raise SystemExit(130) from None
