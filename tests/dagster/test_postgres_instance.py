"""Dagster's own storage on PostgreSQL: a real server (Debian's, in a temporary folder on a loopback port) holds the
runs and event logs of an epoch run through Dagster, and the block is the one the default instance gives."""

from __future__ import annotations

import psycopg2
import pytest

from gonka_pipelines.defs.launch import STORAGE_ENV, dagster_home, dagster_instance, run_next_epoch
from gonka_pipelines.local.config import ConfigError
from gonka_pipelines.simulation.workload import submit_demo_workload

from e2e.test_block_hashes_pinned import DEMO_HASHES, block_hashes
from support.chains import opened
from support.postgres import temporary_postgres


@pytest.mark.slow
def test_an_epoch_runs_through_dagster_on_postgresql(genesis_layout, network, tmp_path, monkeypatch):
    with temporary_postgres() as url:
        monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
        monkeypatch.setenv(STORAGE_ENV, "postgres")
        monkeypatch.setenv("GONKA_DAGSTER_PG_URL", url)
        with opened(genesis_layout) as store:
            submit_demo_workload(store, genesis_layout, network, 1)
        with dagster_instance(genesis_layout) as instance:
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
            run = run_next_epoch(genesis_layout, instance)
            assert run.success
        assert block_hashes(genesis_layout) == DEMO_HASHES[:2]
        with psycopg2.connect(url) as connection, connection.cursor() as cursor:
            cursor.execute("SELECT status FROM runs WHERE run_id = %s", (run.run_id,))
            assert cursor.fetchone() == ("SUCCESS",)
            cursor.execute("SELECT count(*) FROM event_logs WHERE run_id = %s AND dagster_event_type = 'ASSET_MATERIALIZATION'",
                           (run.run_id,))
            assert cursor.fetchone()[0] >= 9  # one per asset of the epoch


def test_the_storage_variable_picks_the_instance_and_refuses_a_home_made_for_other_storage(genesis_layout, tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv(STORAGE_ENV, "postgres")
    assert "GONKA_DAGSTER_PG_URL" in (dagster_home(genesis_layout) / "dagster.yaml").read_text()
    monkeypatch.setenv(STORAGE_ENV, "sqlite")
    with pytest.raises(ConfigError, match="was made for other storage than GONKA_DAGSTER_STORAGE=sqlite"):
        dagster_home(genesis_layout)
    monkeypatch.setenv(STORAGE_ENV, "mysql")
    with pytest.raises(ConfigError, match="unknown Dagster storage .known: sqlite, postgres"):
        dagster_home(genesis_layout)
