"""verify-chain's memory: which blocks it re-derived in full, with the fingerprint of the rows it read, so the next
check re-derives only new or changed blocks. A convenience, not a trust anchor: `--full` ignores and rewrites it."""

from __future__ import annotations

import json
import os
from pathlib import Path

Memory = dict[int, tuple[str, str]]
"""height -> (block hash, fingerprint of the rows its verification read)."""


def load_verified(path: Path, chain_id: str) -> Memory:
    """What was verified for this chain id; nothing when the file is missing, unreadable or of another chain."""
    try:
        data = json.loads(path.read_text())
        if data.get("chain_id") != chain_id:
            return {}
        return {int(height): (str(block_hash), str(fingerprint)) for height, (block_hash, fingerprint) in data["blocks"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def save_verified(path: Path, chain_id: str, memory: Memory) -> None:
    """Replace the memory in one rename, so a killed check never leaves half a file."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps({"chain_id": chain_id, "blocks": {str(h): list(v) for h, v in sorted(memory.items())}}))
    temporary.replace(path)
