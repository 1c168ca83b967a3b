"""What-if forks: copy a chain at a height into a scratch chain, change parameters, re-run the stored epochs after it
on the same submissions, hosts and behaviours, and compare each host's outcome and the network's totals with the
original chain's."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from gonka_pipelines.chain.store import ChainError, ChainStore
from gonka_pipelines.lab.scratch import rerun_epoch, scratch_copy
from gonka_pipelines.local.config import changed_params
from gonka_pipelines.local.paths import DataLayout
from gonka_pipelines.stages.environment import Log, quiet

COMPARED = ("weight", "status", "reward", "work_coins", "slashed", "payout")
"""Per host: the last forked epoch's weight and status; reward, work coins, slashed collateral and payout summed."""


@dataclass(frozen=True)
class Fork:
    """A what-if fork's result: the epochs re-run, the settings, one row per host (each compared column `_before` and
    `_after`, and `payout_change`) and the network totals before and after."""

    from_height: int
    epochs: range
    settings: tuple[str, ...]
    hosts: pl.DataFrame
    totals: dict[str, tuple[int, int]]
    scratch: DataLayout

    def write(self, folder: Path) -> list[Path]:
        """The per-host diff as Parquet and CSV files in `folder`; returns their paths."""
        folder.mkdir(parents=True, exist_ok=True)
        paths = [folder / "what-if-hosts.parquet", folder / "what-if-hosts.csv"]
        self.hosts.write_parquet(paths[0])
        self.hosts.write_csv(paths[1])
        return paths


def what_if(layout: DataLayout, from_height: int, settings: Sequence[str], scratch: Path, epochs: int | None = None,
            log: Log = quiet) -> Fork:
    """Fork the chain at `from_height` into `scratch` (the original is only read), apply the settings (validated by the
    params schema) and re-run `epochs` stored epochs after it (default: all up to the head) on their stored
    submissions; compare every host's outcome and the network totals with the original's."""
    with ChainStore.open(layout.database, read_only=True) as chain:
        head = chain.head().height
        if not 0 <= from_height < head:
            raise ChainError(f"--from {from_height}: a fork re-runs stored epochs after it, so it starts from a height in "
                             f"0..{head - 1} (the head is {head})")
        last = head if epochs is None else from_height + epochs
        if not from_height < last <= head:
            raise ChainError(f"--epochs {epochs}: the chain stores {head - from_height} epoch(s) after height {from_height}")
        genesis = changed_params(chain.genesis(), settings)
        forked = range(from_height + 1, last + 1)
        submissions = {epoch: chain.stored_submissions(epoch) for epoch in forked}
        before = (chain.host_outcomes(forked[0], forked[-1]), chain.network_totals(forked[0], forked[-1]))
    work = scratch_copy(layout, scratch, from_height)
    with ChainStore.open(work.database) as store:
        for epoch in forked:
            block = rerun_epoch(store, work, epoch, submissions[epoch], log, genesis)
            log(f"what-if: epoch {epoch} sealed block {block[:12]}…")
        after = (store.host_outcomes(forked[0], forked[-1]), store.network_totals(forked[0], forked[-1]))
    hosts = (pl.DataFrame(before[0]).join(pl.DataFrame(after[0]), on="host", how="full", suffix="_after", coalesce=True)
             .rename({column: f"{column}_before" for column in COMPARED})
             .with_columns((pl.col("payout_after") - pl.col("payout_before")).alias("payout_change"))
             .select("host", *(f"{c}_{side}" for c in COMPARED for side in ("before", "after")), "payout_change")
             .sort("host"))
    totals = {name: (before[1][name], after[1][name]) for name in before[1]}
    return Fork(from_height, forked, tuple(settings), hosts, totals, work)


def format_fork(fork: Fork) -> str:
    """The fork's diff for a terminal: one line per host (before → after), then the network totals."""
    changes = ", ".join(fork.settings) or "no parameter changed"
    lines = [f"what-if: epochs {fork.epochs[0]}..{fork.epochs[-1]} re-run from block {fork.from_height} with {changes}",
             f"{'host':<14} {'weight':>13} {'status':>19} {'reward':>33} {'work coins':>21} {'slashed':>13} "
             f"{'payout':>33} {'change':>16}", "-" * 172]
    for r in fork.hosts.iter_rows(named=True):
        lines.append(f"{r['host']:<14} {_pair(r, 'weight'):>13} {_pair(r, 'status'):>19} {_pair(r, 'reward'):>33} "
                     f"{_pair(r, 'work_coins'):>21} {_pair(r, 'slashed'):>13} {_pair(r, 'payout'):>33} {r['payout_change']:>+16,}")
    lines.append("network: " + "; ".join(f"{name} {a:,} → {b:,} ({b - a:+,})" for name, (a, b) in fork.totals.items()))
    return "\n".join(lines)


def _pair(row: dict, column: str) -> str:
    before, after = row[f"{column}_before"], row[f"{column}_after"]
    shown = (f"{v:,}" if isinstance(v, int) else str(v) for v in (before, after))
    return " → ".join(shown)
