"""Merkle roots and inclusion proofs: odd levels carried up, leaves and nodes domain-separated."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gonka_pipelines.protocol.merkle import (
    EMPTY_ROOT,
    MerkleProof,
    build_proof,
    digest_runs,
    leaf_hash,
    merkle_root,
    merkle_root_of_digests,
    node_hash,
    verify_proof,
)


def leaves(count: int) -> list[str]:
    return [leaf_hash(f"row {i}".encode()) for i in range(count)]


def test_empty_root_is_sha256_of_nothing():
    assert merkle_root([]) == EMPTY_ROOT == hashlib.sha256(b"").hexdigest()


def test_single_leaf_is_its_own_root():
    (leaf,) = leaves(1)
    assert merkle_root([leaf]) == leaf
    proof = build_proof([leaf], 0)
    assert proof.steps == () and verify_proof(leaf, proof, leaf)


def test_leaf_and_node_hashes_are_domain_separated():
    assert leaf_hash(b"x") == hashlib.sha256(b"\x00x").hexdigest()
    a, b = leaves(2)
    assert node_hash(a, b) == hashlib.sha256(b"\x01" + bytes.fromhex(a) + bytes.fromhex(b)).hexdigest()
    # An inner node's bytes hashed as a leaf never equal the node itself.
    assert leaf_hash(bytes.fromhex(a) + bytes.fromhex(b)) != node_hash(a, b)


def test_small_trees_by_hand():
    a, b, c = leaves(3)
    assert merkle_root([a, b]) == node_hash(a, b)
    # The odd last node moves up unchanged: never paired with a copy of itself.
    assert merkle_root([a, b, c]) == node_hash(node_hash(a, b), c)
    assert merkle_root([a, b, c]) != merkle_root([a, b, c, c])


def test_five_leaves_by_hand():
    a, b, c, d, e = leaves(5)
    assert merkle_root([a, b, c, d, e]) == node_hash(node_hash(node_hash(a, b), node_hash(c, d)), e)


def test_order_matters():
    a, b = leaves(2)
    assert merkle_root([a, b]) != merkle_root([b, a])


@pytest.mark.parametrize("count", range(1, 18))
def test_every_index_proves_for_leaf_counts_1_to_17(count):
    tree = leaves(count)
    root = merkle_root(tree)
    for index in range(count):
        proof = build_proof(tree, index)
        assert (proof.index, proof.leaf_count) == (index, count)
        assert len(proof.steps) <= max(count - 1, 0).bit_length()
        assert verify_proof(tree[index], proof, root)


@pytest.mark.parametrize("count", [2, 3, 5, 7, 9, 17])
def test_proof_fails_for_a_wrong_leaf_or_root(count):
    tree = leaves(count)
    root = merkle_root(tree)
    for index in range(count):
        proof = build_proof(tree, index)
        assert not verify_proof(tree[(index + 1) % count], proof, root)
        assert not verify_proof(leaf_hash(b"forged"), proof, root)
        assert not verify_proof(tree[index], proof, merkle_root(tree[:-1]))
        assert not verify_proof(tree[index], proof, EMPTY_ROOT)


@pytest.mark.parametrize("count", [2, 3, 6, 11, 17])
def test_proof_fails_for_a_tampered_step(count):
    tree = leaves(count)
    root = merkle_root(tree)
    for index in range(count):
        proof = build_proof(tree, index)
        for position, (side, sibling) in enumerate(proof.steps):
            flipped_side = proof.steps[:position] + (("right" if side == "left" else "left", sibling),) + proof.steps[position + 1:]
            other_sibling = proof.steps[:position] + ((side, leaf_hash(b"other")),) + proof.steps[position + 1:]
            assert not verify_proof(tree[index], MerkleProof(index, count, flipped_side), root)
            assert not verify_proof(tree[index], MerkleProof(index, count, other_sibling), root)
        if proof.steps:
            assert not verify_proof(tree[index], MerkleProof(index, count, proof.steps[:-1]), root)
            assert not verify_proof(tree[index], MerkleProof(index, count, proof.steps + (("left", tree[0]),)), root)


def reference_root(tree: list[str]) -> str:
    """The tree's rule one node at a time in Python (node_hash): what the C levels must reproduce."""
    level = tree
    while len(level) > 1:
        level = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)] + level[len(level) - len(level) % 2:]
    return level[0] if level else EMPTY_ROOT


@pytest.mark.parametrize("count", [0, 1, 2, 3, 4, 5, 7, 8, 9, 31, 32, 33, 100, 1023, 1025, 4097])
def test_levels_hashed_in_c_match_the_rule_node_by_node(count):
    tree = leaves(count)
    digests = [bytes.fromhex(leaf) for leaf in tree]
    assert merkle_root(tree) == merkle_root_of_digests(digests) == merkle_root_of_digests(b"".join(digests)) == reference_root(tree)
    assert merkle_root_of_digests(tuple(digests)) == reference_root(tree)


def test_leaves_that_are_not_digests_are_refused():
    with pytest.raises(ValueError, match="leaf 1 is not a 32-byte digest"):
        merkle_root_of_digests([bytes(32), bytes(31)])
    with pytest.raises(ValueError, match="leaf 0 is not a 32-byte digest"):
        merkle_root_of_digests(["00" * 32])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="multiple of 32 bytes, not 33"):
        merkle_root_of_digests(bytes(33))


def test_index_out_of_range_is_refused():
    with pytest.raises(IndexError):
        build_proof(leaves(3), 3)
    with pytest.raises(IndexError):
        build_proof([], 0)


def test_proof_serializes():
    tree = leaves(3)
    proof = build_proof(tree, 2)
    assert proof.as_dict() == {"index": 2, "leaf_count": 3, "steps": [["left", node_hash(tree[0], tree[1])]]}


@settings(max_examples=100, deadline=None)
@given(data=st.lists(st.binary(max_size=16), min_size=1, max_size=40, unique=True), pick=st.data())
def test_property_every_leaf_proves_and_no_other_leaf_does(data, pick):
    tree = [leaf_hash(item) for item in data]
    root = merkle_root(tree)
    index = pick.draw(st.integers(0, len(tree) - 1))
    proof = build_proof(tree, index)
    assert verify_proof(tree[index], proof, root)
    other = pick.draw(st.integers(0, len(tree) - 1).filter(lambda i: i != index)) if len(tree) > 1 else None
    if other is not None:
        assert not verify_proof(tree[other], proof, root)


@settings(max_examples=100, deadline=None)
@given(data=st.lists(st.binary(max_size=16), min_size=1, max_size=40), pick=st.data())
def test_property_changing_any_leaf_changes_the_root(data, pick):
    tree = [leaf_hash(item) for item in data]
    index = pick.draw(st.integers(0, len(tree) - 1))
    changed = tree[:index] + [leaf_hash(data[index] + b"!")] + tree[index + 1:]
    assert merkle_root(changed) != merkle_root(tree)


def test_batch_hashes_are_hashlib_and_refuse_what_they_cannot_read():
    from gonka_pipelines.protocol import _sha256

    texts = [b"abc", b"", "é中".encode()]
    ends = b"".join(n.to_bytes(8, "little", signed=True) for n in (0, 3, 3, 3 + len(texts[2])))
    expected = b"".join(hashlib.sha256(b"\x00p" + text).digest() for text in texts)
    assert _sha256.pieces(b"\x00p", 3, b"", [(ends, b"".join(texts))]) == expected
    assert _sha256.digests(b"\x00p", [b"abc", "", "é中"]) == expected == _sha256.digests(b"\x00p", tuple(texts))
    # a head of equal-width rows, then each part's span of the row, offsets not from zero
    second = b"".join(n.to_bytes(8, "little") for n in (1, 2, 2, 4))
    assert _sha256.pieces(b"q", 3, b"h1h2h3", [(ends, b"".join(texts)), (second, b"wxyz")]) == b"".join(
        hashlib.sha256(b"q" + row).digest() for row in (b"h1abcx", b"h2", b"h3" + texts[2] + b"yz"))
    with pytest.raises(ValueError, match=r"row 1's span \[3, 9\) of part 0 lies outside its data"):
        _sha256.pieces(b"", 2, b"", [(ends[:8] + (3).to_bytes(8, "little") + (9).to_bytes(8, "little"), b"x" * 8)])
    with pytest.raises(ValueError, match="part 0's offsets are not 4 int64"):
        _sha256.pieces(b"", 3, b"", [(b"", b"")])
    with pytest.raises(ValueError, match="a head of 5 bytes is not 3 rows of equal width"):
        _sha256.pieces(b"", 3, b"h1h2h", [])
    with pytest.raises(TypeError, match="part 0 is not an \\(offsets, data\\) tuple"):
        _sha256.pieces(b"", 0, b"", [b"ab"])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="items must be a list or tuple, not str"):
        _sha256.digests(b"", "abc")  # type: ignore[arg-type]


def test_digests_end_to_end_cut_into_runs_give_each_run_s_root():
    """A signer's run of leaves among every signer's, given end to end: empty runs included, each run's root the root
    of its own leaves."""
    digests = [bytes.fromhex(leaf) for leaf in leaves(6)]
    runs = list(digest_runs(b"".join(digests), [2, 0, 3, 1]))
    assert [bytes(run) for run in runs] == [b"".join(digests[0:2]), b"", b"".join(digests[2:5]), digests[5]]
    assert [merkle_root_of_digests(run) for run in runs] == [
        merkle_root_of_digests(digests[0:2]), EMPTY_ROOT, merkle_root_of_digests(digests[2:5]), merkle_root_of_digests(digests[5:])]
