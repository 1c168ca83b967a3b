"""An epoch's roots are hashed on several connections at once, and still over exactly the rows the caller's connection
sees: outside a transaction all of them; inside one, the tables it says it wrote on its own connection."""

from __future__ import annotations

from gonka_pipelines.chain import commitments
from gonka_pipelines.chain.commitments import COMMITMENTS, epoch_roots, in_transaction

from support.chains import opened

EPOCH = 2


def test_roots_on_other_connections_equal_those_on_one(demo_layout):
    with opened(demo_layout) as store:
        connection = store._connection
        assert not in_transaction(connection)
        together = epoch_roots(connection, EPOCH)
        connection.execute("BEGIN TRANSACTION")
        assert in_transaction(connection)
        alone = epoch_roots(connection, EPOCH)  # inside a transaction that may have written anything: all on it
        connection.execute("ROLLBACK")
        assert together == alone == store.block(EPOCH)["header"]["roots"], "the roots the block holds"
        assert list(together) == [c.name for c in COMMITMENTS]


def test_uncommitted_rows_are_hashed_where_the_transaction_sees_them(demo_layout):
    with opened(demo_layout) as store:
        connection = store._connection
        before = epoch_roots(connection, EPOCH)
        connection.execute("BEGIN TRANSACTION")
        connection.execute("UPDATE host_states SET weight = weight + 1 WHERE epoch = ?", [EPOCH])
        connection.execute("UPDATE rewards SET reward = reward + 1 WHERE epoch = ?", [EPOCH])
        told = epoch_roots(connection, EPOCH, pending=["host_states"])
        unknown = epoch_roots(connection, EPOCH)
        connection.execute("ROLLBACK")
    assert told["hosts"] != before["hosts"], "a table the transaction names is hashed on its connection"
    assert told["rewards"] == before["rewards"], "one it does not name is hashed as committed"
    assert unknown["hosts"] != before["hosts"] and unknown["rewards"] != before["rewards"], "unnamed: all on its connection"
    assert commitments.ROOT_THREADS > 1
