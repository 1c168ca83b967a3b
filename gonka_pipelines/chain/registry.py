"""Genesis rows and the registry of accounts and hosts (fixed at genesis, committed by block 0)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from gonka_pipelines.chain.core import CHAIN_ID_KEY, FINALIZED, ChainError, StoreCore
from gonka_pipelines.protocol.params import Behaviour, GenesisParams
from gonka_pipelines.protocol.records import Host


class RegistryRows(StoreCore):
    def write_genesis(self, params: GenesisParams, accounts: Sequence[dict[str, Any]], hosts: Sequence[dict[str, Any]],
                      account_states: Sequence[dict[str, Any]], host_states: Sequence[dict[str, Any]]) -> None:
        """The chain's id, the registry, epoch 0 with the genesis parameters and the genesis post-state (the caller's
        transaction). chain_meta holds the chain id alone: everything else a payout reads is committed by block 0."""
        params_json = json.dumps(params.as_dict(), sort_keys=True)
        self._insert("chain_meta", [{"key": CHAIN_ID_KEY, "value": params.chain_id}])
        self._insert("accounts", accounts)
        self._insert("hosts", hosts)
        self._insert("epochs", [{"epoch": 0, "status": FINALIZED, "params_hash": params.params_hash, "params_json": params_json}])
        self._insert("account_states", [{"epoch": 0, **row} for row in account_states])
        self._insert("host_states", [{"epoch": 0, **row} for row in host_states])

    def register_training(self, shards: Sequence[dict[str, Any]], versions: Sequence[dict[str, Any]]) -> None:
        """The corpus shards training tasks may name and each served model's genesis version, which it serves until a
        trained one wins (the caller's transaction; block 0 commits to all three)."""
        self._insert("corpus_shards", list(shards))
        self._insert("model_versions", [{"epoch": 0, **version} for version in versions])
        self._insert("served_versions", [{"epoch": 0, "model": v["model"], "version": v["version"]} for v in versions])

    def save_genesis_block(self, header: dict[str, Any], block_hash: str, signatures: Sequence[dict[str, Any]]) -> None:
        self._save_block(header, block_hash, signatures, FINALIZED)

    def hosts(self) -> list[Host]:
        """Every registered host, in address order."""
        return [Host(address, name, public_key, capacity, tuple(models), Behaviour(behaviour))
                for address, name, public_key, capacity, models, behaviour in self._query(
                    "SELECT address, name, public_key, capacity, models, behaviour FROM hosts ORDER BY address")]

    def account_names(self) -> dict[str, str]:
        """Name of every account (hosts and developers) by address."""
        return dict(self._query("SELECT address, name FROM accounts ORDER BY address"))

    def developer_names(self) -> list[str]:
        """Every developer account's name, sorted."""
        return [name for (name,) in self._query("SELECT name FROM accounts WHERE kind = 'developer' ORDER BY name")]

    def resolve_host(self, host: str) -> tuple[str, str]:
        """(name, address) of a host given by name or address; an unknown one is an error listing the hosts."""
        row = self._query("SELECT name, address FROM hosts WHERE name = ? OR address = ?", [host, host])
        if not row:
            names = ", ".join(n for (n,) in self._query("SELECT name FROM hosts ORDER BY 1"))
            raise ChainError(f"no host named {host!r}; hosts: {names}")
        return row[0]
