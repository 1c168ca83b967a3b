"""The one partitioning of the pipeline: one dynamic partition per epoch, keyed by block height."""

import dagster as dg

EPOCHS = "epochs"
epochs = dg.DynamicPartitionsDefinition(name=EPOCHS)


def epoch_of(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext) -> int:
    """The epoch (block height) a step runs for, from its partition key."""
    key = context.partition_key if isinstance(context, dg.AssetExecutionContext) else context.run.tags.get("dagster/partition")
    if key is None or not key.isdigit():
        raise dg.Failure(f"epoch partition key must be a block height (a non-negative integer), got {key!r}")
    return int(key)
