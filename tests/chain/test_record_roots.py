"""Results and task verdicts are signed through one Merkle root per executor or validator (record_roots): verify-chain
re-derives every root from the rows and names what was changed; a row's proof ties it to its signer's root."""

from __future__ import annotations

import pytest

from gonka_pipelines.chain.proofs import prove_row
from gonka_pipelines.chain.record_roots import SIGNED_RECORDS, derived_roots, record_encoding, record_root_problem
from gonka_pipelines.chain.store import ChainStore
from gonka_pipelines.chain.verify import signed_message_problem
from gonka_pipelines.protocol.crypto import MessageKind
from gonka_pipelines.protocol.merkle import MerkleProof, verify_proof
from gonka_pipelines.protocol.messages import result_body, task_verdict_body, training_result_body, training_verdict_body
from gonka_pipelines.protocol.record_roots import record_leaf, records_root_body, root_signature_verifies

from support.chains import DEMO_EPOCHS, copy_chain, demo_columns_template, opened

FIRST_RESULT = "(SELECT min(task_id) FROM task_results WHERE epoch = 1 AND status = 'completed')"
FIRST_VERDICT = "(SELECT min(task_id) FROM task_verdicts WHERE epoch = 1)"
FIRST_ROOT = "(SELECT min(signer) FROM record_roots WHERE epoch = 1 AND kind = '{kind}')"


@pytest.fixture(params=["json", "columns"])
def signed_store(request, tmp_path):
    """The demo chain (record leaves in JSON, as the shipped params have it) or its twin with
    tasks.record_encoding=columns, open for writing."""
    if request.param == "json":
        yield request.getfixturevalue("demo_store")
        return
    template = demo_columns_template(request.getfixturevalue("tmp_path_factory"))
    with opened(copy_chain(template.root, tmp_path / "columns")) as store:
        yield store

TAMPERING = {
    "a result's output": (f"UPDATE task_results SET output_tokens = list_append(output_tokens, 7) WHERE task_id = {FIRST_RESULT}",
                          "signed a result root over"),
    "a result's log-probs": (f"UPDATE task_results SET top_logprobs = [[x * 0.5 for x in p] for p in top_logprobs] "
                             f"WHERE task_id = {FIRST_RESULT}", "signed a result root over"),
    "a result removed": (f"DELETE FROM task_results WHERE task_id = {FIRST_RESULT}", "signed a result root over"),
    "a result moved to another executor": (
        "UPDATE task_results SET executor = (SELECT max(executor) FROM task_results WHERE epoch = 1) WHERE task_id = "
        "(SELECT min(task_id) FROM task_results WHERE epoch = 1 AND status = 'completed' AND executor <> "
        "(SELECT max(executor) FROM task_results WHERE epoch = 1))", "signed a result root over"),
    "a verdict's similarity": (f"UPDATE task_verdicts SET similarity = 0.5 WHERE task_id = {FIRST_VERDICT}",
                               "signed a task_verdict root over"),
    "a verdict flipped": (f"UPDATE task_verdicts SET passed = NOT passed WHERE task_id = {FIRST_VERDICT}",
                          "signed a task_verdict root over"),
    "a root's signature": ("UPDATE record_roots SET signature = repeat('0', 128) WHERE epoch = 1 AND kind = 'result' AND "
                           f"signer = {FIRST_ROOT.format(kind='result')}", "signature does not verify"),
    "a root's count": ("UPDATE record_roots SET records = records + 1 WHERE epoch = 1 AND kind = 'task_verdict' AND "
                       f"signer = {FIRST_ROOT.format(kind='task_verdict')}", "signed a task_verdict root over"),
    "a root removed": ("DELETE FROM record_roots WHERE epoch = 1 AND kind = 'result' AND "
                       f"signer = {FIRST_ROOT.format(kind='result')}", "that no root of theirs signs"),
    "a root of an unknown kind": ("UPDATE record_roots SET kind = 'poc_verdict' WHERE epoch = 1 AND kind = 'result' AND "
                                  f"signer = {FIRST_ROOT.format(kind='result')}", "which no table's rows are signed as"),
}


def test_the_demo_chain_roots_all_re_derive(signed_store: ChainStore):
    """Every epoch has roots of both kinds, and each one is what its rows give and is signed by its signer."""
    for epoch in range(1, DEMO_EPOCHS + 1):
        assert record_root_problem(signed_store._connection, signed_store.chain_id, epoch) is None
        kinds = dict(signed_store._query("SELECT kind, count(*) FROM record_roots WHERE epoch = ? GROUP BY 1", [epoch]))
        assert kinds.keys() == {"result", "task_verdict", "training_result", "training_verdict"}


def test_a_chain_with_columns_leaves_records_the_encoding_and_verifies(tmp_path_factory):
    """tasks.record_encoding=columns is in the chain's params (so its blocks differ from the demo's) and verify-chain
    re-derives every block; json, the shipped value, is left out of the params (older chains keep their hashes)."""
    from gonka_pipelines.chain.verify import verify_chain

    from e2e.test_block_hashes_pinned import DEMO_HASHES

    with opened(demo_columns_template(tmp_path_factory), read_only=True) as store:
        assert [record_encoding(store._connection, epoch) for epoch in range(DEMO_EPOCHS + 1)] == ["columns"] * (DEMO_EPOCHS + 1)
        assert verify_chain(store).first_problem is None
        hashes = [store.block(height)["hash"] for height in range(DEMO_EPOCHS + 1)]
    assert not set(hashes) & set(DEMO_HASHES)
    from gonka_pipelines.local.config import load_genesis

    assert "record_encoding" not in load_genesis().as_dict()["tasks"] and load_genesis().tasks.record_encoding == "json"


def test_roots_re_derived_in_sql_equal_the_protocols_roots(signed_store: ChainStore):
    """The leaves re-derived from the tables (JSON written by DuckDB, or columns hashed from Arrow) give the roots the
    stages signed, and the roots of the protocol's reference encoder over bodies built in Python."""
    from gonka_pipelines.protocol.merkle import merkle_root_of_digests

    chain_id, encoding = signed_store.chain_id, record_encoding(signed_store._connection, 2)
    results = signed_store._records("SELECT * FROM task_results WHERE epoch = 2 AND status = 'completed' ORDER BY executor, task_id")
    verdicts = signed_store._records("SELECT * FROM task_verdicts WHERE epoch = 2 ORDER BY validator, task_id")
    expected: dict[tuple[str, str], list[bytes]] = {}
    for r in results:
        expected.setdefault(("result", r["executor"]), []).append(record_leaf(chain_id, MessageKind.RESULT, result_body(
            r["task_id"], r["executor"], r["output_tokens"], r["top_ids"], r["top_logprobs"]), encoding))
    for v in verdicts:
        expected.setdefault(("task_verdict", v["validator"]), []).append(record_leaf(chain_id, MessageKind.TASK_VERDICT, task_verdict_body(
            2, v["task_id"], v["validator"], v["similarity"], v["passed"], v["reason"]), encoding))
    for r in signed_store._records("SELECT * FROM training_results WHERE epoch = 2 AND status = 'completed' ORDER BY executor, task_id"):
        expected.setdefault(("training_result", r["executor"]), []).append(record_leaf(
            chain_id, MessageKind.TRAINING_RESULT, training_result_body(r["task_id"], r["executor"], r["version"], r["checkpoint_steps"],
                                                                        r["checkpoints"], r["losses"], r["tokens"]), encoding))
    for v in signed_store._records("SELECT * FROM training_verdicts WHERE epoch = 2 ORDER BY validator, task_id"):
        expected.setdefault(("training_verdict", v["validator"]), []).append(record_leaf(
            chain_id, MessageKind.TRAINING_VERDICT, training_verdict_body(2, v["task_id"], v["validator"], v["first_step"],
                                                                          v["last_step"], v["passed"], v["eval_loss"], v["reason"]), encoding))
    assert {kind for kind, _ in expected} == {"result", "task_verdict", "training_result", "training_verdict"}
    derived = {(str(spec.kind), signer): value for spec in SIGNED_RECORDS
               for signer, value in derived_roots(signed_store._connection, spec, chain_id, 2).items()}
    assert derived == {key: (merkle_root_of_digests(leaves), len(leaves)) for key, leaves in expected.items()}
    stored = {(kind, signer): (root, count) for kind, signer, root, count in signed_store._query(
        "SELECT kind, signer, root, records FROM record_roots WHERE epoch = 2")}
    assert stored == derived


@pytest.mark.parametrize("what", sorted(TAMPERING))
def test_a_changed_signed_record_is_named(signed_store: ChainStore, what: str):
    sql, named = TAMPERING[what]
    assert signed_message_problem(signed_store, 1) is None
    signed_store._connection.execute(sql)
    problem = signed_message_problem(signed_store, 1)
    assert problem is not None and problem.height == 1 and named in problem.message, problem


def test_a_root_signature_covers_epoch_kind_root_and_count():
    from gonka_pipelines.protocol.crypto import KeyPair
    from gonka_pipelines.protocol.record_roots import sign_records

    key = KeyPair.derive("chain-x", "host-a", "seed")
    bodies = [result_body(f"t{i}", key.address, [i, 2], [[1, 2]] * 2, [[-0.5, -1.5]] * 2) for i in range(5)]
    row = sign_records(key, "chain-x", 3, key.address, MessageKind.RESULT, bodies, "columns")
    assert row["records"] == 5 and root_signature_verifies(key.public_key, "chain-x", row)
    for field, value in (("epoch", 4), ("records", 4), ("kind", "task_verdict"), ("root", "0" * 64), ("signer", "x")):
        assert not root_signature_verifies(key.public_key, "chain-x", {**row, field: value}), field
    assert not root_signature_verifies(key.public_key, "chain-y", row), "the chain id is signed"
    assert not root_signature_verifies(key.public_key, "chain-x", {**row, "kind": "no-such-kind"})
    assert records_root_body(3, key.address, MessageKind.RESULT, row["root"], 5) == {k: row[k] for k in row if k != "signature"}


def test_a_json_leaf_is_the_message_a_lone_signature_would_cover():
    """So a result leaf never equals a verdict leaf or another chain's leaf over the same fields."""
    import hashlib

    from gonka_pipelines.protocol.crypto import message_bytes

    body = task_verdict_body(1, "t", "v", 0.5, True, "similar")
    assert record_leaf("c", MessageKind.TASK_VERDICT, body, "json") == hashlib.sha256(
        b"\x00" + message_bytes("c", MessageKind.TASK_VERDICT, body)).digest()
    assert record_leaf("c", MessageKind.RESULT, body, "json") != record_leaf("c", MessageKind.TASK_VERDICT, body, "json")
    assert record_leaf("d", MessageKind.TASK_VERDICT, body, "json") != record_leaf("c", MessageKind.TASK_VERDICT, body, "json")


def test_a_columns_leaf_is_domain_separated_and_packs_the_fields_in_order():
    """version|chain|kind| then the head (int64 epoch, u32 byte counts, float64, a bool byte), then the texts' bytes; a
    verdict's leaf differs from the JSON one and from another chain's or kind's."""
    import hashlib
    import struct

    body = task_verdict_body(7, "t1", "v", 0.5, True, "similar")
    packed = struct.pack("<qIIdBI", 7, 2, 1, 0.5, 1, 7) + b"t1" + b"v" + b"similar"
    assert record_leaf("c", MessageKind.TASK_VERDICT, body, "columns") == hashlib.sha256(
        b"\x00gonka/records-columns/v1|c|task_verdict|" + packed).digest()
    assert record_leaf("c", MessageKind.TASK_VERDICT, body, "columns") != record_leaf("c", MessageKind.TASK_VERDICT, body, "json")
    assert record_leaf("d", MessageKind.TASK_VERDICT, body, "columns") != record_leaf("c", MessageKind.TASK_VERDICT, body, "columns")
    with pytest.raises(ValueError, match="'passed' \\(bool\\) cannot hold 1"):
        record_leaf("c", MessageKind.TASK_VERDICT, {**body, "passed": 1}, "columns")
    with pytest.raises(ValueError, match="unknown record encoding 'xml'"):
        record_leaf("c", MessageKind.TASK_VERDICT, body, "xml")


@pytest.mark.parametrize("table, kind", [("results", "result"), ("task_verdicts", "task_verdict"),
                                         ("training_results", "training_result"), ("training_verdicts", "training_verdict")])
def test_a_rows_proof_ties_it_to_its_signers_root(signed_store: ChainStore, table: str, kind: str):
    """prove_row gives a result or verdict (inference or training) its path to the root its signer signed; the path and signature verify, and
    the leaf is the row's message."""
    key = {"results": "SELECT min(task_id) FROM task_results WHERE epoch = 2 AND status = 'completed'",
           "task_verdicts": "SELECT min(task_id || ':' || validator) FROM task_verdicts WHERE epoch = 2",
           "training_results": "SELECT min(task_id) FROM training_results WHERE epoch = 2 AND status = 'completed'",
           "training_verdicts": "SELECT min(task_id || ':' || validator) FROM training_verdicts WHERE epoch = 2"}[table]
    key = signed_store._scalar(key)
    proof = prove_row(signed_store, table, key)
    signed = proof["signed"]
    assert proof["verified"] and signed["verified"] and signed["kind"] == kind
    steps = tuple(tuple(step) for step in signed["proof"]["steps"])
    assert verify_proof(signed["leaf"], MerkleProof(signed["proof"]["index"], signed["proof"]["leaf_count"], steps), signed["root"])
    assert signed["proof"]["leaf_count"] == signed["records"]
    assert signed["root"] == signed_store._scalar("SELECT root FROM record_roots WHERE epoch = ? AND kind = ? AND signer = ?",
                                                [proof["epoch"], kind, signed["signer"]])
    row = proof["row"]
    body = {"result": lambda: result_body(row["task_id"], row["executor"], row["output_tokens"], row["top_ids"], row["top_logprobs"]),
            "task_verdict": lambda: task_verdict_body(proof["epoch"], row["task_id"], row["validator"], row["similarity"],
                                                      row["passed"], row["reason"]),
            "training_result": lambda: training_result_body(row["task_id"], row["executor"], row["version"], row["checkpoint_steps"],
                                                            row["checkpoints"], row["losses"], row["tokens"]),
            "training_verdict": lambda: training_verdict_body(proof["epoch"], row["task_id"], row["validator"], row["first_step"],
                                                              row["last_step"], row["passed"], row["eval_loss"], row["reason"])}[kind]()
    encoding = record_encoding(signed_store._connection, proof["epoch"])
    assert signed["leaf"] == record_leaf(signed_store.chain_id, MessageKind(kind), body, encoding).hex()


def test_an_expired_result_has_no_signed_proof_and_a_changed_row_fails_its_own(demo_store: ChainStore):
    expired = demo_store._scalar("SELECT min(task_id) FROM task_results WHERE status = 'expired'")
    assert "signed" not in prove_row(demo_store, "results", expired)
    task_id = demo_store._scalar("SELECT min(task_id) FROM task_results WHERE epoch = 2 AND status = 'completed'")
    demo_store._connection.execute("UPDATE task_results SET output_tokens = list_append(output_tokens, 7) WHERE task_id = ?",
                                   [task_id])
    proof = prove_row(demo_store, "results", task_id)
    assert proof["verified"] is False and proof["signed"]["verified"] is False


@pytest.mark.parametrize("encoding", ["json", "columns"])
def test_leaves_of_result_columns_equal_each_bodys_leaf(encoding: str):
    """An executor hashing its results as Arrow columns (JSON written by DuckDB, or columns hashed from the buffers) gets
    record_leaf of each body, edge values included: log-probs DuckDB writes otherwise (tiny, huge), control characters
    in an id, empty outputs."""
    import pyarrow as pa

    from gonka_pipelines.chain.record_roots import BY_KIND, record_leaves

    bodies = [result_body(f"task-{i}", "gonka1exec", list(range(i % 4)), [[i, i + 1]] * (i % 4),
                          [[-0.5 * i, value]] * (i % 4))
              for i, value in enumerate([-1.5, -1e-5, -3.2e-05, -1e-7, 0.0, -0.0, -12.25, -1e17, -2.5e-9, -0.125])]
    bodies.append(result_body("ctrl-\x0b-\x1f-é", "gonka1exec", [7], [[7, 8]], [[-0.25, -0.75]]))
    result_columns = BY_KIND[MessageKind.RESULT].body
    assert tuple(bodies[0]) == result_columns
    table = pa.table({name: [body[name] for body in bodies] for name in result_columns},
                     schema=pa.schema([("task_id", pa.string()), ("executor", pa.string()), ("output_tokens", pa.list_(pa.int64())),
                                       ("top_ids", pa.list_(pa.list_(pa.int64()))),
                                       ("top_logprobs", pa.list_(pa.list_(pa.float64())))]))
    assert record_leaves(table, "chain-x", MessageKind.RESULT, encoding) == b"".join(
        record_leaf("chain-x", MessageKind.RESULT, b, encoding) for b in bodies)
