"""The chain summary `gonka demo` and `gonka summary` print: one line per block, one per host."""

from __future__ import annotations

from gonka_pipelines.chain.store import ChainStore
from gonka_pipelines.protocol.training import served_version


def block_summaries(store: ChainStore) -> list[dict]:
    """One row per finalized block: height, hash prefix, tasks accepted, rejections by reason, signers, and the held-out
    loss of the served model after it (the first model's, by name)."""
    rejected, scores = store.rejections_by_epoch(), store.version_scores()
    model = min((v.model for v in scores), default=None)

    def served_loss(height: int) -> float | None:
        known = [v for v in scores if v.epoch <= height]
        if model is None:
            return None
        version = served_version(known, model)
        return next(v.eval_loss for v in known if v.version == version)

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


def format_hosts(rows: list[dict]) -> str:
    """A plain-text table of host_summaries with a verdict: adversaries should be caught, honest hosts never flagged."""
    lines = [f"{'host':<14} {'behaviour':<15} {'sprint rejected':>15} {'INVALID':>8} {'claim refused':>13} {'paid (base units)':>20}  verdict",
             "-" * 100]
    for row in rows:
        flagged = row["epochs_caught"] > 0
        verdict = ("caught" if flagged else "NOT CAUGHT") if row["behaviour"] != "honest" else ("FLAGGED" if flagged else "ok")
        lines.append(f"{row['name']:<14} {row['behaviour']:<15} {row['sprints_rejected']:>15} {row['epochs_invalid']:>8} "
                     f"{row['claims_refused']:>13} {row['paid']:>20,}  {verdict}")
    return "\n".join(lines)
