"""Run epochs headlessly through Dagster, on the persistent instance the UI shows."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg

from gonka_pipelines.chain.store import ChainStore
from gonka_pipelines.chain.verify import Anchor
from gonka_pipelines.local.config import ConfigError
from gonka_pipelines.local.paths import RESOURCES, DataLayout

if TYPE_CHECKING:
    from gonka_pipelines.defs.resources import ComputeResource

DAGSTER_YAML = RESOURCES / "dagster.yaml"
STORAGE_ENV = "GONKA_DAGSTER_STORAGE"
INSTANCE_TEMPLATES = {"sqlite": DAGSTER_YAML, "postgres": RESOURCES / "dagster-postgres.yaml"}
"""The Dagster instances shipped, by GONKA_DAGSTER_STORAGE: files in the Dagster home (default) or PostgreSQL."""


def dagster_home_path(layout: DataLayout) -> Path:
    """$DAGSTER_HOME, else data/dagster_home (whether or not it exists yet)."""
    return Path(os.environ.get("DAGSTER_HOME") or layout.root / "dagster_home").resolve()


def dagster_home(layout: DataLayout) -> Path:
    """The Dagster home, created with the instance GONKA_DAGSTER_STORAGE names (sqlite, the default, or postgres)
    when missing; a home made for other storage than the variable asks for is an error naming both."""
    storage = os.environ.get(STORAGE_ENV) or "sqlite"
    if storage not in INSTANCE_TEMPLATES:
        raise ConfigError(f"{STORAGE_ENV}={storage!r}: unknown Dagster storage (known: {', '.join(INSTANCE_TEMPLATES)})")
    home = dagster_home_path(layout)
    home.mkdir(parents=True, exist_ok=True)
    instance = home / "dagster.yaml"
    if not instance.exists():
        shutil.copyfile(INSTANCE_TEMPLATES[storage], instance)
    elif os.environ.get(STORAGE_ENV) and ("postgres:" in instance.read_text()) != (storage == "postgres"):
        raise ConfigError(f"{instance} was made for other storage than {STORAGE_ENV}={storage}: remove it (the runs it "
                         "recorded go with it) or set DAGSTER_HOME to another folder")
    return home


def recorded_anchors(layout: DataLayout) -> dict[int, Anchor] | None:
    """The block hash and signer-set hash Dagster recorded for each finalized height (the `block` asset's metadata), or
    None when this chain has no Dagster instance yet. Kept outside the chain database, they anchor it against
    truncation and against a dropped signature on the head."""
    home = dagster_home_path(layout)
    if not (home / "dagster.yaml").exists():
        return None
    anchors: dict[int, Anchor] = {}
    with dg.DagsterInstance.from_config(str(home)) as instance:
        cursor = None
        while True:
            page = instance.fetch_materializations(dg.AssetKey("block"), limit=10_000, cursor=cursor, ascending=True)
            for record in page.records:
                materialization = record.asset_materialization
                if materialization is not None and materialization.partition and "block_hash" in materialization.metadata:
                    metadata = materialization.metadata
                    signatures = metadata.get("signatures_hash")
                    anchors[int(materialization.partition)] = Anchor(
                        str(metadata["block_hash"].value), None if signatures is None else str(signatures.value))
            if not page.has_more:
                return anchors
            cursor = page.cursor


def dagster_instance(layout: DataLayout) -> dg.DagsterInstance:
    return dg.DagsterInstance.from_config(str(dagster_home(layout)))


def register_next_epoch(layout: DataLayout, epoch: int) -> None:
    """Add the next epoch's partition to the Dagster instance, so the UI shows it ready to launch."""
    from gonka_pipelines.defs.partitions import EPOCHS

    dagster_instance(layout).add_dynamic_partitions(EPOCHS, [str(epoch)])


@dataclass(frozen=True)
class EpochRun:
    """One launched epoch: success only when every step ran; refused names why the chain turned the launch down."""

    epoch: int
    run_id: str
    success: bool
    refused: str | None = None


StepEvent = Callable[[str, bool], None]
"""Called as each step of an epoch's run ends: (step key, succeeded)."""


def run_next_epoch(layout: DataLayout, instance: dg.DagsterInstance, log_level: str = "WARNING",
                   on_step: StepEvent | None = None, compute: ComputeResource | None = None) -> EpochRun:
    """Materialize every asset of the head's successor as one run of the `epoch` job; on_step hears each step end;
    `compute` replaces the code location's compute resource (another engine, say)."""
    from gonka_pipelines.definitions import defs
    from gonka_pipelines.defs.partitions import EPOCHS
    from gonka_pipelines.defs.resources import REFUSED_TAG, ChainResource
    from gonka_pipelines.defs.runs import PROCESS_TAG, reap_dead_runs, this_process

    reap_dead_runs(instance)  # a killed run must not hold the chain pool or the epoch
    with ChainStore.open(layout.database, read_only=True) as store:
        epoch = store.head().height + 1
    instance.add_dynamic_partitions(EPOCHS, [str(epoch)])
    run_id = str(uuid.uuid4())
    if on_step is not None:
        instance.add_event_listener(run_id, partial(_step_ended, on_step))
    result = defs.resolve_job_def("epoch").execute_in_process(
        instance=instance, partition_key=str(epoch),
        resources={"chain": ChainResource(data_dir=str(layout.root)), **({"compute": compute} if compute else {})},
        run_config={"loggers": {"console": {"config": {"log_level": log_level}}}}, raise_on_error=False,
        tags={PROCESS_TAG: this_process()}, run_id=run_id,
    )
    run = instance.get_run_by_id(result.run_id)
    refused = run.tags.get(REFUSED_TAG) if run else None
    return EpochRun(epoch, result.run_id, result.success and refused is None, refused)


def _step_ended(on_step: StepEvent, entry: dg.EventLogEntry) -> None:
    """Tell on_step of a step's end. Dagster re-raises a listener's error into the run, so a failing report (a closed
    stdout, say) is dropped here: the epoch must not fail because nobody is watching it."""
    event = entry.dagster_event
    if event is not None and event.step_key and event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE"):
        try:
            on_step(event.step_key, event.event_type_value == "STEP_SUCCESS")
        except Exception:  # noqa: BLE001 - any failure to report is the watcher's, never the epoch's
            pass


def epoch_step_count() -> int:
    """How many steps a run of the `epoch` job has."""
    from gonka_pipelines.definitions import defs

    return len(defs.resolve_job_def("epoch").graph.nodes)
