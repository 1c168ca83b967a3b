"""Dagster resources: the chain (DuckDB ledger plus its data folder) and where model compute runs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg

from gonka_pipelines.chain.store import ChainError, ChainStore
from gonka_pipelines.defs.partitions import epoch_of
from gonka_pipelines.defs.runs import record_process, run_active
from gonka_pipelines.local.config import ComputeSettings, load_compute_settings
from gonka_pipelines.local.paths import DataLayout
from gonka_pipelines.stages.environment import EpochEnvironment, build_environment


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

    def claim(self, context: dg.AssetExecutionContext) -> int:
        """The step's epoch, after checking the epoch is next and claiming it for this run.

        A launch for an epoch that is finalized, not next, or held by another active run fails here, before any
        work, with a message saying what to launch instead.
        """
        epoch = epoch_of(context)
        record_process(context.instance, context.run)
        with self.store() as store:
            try:
                store.claim_epoch(epoch, context.run_id, lambda run_id: run_active(context.instance, run_id))
            except ChainError as error:
                context.log.error(str(error))
                raise dg.Failure(description=str(error)) from error
        return epoch


class ComputeResource(dg.ConfigurableResource):
    """Where model compute runs; unset fields take resources/compute.yaml's (and GONKA_COMPUTE_ENGINE's) values.
    engine: local (this process) or ray (a Ray task per host's work); device: None picks CUDA when present, else CPU."""

    engine: str | None = None
    device: str | None = None
    ray_address: str | None = None
    ray_num_cpus: float | None = None
    ray_num_gpus: float | None = None

    def settings(self) -> ComputeSettings:
        return load_compute_settings(engine=self.engine, device=self.device, address=self.ray_address,
                                     num_cpus=self.ray_num_cpus, num_gpus=self.ray_num_gpus)

    def environment(self, context: dg.AssetExecutionContext, chain: ChainResource) -> EpochEnvironment:
        """The run's epoch environment, after claiming the epoch: built by the run's first step, reused by the others."""
        epoch = chain.claim(context)
        settings = self.settings()
        key = (context.run_id, str(chain.layout.database), epoch, settings)
        if key not in _ENVIRONMENTS:
            _ENVIRONMENTS.clear()  # one run at a time per process: keep only the current run's
            with chain.store(read_only=True) as store:
                _ENVIRONMENTS[key] = build_environment(store, chain.layout, epoch, settings=settings)
            context.log.info(f"compute: engine {settings.engine}, device {settings.device or 'auto'}")
        return _ENVIRONMENTS[key]


_ENVIRONMENTS: dict[tuple[str, str, int, ComputeSettings], EpochEnvironment] = {}
"""The current run's environment (steps of a run share a process under the in-process executor)."""
