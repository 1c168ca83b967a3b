"""Sweeps: a grid × population × seeds, each point a fresh chain; results stored one point at a time so an interrupted
sweep resumes where it stopped; the power cap bounds the largest host's reward share; definitions are checked first."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
import yaml

from gonka_pipelines import cli
from gonka_pipelines.chain.store import ChainStore
from gonka_pipelines.lab.sweep import (
    TIMING,
    Population,
    load_sweep,
    plot_sweep,
    population_network,
    run_point,
    run_sweep,
    summarize,
)
from gonka_pipelines.local.config import ConfigError
from gonka_pipelines.local.paths import RESOURCES, DataLayout
from gonka_pipelines.simulation.workload import submit_tasks

pytestmark = pytest.mark.slow

TINY = {"name": "tiny-cap", "description": "test", "grid": {"sprint.power_cap": [0.2, 1.0]},
        "population": {"hosts": 6, "capacity": {"distribution": "pareto", "alpha": 1.0, "min": 1, "max": 40}},
        "seeds": 1, "epochs": 1, "tasks": 3, "plot": ["sprint.power_cap", "largest_host_reward_share"]}


def definition_file(tmp_path: Path, **changes) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(TINY | changes))
    return path


def test_a_sweep_measures_every_point_resumes_and_plots(tmp_path):
    definition = load_sweep(definition_file(tmp_path))
    finished: list[str] = []
    results = run_sweep(definition, tmp_path / "out", lambda line: finished.append(line) if line.startswith("sweep ") else None)
    assert len(finished) == 2 and results.height == 2
    capped, uncapped = results.sort("sprint.power_cap").iter_rows(named=True)
    assert capped["largest_host_reward_share"] <= 0.2 + 1e-9 < uncapped["largest_host_reward_share"], (capped, uncapped)
    assert capped["minted"] == uncapped["minted"] > 0 and capped["honest_hosts_flagged"] == 0
    # interrupted after the first point: only the missing one runs again, and the results are the same
    points = sorted((tmp_path / "out" / "points").glob("*.parquet"))
    points[1].unlink()
    finished.clear()
    again = run_sweep(definition, tmp_path / "out", lambda line: finished.append(line) if line.startswith("sweep ") else None)
    assert len(finished) == 1 and again.drop(TIMING).equals(results.drop(TIMING))
    assert pl.read_parquet(tmp_path / "out" / "results.parquet").equals(again)
    assert results["epoch_seconds_median"].min() > 0
    summary = summarize(definition, results)
    assert summary["seeds"].to_list() == [1, 1] and "largest_host_reward_share_mean" in summary.columns
    png = plot_sweep(definition, results, tmp_path / "plot.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_point_cut_short_resumes_after_its_last_block_with_the_same_blocks(tmp_path):
    one, two = (load_sweep(definition_file(tmp_path, epochs=epochs)) for epochs in (1, 2))
    point = {"sprint.power_cap": 0.2}
    straight = run_point(two, point, 0, tmp_path / "straight")
    run_point(one, point, 0, tmp_path / "cut")
    with ChainStore.open(DataLayout(tmp_path / "cut").database) as store:  # cut short while writing epoch 2's tasks
        submit_tasks(store, DataLayout(tmp_path / "cut"), population_network(two.population, 0), 1, tag="seed 0: ")
    resumed = run_point(two, point, 0, tmp_path / "cut")
    assert {k: v for k, v in resumed.items() if k not in TIMING} == {k: v for k, v in straight.items() if k not in TIMING}
    hashes = []
    for folder in ("straight", "cut"):
        with ChainStore.open(DataLayout(tmp_path / folder).database) as store:
            hashes.append([store.block(height)["hash"] for height in (1, 2)])
    assert hashes[0] == hashes[1]


def test_populations_follow_their_distribution_and_fractions():
    population = Population(hosts=40, behaviours={"fake_hits": 0.1, "garbled_output": 0.05})
    network = population_network(population, seed=3)
    behaviours = [h.behaviour for h in network.hosts]
    assert (behaviours.count("fake_hits"), behaviours.count("garbled_output"), len(behaviours)) == (4, 2, 40)
    capacities = sorted(h.capacity for h in network.hosts)
    assert capacities[0] >= 1 and capacities[-1] <= 50 and capacities[-1] > 3 * capacities[len(capacities) // 2], "heavy tail"
    assert population_network(population, seed=3) == network and population_network(population, seed=4) != network


@pytest.mark.parametrize("changes, message", [
    ({"grid": {"sprint.power_cap": [2]}}, "field 'sprint.power_cap': Input should be less than or equal to 1"),
    ({"grid": {"sprint.power_kap": [0.1]}}, "'power_kap' is not a parameter of sprint"),
    ({"population": {"hosts": 0}}, "field 'population.hosts'"),
    ({"colour": "red"}, "field 'colour'"),
    ({"grid": {"tasks.max_submissions_per_epoch": [2]}}, "tasks 3 exceeds tasks.max_submissions_per_epoch 2"),
])
def test_bad_definitions_are_refused_before_anything_runs(tmp_path, changes, message):
    with pytest.raises(ConfigError, match=message):
        load_sweep(definition_file(tmp_path, **changes))


def test_the_shipped_studies_load():
    for path in sorted((RESOURCES / "sweeps").glob("*.yaml")):
        definition = load_sweep(path)
        assert definition.plot is not None and definition.plot[0] in definition.grid, path


def test_cli_sweep_prints_the_means_and_the_plot(tmp_path, capsys):
    assert cli.main(["--data-dir", str(tmp_path / "data"), "sweep", str(definition_file(tmp_path)), "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "largest_host_reward_share_mean" in out and f"plot {tmp_path / 'o' / 'tiny-cap.png'}" in out


def test_the_sweep_job_materializes_the_means_and_the_plot(tmp_path):
    import dagster as dg

    from gonka_pipelines.definitions import defs

    with dg.DagsterInstance.ephemeral() as instance:
        result = defs.resolve_job_def("sweep").execute_in_process(instance=instance, run_config={"ops": {"sweep_results": {
            "config": {"definition": str(definition_file(tmp_path)), "out": str(tmp_path / "out")}}}})
        assert result.success
        (materialization,) = result.asset_materializations_for_node("sweep_results")
    metadata = materialization.metadata
    assert metadata["sweep"].value == "tiny-cap" and metadata["runs"].value == 2
    rows = metadata["summary"].records
    assert [r.data["sprint.power_cap"] for r in rows] == [0.2, 1.0] and "largest_host_reward_share_mean" in rows[0].data
    assert metadata["plot"].value.startswith("![tiny-cap](data:image/png;base64,")
    assert Path(metadata["results"].value).is_file() and Path(metadata["plot_file"].value).is_file()
