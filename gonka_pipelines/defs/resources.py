"""Dagster resources: the chain (DuckDB ledger plus its data folder)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg

from gonka_pipelines.chain.store import ChainStore
from gonka_pipelines.paths import DataLayout


class ChainResource(dg.ConfigurableResource):
    """The chain a run writes: data_dir holds chain.duckdb, keys/ and inbox/ (default: $GONKA_DATA_DIR or data/)."""

    data_dir: str | None = None

    @property
    def layout(self) -> DataLayout:
        return DataLayout(Path(self.data_dir).resolve()) if self.data_dir else DataLayout.from_env()

    @contextmanager
    def store(self, read_only: bool = False) -> Iterator[ChainStore]:
        """A connection for one step; steps that write share the `chain` pool so only one holds it."""
        with ChainStore.open(self.layout.database, read_only=read_only) as store:
            yield store


class ComputeResource(dg.ConfigurableResource):
    """Where model compute runs: None picks CUDA when present (through accelerate), else CPU; "cpu" forces CPU."""

    device: str | None = None
