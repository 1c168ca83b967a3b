"""The `gonka` command line: create a chain, submit tasks, run epochs through Dagster, verify and prove.
`gonka COMMAND --help` shows every option with its default."""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any

import typer
from typer import _click, rich_utils  # typer vendors click: its contexts and usage errors are not the click package's
from typer.core import TyperGroup

from gonka_pipelines.chain.store import ChainError
from gonka_pipelines.cli import audit, chain, lab
from gonka_pipelines.cli.options import DataDir
from gonka_pipelines.local.config import ConfigError

USER_ERRORS = (ChainError, ConfigError, FileExistsError, FileNotFoundError, PermissionError, ValueError)
"""What a command raises for a wrong value, file or name: one line on stderr naming it, exit 2, no traceback."""


class _Commands(TyperGroup):
    """Ends a command the user stopped or misused with a message and an exit code before typer's own handling sees it
    (which exits 130 without a word on Ctrl-C, 1 on a closed pipe, and lets other errors out as tracebacks)."""

    def invoke(self, ctx: _click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as interruption:
            print(f"interrupted ({str(interruption) or 'SIGINT'}): the chain is as it was before the interrupted epoch's last write; "
                  "`gonka run` takes the epoch up again", file=sys.stderr)
            return 130
        except USER_ERRORS as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        except BrokenPipeError:  # the reader went away (`gonka summary | head`): stop quietly, as a shell pipeline expects
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 141

    def resolve_command(self, ctx: _click.Context, args: list[str]) -> tuple[str | None, _click.Command | None, list[str]]:
        """An unknown command's error lists the commands."""
        try:
            return super().resolve_command(ctx, args)
        except _click.ClickException as error:
            error.message = f"{error.message} The commands: {', '.join(self.commands)}."
            raise


app = typer.Typer(cls=_Commands, help=__doc__, add_completion=False, no_args_is_help=True, rich_markup_mode="rich")
for group in (chain, audit, lab):
    app.add_typer(group.commands)


@app.callback()
def _before_the_command(ctx: typer.Context, data_dir: DataDir = None) -> None:
    """--data-dir before the command becomes the default of the command's own --data-dir (click's default_map), so one
    given after the command wins."""
    if data_dir is not None and ctx.invoked_subcommand:
        ctx.default_map = {ctx.invoked_subcommand: {"data_dir": data_dir}}


def _interrupt(signum: int, _frame: object) -> None:
    """SIGTERM stops a run as Ctrl-C does: the open transaction rolls back and the chain stays as it was."""
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    """Run `gonka` on argv (default: the process's arguments) and return its exit code: 0 done (or --help), 1 a check
    failed, 2 a usage or user error, 130 interrupted, 141 a closed pipe."""
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if main_thread else None
    try:
        return typer.main.get_command(app).main(argv, prog_name="gonka", standalone_mode=False)
    except _click.ClickException as error:  # a usage error: typer's rendering, with the usage line and any valid choices
        rich_utils.rich_format_error(error)
        return error.exit_code
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
