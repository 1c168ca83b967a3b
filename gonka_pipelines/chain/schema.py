"""The ledger's schema as an ordered list of migrations, applied at open and recorded in schema_version."""

from __future__ import annotations

import duckdb


def _without_key(table: str, columns: str) -> str:
    """SQL that rebuilds a table with these columns (its own, in its order, minus the key), rows and name kept: DuckDB
    cannot drop a PRIMARY KEY in place. Views over the table bind by name and survive."""
    return f"""
        CREATE TABLE {table}__rebuilt ({columns});
        INSERT INTO {table}__rebuilt SELECT * FROM {table};
        DROP TABLE {table};
        ALTER TABLE {table}__rebuilt RENAME TO {table};
        """


MIGRATIONS: list[tuple[int, str, str]] = [
    (
        1,
        "chain core: accounts, hosts, epochs, intake, journal, post-state, blocks, lineage",
        """
        CREATE TABLE chain_meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL);
        CREATE TABLE accounts (
            address VARCHAR PRIMARY KEY, name VARCHAR NOT NULL, kind VARCHAR NOT NULL, public_key VARCHAR NOT NULL);
        CREATE TABLE hosts (
            address VARCHAR PRIMARY KEY, name VARCHAR NOT NULL, public_key VARCHAR NOT NULL,
            capacity INTEGER NOT NULL, models VARCHAR[] NOT NULL, behaviour VARCHAR NOT NULL);
        CREATE TABLE epochs (
            epoch BIGINT PRIMARY KEY, status VARCHAR NOT NULL, seed VARCHAR NOT NULL,
            params_hash VARCHAR NOT NULL, params_json VARCHAR NOT NULL);
        CREATE TABLE submissions (
            submission_id VARCHAR PRIMARY KEY, epoch BIGINT NOT NULL, outcome VARCHAR NOT NULL);
        CREATE TABLE tasks (
            task_id VARCHAR PRIMARY KEY, epoch BIGINT NOT NULL, submission_id VARCHAR NOT NULL,
            developer VARCHAR NOT NULL, nonce BIGINT NOT NULL, model VARCHAR NOT NULL, prompt VARCHAR NOT NULL,
            prompt_tokens INTEGER NOT NULL, max_tokens INTEGER NOT NULL, max_price BIGINT NOT NULL,
            escrow BIGINT NOT NULL, signature VARCHAR NOT NULL, UNIQUE (developer, nonce));
        CREATE TABLE rejected_tasks (
            submission_id VARCHAR PRIMARY KEY, epoch BIGINT NOT NULL, reason VARCHAR NOT NULL,
            detail VARCHAR NOT NULL, raw_payload BLOB NOT NULL);
        CREATE TABLE transfers (
            transfer_id VARCHAR PRIMARY KEY, epoch BIGINT NOT NULL, stage VARCHAR NOT NULL, account VARCHAR NOT NULL,
            balance_delta BIGINT NOT NULL, escrow_delta BIGINT NOT NULL, kind VARCHAR NOT NULL, ref VARCHAR NOT NULL);
        CREATE TABLE account_states (
            epoch BIGINT NOT NULL, address VARCHAR NOT NULL, balance BIGINT NOT NULL, escrow BIGINT NOT NULL,
            collateral BIGINT NOT NULL, PRIMARY KEY (epoch, address));
        CREATE TABLE host_states (
            epoch BIGINT NOT NULL, address VARCHAR NOT NULL, weight BIGINT NOT NULL, status VARCHAR NOT NULL,
            PRIMARY KEY (epoch, address));
        CREATE TABLE blocks (
            height BIGINT PRIMARY KEY, hash VARCHAR NOT NULL, prev_hash VARCHAR NOT NULL, status VARCHAR NOT NULL,
            header_json VARCHAR NOT NULL);
        CREATE TABLE block_signatures (
            height BIGINT NOT NULL, signer VARCHAR NOT NULL, signature VARCHAR NOT NULL, weight BIGINT NOT NULL,
            PRIMARY KEY (height, signer));
        CREATE TABLE lineage (
            epoch BIGINT NOT NULL, child_kind VARCHAR NOT NULL, child_id VARCHAR NOT NULL,
            parent_kind VARCHAR NOT NULL, parent_id VARCHAR NOT NULL, relation VARCHAR NOT NULL);
        """,
    ),
    (
        2,
        "the epoch's work: sprint batches and verdicts, weights, task results and verdicts, fees, rewards, vesting",
        """
        ALTER TABLE transfers ADD COLUMN locked_delta BIGINT NOT NULL DEFAULT 0;
        ALTER TABLE transfers ADD COLUMN collateral_delta BIGINT NOT NULL DEFAULT 0;
        ALTER TABLE account_states ADD COLUMN locked BIGINT NOT NULL DEFAULT 0;
        ALTER TABLE host_states ADD COLUMN reputation INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE host_states ADD COLUMN epochs_served INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE host_states ADD COLUMN consecutive_invalidations INTEGER NOT NULL DEFAULT 0;
        CREATE TABLE poc_batches (
            batch_id VARCHAR PRIMARY KEY, epoch BIGINT NOT NULL, host VARCHAR NOT NULL, sequence INTEGER NOT NULL,
            nonces BIGINT[] NOT NULL, distances DOUBLE[] NOT NULL, submitted_at DOUBLE NOT NULL,
            signature VARCHAR NOT NULL, status VARCHAR NOT NULL, reason VARCHAR);
        CREATE TABLE poc_verdicts (
            epoch BIGINT NOT NULL, validator VARCHAR NOT NULL, host VARCHAR NOT NULL, sampled INTEGER NOT NULL,
            mismatches INTEGER NOT NULL, recomputed BOOLEAN NOT NULL, valid BOOLEAN NOT NULL,
            PRIMARY KEY (epoch, validator, host));
        CREATE TABLE poc_verdict_signatures (
            epoch BIGINT NOT NULL, validator VARCHAR NOT NULL, signature VARCHAR NOT NULL, PRIMARY KEY (epoch, validator));
        CREATE TABLE epoch_weights (
            epoch BIGINT NOT NULL, address VARCHAR NOT NULL, hits BIGINT NOT NULL, valid_vote_weight BIGINT NOT NULL,
            sprint_accepted BOOLEAN NOT NULL, adjusted_weight BIGINT NOT NULL, weight BIGINT NOT NULL,
            PRIMARY KEY (epoch, address));
        CREATE TABLE seed_commitments (
            epoch BIGINT NOT NULL, host VARCHAR NOT NULL, commitment VARCHAR NOT NULL, signature VARCHAR NOT NULL,
            PRIMARY KEY (epoch, host));
        CREATE TABLE task_results (
            task_id VARCHAR PRIMARY KEY, epoch BIGINT NOT NULL, executor VARCHAR NOT NULL, status VARCHAR NOT NULL,
            output_tokens INTEGER[] NOT NULL, top_ids INTEGER[][] NOT NULL, top_logprobs DOUBLE[][] NOT NULL,
            completion_tokens INTEGER NOT NULL, cost BIGINT NOT NULL, refund BIGINT NOT NULL, signature VARCHAR NOT NULL);
        CREATE TABLE task_verdicts (
            epoch BIGINT NOT NULL, task_id VARCHAR NOT NULL, validator VARCHAR NOT NULL, recomputed BOOLEAN NOT NULL,
            similarity DOUBLE NOT NULL, passed BOOLEAN NOT NULL, reason VARCHAR NOT NULL, signature VARCHAR NOT NULL,
            PRIMARY KEY (task_id, validator));
        CREATE TABLE task_outcomes (
            task_id VARCHAR PRIMARY KEY, epoch BIGINT NOT NULL, executor VARCHAR NOT NULL, validations INTEGER NOT NULL,
            failures INTEGER NOT NULL, invalid_vote_weight BIGINT NOT NULL, outcome VARCHAR NOT NULL);
        CREATE TABLE fee_shares (
            epoch BIGINT NOT NULL, task_id VARCHAR NOT NULL, host VARCHAR NOT NULL, role VARCHAR NOT NULL,
            amount BIGINT NOT NULL, PRIMARY KEY (task_id, host));
        CREATE TABLE host_epochs (
            epoch BIGINT NOT NULL, address VARCHAR NOT NULL, assigned INTEGER NOT NULL, missed INTEGER NOT NULL,
            validated INTEGER NOT NULL, invalidated INTEGER NOT NULL, consecutive_invalidations INTEGER NOT NULL,
            required_validations INTEGER NOT NULL, done_validations INTEGER NOT NULL, contradicted_votes INTEGER NOT NULL,
            status VARCHAR NOT NULL, reputation INTEGER NOT NULL, epochs_served INTEGER NOT NULL,
            PRIMARY KEY (epoch, address));
        CREATE TABLE rewards (
            epoch BIGINT NOT NULL, address VARCHAR NOT NULL, status VARCHAR NOT NULL, weight BIGINT NOT NULL,
            total_weight BIGINT NOT NULL, reward BIGINT NOT NULL, work_coins BIGINT NOT NULL, withheld BIGINT NOT NULL,
            slashed BIGINT NOT NULL, claimed BOOLEAN NOT NULL, payout BIGINT NOT NULL, PRIMARY KEY (epoch, address));
        CREATE TABLE emissions (
            epoch BIGINT PRIMARY KEY, scheduled BIGINT NOT NULL, minted BIGINT NOT NULL, burned BIGINT NOT NULL);
        CREATE TABLE vesting (
            epoch BIGINT NOT NULL, address VARCHAR NOT NULL, unlock_epoch BIGINT NOT NULL, amount BIGINT NOT NULL,
            PRIMARY KEY (epoch, address, unlock_epoch));
        """,
    ),
    (
        3,
        "operations: which Dagster run holds an epoch, and the payout_lineage view",
        """
        CREATE TABLE epoch_runs (epoch BIGINT PRIMARY KEY, run_id VARCHAR NOT NULL);
        CREATE VIEW payout_lineage AS
        WITH payouts AS (SELECT r.*, h.name AS host FROM rewards r JOIN hosts h USING (address))
        SELECT p.epoch, p.host, p.address, p.payout, p.claimed, 'reward' AS part, 'weight' AS source_kind,
               w.address AS source_id, p.reward AS amount,
               format('weight {} of {} from {} accepted hits', p.weight, p.total_weight, w.hits) AS detail
        FROM payouts p
        JOIN lineage l ON l.epoch = p.epoch AND l.child_kind = 'payout' AND l.child_id = p.address AND l.parent_kind = 'weight'
        JOIN epoch_weights w ON w.epoch = p.epoch AND w.address = l.parent_id
        UNION ALL
        SELECT p.epoch, p.host, p.address, p.payout, p.claimed, 'reward', 'poc_batch', b.batch_id, NULL,
               format('{} hits in batch {} (behind the weight)', len(b.nonces), b.sequence)
        FROM payouts p
        JOIN lineage l ON l.epoch = p.epoch AND l.child_kind = 'weight' AND l.child_id = p.address AND l.parent_kind = 'poc_batch'
        JOIN poc_batches b ON b.batch_id = l.parent_id
        WHERE p.reward > 0
        UNION ALL
        SELECT p.epoch, p.host, p.address, p.payout, p.claimed, 'work_coins', 'fee_share', f.task_id, f.amount,
               format('{} share of fee {} (task {}, {} validation(s))', f.role, r.cost, o.outcome, o.validations)
        FROM payouts p
        JOIN lineage l ON l.epoch = p.epoch AND l.child_kind = 'payout' AND l.child_id = p.address AND l.parent_kind = 'fee_share'
        JOIN fee_shares f ON f.task_id = l.parent_id AND f.host = p.address
        JOIN task_results r ON r.task_id = f.task_id
        JOIN task_outcomes o ON o.task_id = f.task_id;
        """,
    ),
    (
        4,
        "one home for the previous block hash: epochs no longer copy it (it is the hash of block epoch - 1)",
        """
        ALTER TABLE epochs DROP COLUMN seed;
        """,
    ),
    (
        5,
        "genesis parameters and supply are read from block 0's committed rows, not from uncommitted chain_meta copies",
        """
        DELETE FROM chain_meta WHERE key <> 'chain_id';
        """,
    ),
    (
        6,
        "refused and unclaimed payouts are held one epoch before they burn (PROTOCOL section 5)",
        """
        ALTER TABLE emissions ADD COLUMN unclaimed BIGINT NOT NULL DEFAULT 0;
        """,
    ),
    (
        7,
        "training: the corpus shards registered at genesis, training tasks, and model versions with their lineage",
        """
        CREATE TABLE corpus_shards (hash VARCHAR PRIMARY KEY, name VARCHAR NOT NULL, role VARCHAR NOT NULL, bytes BIGINT NOT NULL);
        CREATE TABLE training_tasks (
            task_id VARCHAR PRIMARY KEY, epoch BIGINT NOT NULL, submission_id VARCHAR NOT NULL, developer VARCHAR NOT NULL,
            nonce BIGINT NOT NULL, model VARCHAR NOT NULL, base_version VARCHAR NOT NULL, shards VARCHAR[] NOT NULL,
            steps INTEGER NOT NULL, batch_size INTEGER NOT NULL, learning_rate DOUBLE NOT NULL, seed BIGINT NOT NULL,
            max_price BIGINT NOT NULL, tokens BIGINT NOT NULL, escrow BIGINT NOT NULL, signature VARCHAR NOT NULL,
            UNIQUE (developer, nonce));
        CREATE TABLE model_versions (
            version VARCHAR PRIMARY KEY, epoch BIGINT NOT NULL, model VARCHAR NOT NULL, parent VARCHAR NOT NULL,
            task_id VARCHAR NOT NULL, executor VARCHAR NOT NULL, shards VARCHAR[] NOT NULL, final_loss DOUBLE,
            eval_loss DOUBLE NOT NULL);
        CREATE TABLE training_results (
            task_id VARCHAR PRIMARY KEY, epoch BIGINT NOT NULL, executor VARCHAR NOT NULL, status VARCHAR NOT NULL,
            version VARCHAR NOT NULL, checkpoint_steps INTEGER[] NOT NULL, checkpoints VARCHAR[] NOT NULL,
            losses DOUBLE[] NOT NULL, tokens BIGINT NOT NULL, cost BIGINT NOT NULL, refund BIGINT NOT NULL,
            signature VARCHAR NOT NULL);
        CREATE TABLE training_verdicts (
            epoch BIGINT NOT NULL, task_id VARCHAR NOT NULL, validator VARCHAR NOT NULL, first_step INTEGER NOT NULL,
            last_step INTEGER NOT NULL, recomputed BOOLEAN NOT NULL, passed BOOLEAN NOT NULL, eval_loss DOUBLE NOT NULL,
            reason VARCHAR NOT NULL, signature VARCHAR NOT NULL, PRIMARY KEY (task_id, validator));
        CREATE OR REPLACE VIEW payout_lineage AS
        WITH payouts AS (SELECT r.*, h.name AS host FROM rewards r JOIN hosts h USING (address)),
             costs AS (SELECT task_id, cost FROM task_results UNION ALL SELECT task_id, cost FROM training_results)
        SELECT p.epoch, p.host, p.address, p.payout, p.claimed, 'reward' AS part, 'weight' AS source_kind,
               w.address AS source_id, p.reward AS amount,
               format('weight {} of {} from {} accepted hits', p.weight, p.total_weight, w.hits) AS detail
        FROM payouts p
        JOIN lineage l ON l.epoch = p.epoch AND l.child_kind = 'payout' AND l.child_id = p.address AND l.parent_kind = 'weight'
        JOIN epoch_weights w ON w.epoch = p.epoch AND w.address = l.parent_id
        UNION ALL
        SELECT p.epoch, p.host, p.address, p.payout, p.claimed, 'reward', 'poc_batch', b.batch_id, NULL,
               format('{} hits in batch {} (behind the weight)', len(b.nonces), b.sequence)
        FROM payouts p
        JOIN lineage l ON l.epoch = p.epoch AND l.child_kind = 'weight' AND l.child_id = p.address AND l.parent_kind = 'poc_batch'
        JOIN poc_batches b ON b.batch_id = l.parent_id
        WHERE p.reward > 0
        UNION ALL
        SELECT p.epoch, p.host, p.address, p.payout, p.claimed, 'work_coins', 'fee_share', f.task_id, f.amount,
               format('{} share of fee {} (task {}, {} validation(s))', f.role, c.cost, o.outcome, o.validations)
        FROM payouts p
        JOIN lineage l ON l.epoch = p.epoch AND l.child_kind = 'payout' AND l.child_id = p.address AND l.parent_kind = 'fee_share'
        JOIN fee_shares f ON f.task_id = l.parent_id AND f.host = p.address
        JOIN costs c ON c.task_id = f.task_id
        JOIN task_outcomes o ON o.task_id = f.task_id;
        """,
    ),
    (
        8,
        "inference tasks may name a model version; each epoch's post-state records every model's served version",
        """
        ALTER TABLE tasks ADD COLUMN version VARCHAR NOT NULL DEFAULT '';
        CREATE TABLE served_versions (
            epoch BIGINT NOT NULL, model VARCHAR NOT NULL, version VARCHAR NOT NULL, PRIMARY KEY (epoch, model));
        """,
    ),
    (
        9,
        "a validator's PoC verdicts are one signed record of vectors over the hosts it checked (poc_verdicts becomes a view); "
        "epoch_weights records the weight asked to vote on each sprint",
        """
        CREATE TABLE poc_verdict_sets (
            epoch BIGINT NOT NULL, validator VARCHAR NOT NULL, hosts VARCHAR[] NOT NULL, sampled INTEGER[] NOT NULL,
            mismatches INTEGER[] NOT NULL, recomputed BOOLEAN[] NOT NULL, valid BOOLEAN[] NOT NULL,
            signature VARCHAR NOT NULL, PRIMARY KEY (epoch, validator));
        INSERT INTO poc_verdict_sets
            SELECT v.epoch, v.validator, list(v.host ORDER BY v.host), list(v.sampled ORDER BY v.host),
                   list(v.mismatches ORDER BY v.host), list(v.recomputed ORDER BY v.host), list(v.valid ORDER BY v.host),
                   s.signature
            FROM poc_verdicts v JOIN poc_verdict_signatures s USING (epoch, validator) GROUP BY v.epoch, v.validator, s.signature;
        DROP TABLE poc_verdicts;
        DROP TABLE poc_verdict_signatures;
        CREATE VIEW poc_verdicts AS
            SELECT epoch, validator, unnest(hosts) AS host, unnest(sampled) AS sampled, unnest(mismatches) AS mismatches,
                   unnest(recomputed) AS recomputed, unnest(valid) AS valid
            FROM poc_verdict_sets;
        ALTER TABLE epoch_weights ADD COLUMN vote_weight BIGINT NOT NULL DEFAULT 0;
        """,
    ),
    (
        10,
        "an executor signs one Merkle root over its epoch's results (inference, training) and a validator one over its "
        "verdicts (record_roots), instead of a signature per row; blocks sealed before this version name per-row "
        "signatures in their leaves and no longer re-derive",
        """
        CREATE TABLE record_roots (
            epoch BIGINT NOT NULL, signer VARCHAR NOT NULL, kind VARCHAR NOT NULL, root VARCHAR NOT NULL,
            records BIGINT NOT NULL, signature VARCHAR NOT NULL, PRIMARY KEY (epoch, kind, signer));
        ALTER TABLE task_results DROP COLUMN signature;
        ALTER TABLE task_verdicts DROP COLUMN signature;
        ALTER TABLE training_results DROP COLUMN signature;
        ALTER TABLE training_verdicts DROP COLUMN signature;
        """,
    ),
    (
        11,
        "the epoch's records (transfers, tasks, results, verdicts, outcomes, fee shares) drop their hash-keyed PRIMARY "
        "KEY indexes: every row is committed by its block, a unique index cost 3-4 us per row to write; tasks keep "
        "UNIQUE (developer, nonce) and submissions their key (replay protection)",
        "".join(_without_key(table, columns) for table, columns in {
            "transfers": "transfer_id VARCHAR NOT NULL, epoch BIGINT NOT NULL, stage VARCHAR NOT NULL, account VARCHAR NOT NULL, "
                         "balance_delta BIGINT NOT NULL, escrow_delta BIGINT NOT NULL, kind VARCHAR NOT NULL, ref VARCHAR NOT NULL, "
                         "locked_delta BIGINT NOT NULL DEFAULT 0, collateral_delta BIGINT NOT NULL DEFAULT 0",
            "tasks": "task_id VARCHAR NOT NULL, epoch BIGINT NOT NULL, submission_id VARCHAR NOT NULL, developer VARCHAR NOT NULL, "
                     "nonce BIGINT NOT NULL, model VARCHAR NOT NULL, prompt VARCHAR NOT NULL, prompt_tokens INTEGER NOT NULL, "
                     "max_tokens INTEGER NOT NULL, max_price BIGINT NOT NULL, escrow BIGINT NOT NULL, signature VARCHAR NOT NULL, "
                     "version VARCHAR NOT NULL DEFAULT '', UNIQUE (developer, nonce)",
            "task_results": "task_id VARCHAR NOT NULL, epoch BIGINT NOT NULL, executor VARCHAR NOT NULL, status VARCHAR NOT NULL, "
                            "output_tokens INTEGER[] NOT NULL, top_ids INTEGER[][] NOT NULL, top_logprobs DOUBLE[][] NOT NULL, "
                            "completion_tokens INTEGER NOT NULL, cost BIGINT NOT NULL, refund BIGINT NOT NULL",
            "task_verdicts": "epoch BIGINT NOT NULL, task_id VARCHAR NOT NULL, validator VARCHAR NOT NULL, recomputed BOOLEAN NOT NULL, "
                             "similarity DOUBLE NOT NULL, passed BOOLEAN NOT NULL, reason VARCHAR NOT NULL",
            "task_outcomes": "task_id VARCHAR NOT NULL, epoch BIGINT NOT NULL, executor VARCHAR NOT NULL, validations INTEGER NOT NULL, "
                             "failures INTEGER NOT NULL, invalid_vote_weight BIGINT NOT NULL, outcome VARCHAR NOT NULL",
            "fee_shares": "epoch BIGINT NOT NULL, task_id VARCHAR NOT NULL, host VARCHAR NOT NULL, role VARCHAR NOT NULL, "
                          "amount BIGINT NOT NULL",
            "training_results": "task_id VARCHAR NOT NULL, epoch BIGINT NOT NULL, executor VARCHAR NOT NULL, status VARCHAR NOT NULL, "
                                "version VARCHAR NOT NULL, checkpoint_steps INTEGER[] NOT NULL, checkpoints VARCHAR[] NOT NULL, "
                                "losses DOUBLE[] NOT NULL, tokens BIGINT NOT NULL, cost BIGINT NOT NULL, refund BIGINT NOT NULL",
            "training_verdicts": "epoch BIGINT NOT NULL, task_id VARCHAR NOT NULL, validator VARCHAR NOT NULL, first_step INTEGER NOT NULL, "
                                 "last_step INTEGER NOT NULL, recomputed BOOLEAN NOT NULL, passed BOOLEAN NOT NULL, "
                                 "eval_loss DOUBLE NOT NULL, reason VARCHAR NOT NULL",
        }.items()),
    ),
]


def current_version(connection: duckdb.DuckDBPyConnection) -> int:
    """The highest migration applied; 0 for an empty database."""
    exists = connection.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_version'").fetchall()[0][0]
    if not exists:
        return 0
    return connection.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchall()[0][0]


def migrate(connection: duckdb.DuckDBPyConnection, target: int | None = None) -> list[int]:
    """Apply every migration above the recorded version (up to target), each in its own transaction."""
    connection.execute(
        "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, description VARCHAR NOT NULL)")
    applied = []
    for version, description, sql in MIGRATIONS:
        if version <= current_version(connection) or (target is not None and version > target):
            continue
        connection.execute("BEGIN TRANSACTION")
        try:
            connection.execute(sql)
            connection.execute("INSERT INTO schema_version VALUES (?, ?)", [version, description])
            connection.execute("COMMIT")
        except Exception:
            connection.execute("ROLLBACK")
            raise
        applied.append(version)
    return applied
