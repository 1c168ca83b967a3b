"""Merkle trees over row hashes with inclusion proofs that verify against a header root.

Leaves and nodes are domain-separated (RFC 6962 prefixes); an odd node at the end of a level is
carried up unchanged, so no leaf is ever duplicated (the Bitcoin duplication bug cannot occur). Levels are hashed in C
(_sha256.c: a million-leaf tree is two million hashes); node_hash is the same rule one node at a time.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from gonka_pipelines.protocol import _sha256

LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
EMPTY_ROOT = hashlib.sha256(b"").hexdigest()
DIGEST_BYTES = 32
"""The length of a leaf's or node's digest (SHA-256), as leaves given end to end lie."""


def leaf_hash(data: bytes) -> str:
    """Leaves and inner nodes are hashed with different prefixes, so a node can never pose as a leaf."""
    return leaf_digest(data).hex()


def leaf_digest(data: bytes) -> bytes:
    """leaf_hash as 32 raw bytes."""
    return hashlib.sha256(LEAF_PREFIX + data).digest()


def node_hash(left: str, right: str) -> str:
    """One inner node over two hex hashes (what _sha256.c does for a whole level at once)."""
    return hashlib.sha256(NODE_PREFIX + bytes.fromhex(left) + bytes.fromhex(right)).hexdigest()


def merkle_root(leaves: list[str]) -> str:
    """Root over leaf hashes; the empty set has SHA-256("") and one leaf is its own root."""
    return merkle_root_of_digests([bytes.fromhex(leaf) for leaf in leaves])


def merkle_root_of_digests(leaves: list[bytes] | tuple[bytes, ...] | bytes | memoryview) -> str:
    """merkle_root over raw 32-byte leaf digests (a list of them, or one buffer of them end to end); hex only for the root."""
    return _sha256.root(leaves).hex() if len(leaves) else EMPTY_ROOT


def digest_runs(digests: bytes, counts: Iterable[int]) -> Iterator[memoryview]:
    """Digests given end to end, cut into consecutive runs of these many each (every signer's leaves, a signer's run
    each), as views: no copy, and no bytes object a digest."""
    view, start = memoryview(digests), 0
    for count in counts:
        yield view[DIGEST_BYTES * start:DIGEST_BYTES * (start + count)]
        start += count


@dataclass(frozen=True)
class MerkleProof:
    """Path from one leaf to the root: each step is the sibling hash and whether it sits on the left."""

    index: int
    leaf_count: int
    steps: tuple[tuple[str, str], ...]

    def as_dict(self) -> dict:
        return {"index": self.index, "leaf_count": self.leaf_count, "steps": [list(step) for step in self.steps]}


def build_proof(leaves: list[str], index: int) -> MerkleProof:
    """Proof for leaves[index], matching the pairing that merkle_root uses level by level."""
    if not 0 <= index < len(leaves):
        raise IndexError(f"leaf {index} not in a tree of {len(leaves)} leaves")
    steps: list[tuple[str, str]] = []
    level, count, position = b"".join(bytes.fromhex(leaf) for leaf in leaves), len(leaves), index
    while count > 1:
        sibling = position ^ 1
        if sibling < count:
            steps.append(("left" if sibling < position else "right", level[32 * sibling:32 * sibling + 32].hex()))
        level, count, position = _sha256.next_level(level), (count + 1) // 2, position // 2
    return MerkleProof(index, len(leaves), tuple(steps))


def verify_proof(leaf: str, proof: MerkleProof, root: str) -> bool:
    """Recompute the root from a leaf hash and its proof."""
    current = leaf
    for side, sibling in proof.steps:
        current = node_hash(sibling, current) if side == "left" else node_hash(current, sibling)
    return current == root
