"""Identities and signatures: ed25519 keys, canonical encoding, domain-separated signing, hashing."""

from __future__ import annotations

import enum
import hashlib
import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, TypeVar

import orjson
from nacl.bindings import crypto_sign, crypto_sign_BYTES
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from gonka_pipelines.protocol.threads import on_threads

ENCODING_VERSION = "gonka/v1"
ADDRESS_PREFIX = "gonka1"


class MessageKind(enum.StrEnum):
    """Every signed message names its kind, so a signature over one kind never validates another. Results and verdicts
    of tasks (RESULT, TASK_VERDICT, TRAINING_RESULT, TRAINING_VERDICT) are not signed alone: they are the leaves of
    their signer's RECORDS_ROOT (record_roots.py)."""

    TASK = "task"
    TRAINING_TASK = "training_task"
    RESULT = "result"
    TRAINING_RESULT = "training_result"
    TRAINING_VERDICT = "training_verdict"
    POC_BATCH = "poc_batch"
    POC_VERDICT = "poc_verdict"
    TASK_VERDICT = "task_verdict"
    SEED_COMMIT = "seed_commit"
    RECORDS_ROOT = "records_root"
    BLOCK = "block"


_CONTAINERS = (dict, list, tuple)


def _keys_are_strings(value: Any) -> bool:
    """Every dict key, at any depth, is a string (json would silently turn 1 into "1")."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if not all(isinstance(key, str) for key in item):
                return False
            stack.extend(v for v in item.values() if isinstance(v, _CONTAINERS))
        elif isinstance(item, (list, tuple)):
            stack.extend(v for v in item if isinstance(v, _CONTAINERS))
    return True


def _first_problem(value: Any, path: str = "$") -> str:
    """Where and why a value has no canonical encoding (walked only once encoding has failed)."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"cannot encode non-finite float at {path}"
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"cannot encode non-string key {key!r} at {path}"
            if problem := _first_problem(item, f"{path}.{key}"):
                return problem
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            if problem := _first_problem(item, f"{path}[{index}]"):
                return problem
    elif not isinstance(value, (str, int, float, bool, type(None))):
        return f"cannot encode {type(value).__name__} at {path}; use hex strings for bytes"
    return ""


def _refuse(value: Any) -> Any:
    raise TypeError(type(value).__name__)


def canonical_bytes(value: Any) -> bytes:
    """Deterministic JSON (sorted keys, no spaces, UTF-8, shortest float repr) that all hashes and signatures use.

    Non-finite floats, non-string keys, bytes and other types are refused with the path of the first one.
    """
    if _keys_are_strings(value):
        try:
            return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False,
                              default=_refuse).encode()
        except (ValueError, TypeError):
            pass
    raise ValueError(_first_problem(value) or "value has no canonical encoding")


_FLOAT_TEXT_APART = re.compile(rb"0\.0000|e-\d(?!\d)")
"""Where orjson writes a float otherwise than Python's repr: 1e-05 as 0.00001, 1e-06 as 1e-6 (found by comparing the
two over millions of random doubles; every other finite double, and all strings, integers and booleans, agree)."""


_ORJSON_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME
"""Sorted keys; dataclasses and dates are not JSON to canonical_bytes, so orjson hands them back (TypeError) too."""


def canonical_row_bytes(value: Any) -> bytes:
    """canonical_bytes of any value (a row, a message body, a list), byte for byte, at orjson's speed: a value orjson
    would write differently (a small float, an integer past 64 bits, a null that may be a NaN, a type JSON lacks, or
    text that merely looks like one of those) is encoded by canonical_bytes instead."""
    try:
        encoded = orjson.dumps(value, option=_ORJSON_OPTIONS)
    except TypeError:
        return canonical_bytes(value)
    if b"null" in encoded or (b"0.0000" in encoded or b"e-" in encoded) and _FLOAT_TEXT_APART.search(encoded):
        return canonical_bytes(value)
    return encoded


def message_prefix(chain_id: str, kind: MessageKind) -> bytes:
    """What precedes the canonical body in a signed message: encoding version, chain id and message kind."""
    return f"{ENCODING_VERSION}|{chain_id}|{MessageKind(kind).value}|".encode()


def message_bytes(chain_id: str, kind: MessageKind, body: Any) -> bytes:
    """The bytes a signature covers: version, chain id and message kind prefix the canonical body."""
    return message_prefix(chain_id, kind) + canonical_row_bytes(body)


def sha256_hex(data: bytes) -> str:
    """SHA-256 as lowercase hex: the one hash of the chain."""
    return hashlib.sha256(data).hexdigest()


def hash_value(value: Any) -> str:
    """Hash of a value's canonical encoding (rows, headers, parameter sets), at orjson's speed."""
    return sha256_hex(canonical_row_bytes(value))


def address_from_public_key(public_key_hex: str) -> str:
    """A short, checkable account address derived from the public key."""
    return ADDRESS_PREFIX + sha256_hex(bytes.fromhex(public_key_hex))[:40]


@dataclass(frozen=True)
class KeyPair:
    """An ed25519 key pair; the private half never leaves key files and memory."""

    signing_key: SigningKey

    @classmethod
    def from_seed(cls, seed: bytes) -> KeyPair:
        if len(seed) != 32:
            raise ValueError(f"an ed25519 seed is 32 bytes, got {len(seed)}")
        return cls(SigningKey(seed))

    @classmethod
    def generate(cls) -> KeyPair:
        return cls(SigningKey.generate())

    @classmethod
    def derive(cls, chain_id: str, name: str, key_seed: str) -> KeyPair:
        """Deterministic key for simulated identities: same network file, same keys, same blocks."""
        return cls.from_seed(hashlib.sha256(f"{chain_id}|{key_seed}|{name}".encode()).digest())

    @property
    def seed(self) -> bytes:
        return bytes(self.signing_key)

    @cached_property
    def public_key(self) -> str:
        """The verify key in hex (kept: sprint validation asks for it once per vote)."""
        return self.signing_key.verify_key.encode().hex()

    @property
    def address(self) -> str:
        return address_from_public_key(self.public_key)

    def sign(self, chain_id: str, kind: MessageKind, body: Any) -> str:
        """Hex signature over the domain-separated canonical encoding of body."""
        return self.sign_message(message_bytes(chain_id, kind, body))

    def sign_message(self, message: bytes) -> str:
        """Hex signature over message bytes already encoded (message_bytes), libsodium called straight: threads signing
        at once hold the GIL only around the call, not through PyNaCl's SigningKey.sign and its Python objects."""
        return crypto_sign(message, self._secret_key)[:crypto_sign_BYTES].hex()

    @cached_property
    def _secret_key(self) -> bytes:
        """libsodium's 64-byte secret key of this pair: its seed, then its public key (nothing derived again)."""
        return self.seed + self.signing_key.verify_key.encode()


def verify(public_key_hex: str, chain_id: str, kind: MessageKind, body: Any, signature_hex: str) -> bool:
    """True iff signature_hex is the key's signature of body under this chain id and kind; a body with no canonical
    encoding (a non-finite float a tampered row holds) verifies nothing."""
    message = _message_or_none(chain_id, kind, body)
    return message is not None and _verifies(public_key_hex, message, signature_hex)


def _message_or_none(chain_id: str, kind: MessageKind, body: Any) -> bytes | None:
    """message_bytes of the body, or None where it has no canonical encoding (or the kind is not a MessageKind)."""
    try:
        return message_bytes(chain_id, kind, body)
    except (ValueError, TypeError):
        return None


def _verifies(public_key_hex: str, message: bytes, signature_hex: str) -> bool:
    """True iff signature_hex is the key's signature of these message bytes."""
    try:
        VerifyKey(bytes.fromhex(public_key_hex)).verify(message, bytes.fromhex(signature_hex))
    except (BadSignatureError, ValueError, TypeError):
        return False
    return True


THREADED_FROM = 256
"""Signatures per thread from which sign_each and verify_each use more than one: below it a thread costs more than it saves."""

Item = TypeVar("Item")
Result = TypeVar("Result")


def sign_each(chain_id: str, kind: MessageKind, signings: Sequence[tuple[KeyPair, Any]]) -> list[str]:
    """KeyPair.sign of each (key, body): the bodies encoded in this thread, then signed on a thread per core (libsodium
    signs with the GIL released). Encoding in the threads as well made them queue for the GIL: 1.47× one loop's time
    on an Intel Xeon of 2 vCPU, 0.75× now (bench/bench_signatures.py)."""
    return sign_messages([(key, message_bytes(chain_id, kind, body)) for key, body in signings])


def sign_messages(signings: Sequence[tuple[KeyPair, bytes]]) -> list[str]:
    """KeyPair.sign_message of each (key, message bytes already encoded: message_bytes, or written in bulk) on a thread
    per core."""
    return _on_threads(lambda part: [key.sign_message(message) for key, message in part], signings)


def verify_each(chain_id: str, kind: MessageKind, checks: Sequence[tuple[str, Any, str]]) -> list[bool]:
    """verify of each (public key hex, body, signature hex): the bodies encoded in this thread, checked on a thread per
    core (as sign_each)."""
    return _verify_messages([(key, _message_or_none(chain_id, kind, body), signature) for key, body, signature in checks])


def verify_encoded(public_key_hex: str, chain_id: str, kind: MessageKind, encoded_body: bytes, signature_hex: str) -> bool:
    """verify of a body given in its canonical encoding (which the caller also hashes, or had written in bulk)."""
    return _verifies(public_key_hex, message_prefix(chain_id, kind) + encoded_body, signature_hex)


def verify_encoded_each(chain_id: str, kind: MessageKind, checks: Sequence[tuple[str, bytes | None, str]]) -> list[bool]:
    """verify_encoded of each (public key hex, encoded body, signature hex), on a thread per core: verify-chain's SQL
    writes the stored tasks' bodies in bulk. A body of None (one with no canonical encoding) verifies nothing."""
    prefix = message_prefix(chain_id, kind)
    return _verify_messages([(key, None if body is None else prefix + body, signature) for key, body, signature in checks])


def _verify_messages(checks: Sequence[tuple[str, bytes | None, str]]) -> list[bool]:
    """_verifies of each (public key hex, message bytes or None, signature hex) on a thread per core; None verifies
    nothing."""
    return _on_threads(lambda part: [message is not None and _verifies(key, message, signature)
                                     for key, message, signature in part], checks)


def _on_threads(work: Callable[[Sequence[Item]], list[Result]], items: Sequence[Item]) -> list[Result]:
    """work over the items in contiguous parts (threads.on_threads, from THREADED_FROM items a thread); results in item
    order."""
    return [result for part in on_threads(lambda start, end: work(items[start:end]), len(items), THREADED_FROM)
            for result in part]
