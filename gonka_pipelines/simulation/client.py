"""The developer's side of intake: sign a task and drop it in the chain's inbox."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from gonka_pipelines.local.inbox import write_submission
from gonka_pipelines.protocol.crypto import KeyPair, MessageKind, canonical_bytes
from gonka_pipelines.protocol.messages import task_body


def sign_task(keypair: KeyPair, chain_id: str, *, model: str, prompt: str, max_tokens: int, max_price: int, nonce: int) -> bytes:
    """The bytes of a signed task submission, exactly as the collector reads them."""
    body = task_body(chain_id, keypair.public_key, nonce, model, prompt, max_tokens, max_price)
    return canonical_bytes({"body": body, "signature": keypair.sign(chain_id, MessageKind.TASK, body)})


def submit_task(inbox: Path, keypair: KeyPair, chain_id: str, *, model: str, prompt: str, max_tokens: int, max_price: int,
                nonce: int) -> str:
    """Sign and submit one task; returns the submission id (the inbox file's name)."""
    return write_submission(inbox, sign_task(keypair, chain_id, model=model, prompt=prompt, max_tokens=max_tokens,
                                             max_price=max_price, nonce=nonce))


def next_nonce(used: Iterable[int]) -> int:
    """The lowest nonce above every nonce this developer has used or has waiting in the inbox."""
    return max(used, default=-1) + 1
