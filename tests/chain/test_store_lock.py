"""DuckDB admits one writing process and no reader beside it: opens wait for the lock, then fail clearly."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gonka_pipelines.chain import core as chain_core
from gonka_pipelines.chain.store import ChainError


@pytest.fixture
def locked_database(tmp_path: Path):
    """A database held open for writing by another process for a few seconds."""
    path = tmp_path / "chain.duckdb"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import duckdb, time
        connection = duckdb.connect({str(path)!r})
        connection.execute("CREATE TABLE t (x INTEGER)")
        print("holding", flush=True)
        time.sleep(3)
        """)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "holding"
    yield path
    holder.wait(timeout=30)


def test_an_open_beside_a_writer_fails_with_a_clear_message_after_waiting(locked_database: Path):
    with pytest.raises(ChainError, match="is busy: another process .* holds its write lock"):
        chain_core._connect(locked_database, read_only=True, wait=0.5)


def test_an_open_succeeds_once_the_writer_is_gone(locked_database: Path):
    connection = chain_core._connect(locked_database, read_only=True, wait=30)
    assert connection.execute("SELECT count(*) FROM t").fetchone() == (0,)
    connection.close()
