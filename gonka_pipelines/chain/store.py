"""The DuckDB ledger: the one place that writes SQL. Epoch writes are transactional; finalized epochs are immutable."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from gonka_pipelines.chain.schema import MIGRATIONS, current_version, migrate

OPEN, PROPOSED, FINALIZED = "open", "proposed", "finalized"


class ChainError(RuntimeError):
    """A request the chain refuses; the message says what to do instead."""


class FinalizedEpochError(ChainError):
    """Any change to a finalized epoch."""


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
                raise ChainError(f"{path} is busy: another process (an epoch run?) holds its write lock; "
                                 f"try again when it finishes") from error
            time.sleep(0.2)


class ChainStore:
    """Repository over one chain database. Use `ChainStore.open(path)` as a context manager."""

    def __init__(self, connection: duckdb.DuckDBPyConnection):
        self.connection = connection

    @classmethod
    @contextmanager
    def open(cls, path: Path, read_only: bool = False) -> Iterator["ChainStore"]:
        """Open (creating and migrating when writable); read-only opens refuse an outdated schema."""
        if read_only and not path.exists():
            raise ChainError(f"{path}: no chain here yet; run `gonka init` (or `make demo`) first")
        path.parent.mkdir(parents=True, exist_ok=True)
        connection = _connect(path, read_only)
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

    # -- primitives ---------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """All-or-nothing: a crash or error inside leaves the chain as it was."""
        self.connection.execute("BEGIN TRANSACTION")
        try:
            yield
        except BaseException:
            self.connection.execute("ROLLBACK")
            raise
        self.connection.execute("COMMIT")

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        return self.connection.execute(sql, list(params)).fetchall()

    def scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """The first value of the first row (None when there is none); the result is read whole, so nothing stays open."""
        rows = self.connection.execute(sql, list(params)).fetchall()
        return rows[0][0] if rows else None

    def records(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        cursor = self.connection.execute(sql, list(params))
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]

    def insert(self, table: str, rows: Sequence[dict[str, Any]] | pa.Table) -> int:
        """Bulk insert by column name through Arrow; returns the row count."""
        arrow = rows if isinstance(rows, pa.Table) else pa.Table.from_pylist(list(rows))
        if arrow.num_rows == 0:
            return 0
        self.connection.register("_incoming", arrow)
        try:
            self.connection.execute(f"INSERT INTO {table} BY NAME SELECT * FROM _incoming")
        finally:
            self.connection.unregister("_incoming")
        return arrow.num_rows

    def delete_epoch_rows(self, epoch: int, tables: Sequence[str], stage: str | None = None) -> None:
        """Clear what a stage wrote for an epoch before it writes again (re-runs replace, never add)."""
        self.require_writable(epoch)
        for table in tables:
            self.connection.execute(f"DELETE FROM {table} WHERE epoch = ?", [epoch])
        if stage is not None:
            self.connection.execute("DELETE FROM transfers WHERE epoch = ? AND stage = ?", [epoch, stage])
            self.connection.execute("DELETE FROM lineage WHERE epoch = ? AND relation LIKE ?", [epoch, f"{stage}:%"])

    # -- chain metadata and head --------------------------------------------------------------

    def meta(self, key: str) -> str | None:
        return self.scalar("SELECT value FROM chain_meta WHERE key = ?", [key])

    def set_meta(self, values: dict[str, str]) -> None:
        self.insert("chain_meta", [{"key": k, "value": v} for k, v in values.items()])

    @property
    def initialized(self) -> bool:
        return self.meta("chain_id") is not None

    @property
    def chain_id(self) -> str:
        chain_id = self.meta("chain_id")
        if chain_id is None:
            raise ChainError("this database holds no chain yet; run `gonka init` (or `make demo`) first")
        return chain_id

    def head(self) -> Head:
        """The last finalized block."""
        row = self.connection.execute(
            "SELECT height, hash FROM blocks WHERE status = ? ORDER BY height DESC LIMIT 1", [FINALIZED]
        ).fetchone()
        if row is None:
            raise ChainError("the chain has no genesis block; run `gonka init` (or `make demo`) first")
        return Head(*row)

    # -- epochs -------------------------------------------------------------------------------

    def epoch_status(self, epoch: int) -> str | None:
        return self.scalar("SELECT status FROM epochs WHERE epoch = ?", [epoch])

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

    def open_epoch(self, epoch: int, params: dict[str, Any], params_hash: str) -> str:
        """Start (or restart) the head's successor, dropping any stale proposal; its seed is the head's hash."""
        self.require_writable(epoch)
        seed = self.head().hash
        self.connection.execute("DELETE FROM block_signatures WHERE height = ?", [epoch])
        self.connection.execute("DELETE FROM blocks WHERE height = ?", [epoch])
        self.connection.execute("DELETE FROM epochs WHERE epoch = ?", [epoch])
        self.insert("epochs", [{"epoch": epoch, "status": OPEN, "seed": seed, "params_hash": params_hash,
                                "params_json": json.dumps(params, sort_keys=True)}])
        return seed

    def epoch_params(self, epoch: int) -> dict[str, Any]:
        text = self.scalar("SELECT params_json FROM epochs WHERE epoch = ?", [epoch])
        if text is None:
            raise ChainError(f"epoch {epoch} has not been opened; run its collect stage first")
        return json.loads(text)

    def epoch_seed(self, epoch: int) -> str:
        seed = self.scalar("SELECT seed FROM epochs WHERE epoch = ?", [epoch])
        if seed is None:
            raise ChainError(f"epoch {epoch} has not been opened; run its collect stage first")
        return seed

    def consumed_submissions(self, submission_ids: Sequence[str], before_epoch: int) -> set[str]:
        """Which of these ids finalized epochs already took (their files linger if a crash hit before archiving)."""
        return {sid for (sid,) in self.query(
            """SELECT s.submission_id FROM submissions s JOIN epochs e ON e.epoch = s.epoch AND e.status = ?
               WHERE s.epoch < ? AND list_contains(?, s.submission_id)""",
            [FINALIZED, before_epoch, list(submission_ids)])}

    def claim_epoch(self, epoch: int, run_id: str, holder_active: Callable[[str], bool]) -> None:
        """Record that run_id is running the epoch; refuse while another, still active, run holds it."""
        with self.transaction():
            self.require_writable(epoch)
            holder = self.scalar("SELECT run_id FROM epoch_runs WHERE epoch = ?", [epoch])
            if holder not in (None, run_id) and holder_active(holder):
                raise ChainError(f"epoch {epoch} is being run by run {holder}; wait for it to finish (or terminate it) "
                                 "before launching it again")
            self.connection.execute("DELETE FROM epoch_runs WHERE epoch = ?", [epoch])
            self.insert("epoch_runs", [{"epoch": epoch, "run_id": run_id}])

    # -- state --------------------------------------------------------------------------------

    def weights(self, epoch: int) -> dict[str, int]:
        """Host weights of an epoch's post-state (the weights in force during epoch + 1)."""
        return dict(self.query("SELECT address, weight FROM host_states WHERE epoch = ? ORDER BY address", [epoch]))

    def balances(self, epoch: int) -> dict[str, int]:
        """Spendable balances during an unfinalized epoch: last post-state plus this epoch's transfers so far."""
        return {row["address"]: row["balance"] for row in self.running_accounts(epoch)}

    def running_accounts(self, epoch: int) -> list[dict[str, Any]]:
        """Every account as it stands mid-epoch: the previous post-state plus the epoch's transfers so far."""
        return self.records(
            """SELECT s.address, s.balance + coalesce(t.balance, 0) AS balance, s.escrow + coalesce(t.escrow, 0) AS escrow,
                      s.locked + coalesce(t.locked, 0) AS locked, s.collateral + coalesce(t.collateral, 0) AS collateral
               FROM account_states s
               LEFT JOIN (SELECT account, sum(balance_delta) balance, sum(escrow_delta) escrow,
                                 sum(locked_delta) locked, sum(collateral_delta) collateral
                          FROM transfers WHERE epoch = ? GROUP BY account) t ON t.account = s.address
               WHERE s.epoch = ? ORDER BY s.address""",
            [epoch, epoch - 1],
        )

    def write_post_state(self, epoch: int, host_rows: Sequence[dict[str, Any]]) -> None:
        """Post-state of an epoch: accounts = previous state + the epoch's transfers; hosts as given."""
        self.delete_epoch_rows(epoch, ["account_states", "host_states"])
        self.insert("account_states", [{"epoch": epoch, **row} for row in self.running_accounts(epoch)])
        self.insert("host_states", [{"epoch": epoch, **row} for row in host_rows])

    # -- blocks -------------------------------------------------------------------------------

    def save_block(self, header: dict[str, Any], block_hash: str, signatures: Sequence[dict[str, Any]], status: str) -> None:
        height = header["height"]
        if status == PROPOSED:
            self.require_writable(height)
        self.connection.execute("DELETE FROM block_signatures WHERE height = ?", [height])
        self.connection.execute("DELETE FROM blocks WHERE height = ?", [height])
        self.insert("blocks", [{"height": height, "hash": block_hash, "prev_hash": header["prev_hash"], "status": status,
                                "header_json": json.dumps(header, sort_keys=True)}])
        self.insert("block_signatures", [{"height": height, **signature} for signature in signatures])
        self.connection.execute("UPDATE epochs SET status = ? WHERE epoch = ?", [status, height])

    def block(self, height: int) -> dict[str, Any] | None:
        rows = self.records("SELECT * FROM blocks WHERE height = ?", [height])
        if not rows:
            return None
        row = rows[0]
        row["header"] = json.loads(row.pop("header_json"))
        row["signatures"] = self.records(
            "SELECT signer, signature, weight FROM block_signatures WHERE height = ? ORDER BY signer", [height]
        )
        return row

    def finalize(self, height: int) -> None:
        """Seal a proposed block: from here on its epoch refuses every write."""
        self.require_writable(height)
        if self.scalar("SELECT status FROM blocks WHERE height = ?", [height]) != PROPOSED:
            raise ChainError(f"block {height} has not been proposed; run the block_proposal stage first")
        self.connection.execute("UPDATE blocks SET status = ? WHERE height = ?", [FINALIZED, height])
        self.connection.execute("UPDATE epochs SET status = ? WHERE epoch = ?", [FINALIZED, height])
