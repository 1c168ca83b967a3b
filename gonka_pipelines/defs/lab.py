"""The designer's lab in the UI, each an asset launched with run config: a what-if fork (the `what_if` job: the per-host
diff as a table, the network totals as numbers, the diff's files) and a sweep (the `sweep` job: the mean per grid
point, the plot, the results file)."""

import base64
import tempfile
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl

from gonka_pipelines.defs.resources import ChainResource
from gonka_pipelines.lab.fork import what_if
from gonka_pipelines.lab.sweep import load_sweep, plot_sweep, run_sweep, summarize
from gonka_pipelines.local.paths import DataLayout

LAB = "lab"


class WhatIfConfig(dg.Config):
    """A fork: the height to fork from, parameter changes (section.key=value, values read as YAML) and how many stored
    epochs to re-run (default: all up to the head)."""

    from_height: int
    settings: list[str] = []
    epochs: int | None = None


@dg.asset(group_name=LAB, kinds={"duckdb", "polars"}, pool="chain", owners=["team:gonka-economics"],
          description="A what-if fork (run config: from_height, settings, epochs): the stored epochs after the height re-run "
                      "with changed parameters in a scratch chain; each host's weight, status, reward, work coins, slashes and "
                      "payout before and after, and the network's minted, burned and fees. The chain is only read.")
def what_if_fork(context: dg.AssetExecutionContext, config: WhatIfConfig, chain: ChainResource) -> dg.MaterializeResult:
    layout = chain.layout
    with tempfile.TemporaryDirectory(prefix="gonka-what-if-") as temporary:
        fork = what_if(layout, config.from_height, config.settings, Path(temporary) / "chain", config.epochs, context.log.info)
        paths = fork.write(layout.root / LAB / f"what-if-run-{context.run_id[:8]}")
    table = _table(fork.hosts)
    totals = {f"{name}_{side}": value for name, pair in fork.totals.items() for side, value in zip(("before", "after"), pair)}
    return dg.MaterializeResult(metadata={
        "forked_from": fork.from_height, "epochs": dg.MetadataValue.text(f"{fork.epochs[0]}..{fork.epochs[-1]}"),
        "settings": dg.MetadataValue.json(list(fork.settings)), **totals, "hosts": table,
        "parquet": dg.MetadataValue.path(str(paths[0])), "csv": dg.MetadataValue.path(str(paths[1]))})


def _table(frame: pl.DataFrame) -> dg.TableMetadataValue:
    """A polars frame as a Dagster table, its column types kept (int, float, else string)."""
    def kind(dtype: str) -> str:
        return "int" if dtype.startswith(("Int", "UInt")) else "float" if dtype.startswith("Float") else "string"

    return dg.MetadataValue.table([dg.TableRecord(row) for row in frame.to_dicts()],
                                  dg.TableSchema([dg.TableColumn(name, kind(str(dtype))) for name, dtype in frame.schema.items()]))


class SweepConfig(dg.Config):
    """A sweep definition file (YAML, e.g. resources/sweeps/power-cap.yaml) and where its results go (default:
    DATA/lab/sweeps/NAME; a sweep never touches the chain)."""

    definition: str
    out: str | None = None


@dg.asset(group_name=LAB, kinds={"duckdb", "polars"}, owners=["team:gonka-economics"],
          description="A sweep (run config: definition, a YAML file): every grid point × seed as a fresh chain, resuming where an "
                      "earlier run stopped; the mean of each measure per point, the plot and the results file.")
def sweep_results(context: dg.AssetExecutionContext, config: SweepConfig) -> dg.MaterializeResult:
    definition = load_sweep(Path(config.definition))
    out = Path(config.out) if config.out else DataLayout.from_env().root / LAB / "sweeps" / definition.name
    results = run_sweep(definition, out, context.log.info)
    summary = summarize(definition, results)
    means = summary.select(*definition.grid, "seeds", *(c for c in summary.columns if c.endswith("_mean")))
    metadata: dict[str, Any] = {"sweep": definition.name, "runs": results.height, "summary": _table(means),
                "results": dg.MetadataValue.path(str(out / "results.parquet"))}
    if definition.plot:
        png = plot_sweep(definition, results, out / f"{definition.name}.png")
        encoded = base64.b64encode(png.read_bytes()).decode()
        metadata |= {"plot": dg.MetadataValue.md(f"![{definition.name}](data:image/png;base64,{encoded})"),
                     "plot_file": dg.MetadataValue.path(str(png))}
    return dg.MaterializeResult(metadata=metadata)


what_if_job = dg.define_asset_job("what_if", selection=[what_if_fork],
                                  description="A what-if fork of the chain: launch with run config (from_height, settings, epochs).")

sweep_job = dg.define_asset_job("sweep", selection=[sweep_results],
                                description="A sweep of the lab: launch with run config (definition: a YAML file).")
