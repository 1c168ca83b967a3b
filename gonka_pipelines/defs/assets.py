"""One asset per stage of the registry, in its order: each claims the epoch, runs its stage, and shows its metadata."""

from collections.abc import Iterator

import dagster as dg

from gonka_pipelines.defs.metadata import RENDER
from gonka_pipelines.defs.partitions import EPOCHS, epochs
from gonka_pipelines.defs.resources import ChainResource, ComputeResource
from gonka_pipelines.local.failpoints import failpoint
from gonka_pipelines.stages.registry import BY_NAME, STAGES, Stage

OWNERS = {"intake": "team:gonka-core", "sprint": "team:gonka-sprint", "inference": "team:gonka-inference",
          "rewards": "team:gonka-economics", "block": "team:gonka-core"}


def stage_asset(stage: Stage, previous: Stage | None) -> dg.AssetsDefinition:
    """The asset of one stage: after its predecessor, in the `chain` pool (one writer at a time). A launch the chain
    refuses yields nothing, so Dagster skips this step and every later one instead of failing them."""

    @dg.asset(name=stage.name, partitions_def=epochs, pool="chain", group_name=stage.group,
              kinds={"pytorch", "duckdb"} if stage.computes else {"duckdb"}, owners=[OWNERS[stage.group]],
              deps=[previous.name] if previous else [], description=stage.description, output_required=False)
    def materialize(context: dg.AssetExecutionContext, chain: ChainResource,
                    compute: ComputeResource) -> Iterator[dg.MaterializeResult]:
        env = compute.environment(context, chain)
        if env is None:
            return
        result = BY_NAME[stage.name].run(env, chain.store, context.log.info)
        failpoint(f"asset.{stage.name}.done")  # tests kill the run here, between one asset and the next
        with chain.store(read_only=True) as store:
            metadata = RENDER[stage.name](env, store, result)
        if stage is STAGES[-1]:
            context.instance.add_dynamic_partitions(EPOCHS, [str(env.epoch + 1)])
        yield dg.MaterializeResult(metadata=metadata)

    return materialize


EPOCH_ASSETS = [stage_asset(stage, previous) for previous, stage in zip((None, *STAGES), STAGES)]
