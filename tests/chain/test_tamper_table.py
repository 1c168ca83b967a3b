"""Every single-row tamper of every table the chain commits, as an auditor would try them: change each column of one row,
delete the row, forge a copy. verify-chain (with the anchors Dagster records) must name each one, never raise.

The tampered row is the head epoch's (block 3 of the `make demo` chain), the hardest place: no later header commits to
it, so only its own block, the statuses and the anchors can. Registry rows are block 0's. The table of what was caught is
written to the test log (`pytest -s`) for the closing note; the figures in docs/architecture.md come from it.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import duckdb
import pytest

from gonka_pipelines.chain.commitments import COMMITMENTS
from gonka_pipelines.chain.schema import migrate
from gonka_pipelines.chain.store import ChainStore
from gonka_pipelines.chain.verify import Anchor, verify_chain
from gonka_pipelines.protocol.block import signature_set_hash

HEAD = 3
NOT_COMMITTED = {
    "schema_version": "the migrations applied: how rows are stored, not what they say",
    "epoch_runs": "which Dagster run holds the open epoch (operations; cleared when the epoch runs again)",
}
"""Tables no block commits to, and why none needs to."""
REGISTRIES = {c.table for c in COMMITMENTS if c.epoch == "0"} | {"chain_meta"}
"""Tables without an epoch column: their rows belong to genesis."""


def _schema() -> dict[str, list[tuple[str, str]]]:
    """(column, type) of every table, from the migrations themselves."""
    with duckdb.connect() as connection:
        migrate(connection)
        rows = connection.execute("""SELECT table_name, column_name, data_type FROM information_schema.columns
                                     WHERE table_name IN (SELECT table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE')
                                     ORDER BY table_name, ordinal_position""").fetchall()
    schema: dict[str, list[tuple[str, str]]] = {}
    for table, column, kind in rows:
        schema.setdefault(table, []).append((column, kind))
    return schema


SCHEMA = _schema()
COMMITTED = sorted(set(SCHEMA) - set(NOT_COMMITTED))


def changed(column: str, kind: str) -> list[str]:
    """SQL expressions giving a different value of a column's type, tried in order until one fits the constraints."""
    if kind == "VARCHAR":
        return [f"coalesce({column} || '~', '~')"]
    if kind in ("BIGINT", "INTEGER"):
        return [f"{column} + 1", f"{column} - 1", f"{column} + 1000003"]
    if kind == "DOUBLE":
        return [f"coalesce({column} + 0.5, 0.5)"]
    if kind == "BOOLEAN":
        return [f"NOT {column}"]
    if kind == "BLOB":
        return [f"{column} || '\\x00'::BLOB"]
    if kind.endswith("[][]"):
        element = "[0.5]" if kind.startswith("DOUBLE") else "[1]"
        return [f"list_append({column}, {element})"]
    if kind.endswith("[]"):
        element = {"VARCHAR[]": "'x'", "DOUBLE[]": "0.5"}.get(kind, "7")
        return [f"list_append({column}, {element})"]
    raise AssertionError(f"no tamper for type {kind}")


@dataclass(frozen=True)
class Tamper:
    table: str
    what: str
    statements: tuple[str, ...]
    """Alternatives, tried in order until one applies (a constraint may refuse the first)."""

    @property
    def id(self) -> str:
        return f"{self.table}.{self.what}"


def _row(table: str) -> str:
    """SQL selecting the rowid of the tampered row: the head epoch's first (else the latest epoch's: model versions may
    all be genesis's), or genesis's for the registries."""
    where = {"chain_meta": "TRUE", "blocks": f"height = {HEAD}", "block_signatures": f"height = {HEAD}"}.get(
        table, "TRUE" if table in REGISTRIES else f"epoch = (SELECT max(epoch) FROM {table} WHERE epoch <= {HEAD})")
    return f"(SELECT min(rowid) FROM {table} WHERE {where})"


def _forged(table: str, epoch: int | None = None) -> str:
    """A copy of the row whose text columns are changed (so no key collides), or moved to another epoch."""
    replaced = [f"{c} || '-forged' AS {c}" for c, kind in SCHEMA[table] if kind == "VARCHAR" and c not in ("status", "value")]
    if epoch is not None:
        replaced = [r for r in replaced if not r.startswith("params_json")]  # keep the JSON valid
        replaced.append(f"{epoch} AS {'height' if table.startswith('block') else 'epoch'}")
    if table == "chain_meta":
        replaced = ["'forged' AS key"]
    return f"INSERT INTO {table} SELECT * REPLACE ({', '.join(replaced)}) FROM {table} WHERE rowid = {_row(table)}"


def tampers() -> Iterator[Tamper]:
    for table in COMMITTED:
        for column, kind in SCHEMA[table]:
            yield Tamper(table, column, tuple(f"UPDATE {table} SET {column} = {expression} WHERE rowid = {_row(table)}"
                                              for expression in changed(column, kind)))
        yield Tamper(table, "row deleted", (f"DELETE FROM {table} WHERE rowid = {_row(table)}",))
        if table not in ("epochs", "blocks"):  # their forged rows are the ones beyond the head
            yield Tamper(table, "row forged", (_forged(table, 0 if table == "emissions" else None),))
        if table not in REGISTRIES:
            yield Tamper(table, "row forged beyond the head", (_forged(table, HEAD + 5),))
    r0 = "json_object('emission', json_merge_patch(params_json->'emission', json_object('initial_reward', " \
         "CAST(params_json->>'$.emission.initial_reward' AS BIGINT) * 100)))"
    yield Tamper("epochs", "genesis R0 x 100", (f"UPDATE epochs SET params_json = json_merge_patch(params_json, {r0}) WHERE epoch = 0",))
    yield Tamper("account_states", "genesis supply", ("UPDATE account_states SET balance = balance + 1 WHERE epoch = 0 AND "
                                                      "address = (SELECT min(address) FROM account_states WHERE epoch = 0)",))
    yield Tamper("block_signatures", "moved to another height", (
        f"UPDATE block_signatures SET height = {HEAD - 1} WHERE height = {HEAD} AND signer NOT IN "
        f"(SELECT signer FROM block_signatures WHERE height = {HEAD - 1}) AND rowid = {_row('block_signatures')}",
        f"UPDATE block_signatures SET height = {HEAD + 1} WHERE rowid = {_row('block_signatures')}"))
    yield Tamper("blocks", "head cut off", (f"DELETE FROM block_signatures WHERE height = {HEAD}; DELETE FROM blocks WHERE height = {HEAD}; "
                                            f"UPDATE epochs SET status = 'open' WHERE epoch = {HEAD}",))


TAMPERS = list(tampers())
RESULTS: dict[str, str] = {}


@pytest.fixture(scope="module")
def chain(demo_template, tmp_path_factory) -> Iterator[tuple[ChainStore, dict[int, Anchor], dict]]:
    """A writable copy of the demo chain, the anchors Dagster would have recorded for it and what an incremental
    verify-chain remembered of it; every tamper is rolled back."""
    root = tmp_path_factory.mktemp("tamper") / "chain"
    shutil.copytree(demo_template.root, root)
    with ChainStore.open(root / demo_template.database.name) as store:
        anchors = {h: Anchor(store.block_hash(h), signature_set_hash(store.block_signatures(h))) for h in store.finalized_heights()}
        clean = verify_chain(store, anchors, {})
        assert clean.first_problem is None and len(clean.verified) == len(store.finalized_heights())
        yield store, anchors, clean.verified
    print_table()


def verify_tampered(store: ChainStore, anchors: dict[int, Anchor], remembered: dict, tamper: Tamper) -> str | None:
    """Apply the first alternative that changes a row, verify, roll back; the first problem verify-chain reports. An
    incremental check that remembers the untouched chain must report the same problem as a full one."""
    for statement in tamper.statements:
        store._execute("BEGIN TRANSACTION")
        try:
            changed_rows = store._query(statement)[0][0]
            if changed_rows:
                problem = verify_chain(store, anchors).first_problem
                assert str(verify_chain(store, anchors, remembered).first_problem) == str(problem), "incremental = full"
                return "" if problem is None else str(problem)
        except duckdb.ConstraintException:
            pass
        finally:
            store._execute("ROLLBACK")
    raise AssertionError(f"no alternative of {tamper.id} changed a row")


@pytest.mark.parametrize("tamper", TAMPERS, ids=[t.id for t in TAMPERS])
def test_every_single_row_tamper_is_reported(chain, tamper):
    problem = verify_tampered(*chain, tamper)
    RESULTS[tamper.id] = problem
    assert problem, f"{tamper.id} passed verify-chain"


def test_every_table_is_committed_or_says_why_not():
    assert set(NOT_COMMITTED) <= set(SCHEMA)
    committed_tables = {c.table for c in COMMITMENTS} | {"epochs", "blocks", "block_signatures", "chain_meta"}
    assert set(COMMITTED) == committed_tables, "a new table must get a commitment (or a reason in NOT_COMMITTED)"


def print_table() -> None:
    """The caught / total table per table, for the closing note and docs."""
    totals, caught = Counter(), Counter()
    for tamper in TAMPERS:
        if tamper.id in RESULTS:
            totals[tamper.table] += 1
            caught[tamper.table] += bool(RESULTS[tamper.id])
    print("\n" + json.dumps({t: f"{caught[t]}/{totals[t]}" for t in sorted(totals)}, indent=1))
    print(f"tampers caught: {sum(caught.values())}/{sum(totals.values())}")
