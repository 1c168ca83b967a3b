"""Commands that account for what the chain did: a host's payout explained, one host across epochs, one submission's
fate, and the block explorer."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Annotated

import typer

from gonka_pipelines.chain.store import ChainStore
from gonka_pipelines.cli.options import DataDir, chain_folder
from gonka_pipelines.local.config import ConfigError

commands = typer.Typer()

MIN_ID_PREFIX = 6
"""The fewest characters of an id `gonka status` takes (fewer would match half the chain)."""
EXPLORER_PORT_ENV, DEFAULT_EXPLORER_PORT = "GONKA_EXPLORER_PORT", 8787
"""`make explorer EXPLORER_PORT=...` serves the explorer on that port (8787 by default) through GONKA_EXPLORER_PORT."""


@commands.command()
def explain(host: Annotated[str, typer.Argument(help="host name (e.g. host-alpha) or address")],
            epoch: Annotated[int, typer.Argument(help="a finalized epoch")],
            markdown: Annotated[bool, typer.Option("--markdown", help="print Markdown (as the UI shows it) instead of text")] = False,
            data_dir: DataDir = None) -> int:
    """Why HOST was paid what it was paid in EPOCH, amount by amount."""
    from gonka_pipelines.reports.explain import explain_payout, render_markdown, render_text

    with ChainStore.open(chain_folder(data_dir).database, read_only=True) as store:
        explanation = explain_payout(store, host, epoch)
        base_units = store.genesis().token.base_units
    print(render_markdown(explanation) if markdown else render_text(explanation, base_units))
    return 0 if explanation.balanced else 1


@commands.command()
def host(name: Annotated[str, typer.Argument(help="host name (or address)")], data_dir: DataDir = None) -> int:
    """One host across every finalized epoch: sprint, weight, status, tasks, reward, work coins, slashes, claim, payout (GNK)."""
    from gonka_pipelines.reports.history import format_host_history

    with ChainStore.open(chain_folder(data_dir).database, read_only=True) as store:
        print(format_host_history(store, name))
    return 0


@commands.command()
def status(submission: Annotated[str, typer.Argument(
               metavar="ID", help=f"a prefix (at least {MIN_ID_PREFIX} characters) of a submission id or task id")],
           data_dir: DataDir = None) -> int:
    """The fate of one submission: waiting, rejected with its reason, or its task's executor, verdicts, fee shares, refunds."""
    from gonka_pipelines.reports.history import format_submission_fates

    if len(submission) < MIN_ID_PREFIX:
        raise ConfigError(f"give at least {MIN_ID_PREFIX} characters of a submission or task id, got {submission!r}")
    layout, prefix = chain_folder(data_dir), submission.lower()
    waiting = _waiting(layout.inbox, prefix)
    for what in waiting:
        print(f"{what}: waiting in the inbox ({layout.inbox}) for the next epoch to collect it")
    with ChainStore.open(layout.database, read_only=True) as store:
        text = format_submission_fates(store, prefix, missing_ok=bool(waiting))
    if text:
        print(text)
    return 0


def _waiting(inbox: Path, prefix: str) -> list[str]:
    """What waits in the inbox under ids starting with `prefix`: a submission, a bundle (its lines' ids ID/0, ID/1, ...)
    or, for the whole id of a bundle's line (ID/n), that line."""
    from gonka_pipelines.local.inbox import LINE_MARK, MAX_BUNDLE_BYTES, read_entry, submission_id_of, waiting_names

    found = []
    for name in waiting_names(inbox):
        entry = submission_id_of(name)
        if not entry.endswith(LINE_MARK):
            if entry.startswith(prefix):
                found.append(f"submission {entry}")
        elif entry.startswith(prefix) or prefix.startswith(entry):
            submissions = read_entry(inbox, name, MAX_BUNDLE_BYTES)
            lines = [s.submission_id for s in submissions]
            if lines == [entry]:  # refused whole: collect keeps it as one rejection
                found.append(f"bundle {entry} (to be refused whole: {submissions[0].unreadable})")
            elif entry.startswith(prefix):
                found.append(f"bundle {entry} ({len(lines)} submission(s): {lines[0]} to {lines[-1]})")
            elif prefix in lines:
                found.append(f"submission {prefix}, line {prefix[len(entry):]} of bundle {entry}")
    return found


@commands.command()
def explorer(port: Annotated[int, typer.Option(envvar=EXPLORER_PORT_ENV, help="port to listen on")] = DEFAULT_EXPLORER_PORT,
             host: Annotated[str, typer.Option(help="address to listen on (loopback: only this machine)")] = "127.0.0.1",
             data_dir: DataDir = None) -> int:
    """Serve the read-only block explorer over the chain: overview, blocks, hosts, accounts, tasks, search.

    It never waits on a running epoch."""
    from gonka_pipelines.explorer.server import serve

    try:
        serve(chain_folder(data_dir), host, port, on_ready=lambda line: print(line, flush=True))
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            raise ConfigError(f"port {port} on {host} is in use: pick another with --port "
                              "(make explorer EXPLORER_PORT=...)") from None
        raise
    return 0
