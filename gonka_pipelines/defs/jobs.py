"""Jobs: one epoch, every stage in order, on one partition."""

import dagster as dg

from gonka_pipelines.defs.partitions import epochs

epoch_job = dg.define_asset_job(
    "epoch", selection=dg.AssetSelection.all(), partitions_def=epochs,
    description="One epoch end to end: collect → sprint → verdicts → weights → task results → task verdicts → rewards → block proposal → finalized block. Launch the partition of the next height.",
)
