"""Task intake: the checks a collector runs on each signed submission, in a deterministic order."""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson
import polars as pl

from gonka_pipelines.protocol.crypto import MessageKind, canonical_row_bytes, hash_value, sha256_hex, verify, verify_encoded

MAX_INTEGER = 2**63 - 1
"""Integers in a task are stored as signed 64-bit: anything larger is malformed, not a crash."""
TASK_FIELDS = {"chain_id": str, "developer": str, "nonce": int, "model": str, "prompt": str, "max_tokens": int, "max_price": int}
VERSION_FIELD = "version"
"""An inference task may name the model version it wants (a version hash); without the field it gets the served one."""
TRAINING_KIND = "train"
"""A body with "kind": "train" is a training task (PROTOCOL section 4); an inference task has no kind. Its learning rate
is a JSON number with a fraction or exponent (a float), so the stored row rebuilds the signed bytes exactly."""
TRAINING_FIELDS = {"chain_id": str, "developer": str, "nonce": int, "kind": str, "model": str, "base_version": str,
                   "shards": list, "steps": int, "batch_size": int, "learning_rate": float, "seed": int, "max_price": int}
MAX_TRAINING_SHARDS = 16


class RejectReason(enum.StrEnum):
    """Why a submission was refused; stored beside its raw payload so nothing is lost."""

    MALFORMED = "malformed"
    WRONG_CHAIN = "wrong_chain"
    BAD_SIGNATURE = "bad_signature"
    UNKNOWN_ACCOUNT = "unknown_account"
    REPLAYED_NONCE = "replayed_nonce"
    UNKNOWN_MODEL = "unknown_model"
    PROMPT_TOO_LONG = "prompt_too_long"
    MAX_TOKENS_OUT_OF_RANGE = "max_tokens_out_of_range"
    PRICE_TOO_LOW = "price_too_low"
    UNKNOWN_MODEL_VERSION = "unknown_model_version"
    UNKNOWN_SHARD = "unknown_shard"
    STEPS_OUT_OF_RANGE = "steps_out_of_range"
    BATCH_OUT_OF_RANGE = "batch_out_of_range"
    LEARNING_RATE_OUT_OF_RANGE = "learning_rate_out_of_range"
    INSUFFICIENT_BALANCE = "insufficient_balance"
    NOT_A_FILE = "not_a_file"
    TOO_LARGE = "too_large"
    BAD_FILE_NAME = "bad_file_name"


SUBMISSION_OVERHEAD_BYTES = 4096
"""A submission's bytes beyond its prompt: field names, key, signature, numbers (about 600 in practice)."""
JSON_ESCAPE_FACTOR = 6
"""The most bytes JSON spends on one byte of text (\\u00XX)."""


def max_submission_bytes(max_prompt_bytes: int) -> int:
    """The largest file a well-formed submission under this prompt limit can be: anything larger is refused unread."""
    return JSON_ESCAPE_FACTOR * max_prompt_bytes + SUBMISSION_OVERHEAD_BYTES


def printable(text: str) -> str:
    """Text any UTF-8 column can store: lone surrogates and other unencodable code points become escapes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


class Rejected(Exception):
    """A submission failed one check; carries the reason code and a human-readable detail."""

    def __init__(self, reason: RejectReason, detail: str):
        super().__init__(f"{reason.value}: {detail}")
        self.reason, self.detail = reason, detail

    def __reduce__(self) -> tuple[type[Rejected], tuple[RejectReason, str]]:
        """Pickled by its reason and detail (what __init__ takes), so a pool's worker can hand one back."""
        return Rejected, (self.reason, self.detail)


def prompt_token_count(prompt: str) -> int:
    """Tokens the prompt costs: the served models tokenize bytes, so one token per UTF-8 byte."""
    return len(prompt.encode("utf-8"))


@dataclass(frozen=True)
class Submission:
    """One inbox entry: its id and bytes, or why it could not be read as a submission at all (kept as a rejection).
    Read ahead (`read_ahead`), it also holds its parsed (body, signature), whether the signature verifies and the
    body's hash (its task id if accepted); intake parses, verifies and hashes the others in turn."""

    submission_id: str
    raw: bytes
    unreadable: Rejected | None = None
    document: tuple[dict[str, Any], str] | None = None
    verified: bool | None = None
    task_id: str | None = None


class AcceptedTask(NamedTuple):
    """An inference task intake accepted: a tuple, so a million are made and turned into columns at C speed."""

    submission_id: str
    task_id: str
    developer: str
    nonce: int
    model: str
    prompt: str
    prompt_tokens: int
    max_tokens: int
    max_price: int
    escrow: int
    signature: str
    version: str = ""
    """The model version the task named; '' for the version the network serves in the epoch."""


@dataclass(frozen=True)
class AcceptedTraining:
    """A training task taken into the epoch: `tokens` = steps × batch_size × the model's context, the escrow's base."""

    submission_id: str
    task_id: str
    developer: str
    nonce: int
    model: str
    base_version: str
    shards: tuple[str, ...]
    steps: int
    batch_size: int
    learning_rate: float
    seed: int
    max_price: int
    tokens: int
    escrow: int
    signature: str


@dataclass(frozen=True)
class TrainingLimits:
    """What intake checks a training task against: registered shards, known versions (version -> model name), each
    trainable model's context, and the params' limits."""

    shards: frozenset[str]
    versions: dict[str, str]
    context: dict[str, int]
    max_steps: int
    max_batch_size: int
    max_learning_rate: float


@dataclass(frozen=True)
class Rejection:
    submission_id: str
    reason: RejectReason
    detail: str
    raw_payload: bytes


@dataclass
class IntakeContext:
    """What the collector knows: accounts, balances, nonces already used, models served, limits, price."""

    chain_id: str
    developers: dict[str, str]  # public key -> address
    balances: dict[str, int]  # address -> spendable balance
    used_nonces: set[tuple[str, int]]
    models: set[str]
    max_prompt_bytes: int
    max_tokens_limit: int
    price_per_token: int
    training: TrainingLimits | None = None


TASK_SCHEMA: dict[str, type[pl.DataType]] = {
    "submission_id": pl.String, "task_id": pl.String, "developer": pl.String, "nonce": pl.Int64, "model": pl.String,
    "prompt": pl.String, "prompt_tokens": pl.Int64, "max_tokens": pl.Int64, "max_price": pl.Int64, "escrow": pl.Int64,
    "signature": pl.String, "version": pl.String}
"""AcceptedTask's fields as columns: the inference tasks intake takes in bulk (IntakeResult.taken)."""


@dataclass(eq=False)
class IntakeResult:
    accepted: list[AcceptedTask] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    trainings: list[AcceptedTraining] = field(default_factory=list)
    taken: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=TASK_SCHEMA))
    """Inference tasks accepted in bulk, as columns (TASK_SCHEMA): every task of a developer none of whose
    submissions is refused (collect of a SubmissionBatch); `accepted` holds those judged one by one."""

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, IntakeResult) and (self.accepted, self.rejected, self.trainings)
                == (other.accepted, other.rejected, other.trainings) and self.taken.equals(other.taken))

    def accepted_count(self) -> int:
        """Inference tasks accepted, in bulk and one by one."""
        return self.taken.height + len(self.accepted)

    def escrowed(self) -> int:
        """Escrow taken from developers' balances: the accepted inference tasks' and training orders'."""
        return (int(self.taken["escrow"].sum()) + sum(task.escrow for task in self.accepted)
                + sum(order.escrow for order in self.trainings))


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def may_hold_lone_surrogates(raw: bytes) -> bool:
    """Whether decoded JSON text could hold a lone surrogate: only if it is not strict UTF-8 (json also reads UTF-16,
    UTF-32 and surrogates encoded as UTF-8 bytes) or it escapes a surrogate (\\uD800-\\uDFFF). False proves there is
    none, which spares parse_submission re-encoding every document to find out."""
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return _SURROGATE_ESCAPE.search(raw) is not None


_DIGITS_AS_ZEROS = bytes(ord("0") if byte in b"0123456789" else ord(" ") for byte in range(256))
_LONG_NUMBER = b"0" * 19


def _holds_a_long_number(raw: bytes) -> bool:
    """Whether the bytes hold a run of 19 ASCII digits: every digit read as 0, then one substring search (ten times
    the speed of a regular expression, which tries each position)."""
    return _LONG_NUMBER in raw.translate(_DIGITS_AS_ZEROS)


def _json_document(raw: bytes) -> Any:
    """json.loads(raw), through orjson where that reads the same document: strict UTF-8 JSON with no run of 19 digits
    (orjson reads an integer past 64 bits as a float). json reads the rest (other encodings, NaN, lone surrogates) and
    raises every error, so rejections keep json's wording."""
    if not _holds_a_long_number(raw):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    return json.loads(raw)


def parse_submission(raw: bytes) -> tuple[dict[str, Any], str]:
    """Decode {"body": {...}, "signature": hex}, checking every field's presence and type."""
    try:
        document = _json_document(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise Rejected(RejectReason.MALFORMED, f"not JSON ({error})") from error
    except RecursionError as error:
        raise Rejected(RejectReason.MALFORMED, "JSON nested too deep") from error
    except ValueError as error:  # e.g. an integer literal beyond Python's digit limit
        raise Rejected(RejectReason.MALFORMED, f"not JSON ({printable(str(error))[:200]})") from error
    if may_hold_lone_surrogates(raw):
        try:
            json.dumps(document, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as error:
            raise Rejected(RejectReason.MALFORMED, "text that is not valid Unicode (a lone surrogate escape)") from error
    if not isinstance(document, dict) or not isinstance(document.get("body"), dict):
        raise Rejected(RejectReason.MALFORMED, "expected an object with 'body' and 'signature'")
    body, signature = document["body"], document.get("signature")
    if not isinstance(signature, str):
        raise Rejected(RejectReason.MALFORMED, "field 'signature' missing or not a string")
    training = body.get("kind") == TRAINING_KIND
    fields = TRAINING_FIELDS if training else TASK_FIELDS
    for name, kind in fields.items():
        value = body.get(name)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise Rejected(RejectReason.MALFORMED, f"field 'body.{name}' missing or not {kind.__name__}")
    for name in ("nonce", "max_price", *(("steps", "batch_size", "seed") if training else ("max_tokens",))):
        if not 0 <= body[name] <= MAX_INTEGER:
            raise Rejected(RejectReason.MALFORMED, f"field 'body.{name}' = {body[name]} is outside 0..{MAX_INTEGER}")
    if training and (not 1 <= len(body["shards"]) <= MAX_TRAINING_SHARDS or not all(isinstance(s, str) for s in body["shards"])):
        raise Rejected(RejectReason.MALFORMED, f"field 'body.shards' must list 1..{MAX_TRAINING_SHARDS} shard hashes")
    if not training and VERSION_FIELD in body and (not isinstance(body[VERSION_FIELD], str) or not body[VERSION_FIELD]):
        raise Rejected(RejectReason.MALFORMED, f"field 'body.{VERSION_FIELD}' must name a version hash (omit it for the served one)")
    extra = sorted(set(body) - set(fields) - (set() if training else {VERSION_FIELD}))
    if extra:
        raise Rejected(RejectReason.MALFORMED, f"unknown field(s) in body: {', '.join(extra)}")
    return body, signature


def _message_kind(body: dict[str, Any]) -> MessageKind:
    return MessageKind.TRAINING_TASK if body.get("kind") == TRAINING_KIND else MessageKind.TASK


def _signer(body: dict[str, Any], signature: str, context: IntakeContext, verified: bool | None) -> str:
    """The checks every submission shares (chain, signature, account, nonce); returns the developer's address.
    `verified`: whether the signature verifies, when read ahead (None: checked here)."""
    if body["chain_id"] != context.chain_id:
        raise Rejected(RejectReason.WRONG_CHAIN, f"chain id {body['chain_id']!r}, this chain is {context.chain_id!r}")
    if verified is None:
        verified = verify(body["developer"], context.chain_id, _message_kind(body), body, signature)
    if not verified:
        raise Rejected(RejectReason.BAD_SIGNATURE, "signature does not verify against the developer key")
    address = context.developers.get(body["developer"])
    if address is None:
        raise Rejected(RejectReason.UNKNOWN_ACCOUNT, f"no developer account for key {body['developer'][:16]}…")
    if body["nonce"] < 0 or (address, body["nonce"]) in context.used_nonces:
        raise Rejected(RejectReason.REPLAYED_NONCE, f"nonce {body['nonce']} already used by {address}")
    return address


def _escrow(address: str, escrow: int, context: IntakeContext) -> int:
    if escrow > context.balances.get(address, 0):
        raise Rejected(RejectReason.INSUFFICIENT_BALANCE, f"escrow {escrow} exceeds balance {context.balances.get(address, 0)}")
    return escrow


def _known_version(context: IntakeContext, version: str, model: str) -> TrainingLimits:
    """The chain's training limits, after checking `version` is a version of `model` on this chain."""
    limits = context.training
    if limits is None or limits.versions.get(version) != model:
        raise Rejected(RejectReason.UNKNOWN_MODEL_VERSION, f"no version {version[:12]} of model {model!r} on this chain")
    return limits


def check_training(body: dict[str, Any], signature: str, submission_id: str, context: IntakeContext,
                   verified: bool | None = None, task_id: str | None = None) -> AcceptedTraining:
    """A training task's checks, in order: the shared ones, then model version, shards, steps, batch size, learning
    rate, price and escrow = steps × batch × context tokens at the price. `task_id`: hash_value(body) when read ahead."""
    address = _signer(body, signature, context, verified)
    limits = _known_version(context, body["base_version"], body["model"])
    unknown = [shard for shard in body["shards"] if shard not in limits.shards]
    if unknown:
        raise Rejected(RejectReason.UNKNOWN_SHARD, f"shard {unknown[0][:12]} is not a registered training shard")
    if not 1 <= body["steps"] <= limits.max_steps:
        raise Rejected(RejectReason.STEPS_OUT_OF_RANGE, f"steps {body['steps']} not in 1..{limits.max_steps}")
    if not 1 <= body["batch_size"] <= limits.max_batch_size:
        raise Rejected(RejectReason.BATCH_OUT_OF_RANGE, f"batch_size {body['batch_size']} not in 1..{limits.max_batch_size}")
    if not 0 < body["learning_rate"] <= limits.max_learning_rate:
        raise Rejected(RejectReason.LEARNING_RATE_OUT_OF_RANGE,
                       f"learning_rate {body['learning_rate']} not in (0, {limits.max_learning_rate}]")
    if body["max_price"] < context.price_per_token:
        raise Rejected(RejectReason.PRICE_TOO_LOW, f"max_price {body['max_price']} below the price {context.price_per_token}")
    tokens = body["steps"] * body["batch_size"] * limits.context[body["model"]]
    escrow = _escrow(address, tokens * context.price_per_token, context)
    return AcceptedTraining(
        submission_id=submission_id, task_id=task_id or hash_value(body), developer=address, nonce=body["nonce"], model=body["model"],
        base_version=body["base_version"], shards=tuple(body["shards"]), steps=body["steps"], batch_size=body["batch_size"],
        learning_rate=body["learning_rate"], seed=body["seed"], max_price=body["max_price"], tokens=tokens, escrow=escrow,
        signature=signature)


def check_submission(body: dict[str, Any], signature: str, submission_id: str, context: IntakeContext,
                     verified: bool | None = None, task_id: str | None = None) -> AcceptedTask:
    """Run every check in order; the first failure rejects. Does not change the context. `task_id`: hash_value(body)
    when read ahead."""
    address = _signer(body, signature, context, verified)
    if body["model"] not in context.models:
        raise Rejected(RejectReason.UNKNOWN_MODEL, f"model {body['model']!r} is served by no host")
    if VERSION_FIELD in body:
        _known_version(context, body[VERSION_FIELD], body["model"])
    prompt_tokens = prompt_token_count(body["prompt"])
    if prompt_tokens > context.max_prompt_bytes:
        raise Rejected(RejectReason.PROMPT_TOO_LONG, f"prompt is {prompt_tokens} bytes, limit {context.max_prompt_bytes}")
    if not 1 <= body["max_tokens"] <= context.max_tokens_limit:
        raise Rejected(RejectReason.MAX_TOKENS_OUT_OF_RANGE, f"max_tokens {body['max_tokens']} not in 1..{context.max_tokens_limit}")
    if body["max_price"] < context.price_per_token:
        raise Rejected(RejectReason.PRICE_TOO_LOW, f"max_price {body['max_price']} below the price {context.price_per_token}")
    escrow = _escrow(address, (body["max_tokens"] + prompt_tokens) * context.price_per_token, context)
    return AcceptedTask(
        submission_id=submission_id, task_id=task_id or hash_value(body), developer=address, nonce=body["nonce"],
        model=body["model"], prompt=body["prompt"], prompt_tokens=prompt_tokens, max_tokens=body["max_tokens"],
        max_price=body["max_price"], escrow=escrow, signature=signature, version=body.get(VERSION_FIELD, ""),
    )


def read_ahead(submission: Submission, chain_id: str, verified: bool | None = None) -> Submission:
    """The submission parsed, its body hashed and its signature checked under this chain id (a parse failure becomes why
    it is unreadable): the work that needs no chain state, pure and picklable, so the collector runs it on every core.
    `verified`: the signature's verdict when it was checked as the submission arrived (local/admission.py)."""
    if submission.unreadable is not None:
        return submission
    try:
        body, signature = parse_submission(submission.raw)
    except Rejected as rejection:
        return Submission(submission.submission_id, submission.raw, rejection)
    encoded = canonical_row_bytes(body)  # once, for the signature and the task id (hash_value)
    if verified is None:
        verified = verify_encoded(body["developer"], chain_id, _message_kind(body), encoded, signature)
    return Submission(submission.submission_id, submission.raw, None, (body, signature), verified, sha256_hex(encoded))


READY_SCHEMA: dict[str, type[pl.DataType]] = {
    "submission_id": pl.String, "raw": pl.Binary, "verified": pl.Boolean, "task_id": pl.String, "chain_id": pl.String,
    "developer": pl.String, "nonce": pl.Int64, "model": pl.String, "prompt": pl.String, "max_tokens": pl.Int64,
    "max_price": pl.Int64, "signature": pl.String, "version": pl.String}
"""A well-formed inference submission read ahead, as a row: its id, bytes, signature verdict and task id, then its
body's fields and signature ('' version: the served one)."""


@dataclass(frozen=True)
class SubmissionBatch:
    """Submissions read ahead, the well-formed inference tasks as columns (READY_SCHEMA) and the rest (unreadable,
    malformed, training) one by one: what the collector's workers hand back, a million tasks without a Python object
    each to pickle, and what intake judges in bulk."""

    tasks: pl.DataFrame
    others: list[Submission]

    @classmethod
    def of(cls, submissions: Iterable[Submission]) -> SubmissionBatch:
        """Read-ahead submissions sorted into the two kinds."""
        rows, others = [], []
        for submission in submissions:
            document = submission.document
            if document is None or submission.verified is None or document[0].get("kind") == TRAINING_KIND:
                others.append(submission)
                continue
            body, signature = document
            rows.append((submission.submission_id, submission.raw, submission.verified, submission.task_id, body["chain_id"],
                         body["developer"], body["nonce"], body["model"], body["prompt"], body["max_tokens"],
                         body["max_price"], signature, body.get(VERSION_FIELD, "")))
        columns = zip(*rows) if rows else ([] for _ in READY_SCHEMA)
        return cls(pl.DataFrame(dict(zip(READY_SCHEMA, columns)), schema=READY_SCHEMA), others)

    @classmethod
    def concat(cls, batches: Iterable[SubmissionBatch]) -> SubmissionBatch:
        """The batches as one (the pool's work items' answers)."""
        batches = list(batches)
        return cls(pl.concat([batch.tasks for batch in batches]) if batches else pl.DataFrame(schema=READY_SCHEMA),
                   [submission for batch in batches for submission in batch.others])

    def __len__(self) -> int:
        return self.tasks.height + len(self.others)

    def id_column(self) -> pl.Series:
        """Every submission's id as one column (a million of them without a Python string each)."""
        return pl.concat([self.tasks["submission_id"], pl.Series([s.submission_id for s in self.others], dtype=pl.String)])

    def without(self, submission_ids: set[str]) -> SubmissionBatch:
        """The batch less these submissions."""
        if not submission_ids:
            return self
        return SubmissionBatch(self.tasks.filter(~pl.col("submission_id").is_in(list(submission_ids))),
                               [s for s in self.others if s.submission_id not in submission_ids])

    def one_by_one(self, chain_id: str) -> list[Submission]:
        """Every submission as a Submission read ahead (the tasks parsed again from their bytes, verdicts kept)."""
        return [*(read_ahead(Submission(submission_id, raw), chain_id, verified) for submission_id, raw, verified
                  in self.tasks.select("submission_id", "raw", "verified").iter_rows()), *self.others]


Submissions = list[Submission] | SubmissionBatch
"""What intake judges: submissions one by one, or a batch read ahead."""


CLAIM_SCHEMA: dict[str, type[pl.DataType]] = {"developer": pl.String, "nonce": pl.Int64}
"""A nonce claim: the developer's public key and the nonce a submission names."""


def nonce_claims(submissions: Submissions) -> pl.DataFrame:
    """(developer key, nonce) of every submission that parses (CLAIM_SCHEMA): the nonces intake will ask the chain
    about, as columns (a batch's million tasks without a Python tuple each)."""
    frames: list[pl.DataFrame] = []
    if isinstance(submissions, SubmissionBatch):
        frames.append(submissions.tasks.select(*CLAIM_SCHEMA))
        submissions = submissions.others
    return pl.concat([*frames, claims_frame(_claims_of(submissions))])


def _claims_of(submissions: Iterable[Submission]) -> Iterator[tuple[str, int]]:
    """(developer key, nonce) of each submission that parses (read ahead or not)."""
    for submission in submissions:
        if submission.unreadable is None:
            try:
                body, _ = submission.document or parse_submission(submission.raw)
            except Rejected:
                continue
            yield body["developer"], body["nonce"]


def claims_frame(claims: Iterable[tuple[str, int]]) -> pl.DataFrame:
    """(developer key, nonce) pairs as CLAIM_SCHEMA columns."""
    return pl.DataFrame(list(claims), schema=CLAIM_SCHEMA, orient="row")


def collect(submissions: Submissions, context: IntakeContext) -> IntakeResult:
    """Accept or reject every submission exactly once, in (developer, nonce, id) order, debiting escrow as it goes. A
    batch's developers none of whose submissions is refused are taken in bulk, the same tasks the order would take."""
    if isinstance(submissions, SubmissionBatch):
        taken, judged = _take_in_bulk(submissions, context)
        result = collect(judged, context)
        result.taken = taken
        return result
    result = IntakeResult()
    parsed: list[tuple[tuple, Submission, dict, str]] = []
    for submission in sorted(submissions, key=lambda s: s.submission_id):
        if submission.unreadable is not None:
            result.rejected.append(_rejection(submission, submission.unreadable))
            continue
        try:
            body, signature = submission.document or parse_submission(submission.raw)
        except Rejected as rejection:
            result.rejected.append(_rejection(submission, rejection))
            continue
        parsed.append(((body["developer"], body["nonce"], submission.submission_id), submission, body, signature))
    for _, submission, body, signature in sorted(parsed, key=lambda item: item[0]):
        task: AcceptedTask | AcceptedTraining
        try:
            if body.get("kind") == TRAINING_KIND:
                task = check_training(body, signature, submission.submission_id, context, submission.verified, submission.task_id)
                result.trainings.append(task)
            else:
                task = check_submission(body, signature, submission.submission_id, context, submission.verified,
                                        submission.task_id)
                result.accepted.append(task)
        except Rejected as rejection:
            result.rejected.append(_rejection(submission, rejection))
            continue
        context.used_nonces.add((task.developer, task.nonce))
        context.balances[task.developer] -= task.escrow
    return result


def _take_in_bulk(batch: SubmissionBatch, context: IntakeContext) -> tuple[pl.DataFrame, list[Submission]]:
    """The tasks of the batch's developers whose every submission is a well-formed inference task passing each check
    of check_submission (served model and version, limits, price, a signature that verifies, a nonce not used before
    nor twice) and whose escrows together fit their balance: accepted in bulk as columns (TASK_SCHEMA), debited from
    the context. Everything else comes back one by one for the ordered checks."""
    price, limit = context.price_per_token, context.max_tokens_limit
    frame = batch.tasks.with_columns(
        address=pl.col("developer").replace_strict(context.developers, default=None, return_dtype=pl.String),
        prompt_tokens=pl.col("prompt").str.len_bytes().cast(pl.Int64),
    ).with_columns(escrow=(pl.col("max_tokens").clip(0, limit) + pl.col("prompt_tokens")) * price)
    passes = ((pl.col("chain_id") == context.chain_id) & pl.col("verified") & pl.col("address").is_not_null()
              & pl.col("model").is_in(sorted(context.models)) & (pl.col("version") == "")
              & (pl.col("prompt_tokens") <= context.max_prompt_bytes) & pl.col("max_tokens").is_between(1, limit)
              & (pl.col("max_price") >= price))
    used = pl.DataFrame({"address": [a for a, _ in context.used_nonces], "nonce": [n for _, n in context.used_nonces]},
                        schema={"address": pl.String, "nonce": pl.Int64}).with_columns(used=pl.lit(True))
    frame = (frame.sort("developer", "nonce", "submission_id")
             .join(used, on=["address", "nonce"], how="left", maintain_order="left")
             .with_columns(passes=passes & pl.col("used").is_null() & ~pl.struct("developer", "nonce").is_duplicated()))
    groups = frame.group_by("developer").agg(pl.col("address").first(), pl.col("passes").all(),
                                             spent=pl.col("escrow").cum_sum().max(), total=pl.col("escrow").sum())
    one_address_each = len(set(context.developers.values())) == len(context.developers)  # else keys share balances
    # a developer with a submission judged alone (a training order shares its nonces and balance; any other parsed
    # one may claim a nonce of the bulk) has all its submissions go in order
    ordering_keys = {developer for developer, _ in _claims_of(batch.others)}
    bulk = {developer: (address, total) for developer, address, passes, spent, total
            in groups.select("developer", "address", "passes", "spent", "total").iter_rows()
            if passes and one_address_each and developer not in ordering_keys and spent <= context.balances.get(address, 0)}
    in_bulk = pl.col("developer").is_in(list(bulk))
    taken = frame.filter(in_bulk).select(*(pl.col("address").alias("developer") if name == "developer" else name
                                           for name in TASK_SCHEMA))
    for address, total in bulk.values():
        context.balances[address] -= total
    # The taken nonces stay out of used_nonces (a million pairs): no submission left for the ordered checks can claim
    # one, since it would be of a developer taken in bulk, and such a developer has nothing left (one address each).
    rest = SubmissionBatch(frame.filter(~in_bulk).select(*READY_SCHEMA), batch.others)
    return taken, rest.one_by_one(context.chain_id)


def _rejection(submission: Submission, rejection: Rejected) -> Rejection:
    return Rejection(submission.submission_id, rejection.reason, printable(rejection.detail), submission.raw)
