"""The training corpus shipped in resources/corpus/: its manifest and the shards' bytes, checked against their hashes."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from gonka_pipelines.local.config import ConfigError, read_yaml
from gonka_pipelines.local.paths import RESOURCES

CORPUS_DIR = RESOURCES / "corpus"


@dataclass(frozen=True)
class Shard:
    hash: str
    name: str
    role: str
    bytes: int


def manifest(folder: Path = CORPUS_DIR) -> list[Shard]:
    """Every shard the manifest lists, in its order."""
    entries = read_yaml(folder / "manifest.yaml").get("shards", [])
    return [Shard(e["hash"], e["name"], e["role"], e["bytes"]) for e in entries]


def shard_bytes(digest: str, folder: Path = CORPUS_DIR) -> bytes:
    """A shard's bytes, refused unless they hash to its name (every host must read exactly the registered bytes)."""
    path = folder / f"{digest}.txt"
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"corpus shard {digest[:12]} is missing: {path} ({error.strerror})") from error
    if hashlib.sha256(data).hexdigest() != digest:
        raise ConfigError(f"corpus shard file {path} does not hash to {digest[:12]}: it was altered")
    return data


def training_bytes(digests: list[str] | tuple[str, ...], folder: Path = CORPUS_DIR) -> bytes:
    """The bytes a training task trains on: its shards, concatenated in the order it names them."""
    return b"".join(shard_bytes(digest, folder) for digest in digests)


def eval_bytes(folder: Path = CORPUS_DIR) -> bytes:
    """The held-out bytes every model version is scored on."""
    return training_bytes([s.hash for s in manifest(folder) if s.role == "eval"], folder)
