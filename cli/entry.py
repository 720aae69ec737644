"""The `oasst-data` console script: imports the app itself, so a Ctrl-C during its imports
(rich, numpy, pyarrow: a few tenths of a second) ends as one during the work does, with
"interrupted" and exit status 130 instead of a KeyboardInterrupt traceback.

SIGTERM and SIGHUP (what `timeout`, Slurm, `docker stop`, systemd and a closed terminal send) end
a run the way Ctrl-C does: Python's default for them exits at once, skipping the cleanup that
removes temp files, a build's staging folder and a stats spill folder (a 333 MB temp file was left).
Once one came, the run ends with 128 + its number whatever else unwinding meets (a DataLoader
worker killed by the same signal, a closed terminal), and a second one does not cut the cleanup
short.
"""

from __future__ import annotations

import os
import signal
import sys
import threading


class Terminated(BaseException):
    """SIGTERM or SIGHUP, raised where the work is, so every `finally` and cleanup runs.

    Not a KeyboardInterrupt: click would turn that into its own exit (130, no message)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum

    @property
    def message(self) -> str:
        return f"terminated ({signal.Signals(self.signum).name})"

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


_received: int | None = None  # the termination signal, once one came
_raise_again = False  # its exception was dropped (in a finalizer): raise it once more


def termination() -> Terminated | None:
    """The termination under way, if a SIGTERM or SIGHUP came."""
    return Terminated(_received) if _received is not None else None


def _on_termination_signal(signum, frame) -> None:
    global _received, _raise_again
    if _received is not None and not _raise_again:
        return  # a second signal while the run stops: let the cleanup finish
    _received, _raise_again = signum, False
    sigchld = getattr(signal, "SIGCHLD", None)
    if sigchld is not None and callable(signal.getsignal(sigchld)):
        # torch's DataLoader raises from its SIGCHLD handler when a worker dies of a signal, as the
        # workers do when the whole process group is terminated (Slurm, `kill -- -PGID`): that
        # error would land in the middle of the cleanup. Stopping is decided already.
        signal.signal(sigchld, signal.SIG_DFL)
    raise Terminated(signum)


def _on_unraisable(unraisable) -> None:
    """An exception raised in a `__del__` or a finalizer is printed and dropped by Python: a
    Terminated raised there would let the run go on (to exit 0). The signal is sent again a moment
    later instead (raised inside this hook, it would be dropped too), and its handler raises then."""
    global _raise_again
    if isinstance(unraisable.exc_value, Terminated):
        _raise_again = True
        signum = unraisable.exc_value.signum
        timer = threading.Timer(0.05, os.kill, (os.getpid(), signum))
        timer.daemon = True
        timer.start()
        return
    if _received is not None:
        return  # a finalizer failing while the run stops (a DataLoader's workers, killed by the same signal)
    _previous_unraisable_hook(unraisable)


_previous_unraisable_hook = sys.unraisablehook


def install_signal_handlers() -> None:
    global _previous_unraisable_hook
    installed = []
    for name in ("SIGTERM", "SIGHUP"):
        signum = getattr(signal, name, None)  # no SIGHUP on Windows
        if signum is not None and signal.getsignal(signum) is signal.SIG_DFL:  # an ignored SIGHUP (nohup) stays ignored
            signal.signal(signum, _on_termination_signal)
            installed.append(signum)
    if installed and sys.unraisablehook is not _on_unraisable:
        _previous_unraisable_hook = sys.unraisablehook
        sys.unraisablehook = _on_unraisable
        if hasattr(os, "register_at_fork"):
            # Forked children (DataLoader workers) die of the signal as before: raised there, it
            # printed one traceback a worker when the whole process group got a SIGHUP.
            os.register_at_fork(after_in_child=lambda: _restore_defaults(installed))


def _restore_defaults(signums: list[int]) -> None:
    for signum in signums:
        if signal.getsignal(signum) is _on_termination_signal:
            signal.signal(signum, signal.SIG_DFL)
    if sys.unraisablehook is _on_unraisable:
        sys.unraisablehook = _previous_unraisable_hook


def termination_handled() -> None:
    """The termination is being acted on: a re-send still pending must not raise again."""
    global _raise_again
    _raise_again = False


def say(message: str) -> None:
    """A last line on stderr; a terminal that is gone (SIGHUP) cannot take it, and that is fine."""
    try:
        sys.stderr.write(message + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def main() -> None:
    install_signal_handlers()
    try:
        from .app import main as run_app

        run_app()
    except BaseException as error:
        stop = termination()
        if stop is not None:
            termination_handled()
            # Whatever unwinding met (an error line already printed, a worker killed by the same
            # signal, a terminal that is gone), the run was terminated.
            if not (isinstance(error, SystemExit) and error.code == stop.exit_code):
                say(stop.message)
            raise SystemExit(stop.exit_code) from None
        if isinstance(error, KeyboardInterrupt):
            say("interrupted")
            raise SystemExit(130) from None
        if isinstance(error, BrokenPipeError):  # a command that prints outside user_errors (`filters | head`)
            try:
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            except (OSError, ValueError):
                pass
            raise SystemExit(141) from None
        raise
