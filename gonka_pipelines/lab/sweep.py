"""Sweeps: a parameter grid × a host population × seeds, each point a fresh chain run for some epochs, its outcome
measured and stored; restartable (a point already measured is not run again) and plotted.

A sweep definition (YAML, resources/sweeps/) names the genesis profile, the grid (`section.key: [values]`), the
population (hosts, capacity distribution, fraction of each behaviour), the epochs and tasks per point and the seeds.
"""

from __future__ import annotations

import itertools
import random
import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from gonka_pipelines.chain.store import ChainStore
from gonka_pipelines.local.config import ConfigError, changed_params, load_genesis, read_yaml, validate_config
from gonka_pipelines.local.inbox import waiting_names
from gonka_pipelines.local.paths import DataLayout
from gonka_pipelines.protocol.crypto import hash_value
from gonka_pipelines.protocol.params import NAME_PATTERN, Behaviour, DeveloperConfig, HostConfig, NetworkConfig
from gonka_pipelines.simulation.workload import submit_tasks
from gonka_pipelines.stages.environment import Log, quiet
from gonka_pipelines.stages.genesis import init_chain
from gonka_pipelines.stages.pipeline import run_epoch


class Capacity(BaseModel):
    """How host capacities are drawn: `pareto` (a few large hosts, shape `alpha`) or `uniform`, clipped to min..max."""

    model_config = ConfigDict(extra="forbid")
    distribution: Literal["pareto", "uniform"] = "pareto"
    alpha: float = Field(default=1.2, gt=0)
    min: int = Field(default=1, gt=0)
    max: int = Field(default=50, gt=0)


class Population(BaseModel):
    model_config = ConfigDict(extra="forbid")
    hosts: int = Field(gt=0, le=100_000)
    capacity: Capacity = Capacity()
    behaviours: dict[Behaviour, float] = Field(default_factory=dict, description="fraction of the hosts with each behaviour")
    model: str = "llm-tiny"


class SweepDefinition(BaseModel):
    """One sweep: grid × seeds points, each a chain of `population` run for `epochs` epochs of `tasks` tasks."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    profile: str | None = None
    grid: dict[str, list[Any]] = Field(min_length=1)
    population: Population
    seeds: int = Field(default=1, gt=0)
    epochs: int = Field(default=2, gt=0)
    tasks: int = Field(default=20, ge=0, description="inference tasks submitted per epoch")
    plot: tuple[str, str] | None = Field(default=None, description="(x: a grid key, y: a metric) to plot")

    def points(self) -> list[dict[str, Any]]:
        """Every combination of the grid's values, in the grid's order."""
        keys = list(self.grid)
        return [dict(zip(keys, values)) for values in itertools.product(*(self.grid[k] for k in keys))]


def load_sweep(path: Path) -> SweepDefinition:
    """Read and check a sweep definition; every grid value must be a valid parameter (refused naming the key)."""
    definition = validate_config(SweepDefinition, read_yaml(path), path)
    genesis = load_genesis(definition.profile)
    for point in definition.points():
        limit = changed_params(genesis, settings_of(point)).tasks.max_submissions_per_epoch
        if definition.tasks > limit:  # each epoch must take all its tasks, or resuming could not tell epochs apart
            raise ConfigError(f"{path}: tasks {definition.tasks} exceeds tasks.max_submissions_per_epoch {limit}")
    return definition


def settings_of(point: dict[str, Any]) -> list[str]:
    return [f"{key}={value}" for key, value in point.items()]


def population_network(population: Population, seed: int) -> NetworkConfig:
    """A network of the population, drawn from the seed: capacities from the distribution, behaviours assigned to
    round(fraction × hosts) hosts each (shuffled), three developers with ample balance."""
    rng = random.Random(f"population|{seed}")
    spec = population.capacity
    draw: Callable[[], float] = ((lambda: spec.min * rng.paretovariate(spec.alpha)) if spec.distribution == "pareto"
                                 else (lambda: rng.uniform(spec.min, spec.max)))
    capacities = [max(spec.min, min(spec.max, round(draw()))) for _ in range(population.hosts)]
    behaviours = [b for b, fraction in population.behaviours.items() for _ in range(round(fraction * population.hosts))]
    behaviours = (behaviours + [Behaviour.HONEST] * population.hosts)[: population.hosts]
    rng.shuffle(behaviours)
    hosts = [HostConfig(name=f"host-{index:04d}", capacity=capacity, models=(population.model,), behaviour=behaviour)
             for index, (capacity, behaviour) in enumerate(zip(capacities, behaviours))]
    developers = [DeveloperConfig(name=f"dev-{index}", balance=10**15) for index in range(3)]
    return NetworkConfig(key_seed=f"sweep|{seed}", hosts=tuple(hosts), developers=tuple(developers))


def run_point(definition: SweepDefinition, point: dict[str, Any], seed: int, folder: Path, log: Log = quiet) -> dict[str, Any]:
    """One point of the sweep (run_chain); returns its measured outcome (ChainStore.sweep_outcome) and the median and
    slowest epoch in seconds (of the epochs this call ran)."""
    outcome, seconds = run_chain(definition, point, seed, folder, log)
    timing = dict(zip(TIMING, (statistics.median(seconds), max(seconds)))) if seconds else {}
    return {**point, "seed": seed, **outcome, **timing}


def run_chain(definition: SweepDefinition, point: dict[str, Any], seed: int, folder: Path, log: Log = quiet,
              on_epoch: Callable[[int, float], None] | None = None) -> tuple[dict[str, Any], list[float]]:
    """A chain of the population (seed) under the point's parameters, run for the definition's epochs, resuming after
    the last finalized block when folder already holds the point's chain: an epoch cut short runs again, on its
    submissions if they were all written, else on a fresh copy of them (the same bytes: signing is deterministic and
    nonces come from the chain); returns its outcome and the seconds of each epoch this call ran (also handed to
    on_epoch as each epoch ends)."""
    genesis = changed_params(load_genesis(definition.profile), settings_of(point))
    network = population_network(definition.population, seed)
    layout = DataLayout(folder)
    marker = folder / SUBMITTED_THROUGH
    seconds: list[float] = []
    with ChainStore.open(layout.database) as store:
        init_chain(store, layout, genesis, network)
        for epoch in range(store.head().height + 1, definition.epochs + 1):
            started = time.perf_counter()
            if not marker.exists() or int(marker.read_text()) < epoch:
                for name in waiting_names(layout.inbox):  # a submission cut short: only this epoch's entries wait
                    (layout.inbox / name).unlink()
                submit_tasks(store, layout, network, definition.tasks, tag=f"seed {seed}: ")
                marker.write_text(str(epoch))
            run_epoch(store, layout, epoch, log)
            seconds.append(time.perf_counter() - started)
            if on_epoch is not None:
                on_epoch(epoch, seconds[-1])
            if epoch % PROGRESS_EVERY == 0:
                log(f"sweep {definition.name}: {point} seed {seed}: epoch {epoch} of {definition.epochs}, "
                    f"median {statistics.median(seconds):.2f}s per epoch")
        return store.sweep_outcome(1, definition.epochs), seconds


SUBMITTED_THROUGH = "submitted-through"
"""A point's file naming the last epoch whose tasks were all written to its inbox."""

TIMING = ("epoch_seconds_median", "epoch_seconds_max")
"""The columns of a point's row that are wall-clock times (the rest depend only on the definition and the seed)."""

PROGRESS_EVERY = 50
"""A long point logs its progress every this many epochs."""


def run_sweep(definition: SweepDefinition, out: Path, log: Log = quiet) -> pl.DataFrame:
    """Every (point, seed) not measured yet, each stored as one Parquet row under out/points/ as soon as it is done (an
    interrupted sweep resumes where it stopped); returns all rows, also written to out/results.parquet."""
    points = out / "points"
    points.mkdir(parents=True, exist_ok=True)
    for point in definition.points():
        for seed in range(definition.seeds):
            name = f"{hash_value([point, seed, definition.epochs, definition.tasks, definition.population.model_dump(mode='json')])[:16]}"
            if (points / f"{name}.parquet").exists():
                continue
            scratch = out / "chains" / name  # a point interrupted midway resumes from its last block
            row = run_point(definition, point, seed, scratch, log)
            pl.DataFrame([row]).write_parquet(points / f"{name}.tmp")
            (points / f"{name}.tmp").replace(points / f"{name}.parquet")
            shutil.rmtree(scratch)
            log(f"sweep {definition.name}: {point} seed {seed}: {row}")
    results = pl.concat([pl.read_parquet(p) for p in sorted(points.glob("*.parquet"))], how="diagonal_relaxed")
    results = results.sort([*definition.grid, "seed"])
    results.write_parquet(out / "results.parquet")
    return results


def summarize(definition: SweepDefinition, results: pl.DataFrame) -> pl.DataFrame:
    """Per grid point: the mean, minimum and maximum of every measured metric (not the timings) over the seeds."""
    metrics = [c for c in results.columns if c not in (*definition.grid, "seed", *TIMING)]
    return (results.group_by(list(definition.grid), maintain_order=True)
            .agg([pl.len().alias("seeds")] + [agg for m in metrics for agg in
                                             (pl.col(m).mean().alias(f"{m}_mean"), pl.col(m).min().alias(f"{m}_min"),
                                              pl.col(m).max().alias(f"{m}_max"))])
            .sort(list(definition.grid)))


def plot_sweep(definition: SweepDefinition, results: pl.DataFrame, path: Path) -> Path:
    """A PNG of the definition's plot (x: a grid key, y: a metric): the mean over seeds with its min..max band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if definition.plot is None:
        raise ValueError(f"sweep {definition.name}: no `plot: [grid key, metric]` to draw")
    x, y = definition.plot
    summary = summarize(definition, results).sort(x)
    figure, axes = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    axes.plot(summary[x], summary[f"{y}_mean"], marker="o", label=f"mean over {definition.seeds} seed(s)")
    axes.fill_between(summary[x], summary[f"{y}_min"], summary[f"{y}_max"], alpha=0.25, label="min .. max")
    axes.set_xlabel(x)
    axes.set_ylabel(y.replace("_", " "))
    axes.set_title(definition.description or definition.name, fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, metadata={"Software": None})  # no version string: the same results give the same bytes
    plt.close(figure)
    return path
