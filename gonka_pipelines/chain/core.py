"""The ledger's core: one DuckDB connection, transactions, the chain's head and the life of an epoch.

The SQL primitives (`_query`, `_records`, `_scalar`, `_insert`, `_execute`) are private to chain/: every other
layer reads and writes through the named methods of the per-concern modules that ChainStore combines.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import duckdb
import pyarrow as pa

from gonka_pipelines.chain.schema import MIGRATIONS, current_version, migrate
from gonka_pipelines.protocol.block import BlockStatus
from gonka_pipelines.protocol.params import EpochParams, GenesisParams

OPEN, PROPOSED, FINALIZED = BlockStatus.OPEN, BlockStatus.PROPOSED, BlockStatus.FINALIZED
CHAIN_ID_KEY = "chain_id"
"""chain_meta's only row: the chain's id (every block header repeats it, and verify-chain compares the two)."""


class ChainError(RuntimeError):
    """A request the chain refuses; the message says what to do instead."""


class FinalizedEpochError(ChainError):
    """Any change to a finalized epoch."""


class ChainBusyError(ChainError):
    """Another process holds the database's write lock (an epoch's stage is writing)."""


class EpochOrderError(ChainError):
    """An epoch launched out of order (not the head's successor)."""


@dataclass(frozen=True)
class Head:
    height: int
    hash: str


LOCK_WAIT_SECONDS = 30.0
"""How long an open waits for another process's write lock (DuckDB allows one writer, and no reader beside it)."""


def _connect(path: Path, read_only: bool, wait: float = LOCK_WAIT_SECONDS) -> duckdb.DuckDBPyConnection:
    """Open the database, waiting while another process holds the write lock; a clear ChainError after `wait`."""
    deadline = time.monotonic() + wait
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only)
        except duckdb.IOException as error:
            if "lock" not in str(error).lower():
                raise ChainError(f"{path}: cannot open the chain database: {error}") from error
            if time.monotonic() >= deadline:
                raise ChainBusyError(f"{path} is busy: another process (an epoch run?) holds its write lock; "
                                 f"try again when it finishes") from error
            time.sleep(0.2)


class StoreCore:
    """One open chain database. Use `ChainStore.open(path)` as a context manager."""

    def __init__(self, connection: duckdb.DuckDBPyConnection):
        self._connection = connection
        self._in_transaction = False

    @classmethod
    @contextmanager
    def open(cls, path: Path, read_only: bool = False, lock_wait: float = LOCK_WAIT_SECONDS) -> Iterator[Self]:
        """Open (creating and migrating when writable), waiting up to lock_wait seconds for another process's write
        lock; read-only opens refuse an outdated schema."""
        if read_only and not path.exists():
            raise ChainError(f"{path}: no chain here yet; run `gonka init` (or `make demo`) first")
        path.parent.mkdir(parents=True, exist_ok=True)
        connection = _connect(path, read_only, lock_wait)
        try:
            if read_only:
                latest = MIGRATIONS[-1][0]
                if current_version(connection) < latest:
                    raise ChainError(f"{path}: schema is older than version {latest}; open it writable once to migrate")
            else:
                migrate(connection)
            yield cls(connection)
        finally:
            connection.close()

    # -- primitives (chain/ only) ---------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """All-or-nothing: a crash or error inside leaves the chain as it was. Nested uses join the outer one."""
        if self._in_transaction:
            yield
            return
        self._connection.execute("BEGIN TRANSACTION")
        self._in_transaction = True
        try:
            yield
        except BaseException:
            self._connection.execute("ROLLBACK")
            raise
        else:
            self._connection.execute("COMMIT")
        finally:
            self._in_transaction = False

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self._connection.execute(sql, list(params))

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        return self._connection.execute(sql, list(params)).fetchall()

    def _scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """The first value of the first row (None when there is none); the result is read whole, so nothing stays open."""
        rows = self._connection.execute(sql, list(params)).fetchall()
        return rows[0][0] if rows else None

    def _records(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        cursor = self._connection.execute(sql, list(params))
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]

    def _arrow(self, sql: str, params: Sequence[Any] = ()) -> pa.Table:
        """A result as an Arrow table (for polars frames and bulky reads)."""
        return self._connection.sql(sql, params=list(params)).to_arrow_table()

    @contextmanager
    def _registered(self, name: str, table: pa.Table) -> Iterator[None]:
        """An Arrow table that SQL reads as `name` while the block runs (a million ids join; as a list parameter they
        would be tested against every row)."""
        self._connection.register(name, table)
        try:
            yield
        finally:
            self._connection.unregister(name)

    def _insert(self, table: str, rows: Sequence[dict[str, Any]] | pa.Table) -> int:
        """Bulk insert by column name through Arrow; returns the row count."""
        arrow = rows if isinstance(rows, pa.Table) else pa.Table.from_pylist(list(rows))
        if arrow.num_rows == 0:
            return 0
        with self._registered("_incoming", arrow):
            self._connection.execute(f"INSERT INTO {table} BY NAME SELECT * FROM _incoming")
        return arrow.num_rows

    def _epoch_tables(self) -> list[str]:
        """Every table whose rows belong to one epoch (an `epoch` column), but the epoch itself and its run claim."""
        return [table for (table,) in self._query(
            """SELECT c.table_name FROM information_schema.columns c
               JOIN information_schema.tables t ON t.table_name = c.table_name AND t.table_type = 'BASE TABLE'
               WHERE c.column_name = 'epoch' AND c.table_name NOT IN ('epochs', 'epoch_runs') ORDER BY 1""")]

    def _replace_epoch_rows(self, epoch: int, tables: Sequence[str], stage: str | None = None) -> None:
        """Clear what a stage wrote for an epoch before it writes again (re-runs replace, never add)."""
        self.require_writable(epoch)
        for table in tables:
            self._execute(f"DELETE FROM {table} WHERE epoch = ?", [epoch])
        if stage is not None:
            self._execute("DELETE FROM transfers WHERE epoch = ? AND stage = ?", [epoch, stage])
            self._execute("DELETE FROM lineage WHERE epoch = ? AND relation LIKE ?", [epoch, f"{stage}:%"])

    # -- chain metadata and head ----------------------------------------------------------------

    def meta(self, key: str) -> str | None:
        return self._scalar("SELECT value FROM chain_meta WHERE key = ?", [key])

    @property
    def initialized(self) -> bool:
        return self.meta(CHAIN_ID_KEY) is not None

    @property
    def chain_id(self) -> str:
        chain_id = self.meta(CHAIN_ID_KEY)
        if chain_id is None:
            raise ChainError("this database holds no chain yet; run `gonka init` (or `make demo`) first")
        return chain_id

    def genesis(self) -> GenesisParams:
        """The genesis parameters the chain was created with: epoch 0's recorded parameters, which block 0's params_hash
        commits to (never re-read from YAML)."""
        params_json = self._scalar("SELECT params_json FROM epochs WHERE epoch = 0")
        if params_json is None:
            raise ChainError("the chain has no genesis epoch; run `gonka init` (or `make demo`) first")
        return GenesisParams.model_validate_json(params_json)

    def genesis_supply(self) -> int:
        """Every unit that existed at genesis: the sum over block 0's committed account states."""
        return int(self._scalar(
            "SELECT coalesce(sum(balance + escrow + locked + collateral), 0) FROM account_states WHERE epoch = 0"))

    def head(self) -> Head:
        """The last finalized block."""
        row = self._query("SELECT height, hash FROM blocks WHERE status = ? ORDER BY height DESC LIMIT 1", [FINALIZED])
        if not row:
            raise ChainError("the chain has no genesis block; run `gonka init` (or `make demo`) first")
        return Head(*row[0])

    # -- epochs ---------------------------------------------------------------------------------

    def epoch_status(self, epoch: int) -> str | None:
        return self._scalar("SELECT status FROM epochs WHERE epoch = ?", [epoch])

    def require_writable(self, epoch: int) -> None:
        """Refuse writes to a finalized epoch and to any epoch other than the head's successor."""
        if self.epoch_status(epoch) == FINALIZED:
            raise FinalizedEpochError(
                f"epoch {epoch} is finalized (block {epoch}); its rows are immutable. "
                f"Launch the next epoch instead: partition {self.head().height + 1} of `epochs`."
            )
        head = self.head()
        if epoch != head.height + 1:
            raise EpochOrderError(f"epoch {epoch} cannot run now: the head is block {head.height}. "
                                  f"Launch epoch {head.height + 1} first (partition {head.height + 1} of `epochs`).")

    def _open_epoch(self, params: EpochParams, params_hash: str) -> None:
        """Start (or restart) the head's successor, dropping any stale proposal; it follows the head's block."""
        epoch = params.epoch
        self.require_writable(epoch)
        self._execute("DELETE FROM block_signatures WHERE height = ?", [epoch])
        self._execute("DELETE FROM blocks WHERE height = ?", [epoch])
        self._execute("DELETE FROM epochs WHERE epoch = ?", [epoch])
        self._insert("epochs", [{"epoch": epoch, "status": OPEN, "params_hash": params_hash,
                                 "params_json": json.dumps(params.as_dict(), sort_keys=True)}])

    def _require_opened(self, epoch: int) -> None:
        if self.epoch_status(epoch) is None:
            raise ChainError(f"epoch {epoch} has not been opened; run its collect stage first")

    def epoch_params(self, epoch: int) -> EpochParams:
        """The parameters an opened epoch runs under, as recorded (and hashed) by its collect stage."""
        if epoch == 0:
            raise ChainError("epoch 0 is genesis: it runs no stage, and its parameters are the genesis parameters (genesis())")
        self._require_opened(epoch)
        return EpochParams.model_validate_json(self._scalar("SELECT params_json FROM epochs WHERE epoch = ?", [epoch]))

    def rules_name(self, epoch: int) -> str:
        """The rule set an epoch (genesis included) ran under, as its recorded params name it."""
        self._require_opened(epoch)
        return json.loads(self._scalar("SELECT params_json FROM epochs WHERE epoch = ?", [epoch]))["rules"]

    def params_hash(self, epoch: int) -> str:
        self._require_opened(epoch)
        return self._scalar("SELECT params_hash FROM epochs WHERE epoch = ?", [epoch])

    def prev_hash(self, epoch: int) -> str:
        """The hash of the block before an opened epoch: the seed of everything the epoch draws."""
        self._require_opened(epoch)
        prev_hash = self._scalar("SELECT hash FROM blocks WHERE height = ? AND status = ?", [epoch - 1, FINALIZED])
        if prev_hash is None:
            raise ChainError(f"epoch {epoch} follows no finalized block {epoch - 1}")
        return prev_hash

    def claim_epoch(self, epoch: int, run_id: str, holder_active: Callable[[str], bool]) -> None:
        """Record that run_id is running the epoch; refuse while another, still active, run holds it."""
        with self.transaction():
            self.require_writable(epoch)
            holder = self._scalar("SELECT run_id FROM epoch_runs WHERE epoch = ?", [epoch])
            if holder not in (None, run_id) and holder_active(holder):
                raise ChainError(f"epoch {epoch} is being run by run {holder}; wait for it to finish (or terminate it) "
                                 "before launching it again")
            self._execute("DELETE FROM epoch_runs WHERE epoch = ?", [epoch])
            self._insert("epoch_runs", [{"epoch": epoch, "run_id": run_id}])

    # -- state ----------------------------------------------------------------------------------

    def weights(self, epoch: int) -> dict[str, int]:
        """Host weights of an epoch's post-state (the weights in force during epoch + 1)."""
        return dict(self._query("SELECT address, weight FROM host_states WHERE epoch = ? ORDER BY address", [epoch]))

    def balances(self, epoch: int) -> dict[str, int]:
        """Spendable balances during an unfinalized epoch: last post-state plus this epoch's transfers so far."""
        return {row["address"]: row["balance"] for row in self.running_accounts(epoch)}

    def running_accounts(self, epoch: int) -> list[dict[str, Any]]:
        """Every account as it stands mid-epoch: the previous post-state plus the epoch's transfers so far."""
        return self._records(
            """SELECT s.address, s.balance + coalesce(t.balance, 0) AS balance, s.escrow + coalesce(t.escrow, 0) AS escrow,
                      s.locked + coalesce(t.locked, 0) AS locked, s.collateral + coalesce(t.collateral, 0) AS collateral
               FROM account_states s
               LEFT JOIN (SELECT account, sum(balance_delta) balance, sum(escrow_delta) escrow,
                                 sum(locked_delta) locked, sum(collateral_delta) collateral
                          FROM transfers WHERE epoch = ? GROUP BY account) t ON t.account = s.address
               WHERE s.epoch = ? ORDER BY s.address""",
            [epoch, epoch - 1],
        )

    def minted_and_burned(self, through_epoch: int) -> tuple[int, int]:
        """Σ minted and Σ burned of every epoch up to and including through_epoch."""
        minted, burned = self._query(
            "SELECT coalesce(sum(minted), 0), coalesce(sum(burned), 0) FROM emissions WHERE epoch <= ?", [through_epoch])[0]
        return int(minted), int(burned)

    # -- blocks ---------------------------------------------------------------------------------

    def _save_block(self, header: dict[str, Any], block_hash: str, signatures: Sequence[dict[str, Any]], status: str) -> None:
        height = header["height"]
        if status == PROPOSED:
            self.require_writable(height)
        self._execute("DELETE FROM block_signatures WHERE height = ?", [height])
        self._execute("DELETE FROM blocks WHERE height = ?", [height])
        self._insert("blocks", [{"height": height, "hash": block_hash, "prev_hash": header["prev_hash"], "status": status,
                                 "header_json": json.dumps(header, sort_keys=True)}])
        self._insert("block_signatures", [{"height": height, **signature} for signature in signatures])
        self._execute("UPDATE epochs SET status = ? WHERE epoch = ?", [status, height])

    def block(self, height: int) -> dict[str, Any] | None:
        rows = self._records("SELECT * FROM blocks WHERE height = ?", [height])
        if not rows:
            return None
        row = rows[0]
        try:
            row["header"] = json.loads(row.pop("header_json"))
        except json.JSONDecodeError as error:
            raise ChainError(f"the stored header (blocks.header_json) is not valid JSON ({error})") from error
        row["signatures"] = self.block_signatures(height)
        return row

    def block_signatures(self, height: int) -> list[dict[str, Any]]:
        """(signer, signature, weight) of every signature on the block at a height, in signer order."""
        return self._records("SELECT signer, signature, weight FROM block_signatures WHERE height = ? ORDER BY signer", [height])

    def block_hash(self, height: int) -> str:
        """The stored hash of the block at a height; no block there is an error."""
        block_hash = self._scalar("SELECT hash FROM blocks WHERE height = ?", [height])
        if block_hash is None:
            raise ChainError(f"no block at height {height}")
        return block_hash

    def height_of(self, block_hash: str) -> int | None:
        """The height of the finalized block whose hash starts with block_hash (12 hex digits at least)."""
        if len(block_hash) < 12 or any(c not in "0123456789abcdef" for c in block_hash):
            raise ChainError(f"{block_hash!r} is not a block hash (12 or more lowercase hex digits)")
        rows = self._query("SELECT height FROM blocks WHERE status = ? AND starts_with(hash, ?)", [FINALIZED, block_hash])
        if len(rows) > 1:
            raise ChainError(f"{block_hash!r} is the start of {len(rows)} block hashes; give more digits")
        return rows[0][0] if rows else None

    def finalized_heights(self) -> list[int]:
        return [height for (height,) in self._query("SELECT height FROM blocks WHERE status = ? ORDER BY height", [FINALIZED])]

    def finalize(self, height: int) -> None:
        """Seal a proposed block: from here on its epoch refuses every write."""
        with self.transaction():
            self.require_writable(height)
            if self._scalar("SELECT status FROM blocks WHERE height = ?", [height]) != PROPOSED:
                raise ChainError(f"block {height} has not been proposed; run the block_proposal stage first")
            self._execute("UPDATE blocks SET status = ? WHERE height = ?", [FINALIZED, height])
            self._execute("UPDATE epochs SET status = ? WHERE epoch = ?", [FINALIZED, height])
