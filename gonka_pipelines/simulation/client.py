"""The developer's side of intake: sign a task, check it as the collector will, and drop it in the chain's inbox."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from gonka_pipelines.chain.store import ChainStore
from gonka_pipelines.compute.profiles import llm_contexts
from gonka_pipelines.local.inbox import read_entry, waiting_names
from gonka_pipelines.protocol.crypto import KeyPair, MessageKind, canonical_bytes
from gonka_pipelines.protocol.intake import (
    TRAINING_KIND,
    Rejected,
    check_submission,
    check_training,
    claims_frame,
    parse_submission,
)
from gonka_pipelines.protocol.messages import task_body, training_body


def sign_task(keypair: KeyPair, chain_id: str, *, model: str, prompt: str, max_tokens: int, max_price: int, nonce: int,
              version: str = "") -> bytes:
    """The bytes of a signed task submission, exactly as the collector reads them ('' version: the served one)."""
    body = task_body(chain_id, keypair.public_key, nonce, model, prompt, max_tokens, max_price, version)
    return canonical_bytes({"body": body, "signature": keypair.sign(chain_id, MessageKind.TASK, body)})


def sign_training(keypair: KeyPair, chain_id: str, *, model: str, base_version: str, shards: list[str], steps: int,
                  batch_size: int, learning_rate: float, seed: int, max_price: int, nonce: int) -> bytes:
    """The bytes of a signed training task (PROTOCOL section 4, "Training tasks"), exactly as the collector reads them."""
    body = training_body(chain_id, keypair.public_key, nonce, model, base_version, shards, steps, batch_size,
                         float(learning_rate), seed, max_price)
    return canonical_bytes({"body": body, "signature": keypair.sign(chain_id, MessageKind.TRAINING_TASK, body)})


def next_nonce(used: Iterable[int]) -> int:
    """The lowest nonce above every nonce this developer has used or has waiting in the inbox."""
    return max(used, default=-1) + 1


def waiting_nonces(inbox: Path, developer_key: str, max_bytes: int) -> list[int]:
    """Nonces of this developer's submissions still waiting in the inbox (entries that do not parse are skipped)."""
    nonces = []
    for entry in (submission for name in waiting_names(inbox) for submission in read_entry(inbox, name, max_bytes)):
        if entry.unreadable is not None:
            continue
        try:
            body, _ = parse_submission(entry.raw)
        except Rejected:
            continue
        if body["developer"] == developer_key:
            nonces.append(body["nonce"])
    return nonces


def checked_order(store: ChainStore, inbox: Path, keypair: KeyPair, sign: Callable[[int], bytes],
                  nonce: int | None = None) -> tuple[bytes, int]:
    """A signed submission (inference or training task) for the head's successor and its nonce (by default the next
    one free, counting submissions still waiting in the inbox), checked as the collector will check it; one it would
    reject raises Rejected, unwritten."""
    epoch, genesis = store.head().height + 1, store.genesis()
    if nonce is None:
        waiting = waiting_nonces(inbox, keypair.public_key, genesis.tasks.max_submission_bytes)
        nonce = next_nonce([*store.developer_nonces(keypair.address), *waiting])
    raw = sign(nonce)
    body, signature = parse_submission(raw)
    context = store.intake_context(epoch, genesis, genesis.tasks.price(epoch), llm_contexts(),
                                   claims_frame([(body["developer"], body["nonce"])]))
    (check_training if body.get("kind") == TRAINING_KIND else check_submission)(body, signature, "", context)
    return raw, nonce


def checked_submission(store: ChainStore, inbox: Path, keypair: KeyPair, *, model: str, prompt: str, max_tokens: int,
                       max_price: int, nonce: int | None = None, version: str = "") -> tuple[bytes, int]:
    """An inference task, checked (see checked_order); `version`: a model version hash or a unique prefix of one."""
    if version:
        version = store.resolve_version(version, model)
    return checked_order(store, inbox, keypair, lambda n: sign_task(
        keypair, store.chain_id, model=model, prompt=prompt, max_tokens=max_tokens, max_price=max_price, nonce=n,
        version=version), nonce)


def checked_training(store: ChainStore, inbox: Path, keypair: KeyPair, *, nonce: int | None = None, **order: Any) -> tuple[bytes, int]:
    """A training order (model, base_version, shards, steps, batch_size, learning_rate, seed, max_price), checked."""
    return checked_order(store, inbox, keypair, lambda n: sign_training(keypair, store.chain_id, nonce=n, **order), nonce)
