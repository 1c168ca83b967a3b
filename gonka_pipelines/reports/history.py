"""For auditors: one host across epochs (`gonka host NAME`) and the fate of one submission (`gonka status ID`)."""

from __future__ import annotations

from typing import Any

from gonka_pipelines.chain.store import ChainError, ChainStore
from gonka_pipelines.reports.units import TABLE_PLACES, gnk


def format_host_history(store: ChainStore, host: str) -> str:
    """A table of the host's finalized epochs (ChainStore.host_history), amounts in GNK, and its totals."""
    name, address = store.resolve_host(host)
    base = store.genesis().token.base_units
    rows = store.host_history(address)
    amount = max([len(gnk(r[k], base, TABLE_PLACES)) for r in rows for k in ("reward", "work_coins", "slashed", "payout")] + [14])
    header = (f"{'epoch':>5}  {'status':<8} {'rep':>3}  {'hits':>5} {'sprint':<8} {'weight share':>12}  "
              f"{'tasks':>5} {'missed':>6} {'checked':>7} {'invalid':>7}  {'reward GNK':>{amount}} {'work coins GNK':>{amount}} "
              f"{'slashed GNK':>{amount}}  {'claim':<7} {'payout GNK':>{amount}}")
    lines = [f"{name} ({address})", header, "-" * len(header)]
    for row in rows:
        share = f"{row['weight'] / row['total_weight']:.2%}" if row["total_weight"] else "-"
        sprint = "-" if not row["hits"] else "accepted" if row["sprint_accepted"] else "REJECTED"
        lines.append(
            f"{row['epoch']:>5}  {row['status']:<8} {_or_dash(row['reputation']):>3}  {_or_dash(row['hits']):>5} {sprint:<8} "
            f"{share:>12}  {_or_dash(row['assigned']):>5} {_or_dash(row['missed']):>6} {_or_dash(row['validated']):>7} "
            f"{_or_dash(row['invalidated']):>7}  {gnk(row['reward'], base, TABLE_PLACES):>{amount}} "
            f"{gnk(row['work_coins'], base, TABLE_PLACES):>{amount}} {gnk(row['slashed'], base, TABLE_PLACES):>{amount}}  "
            f"{'claimed' if row['claimed'] else 'REFUSED':<7} {gnk(row['payout'], base, TABLE_PLACES):>{amount}}")
    if not rows:
        lines.append("no finalized epoch yet")
    else:
        lines.append(f"total paid over {len(rows)} epoch(s): {gnk(sum(r['payout'] for r in rows), base)} GNK "
                     f"(`gonka explain {name} EPOCH` derives one epoch's payout)")
    return "\n".join(lines)


def _or_dash(value: Any) -> str:
    return "-" if value is None else str(value)


def format_submission_fates(store: ChainStore, prefix: str, missing_ok: bool = False) -> str:
    """What became of the submission(s) whose id or task id starts with prefix; when none does, an error (or, with
    missing_ok, nothing)."""
    fates = store.submission_fates(prefix)
    if not fates:
        if missing_ok:
            return ""
        raise ChainError(f"no submission or task id starts with {prefix!r}")
    base = store.genesis().token.base_units
    return "\n\n".join(_fate(fate, base) for fate in fates)


def _fate(fate: dict[str, Any], base: int) -> str:
    lines = [f"submission {fate['submission_id']}: epoch {fate['epoch']} (block {fate['block']}), {fate['outcome'].upper()}"]
    if fate["reason"]:
        lines.append(f"  rejected: {fate['reason']}: {fate['detail']} (kept with its bytes in rejected_tasks)")
        return "\n".join(lines)
    lines.append(f"  {fate['kind']} task {fate['task_id']} from {fate['developer']}, escrow {gnk(fate['escrow'], base)} GNK")
    result = fate["result"]
    if result is None:
        lines.append("  not executed yet")
        return "\n".join(lines)
    lines.append(f"  executed by {result['executor'] or '(no host serves its model)'}: {result['status']}, "
                 f"cost {gnk(result['cost'], base)} GNK, refund {gnk(result['refund'], base)} GNK")
    outcome = fate["outcome_row"]
    if outcome:
        lines.append(f"  validation: {outcome['outcome'].upper()} ({outcome['validations']} check(s), {outcome['failures']} "
                     f"failed, invalid-vote weight {outcome['invalid_vote_weight']})")
    lines += [f"    {v['validator']}: {'pass' if v['passed'] else 'FAIL'} ({v['reason']})" for v in fate["verdicts"]]
    if fate["fee_shares"]:
        lines.append("  fee shares: " + ", ".join(f"{f['host']} ({f['role']}) {gnk(f['amount'], base)} GNK" for f in fate["fee_shares"]))
    lines += [f"  transfer in epoch {t['epoch']}: {t['kind']}, balance {gnk(t['balance_delta'], base)} GNK, "
              f"escrow {gnk(t['escrow_delta'], base)} GNK" for t in fate["transfers"]]
    return "\n".join(lines)
