"""Jobs: one epoch, every stage of the registry in order, on one partition (the lab's assets have their own job)."""

import dagster as dg

from gonka_pipelines.defs.lab import LAB
from gonka_pipelines.defs.partitions import epochs
from gonka_pipelines.stages.registry import STAGE_NAMES

epoch_job = dg.define_asset_job(
    "epoch", selection=dg.AssetSelection.all() - dg.AssetSelection.groups(LAB), partitions_def=epochs,
    description=f"One epoch end to end: {' → '.join(STAGE_NAMES)}. Launch the partition of the next height.",
)
