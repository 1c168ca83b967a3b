"""The designer's lab on the command line: replay a stored epoch, fork the chain with changed parameters, run sweeps and
the security studies."""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from gonka_pipelines.cli.options import DataDir, chain_folder
from gonka_pipelines.local.config import ConfigError

commands = typer.Typer()

Scratch = Annotated[Path | None, typer.Option(
    help="empty folder to build the scratch chain in, kept afterwards (default: a temporary folder, removed)")]


@contextmanager
def _scratch_folder(command: str, scratch: Path | None) -> Iterator[Path]:
    """Where the lab builds its scratch chain: --scratch (kept), else a temporary folder removed afterwards."""
    with tempfile.TemporaryDirectory(prefix=f"gonka-{command}-") as temporary:
        yield scratch or Path(temporary) / "chain"


@commands.command()
def replay(epoch: Annotated[int, typer.Argument(help="a finalized epoch")], scratch: Scratch = None, data_dir: DataDir = None) -> int:
    """Rebuild a finalized EPOCH into a scratch chain from what the chain stores and check that it seals the same block."""
    from gonka_pipelines.lab.replay import replay_epoch

    started = time.perf_counter()
    with _scratch_folder("replay", scratch) as folder:
        replayed = replay_epoch(chain_folder(data_dir), epoch, folder)
    took = f"{time.perf_counter() - started:.1f}s" + (f"; scratch chain kept in {folder}" if scratch else "")
    if replayed.identical:
        print(f"epoch {replayed.epoch} replayed: block {replayed.replayed_hash[:12]}… identical to the stored block ({took})")
        return 0
    where = (f"first difference in {replayed.divergence}" if replayed.divergence else
             "every committed row is the same: the header differs (parameters, timestamp or the signer set)")
    print(f"epoch {replayed.epoch} replayed: block {replayed.replayed_hash[:12]}…, the chain stores {replayed.stored_hash[:12]}…: "
          f"DIVERGED: {where} ({took})")
    return 1


@commands.command("what-if")
def what_if(from_height: Annotated[int, typer.Option("--from", help="the height to fork from")],
            changes: Annotated[list[str] | None, typer.Option(
                "--set", metavar="SECTION.KEY=VALUE",
                help="a parameter change, repeatable (e.g. --set sprint.power_cap=0.15; values are YAML)")] = None,
            epochs: Annotated[int | None, typer.Option(help="how many stored epochs to re-run (default: all up to the head)")] = None,
            out: Annotated[Path | None, typer.Option(
                help="folder for the per-host diff as Parquet and CSV (default: DATA/lab/what-if-from-H-<hash>)")] = None,
            scratch: Scratch = None, data_dir: DataDir = None) -> int:
    """Fork the chain at a height with changed parameters and re-run the stored epochs after it.

    Prints each host's outcome before and after, and writes the per-host diff."""
    from gonka_pipelines.lab import fork as forks
    from gonka_pipelines.protocol.crypto import hash_value

    layout, changes = chain_folder(data_dir), changes or []
    out = out or layout.root / "lab" / f"what-if-from-{from_height}-{hash_value([changes, epochs])[:8]}"
    with _scratch_folder("what-if", scratch) as folder:
        fork = forks.what_if(layout, from_height, changes, folder, epochs)
        paths = fork.write(out)
    print(forks.format_fork(fork))
    print(f"per-host diff: {', '.join(str(p) for p in paths)}" + (f"; scratch chain kept in {folder}" if scratch else ""))
    return 0


@commands.command()
def sweep(definition: Annotated[Path, typer.Argument(help="the sweep's YAML file")],
          out: Annotated[Path | None, typer.Option(help="results folder (default: DATA/lab/sweeps/NAME)")] = None,
          verbose: Annotated[bool, typer.Option("--verbose", help="print each point as it finishes")] = False,
          data_dir: DataDir = None) -> int:
    """Run a sweep definition (grid × population × seeds), resuming where it stopped; print and plot.

    Definitions are YAML files, e.g. resources/sweeps/power-cap.yaml."""
    import polars as pl

    from gonka_pipelines.lab.sweep import load_sweep, plot_sweep, run_sweep, summarize
    from gonka_pipelines.stages.environment import quiet

    loaded = load_sweep(definition)
    out = out or chain_folder(data_dir).root / "lab" / "sweeps" / loaded.name
    started = time.perf_counter()
    results = run_sweep(loaded, out, print if verbose else quiet)
    summary = summarize(loaded, results)
    with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_width_chars=200, float_precision=4, tbl_hide_dataframe_shape=True):
        print(summary.select(*loaded.grid, "seeds", *(c for c in summary.columns if c.endswith("_mean"))))
    plot = plot_sweep(loaded, results, out / f"{loaded.name}.png") if loaded.plot else None
    timed: list[float] = (results.get_column("epoch_seconds_median").drop_nulls().to_list()
                          if "epoch_seconds_median" in results.columns else [])
    print(f"sweep {loaded.name}: {len(results)} runs in {time.perf_counter() - started:.0f}s"
          + (f" (median epoch {statistics.median(timed):.2f}s)" if timed else "")
          + f"; results {out / 'results.parquet'}" + (f"; plot {plot}" if plot else ""))
    return 0


@commands.command()
def security(trials: Annotated[int, typer.Option(help="trials per setting")] = 1000,
             study: Annotated[list[str] | None, typer.Option(metavar="NAME", help="run only this study, repeatable (default: all)")] = None,
             profile: Annotated[str | None, typer.Option(
                 help="genesis profile whose parameters the rules use (default: the genesis file's default)")] = None,
             out: Annotated[Path | None, typer.Option(
                 help="results folder (default: DATA/lab/security); finished studies are not rerun")] = None,
             verbose: Annotated[bool, typer.Option("--verbose", help="print each study as it finishes")] = False,
             data_dir: DataDir = None) -> int:
    """Monte Carlo detection power of every attack of PROTOCOL section 7 through the rule set.

    One table per attack with theory beside, and plots (docs/security.md)."""
    from gonka_pipelines.lab.security import STUDIES, markdown_table, plot_security, run_security
    from gonka_pipelines.stages.environment import quiet

    unknown = sorted(set(study or []) - set(STUDIES))
    if unknown:
        raise ConfigError(f"unknown study {', '.join(unknown)}; choose from {', '.join(STUDIES)}")
    out = out or chain_folder(data_dir).root / "lab" / "security"
    started = time.perf_counter()
    results = run_security(trials, out, profile, study or None, print if verbose else quiet)
    for name in dict.fromkeys(results["study"].to_list()):
        rows = results.filter(results["study"] == name)
        print(f"\n{rows['attack'][0]} ({name})\n\n{markdown_table(rows)}")
    plots = plot_security(results, out)
    print(f"\nsecurity: {len(results)} settings × {trials:,} trials in {time.perf_counter() - started:.0f}s; results {out}; "
          + (f"plots {', '.join(str(p) for p in plots)}" if plots else "no plots (the plotted studies did not run)"))
    return 0
