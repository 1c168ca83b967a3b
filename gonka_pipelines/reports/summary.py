"""The chain summary `gonka demo` and `gonka summary` print: one line per block, one per host."""

from __future__ import annotations

from gonka_pipelines.chain.store import FINALIZED, ChainStore


def block_summaries(store: ChainStore) -> list[dict]:
    """One row per finalized block: height, hash prefix, tasks accepted, rejections by reason, signers."""
    rejected = {}
    for epoch, reason, count in store.query("SELECT epoch, reason, count(*) FROM rejected_tasks GROUP BY 1, 2 ORDER BY 1, 2"):
        rejected.setdefault(epoch, {})[reason] = count
    rows = store.records(
        """SELECT b.height, b.hash,
                  (SELECT count(*) FROM tasks t WHERE t.epoch = b.height) AS accepted,
                  (SELECT count(*) FROM block_signatures s WHERE s.height = b.height) AS signers
           FROM blocks b WHERE b.status = ? ORDER BY b.height""", [FINALIZED])
    return [row | {"rejected": rejected.get(row["height"], {})} for row in rows]


def format_summary(rows: list[dict]) -> str:
    """A plain-text table of block_summaries."""
    lines = [f"{'height':>6}  {'hash':<14}  {'accepted':>8}  {'signers':>7}  rejected by reason", "-" * 78]
    for row in rows:
        reasons = ", ".join(f"{reason} {count}" for reason, count in row["rejected"].items()) or "-"
        lines.append(f"{row['height']:>6}  {row['hash'][:12] + '…':<14}  {row['accepted']:>8}  {row['signers']:>7}  {reasons}")
    return "\n".join(lines)


def host_summaries(store: ChainStore) -> list[dict]:
    """Per host over all finalized epochs: how often its sprint was rejected, it was INVALID or its claim refused."""
    return store.records(
        """SELECT h.name, h.behaviour,
                  count(*) FILTER (w.hits > 0 AND NOT w.sprint_accepted) AS sprints_rejected,
                  count(*) FILTER (r.status = 'INVALID') AS epochs_invalid,
                  count(*) FILTER (NOT r.claimed) AS claims_refused,
                  coalesce(sum(r.payout), 0) AS paid
           FROM hosts h
           JOIN epoch_weights w ON w.address = h.address
           JOIN rewards r ON r.address = w.address AND r.epoch = w.epoch
           JOIN blocks b ON b.height = w.epoch AND b.status = ?
           GROUP BY h.name, h.behaviour ORDER BY h.name""", [FINALIZED])


def format_hosts(rows: list[dict]) -> str:
    """A plain-text table of host_summaries with a verdict: adversaries should be caught, honest hosts never flagged."""
    lines = [f"{'host':<14} {'behaviour':<15} {'sprint rejected':>15} {'INVALID':>8} {'claim refused':>13} {'paid (base units)':>20}  verdict",
             "-" * 100]
    for row in rows:
        flagged = row["sprints_rejected"] + row["epochs_invalid"] + row["claims_refused"] > 0
        verdict = ("caught" if flagged else "NOT CAUGHT") if row["behaviour"] != "honest" else ("FLAGGED" if flagged else "ok")
        lines.append(f"{row['name']:<14} {row['behaviour']:<15} {row['sprints_rejected']:>15} {row['epochs_invalid']:>8} "
                     f"{row['claims_refused']:>13} {row['paid']:>20,}  {verdict}")
    return "\n".join(lines)
