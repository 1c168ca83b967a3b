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

REFUSED_TAG = "gonka/refused"
"""Run tag of a launch the chain refused (epoch finalized, not next, or held by another run): why, and what to launch."""


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

    def claim(self, context: dg.AssetExecutionContext) -> int | None:
        """The step's epoch, after checking the epoch is next and claiming it for this run; None when refused.

        A launch for an epoch that is finalized, not next, or held by another active run is refused here, before any
        work: the run is tagged `gonka/refused` with the message saying what to launch instead, and the caller skips
        its step (and so every later one), so nothing turns red for a wrong pick in the partition list.
        """
        epoch = epoch_of(context)
        record_process(context.instance, context.run)
        with self.store() as store:
            try:
                store.claim_epoch(epoch, context.run_id, lambda run_id: run_active(context.instance, run_id))
            except ChainError as error:
                message = f"nothing done: {error}"
                context.log.warning(message)
                context.instance.add_run_tags(context.run_id, {REFUSED_TAG: message})
                return None
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

    def environment(self, context: dg.AssetExecutionContext, chain: ChainResource) -> EpochEnvironment | None:
        """The run's epoch environment, after claiming the epoch: built by the run's first step, reused by the others;
        None when the claim was refused."""
        epoch = chain.claim(context)
        if epoch is None:
            return None
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
