"""Consoles and the one-line error exit shared by all commands."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape

from oasst_data.display import visible
from oasst_data.errors import ConfigError, OasstDataError

from .entry import termination, termination_handled

class _Console(Console):
    def on_broken_pipe(self) -> None:
        # rich's own handling exits with status 1 at once, past user_errors: a closed pipe
        # (`... | head`) then looked like a failure; raised instead, it ends as 141, as Unix tools do.
        raise BrokenPipeError


err_console = _Console(stderr=True)
out_console = _Console()


def shown(text: object) -> str:
    """Text from the data (a path, an id, a reason quoting a line) for a console line: rich markup
    escaped, control characters shown as escapes (an ESC in an id would drive the terminal)."""
    return escape(visible(str(text)))


class _VisibleFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return visible(super().format(record))


def setup_logging(verbose: bool) -> None:
    handler = RichHandler(console=err_console, show_path=False, show_time=False)
    handler.setFormatter(_VisibleFormatter("%(message)s"))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler], force=True)


# Config fields whose option is not the field name with dashes (the others: val_split -> --val-split).
_OPTION_OF_FIELD = {
    "system_prompt": "--system",
    "num_train_epochs": "--num-epochs",
    "per_device_train_batch_size": "--per-device-batch-size",
    "dataloader_num_workers": "--num-workers",
}
# How a config check names the field it refuses: "val_split must be in [0, 1), got 2.0".
_FIELD_CHECK = re.compile(r"([a-z][a-z0-9_]*) (?=must |is empty)")


def name_the_option(message: str) -> str:
    """`val_split must be ...` -> `val_split (--val-split) must be ...`.

    The config checks name a field, as a config file or the Python API spells it; on the command
    line the option is what was typed. Only a field that is an option of some command is named.
    """
    match = _FIELD_CHECK.match(message)
    if match is None:
        return message
    field = match.group(1)
    option = _OPTION_OF_FIELD.get(field, "--" + field.replace("_", "-"))
    if option not in command_line_options():
        return message
    return f"{field} ({option}) {message[match.end():]}"


def command_line_options() -> frozenset[str]:
    """Every long option of every command of the app."""
    import click

    from oasst_data_cli.app import app

    group = typer.main.get_command(app)
    context = click.Context(group)
    return frozenset(
        option
        for command in (group.get_command(context, name) for name in group.list_commands(context))
        for param in command.params
        for option in param.opts
        if option.startswith("--")
    )


def error_label() -> str:
    """`error:`, or `error (rank R of N):` in a process of a distributed launch. Every rank reports
    its own error: one rank's (a node's full disk, a damaged local copy) may be the only clue."""
    world = os.environ.get("WORLD_SIZE", "1")
    if world.isdigit() and int(world) > 1:
        return f"error (rank {os.environ.get('RANK', '?')} of {world}):"
    return "error:"


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn the package's own errors, and the system's, into one red line and exit code 1 (no traceback).

    Once a SIGTERM or SIGHUP came, whatever unwinding meets ends as that termination (128 + its
    number): an error raised by the cleanup, or torch's error for a DataLoader worker the same
    signal killed, is a consequence, not the cause."""
    try:
        yield
    except typer.Exit:
        raise
    except BaseException as error:
        stop = termination()
        if stop is None:
            _report(error)
            raise
        termination_handled()
        _print_last(f"[bold red]{shown(stop.message)}[/]")
        raise typer.Exit(stop.exit_code) from None


def _report(error: BaseException) -> None:
    """Raise typer.Exit for an error the user can act on, after one line saying it; else return."""
    if isinstance(error, OasstDataError):
        message = name_the_option(str(error)) if isinstance(error, ConfigError) else str(error)
        err_console.print(f"[bold red]{error_label()}[/] {shown(message)}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    if isinstance(error, BrokenPipeError):
        # The reader went away (`... --out /dev/stdout | head`): stop quietly, as Unix tools do;
        # stdout goes to /dev/null so the flush at exit does not complain again.
        with contextlib.suppress(OSError, ValueError, io.UnsupportedOperation):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise typer.Exit(141) from None  # 128 + SIGPIPE
    if isinstance(error, OSError):  # the machine's answer (disk full, permissions): no traceback either
        where = f"{error.filename}: " if error.filename else ""
        err_console.print(f"[bold red]{error_label()}[/] {shown(where + (error.strerror or str(error)))}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    if isinstance(error, MemoryError):  # pyarrow's ArrowMemoryError too; the work's memory is freed by now
        detail = str(error).splitlines()[0] if str(error).strip() else "MemoryError"
        err_console.print(
            f"[bold red]{error_label()}[/] {shown(f'out of memory ({detail}); a single huge line? README, Build output: memory')}",
            highlight=False, soft_wrap=True,
        )
        raise typer.Exit(1) from None
    if isinstance(error, KeyboardInterrupt):
        _print_last("[bold red]interrupted[/]")
        raise typer.Exit(130) from None


def _print_last(markup: str) -> None:
    """The run's last line; a terminal that is gone (SIGHUP) cannot take it, and that is fine."""
    with contextlib.suppress(OSError, ValueError):
        err_console.print(markup)


def is_interactive() -> bool:
    return sys.stderr.isatty()


def dash_is_stdout(value: Path | None) -> Path | None:
    """An output option's `-` is standard output (Unix custom), written as `/dev/stdout` is."""
    return Path("/dev/stdout") if value is not None and str(value) == "-" else value


def is_stdout(path) -> bool:
    """Whether `path` is this process's standard output (`--out /dev/stdout`, or its terminal or pipe)."""
    try:
        written, stdout = os.stat(path), os.fstat(sys.stdout.fileno())
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):  # no such path; a captured stdout
        return False
    return (written.st_dev, written.st_ino) == (stdout.st_dev, stdout.st_ino)
