"""What each explorer page shows, read from one chain store: plain dicts the templates lay out.

Every page reads finalized state only (the copy's head and below). Amounts stay integers in base units here; the
templates show them in GNK with the base units on hover.
"""

from __future__ import annotations

import base64
from typing import Any

from gonka_pipelines.chain.proofs import prove_row
from gonka_pipelines.chain.store import FINALIZED, ChainError, ChainStore
from gonka_pipelines.explorer.charts import line_chart, outcome_strip
from gonka_pipelines.protocol.crypto import canonical_row_bytes
from gonka_pipelines.reports.explain import explain_payout

RECENT_BLOCKS = 20
PROVEN_PAYOUTS = 20
"""A host page derives and proves its latest payouts, this many epochs (older ones: /host/NAME?epoch=E)."""


class NotFound(ChainError):
    """A page for something the chain does not hold; the message says what it holds instead."""


def overview(store: ChainStore) -> dict[str, Any]:
    head = store.head()
    next_status = store.epoch_status(head.height + 1)
    return {"head": head, "head_block": store.block(head.height),
            "next_epoch": head.height + 1, "next_status": (next_status or "not started").lower(),
            "supply": store.supply(head.height), "blocks": store.recent_blocks(RECENT_BLOCKS),
            "hosts": store.host_table(head.height)}


def block_page(store: ChainStore, height: int) -> dict[str, Any]:
    block = store.block(height)
    if block is None or block["status"] != FINALIZED:
        raise NotFound(f"no finalized block at height {height}; the head is {store.head().height}")
    names = store.account_names()
    signed = sum(s["weight"] for s in block["signatures"])
    total = sum(store.weights(height - 1).values()) if height > 0 else signed
    counts = store.committed_counts(height)
    roots = [{"name": name, "root": root, "rows": counts.get(name, 0)} for name, root in sorted(block["header"]["roots"].items())]
    emission = store.emission(height) if counts["emissions"] else None
    return {"block": block, "header": block["header"], "roots": roots, "counts": counts,
            "signers": [{**s, "name": names.get(s["signer"], s["signer"])} for s in block["signatures"]],
            "signed_weight": signed, "total_weight": total, "emission": emission,
            "rejections": store.rejections_by_epoch(height).get(height, {}),
            "has_next": store.epoch_status(height + 1) == FINALIZED}


def host_page(store: ChainStore, host: str, epoch: int | None = None) -> dict[str, Any]:
    try:
        name, address = store.resolve_host(host)
    except ChainError as error:
        raise NotFound(str(error)) from error
    base = store.genesis().token.base_units
    history = store.host_history(address)
    epochs = [row["epoch"] for row in history]
    share = [100 * row["weight"] / row["total_weight"] if row["total_weight"] else 0.0 for row in history]

    def in_gnk(key: str) -> list[float]:
        return [row[key] / base for row in history]

    charts = [(title, line_chart(title, epochs, values, integer)) for title, values, integer in (
        ("weight", [row["weight"] for row in history], True),
        ("weight share (%)", share, False),
        ("reward (GNK)", in_gnk("reward"), False),
        ("work coins (GNK)", in_gnk("work_coins"), False),
        ("payout (GNK)", in_gnk("payout"), False),
        ("reputation", [row["reputation"] for row in history], True),
        ("PoC hits", [row["hits"] for row in history], True),
    )]
    strips = [
        outcome_strip("status", epochs, [row["status"] for row in history]),
        outcome_strip("sprint", epochs, ["-" if not row["hits"] else "accepted" if row["sprint_accepted"] else "REJECTED"
                                         for row in history]),
        outcome_strip("claim", epochs, ["claimed" if row["claimed"] else "REFUSED" for row in history]),
    ]
    proven = [epoch] if epoch is not None else list(reversed(epochs))[:PROVEN_PAYOUTS]
    if epoch is not None and epoch not in epochs:
        raise NotFound(f"{name} has no payout in a finalized epoch {epoch}; its epochs: {', '.join(map(str, epochs)) or 'none'}")
    payouts = [payout_proof(store, name, address, e) for e in proven]
    return {"name": name, "address": address, "history": list(reversed(history)), "charts": charts, "strips": strips,
            "payouts": payouts, "older": len(epochs) - len(proven) if epoch is None else 0,
            "total_paid": sum(row["payout"] for row in history)}


def payout_proof(store: ChainStore, name: str, address: str, epoch: int) -> dict[str, Any]:
    """One payout's derivation and the Merkle proof of its rewards row, with the row's canonical bytes so the page
    can hash the leaf itself and climb to the root in the block header."""
    explanation = explain_payout(store, name, epoch)
    proof = prove_row(store, "rewards", address, epoch)
    leaf_bytes = canonical_row_bytes({"commitment": proof["commitment"], **proof["row"]})
    return {"epoch": epoch, "explanation": explanation, "proof": proof,
            "leaf_bytes": base64.b64encode(leaf_bytes).decode(), "leaf_text": leaf_bytes.decode()}


def account_page(store: ChainStore, key: str) -> dict[str, Any]:
    head = store.head().height
    address = next((a for a, n in store.account_names().items() if key in (a, n)), key)
    account = store.account_view(address, head)
    if account is None:
        raise NotFound(f"no account {key!r}; search by name or by an address prefix")
    return {"account": account, "height": head}


def task_page(store: ChainStore, prefix: str) -> dict[str, Any]:
    if len(prefix) < 6:
        raise NotFound(f"{prefix!r} is too short: give 6 or more hex digits of a submission or task id")
    fates = store.submission_fates(prefix, finalized_only=True)
    if not fates:
        raise NotFound(f"no submission or task id of a finalized epoch starts with {prefix!r}")
    return {"prefix": prefix, "fates": fates, "addresses": {n: a for a, n in store.account_names().items()}}
