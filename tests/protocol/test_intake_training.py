"""Training-task intake (PROTOCOL section 4, "Training tasks"), pure: a developer's signed order to train a known model
version on registered shards is accepted with escrow = steps × batch × context × price, or rejected with its own reason
code; inference and training tasks share the developer's nonces."""

from __future__ import annotations

import json

import pytest

from gonka_pipelines.protocol.crypto import KeyPair, MessageKind, canonical_bytes
from gonka_pipelines.protocol.intake import IntakeContext, RejectReason, Submission, TrainingLimits, collect
from gonka_pipelines.simulation.client import sign_task, sign_training

CHAIN, PRICE, CONTEXT = "gonka-test-1", 10, 256
DEV = KeyPair.from_seed(b"\x01" * 32)
VERSION, OTHER_MODEL_VERSION = "a" * 64, "b" * 64
SHARDS = ("1" * 64, "2" * 64)


def context(balance: int = 10**9) -> IntakeContext:
    return IntakeContext(
        chain_id=CHAIN, developers={DEV.public_key: DEV.address}, balances={DEV.address: balance}, used_nonces=set(),
        models={"llm-tiny"}, max_prompt_bytes=10, max_tokens_limit=8, price_per_token=PRICE,
        training=TrainingLimits(frozenset(SHARDS), {VERSION: "llm-tiny", OTHER_MODEL_VERSION: "llm-other"},
                                {"llm-tiny": CONTEXT, "llm-other": 128}, max_steps=64, max_batch_size=32, max_learning_rate=0.1))


def order(**fields) -> bytes:
    task = {"model": "llm-tiny", "base_version": VERSION, "shards": list(SHARDS), "steps": 8, "batch_size": 4,
            "learning_rate": 3e-3, "seed": 7, "max_price": PRICE, "nonce": 1} | fields
    return sign_training(DEV, CHAIN, **task)


def judge(raw: bytes, ctx: IntakeContext | None = None):
    return collect([Submission("s", raw)], ctx or context())


def test_a_training_order_is_accepted_with_escrow_for_every_token_it_processes():
    result = judge(order())
    (task,) = result.trainings
    assert result.accepted == [] and result.rejected == []
    assert (task.steps, task.batch_size, task.shards, task.base_version) == (8, 4, SHARDS, VERSION)
    assert task.tokens == 8 * 4 * CONTEXT and task.escrow == 8 * 4 * CONTEXT * PRICE == 81_920
    assert task.learning_rate == 3e-3 and task.seed == 7


@pytest.mark.parametrize("fields, reason", [
    ({"base_version": "c" * 64}, RejectReason.UNKNOWN_MODEL_VERSION),
    ({"base_version": OTHER_MODEL_VERSION}, RejectReason.UNKNOWN_MODEL_VERSION),  # a version of another model
    ({"shards": ["3" * 64]}, RejectReason.UNKNOWN_SHARD),
    ({"steps": 0}, RejectReason.STEPS_OUT_OF_RANGE),
    ({"steps": 65}, RejectReason.STEPS_OUT_OF_RANGE),
    ({"batch_size": 0}, RejectReason.BATCH_OUT_OF_RANGE),
    ({"batch_size": 33}, RejectReason.BATCH_OUT_OF_RANGE),
    ({"learning_rate": 0.0}, RejectReason.LEARNING_RATE_OUT_OF_RANGE),
    ({"learning_rate": 0.5}, RejectReason.LEARNING_RATE_OUT_OF_RANGE),
    ({"max_price": PRICE - 1}, RejectReason.PRICE_TOO_LOW),
])
def test_each_bad_order_has_its_own_reason_and_keeps_its_payload(fields, reason):
    raw = order(**fields)
    result = judge(raw)
    assert [(r.reason, r.raw_payload) for r in result.rejected] == [(reason, raw)] and result.trainings == []


def test_an_order_beyond_the_balance_is_refused():
    assert judge(order(), context(balance=81_919)).rejected[0].reason == RejectReason.INSUFFICIENT_BALANCE


@pytest.mark.parametrize("body, detail", [
    ({"learning_rate": 1}, "field 'body.learning_rate' missing or not float"),
    ({"shards": []}, "field 'body.shards' must list 1..16 shard hashes"),
    ({"shards": [1]}, "field 'body.shards' must list 1..16 shard hashes"),
    ({"steps": -1}, "field 'body.steps' = -1 is outside"),
    ({"epochs": 3}, "unknown field(s) in body: epochs"),
])
def test_malformed_orders_name_the_field(body, detail):
    document = json.loads(order())
    document["body"] |= body
    document["signature"] = DEV.sign(CHAIN, MessageKind.TRAINING_TASK, document["body"])
    result = judge(canonical_bytes(document))
    assert result.rejected[0].reason == RejectReason.MALFORMED and detail in result.rejected[0].detail


def test_a_training_signature_never_validates_as_an_inference_task():
    document = json.loads(order())
    document["signature"] = DEV.sign(CHAIN, MessageKind.TASK, document["body"])
    assert judge(canonical_bytes(document)).rejected[0].reason == RejectReason.BAD_SIGNATURE


def test_inference_and_training_tasks_share_the_developers_nonces():
    inference = sign_task(DEV, CHAIN, model="llm-tiny", prompt="hi", max_tokens=2, max_price=PRICE, nonce=1)
    result = collect([Submission("a", inference), Submission("b", order(nonce=1)), Submission("c", order(nonce=2))], context())
    assert len(result.accepted) == 1 and [t.nonce for t in result.trainings] == [2]
    assert [r.reason for r in result.rejected] == [RejectReason.REPLAYED_NONCE]


def test_a_batch_judges_a_developer_with_training_orders_in_order():
    """A batch takes in bulk only developers whose every submission is an inference task: a developer who also sent a
    training order shares nonces and balance with it, so all of that developer's submissions are judged in order."""
    from gonka_pipelines.protocol.intake import SubmissionBatch, read_ahead

    inference = sign_task(DEV, CHAIN, model="llm-tiny", prompt="hi", max_tokens=2, max_price=PRICE, nonce=1)
    submissions = [read_ahead(Submission(i, raw), CHAIN) for i, raw in (("a", inference), ("b", order(nonce=1)), ("c", order(nonce=2)))]
    batch = SubmissionBatch.of(submissions)
    assert batch.tasks["submission_id"].to_list() == ["a"] and [s.submission_id for s in batch.others] == ["b", "c"]
    result = collect(batch, context())
    assert result == collect(submissions, context()) and result.taken.is_empty()
    assert [r.reason for r in result.rejected] == [RejectReason.REPLAYED_NONCE]
