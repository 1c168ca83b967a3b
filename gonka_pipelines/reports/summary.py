"""The chain summary `gonka demo` and `gonka summary` print: one line per block, one per host."""

from __future__ import annotations

from gonka_pipelines.chain.store import ChainStore
from gonka_pipelines.reports.units import TABLE_PLACES, gnk


def block_summaries(store: ChainStore) -> list[dict]:
    """One row per finalized block: height, hash prefix, tasks accepted, rejections by reason, signers, and the held-out
    loss of the served model after it (the first model's, by name)."""
    rejected, losses = store.rejections_by_epoch(), store.served_losses()

    def served_loss(height: int) -> float | None:
        by_model = losses.get(height, {})
        return by_model[min(by_model)] if by_model else None

    return [row | {"rejected": rejected.get(row["height"], {}), "served_loss": served_loss(row["height"])}
            for row in store.finalized_blocks()]


def format_summary(rows: list[dict]) -> str:
    """A plain-text table of block_summaries."""
    lines = [f"{'height':>6}  {'hash':<14}  {'accepted':>8}  {'signers':>7}  {'served loss':>11}  rejected by reason", "-" * 91]
    for row in rows:
        reasons = ", ".join(f"{reason} {count}" for reason, count in row["rejected"].items()) or "-"
        loss = "-" if row["served_loss"] is None else f"{row['served_loss']:.4f}"
        lines.append(f"{row['height']:>6}  {row['hash'][:12] + '…':<14}  {row['accepted']:>8}  {row['signers']:>7}  {loss:>11}  {reasons}")
    return "\n".join(lines)


def host_summaries(store: ChainStore) -> list[dict]:
    """Per host over all finalized epochs: how often its sprint was rejected, it was INVALID or its claim refused."""
    return store.host_records()


def format_hosts(rows: list[dict], base_units: int) -> str:
    """A plain-text table of host_summaries with a verdict: adversaries should be caught, honest hosts never flagged;
    amounts in GNK (1 GNK = base_units)."""
    lines = [f"{'host':<14} {'behaviour':<15} {'sprint rejected':>15} {'INVALID':>8} {'claim refused':>13} "
             f"{'work invalidated':>16} {'paid (GNK)':>20}  verdict", "-" * 117]
    for row in rows:
        flagged = row["epochs_caught"] > 0
        verdict = ("caught" if flagged else "NOT CAUGHT") if row["behaviour"] != "honest" else ("FLAGGED" if flagged else "ok")
        lines.append(f"{row['name']:<14} {row['behaviour']:<15} {row['sprints_rejected']:>15} {row['epochs_invalid']:>8} "
                     f"{row['claims_refused']:>13} {row['epochs_invalidated']:>16} {gnk(row['paid'], base_units, TABLE_PLACES):>20}  {verdict}")
    return "\n".join(lines)


HOSTS_LEGEND = """The host columns count epochs: sprint rejected by the validators' vote, INVALID by the status rules, claim refused
(a revealed seed not matching its commitment, a required validation skipped, or a vote the outcome contradicted), work
invalidated (some task it executed failed the vote); paid is the sum of its payouts. Next: `gonka host NAME` (one host,
epoch by epoch), `gonka explain HOST EPOCH` (one payout, amount by amount), `gonka status ID` (one submission),
`make ui` (the Dagster UI)."""
"""What `gonka summary` prints under its tables: what the columns count and where to look next."""
