"""verify-chain re-verifies every signed message from its row, not only the block signatures."""

from __future__ import annotations

import pytest

from gonka_pipelines.chain.record_roots import SIGNED_RECORDS
from gonka_pipelines.chain.store import ChainStore
from gonka_pipelines.chain.verify import SIGNED_ROWS, _first_bad, signed_message_problem, signed_row_problem

from support.chains import DEMO_EPOCHS

TAMPERING = {
    "tasks": "UPDATE tasks SET prompt = prompt || '!' WHERE task_id = (SELECT min(task_id) FROM tasks WHERE epoch = 1)",
    "poc_batches": "UPDATE poc_batches SET distances = list_transform(distances, lambda d: d * 0.5) "
                   "WHERE batch_id = (SELECT min(batch_id) FROM poc_batches WHERE epoch = 1 AND status = 'accepted')",
    "poc_verdicts": "UPDATE poc_verdict_sets SET mismatches = list_transform(mismatches, lambda m: m + 1) "
                    "WHERE validator = (SELECT min(validator) FROM poc_verdict_sets WHERE epoch = 1) AND epoch = 1",
    "seed_commitments": "UPDATE seed_commitments SET commitment = repeat('0', 64) "
                        "WHERE host = (SELECT min(host) FROM seed_commitments WHERE epoch = 1)",
}
"""Tables whose rows are signed alone; results and task verdicts are signed through their signer's root
(tests/chain/test_record_roots.py)."""


TRAINING_TAMPERING = {
    "training_tasks": ("UPDATE training_tasks SET steps = steps + 1", "training_tasks row "),
    "training_results": ("UPDATE training_results SET losses = list_transform(losses, lambda l: l * 0.9)",
                         "signed a training_result root over"),
    "training_verdicts": ("UPDATE training_verdicts SET eval_loss = eval_loss - 1", "signed a training_verdict root over"),
}
"""The training tables' signed rows, tampered on a chain with one trained and validated order: a developer signs each
training task; executors and validators sign their results and verdicts through one root each."""


def test_every_signed_table_is_checked():
    assert {spec.table for spec in SIGNED_ROWS} == set(TAMPERING) | {"training_tasks"}
    assert {spec.table for spec in SIGNED_RECORDS} == {"task_results", "task_verdicts", "training_results", "training_verdicts"}
    assert not {spec.table for spec in SIGNED_ROWS} & {spec.table for spec in SIGNED_RECORDS}, "one way of signing per table"


@pytest.fixture(scope="module")
def training_template(tmp_path_factory):
    from support.chains import check_every_task, opened, run_stages, training_chain

    layout, submitter, version, shards = training_chain(tmp_path_factory.mktemp("signed-training"),
                                                        [("host-alpha", 2), ("host-bravo", 2), ("host-charlie", 1)])
    submitter.train(nonce=0, base_version=version, shards=shards[:1])
    with opened(layout) as store, pytest.MonkeyPatch.context() as patch:
        check_every_task(patch)
        run_stages(store, layout, 1)
        assert store._scalar("SELECT count(*) FROM training_verdicts") > 0
    return layout


@pytest.mark.parametrize("table", sorted(TRAINING_TAMPERING))
def test_a_changed_signed_training_row_is_named(training_template, tmp_path, table: str):
    import shutil

    shutil.copytree(training_template.root, tmp_path / "chain")
    with ChainStore.open(tmp_path / "chain" / training_template.database.name) as store:
        assert signed_message_problem(store, 1) is None
        sql, named = TRAINING_TAMPERING[table]
        store._execute(sql)
        problem = signed_message_problem(store, 1)
    assert problem is not None and named in problem.message, problem


def test_the_demo_chain_signatures_all_verify(demo_store: ChainStore):
    assert demo_store.head().height == DEMO_EPOCHS
    for epoch in range(1, DEMO_EPOCHS + 1):
        assert signed_row_problem(demo_store, epoch) is None


@pytest.mark.parametrize("table", sorted(TAMPERING))
def test_a_changed_signed_row_is_named(demo_store: ChainStore, table: str):
    demo_store._connection.execute(TAMPERING[table])
    problem = signed_row_problem(demo_store, 1)
    assert problem is not None and problem.height == 1
    assert problem.message.startswith(f"{table} row ") and "does not verify" in problem.message


def test_on_every_core_the_same_rows_verify_and_the_same_row_is_named(demo_store: ChainStore):
    """parallel_from=1 sends every table through the process pool: a clean epoch verifies, and a changed task (the last
    row, so the chunk offsets matter) is named exactly as the sequential check names it."""
    assert signed_row_problem(demo_store, 1, parallel_from=1) is None
    demo_store._connection.execute("UPDATE tasks SET prompt = prompt || '!' WHERE task_id = "
                                   "(SELECT max(task_id) FROM tasks WHERE epoch = 2)")
    sequential = signed_row_problem(demo_store, 2)
    assert sequential is not None and sequential.message.startswith("tasks row ")
    assert signed_row_problem(demo_store, 2, parallel_from=1) == sequential


def test_verify_block_checks_signatures_on_every_core_while_it_rederives_the_roots(demo_store: ChainStore, monkeypatch):
    """verify_block starts the signed rows' pool before the roots: with every table sent to the pool a clean block
    verifies, and a changed task is caught first as a root mismatch (the pool's pending checks are dropped, not awaited)."""
    from gonka_pipelines.chain import verify

    monkeypatch.setattr(verify, "PARALLEL_FROM", 1)
    blocks = [demo_store.block(height)["hash"] for height in range(DEMO_EPOCHS + 1)]
    assert all(verify.verify_block(demo_store, h, blocks[h - 1]) is None for h in range(1, DEMO_EPOCHS + 1))
    demo_store._connection.execute(TAMPERING["tasks"])
    problem = verify.verify_block(demo_store, 1, blocks[0])
    assert problem is not None and "the tasks root in the header" in problem.message, problem


AWKWARD_PROMPTS = ['say "hi" \\ back', "a/b </script>", "line\nbreak\ttab", "bell\x07 and \x1f", "del \x7f", "é ü 世界 🙂",
                   "sep\u2028\u2029", "null", "1e-05 0.00001", "", "\\u00e9"]
"""Prompts whose JSON needs escaping, raw UTF-8 or text that merely looks like another value."""


def test_task_bodies_written_in_c_are_the_canonical_bodies(demo_store: ChainStore):
    """verify-chain writes the tasks' bodies from their columns in C: each is byte for byte the canonical encoding of
    the body Python rebuilds from the row, awkward prompts included; a body of another shape (a named model version) is
    rebuilt in Python; and every changed row, whichever way its body was made, fails its signature."""
    from gonka_pipelines.chain.hashing import json_texts
    from gonka_pipelines.protocol.crypto import canonical_row_bytes

    tasks = next(spec for spec in SIGNED_ROWS if spec.table == "tasks")
    ids = [task_id for (task_id,) in demo_store._query("SELECT task_id FROM tasks WHERE epoch = 1 ORDER BY task_id")]
    assert len(ids) > len(AWKWARD_PROMPTS), "the demo's first epoch holds enough tasks to change"
    for task_id, prompt in zip(ids, AWKWARD_PROMPTS):
        demo_store._connection.execute("UPDATE tasks SET prompt = ? WHERE task_id = ?", [prompt, task_id])
    named = ids[len(AWKWARD_PROMPTS)]
    demo_store._connection.execute("UPDATE tasks SET version = 'v-named' WHERE task_id = ?", [named])
    rows = demo_store._arrow(tasks.query(), [1])
    assert rows.column("id").to_pylist() == ids
    assert tasks.json_when is not None
    written = rows.filter(tasks.json_when(rows))
    assert written.column("id").to_pylist() == [row["id"] for row in rows.to_pylist() if not row["version"]]
    assert named not in written.column("id").to_pylist()
    texts = json_texts(b"", written.select(list(tasks.json_body.values())), list(tasks.json_body))
    assert texts == [canonical_row_bytes(tasks.body(row)) for row in written.to_pylist()]
    problem = signed_row_problem(demo_store, 1)
    assert problem is not None and problem.message.startswith(f"tasks row {ids[0][:24]}")
    failing = {task_id for position, task_id in enumerate(ids)
               if _first_bad(SIGNED_ROWS.index(tasks), demo_store.chain_id, rows.slice(position, 1)) is not None}
    assert failing == set(ids[:len(AWKWARD_PROMPTS) + 1]), "every changed row fails, and only those"


def test_a_row_tampered_to_hold_a_non_finite_float_is_named(demo_store: ChainStore):
    """A float no canonical encoding holds (NaN) written into a signed row makes its signature verify nothing: the
    row is named like any other change, not an error raised from the check."""
    demo_store._connection.execute(
        "UPDATE poc_batches SET distances = list_transform(distances, lambda d: 'nan'::DOUBLE) WHERE batch_id = "
        "(SELECT min(batch_id) FROM poc_batches WHERE epoch = 1 AND status = 'accepted')")
    problem = signed_row_problem(demo_store, 1)
    assert problem is not None and problem.message.startswith("poc_batches row ") and "does not verify" in problem.message


def test_a_committed_float_tampered_to_nan_is_named_not_raised(demo_store: ChainStore):
    """A NaN written into a committed, signed row has no leaf: the block's roots and the validator's signed records
    name the table instead of raising from verify-chain."""
    from gonka_pipelines.chain.verify import content_problem

    demo_store._connection.execute("UPDATE task_verdicts SET similarity = 'nan'::DOUBLE "
                                   "WHERE task_id = (SELECT min(task_id) FROM task_verdicts WHERE epoch = 1)")
    for problem, changed in ((content_problem(demo_store, 1), "a committed row"), (signed_message_problem(demo_store, 1), "a signed record")):
        assert problem is not None and problem.height == 1, problem
        assert problem.message.startswith("a task_verdicts row has no canonical encoding") and changed in problem.message
