"""Jobs: one epoch, every stage of the registry in order, on one partition (the lab's assets have their own job)."""

import json
import os

import dagster as dg

from gonka_pipelines.defs.lab import LAB
from gonka_pipelines.defs.partitions import epochs
from gonka_pipelines.local.config import ConfigError
from gonka_pipelines.stages.registry import STAGE_NAMES

RUN_GPUS_ENV = "GONKA_RUN_GPUS"
OPERATIONS = "operations"
"""The group of operator assets that are no stage of an epoch (next_epoch_request)."""
K8S_CONFIG_TAG = "dagster-k8s/config"


def run_pod_tags(gpus: str | None) -> dict[str, str]:
    """Run tags that give each epoch's pod under the K8s run launcher this many GPUs (models run in the run's process
    with compute.engine local; with Ray the GPUs belong to the Ray workers). None or 0: no tag."""
    try:
        count = int(gpus or 0)
    except ValueError:
        raise ConfigError(f"{RUN_GPUS_ENV}={gpus!r}: expected a whole number of GPUs per run pod") from None
    if count < 0:
        raise ConfigError(f"{RUN_GPUS_ENV}={gpus!r}: expected a whole number of GPUs per run pod")
    limits = {"nvidia.com/gpu": str(count)}
    return {K8S_CONFIG_TAG: json.dumps({"container_config": {"resources": {"requests": limits, "limits": limits}}})} if count else {}


epoch_job = dg.define_asset_job(
    "epoch", selection=dg.AssetSelection.all() - dg.AssetSelection.groups(LAB, OPERATIONS), partitions_def=epochs,
    description=f"One epoch end to end: {' → '.join(STAGE_NAMES)}. Launch the partition of the next height.",
    tags=run_pod_tags(os.environ.get(RUN_GPUS_ENV)),
)
