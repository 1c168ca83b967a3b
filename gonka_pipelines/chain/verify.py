"""Re-derive every block from its rows: hashes, links, parameter hashes, roots, post-state and signatures."""

from __future__ import annotations

import json
from dataclasses import dataclass

from gonka_pipelines.chain.commitments import epoch_roots
from gonka_pipelines.chain.store import FINALIZED, ChainStore
from gonka_pipelines.protocol.block import (
    GENESIS_PREV_HASH,
    BlockHeader,
    quorum_reached,
)
from gonka_pipelines.protocol.crypto import MessageKind, hash_value, verify


@dataclass(frozen=True)
class Inconsistency:
    height: int
    message: str

    def __str__(self) -> str:
        return f"block {self.height}: {self.message}"


def _short(digest: str) -> str:
    return digest[:12] + "…"


def _post_state_mismatch(store: ChainStore, height: int) -> str | None:
    """The accounts of a post-state must equal the previous post-state plus the epoch's transfers."""
    stored = {row.pop("address"): row for row in store.records(
        "SELECT address, balance, escrow, locked, collateral FROM account_states WHERE epoch = ? ORDER BY address", [height])}
    derived = {row.pop("address"): row for row in store.running_accounts(height)}
    for address in sorted(stored.keys() | derived.keys()):
        if stored.get(address) != derived.get(address):
            return (f"account {address} is {stored.get(address)} after the epoch, but the previous state plus the "
                    f"epoch's transfers give {derived.get(address)}")
    return None


def _load(store: ChainStore, height: int) -> tuple[BlockHeader, dict] | Inconsistency:
    block = store.block(height)
    if block is None:
        return Inconsistency(height, "no block at this height")
    return BlockHeader(**block["header"]), block


def link_problem(store: ChainStore, height: int, expected_prev_hash: str) -> Inconsistency | None:
    """The block names this chain and height, and links to the previous block (its epoch seeded by that hash)."""
    loaded = _load(store, height)
    if isinstance(loaded, Inconsistency):
        return loaded
    header, _ = loaded
    if header.height != height or header.chain_id != store.chain_id:
        return Inconsistency(height, f"header names chain {header.chain_id!r} height {header.height}")
    if header.prev_hash != expected_prev_hash:
        return Inconsistency(height, f"links to {_short(header.prev_hash)}, but the previous block is {_short(expected_prev_hash)}")
    if height > 0 and store.epoch_seed(height) != expected_prev_hash:
        return Inconsistency(height, "the epoch's seed is not the previous block hash")
    return None


def content_problem(store: ChainStore, height: int) -> Inconsistency | None:
    """The stored hash is the header's, and the header's parameter hash, roots and post-state re-derive from rows."""
    loaded = _load(store, height)
    if isinstance(loaded, Inconsistency):
        return loaded
    header, block = loaded

    def problem(message: str) -> Inconsistency:
        return Inconsistency(height, message)

    if header.hash != block["hash"]:
        return problem(f"stored hash {_short(block['hash'])} is not the hash of its header ({_short(header.hash)})")
    if header.prev_hash != block["prev_hash"]:
        return problem(f"stored previous hash {_short(block['prev_hash'])} differs from the header's ({_short(header.prev_hash)})")
    epoch = store.records("SELECT params_hash, params_json FROM epochs WHERE epoch = ?", [height])
    if not epoch:
        return problem("its epoch has no parameters row")
    if header.params_hash != epoch[0]["params_hash"] or header.params_hash != hash_value(json.loads(epoch[0]["params_json"])):
        return problem("parameter hash does not match the epoch's recorded parameters")
    for name, root in epoch_roots(store.connection, height).items():
        if header.roots.get(name) != root:
            return problem(f"the {name} root in the header is {_short(header.roots.get(name, '-'))} but the {name} "
                           f"rows of epoch {height} give {_short(root)}: a row was changed, added or removed")
    if height > 0 and (mismatch := _post_state_mismatch(store, height)):
        return problem(mismatch)
    return None


def signature_problem(store: ChainStore, height: int) -> Inconsistency | None:
    """Every signature verifies with its signer's key and in-force weight, and the signers pass 2/3."""
    loaded = _load(store, height)
    if isinstance(loaded, Inconsistency):
        return loaded
    header, block = loaded
    return _signature_problem(store, header, block["signatures"])


def verify_block(store: ChainStore, height: int, expected_prev_hash: str) -> Inconsistency | None:
    """First inconsistency of one block (finalized or proposed), or None."""
    return (link_problem(store, height, expected_prev_hash) or content_problem(store, height)
            or signature_problem(store, height))


def _signature_problem(store: ChainStore, header: BlockHeader, signatures: list[dict]) -> Inconsistency | None:
    """Every signature verifies with the signer's key, carries its in-force weight, and together they pass 2/3."""
    weights = store.weights(max(header.height - 1, 0))
    keys = dict(store.query("SELECT address, public_key FROM hosts"))
    for signature in signatures:
        signer = signature["signer"]
        if signer not in keys or not verify(keys[signer], header.chain_id, MessageKind.BLOCK, header.as_dict(), signature["signature"]):
            return Inconsistency(header.height, f"signature of {signer} does not verify")
        if signature["weight"] != weights.get(signer, 0):
            return Inconsistency(header.height, f"signature of {signer} claims weight {signature['weight']}, "
                                                f"its weight in force is {weights.get(signer, 0)}")
    signed = sum(s["weight"] for s in signatures)
    if not quorum_reached(signed, sum(weights.values())):
        return Inconsistency(header.height, f"signers hold {signed} of {sum(weights.values())} weight, not more than 2/3")
    return None


@dataclass(frozen=True)
class ChainReport:
    blocks_verified: int
    head: int
    first_problem: Inconsistency | None


def verify_chain(store: ChainStore) -> ChainReport:
    """Walk the finalized blocks from genesis, stopping at the first inconsistency."""
    heights = [h for (h,) in store.query("SELECT height FROM blocks WHERE status = ? ORDER BY height", [FINALIZED])]
    prev_hash = GENESIS_PREV_HASH
    for index, height in enumerate(heights):
        if height != index:
            return ChainReport(index, heights[-1], Inconsistency(index, "missing: the finalized heights have a gap"))
        if problem := verify_block(store, height, prev_hash):
            return ChainReport(index, heights[-1], problem)
        prev_hash = store.block(height)["hash"]
    return ChainReport(len(heights), heights[-1] if heights else -1, None)
