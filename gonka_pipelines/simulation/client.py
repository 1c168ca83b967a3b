"""The developer's side of intake: sign a task, check it as the collector will, and drop it in the chain's inbox."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from gonka_pipelines.chain.store import ChainStore
from gonka_pipelines.local.inbox import read_entry, waiting_names
from gonka_pipelines.protocol.crypto import KeyPair, MessageKind, canonical_bytes
from gonka_pipelines.protocol.intake import Rejected, check_submission, parse_submission
from gonka_pipelines.protocol.messages import task_body


def sign_task(keypair: KeyPair, chain_id: str, *, model: str, prompt: str, max_tokens: int, max_price: int, nonce: int) -> bytes:
    """The bytes of a signed task submission, exactly as the collector reads them."""
    body = task_body(chain_id, keypair.public_key, nonce, model, prompt, max_tokens, max_price)
    return canonical_bytes({"body": body, "signature": keypair.sign(chain_id, MessageKind.TASK, body)})


def next_nonce(used: Iterable[int]) -> int:
    """The lowest nonce above every nonce this developer has used or has waiting in the inbox."""
    return max(used, default=-1) + 1


def waiting_nonces(inbox: Path, developer_key: str, max_bytes: int) -> list[int]:
    """Nonces of this developer's submissions still waiting in the inbox (entries that do not parse are skipped)."""
    nonces = []
    for name in waiting_names(inbox):
        entry = read_entry(inbox, name, max_bytes)
        if entry.unreadable is not None:
            continue
        try:
            body, _ = parse_submission(entry.raw)
        except Rejected:
            continue
        if body["developer"] == developer_key:
            nonces.append(body["nonce"])
    return nonces


def checked_submission(store: ChainStore, inbox: Path, keypair: KeyPair, *, model: str, prompt: str, max_tokens: int,
                       max_price: int, nonce: int | None = None) -> tuple[bytes, int]:
    """A signed task for the head's successor and its nonce (by default the next one free, counting submissions still
    waiting in the inbox), checked as the collector will check it; a task it would reject raises Rejected, unwritten."""
    epoch, genesis, chain_id = store.head().height + 1, store.genesis(), store.chain_id
    max_bytes = genesis.tasks.max_submission_bytes
    if nonce is None:
        nonce = next_nonce([*store.developer_nonces(keypair.address), *waiting_nonces(inbox, keypair.public_key, max_bytes)])
    raw = sign_task(keypair, chain_id, model=model, prompt=prompt, max_tokens=max_tokens, max_price=max_price, nonce=nonce)
    body, signature = parse_submission(raw)
    check_submission(body, signature, "", store.intake_context(epoch, genesis.tasks, genesis.tasks.price(epoch)))
    return raw, nonce
