"""Rewards asset: the epoch's emission split by final weights, work coins, slashes and vesting, with lineage."""

import dagster as dg

from gonka_pipelines.defs.assets.inference import task_verdicts
from gonka_pipelines.defs.assets.sprint import epoch_weights
from gonka_pipelines.defs.partitions import epochs
from gonka_pipelines.defs.resources import ChainResource
from gonka_pipelines.reports.explain import explain_payout, render_markdown
from gonka_pipelines.stages.rewards import run_rewards


def payouts_table(rows: list[dict]) -> str:
    """Markdown: one row per host with its weight, status, reward, work coins and payout."""
    lines = ["| host | status | weight | reward | work coins | withheld | claim | payout |", "|---|---|---:|---:|---:|---:|---|---:|"]
    lines += [f"| {r['name']} | {r['status']} | {r['weight']} | {r['reward']:,} | {r['work_coins']:,} | {r['withheld']:,} | "
              f"{'ok' if r['claimed'] else '**refused**'} | {r['payout']:,} |" for r in rows]
    return "\n".join(lines)


@dg.asset(partitions_def=epochs, pool="chain", group_name="rewards", kinds={"duckdb", "polars"}, owners=["team:gonka-economics"],
          deps=[epoch_weights, task_verdicts],
          description="R(e) minted under the cap and split by final weights (remainder to the first address), work coins, "
                      "slashes, claims and vesting. Every payout row links to the weight and fee shares behind it; the "
                      "materialization carries each host's derivation (`gonka explain`).")
def rewards(context: dg.AssetExecutionContext, chain: ChainResource) -> dg.MaterializeResult:
    with chain.epoch_store(context) as (store, epoch):
        _, emission = run_rewards(store, chain.layout, epoch)
        rows = store.records("SELECT h.name, r.* FROM rewards r JOIN hosts h USING (address) WHERE r.epoch = ? ORDER BY h.name", [epoch])
        caught = store.scalar(
            """SELECT count(DISTINCT w.address) FROM epoch_weights w JOIN rewards r USING (epoch, address)
               WHERE w.epoch = ? AND ((w.hits > 0 AND NOT w.sprint_accepted) OR r.status = 'INVALID' OR NOT r.claimed)""", [epoch])
        derivations = "\n\n".join(render_markdown(explain_payout(store, row["name"], epoch)) for row in rows)
    return dg.MaterializeResult(metadata={
        "dagster/row_count": len(rows),
        "emission_minted": emission["minted"], "emission_scheduled": emission["scheduled"], "burned": emission["burned"],
        "fees": sum(r["work_coins"] + r["withheld"] for r in rows), "paid": sum(r["payout"] for r in rows),
        "hosts_caught": caught,
        "payouts": dg.MetadataValue.md(payouts_table(rows)),
        "derivations": dg.MetadataValue.md(derivations),
    })
