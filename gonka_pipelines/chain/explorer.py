"""Reads for the block explorer: recent blocks, supply, a block's counts, hosts and accounts at the head, and search."""

from __future__ import annotations

import re
from typing import Any

from gonka_pipelines.chain.commitments import COMMITMENTS
from gonka_pipelines.chain.core import FINALIZED
from gonka_pipelines.chain.rewards import RewardRows

HEX_PREFIX = re.compile(r"[0-9a-f]{6,64}")
"""What a search treats as an id prefix: six or more hex digits (searched in lower case)."""
HEIGHT = re.compile(r"[0-9]{1,18}")
"""A block height as text: ASCII digits, few enough for a 64-bit integer (search box and URLs)."""


class ExplorerRows(RewardRows):
    def recent_blocks(self, limit: int) -> list[dict[str, Any]]:
        """The last `limit` finalized blocks, newest first: height, hash, header time, tasks accepted and rejected,
        signers and the weight they hold."""
        return self._records(
            """SELECT b.height, b.hash, b.prev_hash, json_extract_string(b.header_json, '$.timestamp') AS timestamp,
                      (SELECT count(*) FROM tasks t WHERE t.epoch = b.height)
                        + (SELECT count(*) FROM training_tasks g WHERE g.epoch = b.height) AS accepted,
                      (SELECT count(*) FROM rejected_tasks j WHERE j.epoch = b.height) AS rejected,
                      (SELECT count(*) FROM block_signatures s WHERE s.height = b.height) AS signers,
                      (SELECT coalesce(sum(weight), 0) FROM block_signatures s WHERE s.height = b.height) AS signed_weight
               FROM blocks b WHERE b.status = ? ORDER BY b.height DESC LIMIT ?""", [FINALIZED, limit])

    def supply(self, height: int) -> dict[str, int]:
        """The supply after the block at `height`: genesis, minted and burned so far, and where every unit sits
        (spendable balances, task escrow, locked vesting, host collateral, refused or unclaimed payouts held for one
        epoch before they burn); total = genesis + minted − burned = the sum of where the units sit."""
        minted, burned = self.minted_and_burned(height)
        balances, escrow, locked, collateral = self._query(
            """SELECT coalesce(sum(balance), 0), coalesce(sum(escrow), 0), coalesce(sum(locked), 0),
                      coalesce(sum(collateral), 0) FROM account_states WHERE epoch = ?""", [height])[0]
        genesis = self.genesis_supply()
        return {"genesis": genesis, "minted": minted, "burned": burned, "total": genesis + minted - burned,
                "circulating": int(balances), "escrow": int(escrow), "locked": int(locked), "collateral": int(collateral),
                "unclaimed": self.unclaimed_held(height)}

    def committed_counts(self, height: int) -> dict[str, int]:
        """How many rows each header root of the block at `height` commits to, by root name."""
        counts = {}
        for commitment in COMMITMENTS:
            counts[commitment.name] = int(self._scalar(
                f"SELECT count(*) FROM {commitment.table} WHERE {commitment.epoch} = ?", [height]))
        return counts

    def host_table(self, height: int) -> list[dict[str, Any]]:
        """Every host with its state after the block at `height` (weight, status, reputation) and its total payouts
        through that block, heaviest first."""
        return self._records(
            """SELECT h.name, h.address, h.behaviour, coalesce(s.weight, 0) AS weight, coalesce(s.status, '') AS status,
                      s.reputation, (SELECT coalesce(sum(r.payout), 0) FROM rewards r WHERE r.address = h.address
                                     AND r.epoch <= ?) AS paid
               FROM hosts h LEFT JOIN host_states s ON s.address = h.address AND s.epoch = ?
               ORDER BY weight DESC, h.name""", [height, height])

    def account_view(self, address: str, height: int) -> dict[str, Any] | None:
        """One account after the block at `height`: name, kind, balance, escrow, locked, collateral, the vesting
        tranches still locked (unlock epoch after `height`), its next task nonce and its transfers, newest first."""
        rows = self._records("SELECT address, name, kind, public_key FROM accounts WHERE address = ?", [address])
        if not rows:
            return None
        account = rows[0]
        state = self._records(
            "SELECT balance, escrow, locked, collateral FROM account_states WHERE address = ? AND epoch = ?", [address, height])
        account.update(state[0] if state else {"balance": 0, "escrow": 0, "locked": 0, "collateral": 0})
        account["vesting"] = self._records(
            """SELECT unlock_epoch, sum(amount) AS amount, min(epoch) AS first_granted, max(epoch) AS last_granted
               FROM vesting WHERE address = ? AND epoch <= ? AND unlock_epoch > ? GROUP BY unlock_epoch ORDER BY unlock_epoch""",
            [address, height, height])
        last_nonce = self._scalar(
            """SELECT max(nonce) FROM (SELECT developer, nonce, epoch FROM tasks
                                       UNION ALL SELECT developer, nonce, epoch FROM training_tasks)
               WHERE developer = ? AND epoch <= ?""", [address, height])
        account["next_nonce"] = 0 if last_nonce is None else int(last_nonce) + 1
        account["transfers"] = self._records(
            """SELECT epoch, stage, kind, ref, balance_delta, escrow_delta, locked_delta, collateral_delta FROM transfers
               WHERE account = ? AND epoch <= ? ORDER BY epoch DESC, stage, kind, ref LIMIT 200""", [address, height])
        return account

    def search(self, text: str) -> list[dict[str, str]]:
        """What `text` may name, best first: a block height, a host or account by name, an address or block hash by
        prefix, a submission or task by id prefix. Each match is {kind, key, label}."""
        text = text.strip()
        matches: list[dict[str, str]] = []
        if HEIGHT.fullmatch(text):
            if self._scalar("SELECT 1 FROM blocks WHERE height = ? AND status = ?", [int(text), FINALIZED]):
                matches.append({"kind": "block", "key": text, "label": f"block {text}"})
        for name, address, kind in self._query(
                "SELECT name, address, kind FROM accounts WHERE lower(name) = lower(?) OR starts_with(address, ?) "
                "ORDER BY name LIMIT 20", [text, text]):
            matches.append({"kind": "host" if kind == "host" else "account", "key": name if kind == "host" else address,
                            "label": f"{kind} {name} ({address})"})
        text = text.lower()
        if not HEX_PREFIX.fullmatch(text):
            return matches
        for height, block_hash in self._query(
                "SELECT height, hash FROM blocks WHERE status = ? AND starts_with(hash, ?) ORDER BY height LIMIT 20",
                [FINALIZED, text]):
            matches.append({"kind": "block", "key": str(height), "label": f"block {height} ({block_hash[:16]}…)"})
        for submission_id, task_id in self._query(
                """SELECT s.submission_id, coalesce(t.task_id, g.task_id, '') FROM submissions s
                   LEFT JOIN tasks t USING (submission_id) LEFT JOIN training_tasks g USING (submission_id)
                   WHERE (starts_with(s.submission_id, ?) OR starts_with(coalesce(t.task_id, g.task_id, ''), ?))
                     AND s.epoch IN (SELECT height FROM blocks WHERE status = ?)
                   ORDER BY s.epoch, s.submission_id LIMIT 20""", [text, text, FINALIZED]):
            named = task_id if task_id.startswith(text) else submission_id
            matches.append({"kind": "task", "key": named, "label": f"{'task' if named == task_id else 'submission'} {named[:16]}…"})
        return matches
