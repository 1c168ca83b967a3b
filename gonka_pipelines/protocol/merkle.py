"""Merkle trees over row hashes with inclusion proofs that verify against a header root.

Leaves and nodes are domain-separated (RFC 6962 prefixes); an odd node at the end of a level is
carried up unchanged, so no leaf is ever duplicated (the Bitcoin duplication bug cannot occur).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
EMPTY_ROOT = hashlib.sha256(b"").hexdigest()


def leaf_hash(data: bytes) -> str:
    """Leaves and inner nodes are hashed with different prefixes, so a node can never pose as a leaf."""
    return leaf_digest(data).hex()


def leaf_digest(data: bytes) -> bytes:
    """leaf_hash as 32 raw bytes."""
    return hashlib.sha256(LEAF_PREFIX + data).digest()


def node_hash(left: str, right: str) -> str:
    return _node_digest(bytes.fromhex(left), bytes.fromhex(right)).hex()


def _node_digest(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def _next_level(level: list[bytes]) -> list[bytes]:
    """Hash neighbours pairwise; a lone last node moves up as it is (the hash inlined: a million nodes a level)."""
    sha256, neighbours = hashlib.sha256, iter(level)
    paired = [sha256(NODE_PREFIX + left + right).digest() for left, right in zip(neighbours, neighbours)]
    if len(level) % 2:
        paired.append(level[-1])
    return paired


def merkle_root(leaves: list[str]) -> str:
    """Root over leaf hashes; the empty set has SHA-256("") and one leaf is its own root."""
    return merkle_root_of_digests([bytes.fromhex(leaf) for leaf in leaves])


def merkle_root_of_digests(leaves: list[bytes]) -> str:
    """merkle_root over raw 32-byte leaf digests: levels stay bytes, hex only for the root."""
    if not leaves:
        return EMPTY_ROOT
    level = leaves
    while len(level) > 1:
        level = _next_level(level)
    return level[0].hex()


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
    level, position = [bytes.fromhex(leaf) for leaf in leaves], index
    while len(level) > 1:
        sibling = position ^ 1
        if sibling < len(level):
            steps.append(("left" if sibling < position else "right", level[sibling].hex()))
        level, position = _next_level(level), position // 2
    return MerkleProof(index, len(leaves), tuple(steps))


def verify_proof(leaf: str, proof: MerkleProof, root: str) -> bool:
    """Recompute the root from a leaf hash and its proof."""
    current = leaf
    for side, sibling in proof.steps:
        current = node_hash(sibling, current) if side == "left" else node_hash(current, sibling)
    return current == root
