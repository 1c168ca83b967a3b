"""The network's model as Dagster assets: the training corpus it learns from, and per epoch its model versions with
the numbers the UI plots across epochs (served held-out loss, the best new version's loss curve) and their lineage."""

from typing import Any

import dagster as dg

from gonka_pipelines.defs.partitions import epoch_of, epochs
from gonka_pipelines.defs.resources import ChainResource
from gonka_pipelines.local.corpus import manifest
from gonka_pipelines.protocol.records import TaskOutcome

CURVE_POINTS = (0, 25, 50, 75, 100)
"""Where along a training run its loss is reported as a number (per cent of its steps), so runs of any length plot
on the same keys."""

corpus_shards = dg.AssetSpec(
    "corpus_shards", group_name="training", kinds={"parquet"}, owners=["team:gonka-training"],
    description="The training corpus (resources/corpus/): content-addressed shards registered at genesis. Training tasks "
                "name shards by hash; validators score new versions on the held-out shard.",
    metadata={"shards": dg.MetadataValue.table(
        [dg.TableRecord({"name": s.name, "role": s.role, "bytes": s.bytes, "hash": s.hash}) for s in manifest()],
        dg.TableSchema([dg.TableColumn("name"), dg.TableColumn("role"), dg.TableColumn("bytes", "int"), dg.TableColumn("hash")]))},
)


def loss_curve_points(losses: list[float]) -> dict[str, float]:
    """A loss curve as numbers at fixed fractions of its steps (train_loss_0pct ... train_loss_100pct)."""
    return {f"train_loss_{point}pct": losses[round(point / 100 * (len(losses) - 1))] for point in CURVE_POINTS}


def version_metadata(epoch: int, served: dict[str, str], versions: dict[str, dict[str, Any]], trainings: list[dict[str, Any]],
                     shard_names: dict[str, str]) -> dict[str, Any]:
    """What one epoch's model_versions materialization shows: counts, the served version's held-out loss, the best new
    version's losses, every new version's lineage and every training task's loss curve."""
    new = [v for v in versions.values() if v["epoch"] == epoch]
    serving = versions[served[min(served)]]
    metadata: dict[str, Any] = {
        "dagster/row_count": len(new), "new_versions": len(new), "training_tasks": len(trainings),
        "trainings_invalidated": sum(t["outcome"] == TaskOutcome.INVALIDATED for t in trainings),
        "served_version": serving["version"][:12], "served_eval_loss": serving["eval_loss"],
        "served_trained_in_epoch": serving["epoch"],
        "lineage": dg.MetadataValue.table(
            [dg.TableRecord({"version": v["version"][:12], "parent": v["parent"][:12], "epoch": v["epoch"],
                             "task": v["task_id"][:12], "executor": v["executor_name"],
                             "shards": ", ".join(f"{shard_names.get(s, '?')} {s[:8]}" for s in v["shards"]),
                             "final_loss": round(v["final_loss"], 4), "eval_loss": round(v["eval_loss"], 4),
                             "served": v["version"] in served.values()}) for v in new],
            dg.TableSchema([dg.TableColumn("version"), dg.TableColumn("parent"), dg.TableColumn("epoch", "int"),
                            dg.TableColumn("task"), dg.TableColumn("executor"), dg.TableColumn("shards"),
                            dg.TableColumn("final_loss", "float"), dg.TableColumn("eval_loss", "float"),
                            dg.TableColumn("served", "bool")])),
        "loss_curves": dg.MetadataValue.table(
            [dg.TableRecord({"task": t["task_id"][:12], "executor": t["executor_name"], "status": t["status"],
                             "outcome": t["outcome"] or "-", "version": t["version"][:12] or "-",
                             "losses": " ".join(f"{loss:.3f}" for loss in t["losses"])}) for t in trainings],
            dg.TableSchema([dg.TableColumn(name) for name in ("task", "executor", "status", "outcome", "version", "losses")])),
    }
    if new:
        best = min(new, key=lambda v: (v["eval_loss"], v["version"]))
        curve = next(t["losses"] for t in trainings if t["task_id"] == best["task_id"])
        metadata |= {"best_new_eval_loss": best["eval_loss"], "best_new_final_loss": best["final_loss"]} | loss_curve_points(curve)
    return metadata


@dg.asset(partitions_def=epochs, pool="chain", group_name="training", kinds={"duckdb"}, owners=["team:gonka-training"],
          deps=["task_verdicts", corpus_shards],
          description="The model versions the epoch's validated training produced, with lineage to task, executor, shards and "
                      "epoch, and the version the network serves next (training.served_rule). Read-only: re-materialize any "
                      "validated epoch to refresh its plots.")
def model_versions(context: dg.AssetExecutionContext, chain: ChainResource) -> dg.MaterializeResult:
    epoch = epoch_of(context)
    with chain.store(read_only=True) as store:
        served = store.served_versions(epoch)
        if not served:
            raise dg.Failure(f"epoch {epoch} has no model versions yet: its task_verdicts step has not run (launch epoch {epoch})")
        versions = {v["version"]: v for v in store.version_rows()}
        trainings, shard_names = store.training_report(epoch), store.shard_names()
    return dg.MaterializeResult(metadata=version_metadata(epoch, served, versions, trainings, shard_names))
