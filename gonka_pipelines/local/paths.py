"""Where the project's bundled resources and a chain's runtime state live."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
RESOURCES = REPO_ROOT / "resources"
DEFAULT_DATA_DIR = REPO_ROOT / "data"
DATA_DIR_ENV = "GONKA_DATA_DIR"


@dataclass(frozen=True)
class DataLayout:
    """The files of one chain: the ledger, key files, the inbox and artifacts, all under one folder."""

    root: Path

    @classmethod
    def from_env(cls) -> DataLayout:
        """GONKA_DATA_DIR if set, else the repository's data/ folder."""
        return cls(Path(os.environ.get(DATA_DIR_ENV, DEFAULT_DATA_DIR)).resolve())

    @property
    def database(self) -> Path:
        return self.root / "chain.duckdb"

    @property
    def keys(self) -> Path:
        return self.root / "keys"

    @property
    def inbox(self) -> Path:
        return self.root / "inbox"

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    @property
    def checkpoints(self) -> Path:
        """Model checkpoints, each stored as <sha256>.safetensors (content-addressed: a version's hash is its file)."""
        return self.artifacts / "checkpoints"

    @property
    def verified_blocks(self) -> Path:
        """verify-chain's memory of the blocks it re-derived (local/verified.py)."""
        return self.root / "verified-blocks.json"

    @property
    def admitted(self) -> Path:
        """Developer signatures checked as submissions arrived, remembered for the collector, with the checked entries
        kept read ahead beside it (admitted-signatures.spool/, local/admission.py)."""
        return self.root / "admitted-signatures.tsv"

    def key_file(self, name: str) -> Path:
        return self.keys / f"{name}.key"
