"""Task intake rules (PROTOCOL section 4, Submission), pure: parse, check and collect submissions against a hand-made
context; every submission accepted with escrow or rejected with a reason. The collect stage on a chain is in
tests/stages/test_collect_stage.py."""

from __future__ import annotations

import json
import random
import re

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gonka_pipelines.protocol.crypto import (
    KeyPair,
    MessageKind,
    canonical_bytes,
    hash_value,
)
from gonka_pipelines.protocol.intake import (
    CLAIM_SCHEMA,
    AcceptedTask,
    IntakeContext,
    RejectReason,
    Submission,
    SubmissionBatch,
    _holds_a_long_number,
    _json_document,
    claims_frame,
    collect,
    may_hold_lone_surrogates,
    nonce_claims,
    parse_submission,
    prompt_token_count,
    read_ahead,
)
from gonka_pipelines.simulation.client import sign_task

CHAIN = "gonka-test-1"
DEV = KeyPair.from_seed(b"\x01" * 32)
POOR = KeyPair.from_seed(b"\x02" * 32)
STRANGER = KeyPair.from_seed(b"\x03" * 32)
RICH = KeyPair.from_seed(b"\x04" * 32)
PRICE = 10


def context() -> IntakeContext:
    return IntakeContext(
        chain_id=CHAIN, developers={DEV.public_key: DEV.address, POOR.public_key: POOR.address},
        balances={DEV.address: 10**6, POOR.address: 100}, used_nonces={(DEV.address, 0)}, models={"llm-tiny"},
        max_prompt_bytes=10, max_tokens_limit=8, price_per_token=PRICE,
    )


def body(key: KeyPair = DEV, chain_id: str = CHAIN, **fields) -> dict:
    return {"chain_id": chain_id, "developer": key.public_key, "nonce": 1, "model": "llm-tiny", "prompt": "hello",
            "max_tokens": 4, "max_price": PRICE} | fields


def signed(key: KeyPair = DEV, chain_id: str = CHAIN, **fields) -> bytes:
    task = {"nonce": 1, "model": "llm-tiny", "prompt": "hello", "max_tokens": 4, "max_price": PRICE} | fields
    return sign_task(key, chain_id, **task)


def document(body_: dict, signature: str) -> bytes:
    return canonical_bytes({"body": body_, "signature": signature})


def judge(raw: bytes, ctx: IntakeContext | None = None):
    result = collect([Submission("s", raw)], ctx or context())
    return result


def reason_of(raw: bytes, ctx: IntakeContext | None = None) -> RejectReason | None:
    result = judge(raw, ctx)
    assert len(result.accepted) + len(result.rejected) == 1
    return result.rejected[0].reason if result.rejected else None


GOOD_SIGNATURE = json.loads(signed())["signature"]

MALFORMED = {
    "not json": b"hello",
    "invalid utf-8": b"\xff\xfe\x00garbage",
    "empty": b"",
    "a list": b"[1, 2]",
    "body not an object": canonical_bytes({"body": [1], "signature": GOOD_SIGNATURE}),
    "no signature": canonical_bytes({"body": body()}),
    "signature not a string": canonical_bytes({"body": body(), "signature": 5}),
    "missing nonce": document({k: v for k, v in body().items() if k != "nonce"}, GOOD_SIGNATURE),
    "bool nonce": document(body(nonce=True), GOOD_SIGNATURE),
    "float max_tokens": document(body(max_tokens=4.0), GOOD_SIGNATURE),
    "string max_price": document(body(max_price="10"), GOOD_SIGNATURE),
    "null prompt": document(body(prompt=None), GOOD_SIGNATURE),
    "int model": document(body(model=3), GOOD_SIGNATURE),
    "extra field": document(body(priority=1), GOOD_SIGNATURE),
}


@pytest.mark.parametrize("raw", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed(raw):
    result = judge(raw)
    assert [r.reason for r in result.rejected] == [RejectReason.MALFORMED]
    assert result.rejected[0].raw_payload == raw and result.rejected[0].detail


def test_malformed_detail_names_the_field():
    with pytest.raises(Exception, match=r"field 'body\.nonce' missing or not int"):
        parse_submission(MALFORMED["bool nonce"])
    with pytest.raises(Exception, match=r"unknown field\(s\) in body: priority"):
        parse_submission(MALFORMED["extra field"])


def test_a_well_formed_task_is_accepted_with_escrow():
    ctx = context()
    result = collect([Submission("s", signed())], ctx)
    (task,) = result.accepted
    assert result.rejected == []
    assert task.task_id == hash_value(body())
    assert (task.developer, task.nonce, task.prompt_tokens, task.max_tokens) == (DEV.address, 1, 5, 4)
    assert task.escrow == (4 + 5) * PRICE
    assert ctx.balances[DEV.address] == 10**6 - 90
    assert (DEV.address, 1) in ctx.used_nonces


def test_a_task_read_ahead_is_accepted_as_one_read_in_turn():
    """read_ahead (on the collector's pool) parses, verifies and hashes the body; intake then takes the same task."""
    ahead = read_ahead(Submission("s", signed()), CHAIN)
    assert (ahead.document, ahead.verified, ahead.task_id) == ((body(), json.loads(signed())["signature"]), True, hash_value(body()))
    assert collect([ahead], context()).accepted == collect([Submission("s", signed())], context()).accepted


@pytest.mark.parametrize("raw, reason", [
    (signed(chain_id="gonka-other-9"), RejectReason.WRONG_CHAIN),
    (document(body(chain_id="gonka-other-9"), GOOD_SIGNATURE), RejectReason.WRONG_CHAIN),
    (document(body(prompt="hellp"), GOOD_SIGNATURE), RejectReason.BAD_SIGNATURE),
    (document(body(), json.loads(signed(STRANGER))["signature"]), RejectReason.BAD_SIGNATURE),
    (document(body(), "zz" * 64), RejectReason.BAD_SIGNATURE),
    (document(body(developer="not-a-key"), GOOD_SIGNATURE), RejectReason.BAD_SIGNATURE),
    (signed(STRANGER), RejectReason.UNKNOWN_ACCOUNT),
    (signed(nonce=0), RejectReason.REPLAYED_NONCE),
    (signed(nonce=-1), RejectReason.MALFORMED),
    (signed(nonce=2**63), RejectReason.MALFORMED),  # beyond the int64 the ledger stores
    (signed(max_price=2**64), RejectReason.MALFORMED),
    (signed(model="llm-huge"), RejectReason.UNKNOWN_MODEL),
    (signed(prompt="x" * 11), RejectReason.PROMPT_TOO_LONG),
    (signed(prompt="é" * 6), RejectReason.PROMPT_TOO_LONG),  # 6 characters, 12 bytes
    (signed(max_tokens=0), RejectReason.MAX_TOKENS_OUT_OF_RANGE),
    (signed(max_tokens=9), RejectReason.MAX_TOKENS_OUT_OF_RANGE),
    (signed(max_tokens=-3), RejectReason.MALFORMED),
    (signed(nonce=2**63 - 1), None),  # the largest int64 is fine
    (signed(max_price=PRICE - 1), RejectReason.PRICE_TOO_LOW),
    (signed(POOR, max_tokens=8, prompt="abc"), RejectReason.INSUFFICIENT_BALANCE),  # (8 + 3) * 10 = 110 > 100
])
def test_each_check(raw, reason):
    ctx = context()
    before = dict(ctx.balances), set(ctx.used_nonces)
    result = collect([Submission("s", raw)], ctx)
    if reason is None:
        assert len(result.accepted) == 1 and result.rejected == []
        return
    assert [r.reason for r in result.rejected] == [reason] and result.accepted == []
    assert result.rejected[0].raw_payload == raw
    assert (ctx.balances, ctx.used_nonces) == before  # a rejection changes nothing


def test_boundaries_are_inclusive():
    # prompt exactly max_prompt_bytes, max_tokens exactly the limit, max_price exactly the price, escrow exactly the balance
    ctx = context()
    ctx.balances[POOR.address] = (8 + 10) * PRICE
    result = collect([Submission("s", signed(POOR, prompt="x" * 10, max_tokens=8, max_price=PRICE))], ctx)
    assert result.rejected == [] and result.accepted[0].escrow == 180
    assert ctx.balances[POOR.address] == 0


def test_the_first_failing_check_decides():
    # wrong chain beats a bad signature; an unknown model beats everything after it
    assert reason_of(document(body(chain_id="x", prompt="tampered"), GOOD_SIGNATURE)) is RejectReason.WRONG_CHAIN
    assert reason_of(signed(model="nope", prompt="x" * 50, max_tokens=99, max_price=0)) is RejectReason.UNKNOWN_MODEL
    assert reason_of(signed(prompt="x" * 50, max_tokens=99)) is RejectReason.PROMPT_TOO_LONG


def test_replay_within_one_submission_batch_keeps_the_first_by_id():
    ctx = context()
    first, second = signed(nonce=5, prompt="a"), signed(nonce=5, prompt="b")
    result = collect([Submission("id-b", second), Submission("id-a", first)], ctx)
    assert [t.submission_id for t in result.accepted] == ["id-a"] and result.accepted[0].prompt == "a"
    assert [(r.submission_id, r.reason) for r in result.rejected] == [("id-b", RejectReason.REPLAYED_NONCE)]


def test_prompt_tokens_are_utf8_bytes():
    assert prompt_token_count("abc") == 3 and prompt_token_count("é✓") == 5 and prompt_token_count("") == 0


def test_balance_is_debited_in_nonce_order_regardless_of_arrival():
    ctx = context()
    ctx.balances[POOR.address] = 3 * 90  # exactly three tasks of escrow (4 + 5) * 10
    subs = [Submission(f"id-{9 - n}", signed(POOR, nonce=n)) for n in range(1, 6)]  # ids sort opposite to nonces
    result = collect(subs, ctx)
    assert [t.nonce for t in result.accepted] == [1, 2, 3]
    assert {json.loads(r.raw_payload)["body"]["nonce"]: r.reason for r in result.rejected} == {
        4: RejectReason.INSUFFICIENT_BALANCE, 5: RejectReason.INSUFFICIENT_BALANCE}
    assert ctx.balances[POOR.address] == 0


SUBMISSION_KINDS = st.sampled_from(["ok", "ok", "ok", "poor", "replay", "model", "long", "chain", "forged", "junk"])


def make_raw(kind: str, nonce: int) -> bytes:
    return {
        "ok": lambda: signed(nonce=nonce, prompt=f"p{nonce % 100}"),
        "poor": lambda: signed(POOR, nonce=nonce, max_tokens=8),
        "replay": lambda: signed(nonce=nonce % 3),
        "model": lambda: signed(nonce=nonce, model="m2"),
        "long": lambda: signed(nonce=nonce, prompt="y" * 20),
        "chain": lambda: signed(nonce=nonce, chain_id="c2"),
        "forged": lambda: document(body(nonce=nonce), GOOD_SIGNATURE),
        "junk": lambda: f"junk {nonce}".encode(),
        "rich": lambda: signed(RICH, nonce=nonce, prompt=f"r{nonce % 100}"),
        "rich-replay": lambda: signed(RICH, nonce=nonce % 2 + 1),
    }[kind]()


@settings(max_examples=40, deadline=None)
@given(kinds=st.lists(SUBMISSION_KINDS, max_size=25), seed=st.integers(0, 2**16))
def test_property_conservation_escrow_and_order_independence(kinds, seed):
    submissions = [Submission(f"{hash_value([i, k])}", make_raw(k, i + 1)) for i, k in enumerate(kinds)]
    ctx = context()
    result = collect(submissions, ctx)
    # every submission exactly once
    taken = [t.submission_id for t in result.accepted] + [r.submission_id for r in result.rejected]
    assert sorted(taken) == sorted(s.submission_id for s in submissions)
    # escrow debited equals the sum of (max_tokens + prompt_tokens) * price
    for key in (DEV, POOR):
        mine = [t for t in result.accepted if t.developer == key.address]
        assert all(t.escrow == (t.max_tokens + t.prompt_tokens) * PRICE for t in mine)
        assert ctx.balances[key.address] == context().balances[key.address] - sum(t.escrow for t in mine)
        assert ctx.balances[key.address] >= 0
    # no (developer, nonce) twice
    assert len({(t.developer, t.nonce) for t in result.accepted}) == len(result.accepted)
    # the arrival order does not matter
    shuffled = list(submissions)
    random.Random(seed).shuffle(shuffled)
    again = collect(shuffled, context())
    assert again == result


def context_with_rich() -> IntakeContext:
    ctx = context()
    ctx.developers[RICH.public_key], ctx.balances[RICH.address] = RICH.address, 10**6
    return ctx


@settings(max_examples=60, deadline=None)
@given(kinds=st.lists(st.sampled_from(["ok", "poor", "replay", "model", "long", "chain", "forged", "junk", "rich", "rich",
                                       "rich", "rich-replay"]), max_size=30))
def test_property_a_batch_takes_in_bulk_exactly_what_the_order_would(kinds):
    """Judging a batch read ahead (well-formed tasks as columns, developers with nothing refused taken in bulk) gives
    the same accepted tasks, the same rejections in the same order, and the same balances and spent nonces as judging
    the submissions one by one (the nonces taken in bulk are the taken columns', not added to the context)."""
    submissions = [read_ahead(Submission(hash_value([i, k]), make_raw(k, i + 1)), CHAIN) for i, k in enumerate(kinds)]
    one_ctx, bulk_ctx = context_with_rich(), context_with_rich()
    one, bulk = collect(submissions, one_ctx), collect(SubmissionBatch.of(submissions), bulk_ctx)
    in_bulk = [AcceptedTask(*row) for row in bulk.taken.iter_rows()]
    assert sorted([*bulk.accepted, *in_bulk]) == sorted(one.accepted)
    assert bulk.rejected == one.rejected and bulk.trainings == one.trainings == []
    assert bulk_ctx.balances == one_ctx.balances
    assert bulk_ctx.used_nonces | {(t.developer, t.nonce) for t in in_bulk} == one_ctx.used_nonces, \
        "the ordered checks spend the same nonces, and those taken in bulk are in the taken columns"
    assert (bulk.accepted_count(), bulk.escrowed()) == (len(one.accepted), sum(t.escrow for t in one.accepted))
    if kinds and set(kinds) == {"rich"}:
        assert bulk.accepted == [] and len(in_bulk) == len(kinds), "a developer with nothing refused is taken in bulk"


def test_a_batch_judges_in_order_every_task_of_a_developer_with_one_refusal():
    """One refusal (here a nonce used twice) sends every submission of that developer to the ordered checks; the other
    developers' tasks are still taken in bulk."""
    raws = [("a", signed(nonce=5)), ("b", signed(nonce=5, prompt="again")), ("c", signed(nonce=6)),
            ("d", signed(RICH, nonce=1)), ("e", signed(RICH, nonce=2))]
    submissions = [read_ahead(Submission(i, raw), CHAIN) for i, raw in raws]
    result = collect(SubmissionBatch.of(submissions), context_with_rich())
    assert sorted(result.taken["submission_id"]) == ["d", "e"] and result.taken["developer"].unique().to_list() == [RICH.address]
    assert [t.submission_id for t in result.accepted] == ["a", "c"]
    assert [(r.submission_id, r.reason) for r in result.rejected] == [("b", RejectReason.REPLAYED_NONCE)]
    assert result.taken["escrow"].to_list() == [(4 + len("hello")) * PRICE] * 2


def test_nonce_claims_are_every_parsed_submission_s_key_and_nonce_as_columns():
    """A batch's claims are its tasks' columns plus the parsed submissions judged one by one (a forged signature still
    claims its nonce); unparsable entries claim nothing; a list of submissions claims the same as its batch."""
    raws = [("a", signed(nonce=5)), ("b", signed(RICH, nonce=9)), ("c", b"junk"),
            ("d", document(body(nonce=7), GOOD_SIGNATURE))]
    submissions = [read_ahead(Submission(i, raw), CHAIN) for i, raw in raws]
    batch = SubmissionBatch.of(submissions)
    assert batch.tasks.height == 3 and len(batch.others) == 1, "the junk entry is judged alone"
    claims = nonce_claims(batch)
    assert claims.schema == pl.Schema(CLAIM_SCHEMA)
    expected = [(DEV.public_key, 5), (RICH.public_key, 9), (DEV.public_key, 7)]
    assert sorted(claims.iter_rows()) == sorted(expected)
    assert sorted(nonce_claims(submissions).iter_rows()) == sorted(expected)
    assert nonce_claims([]).height == 0 and claims_frame([]).schema == claims.schema
    assert batch.id_column().to_list() == ["a", "b", "d", "c"]


def test_a_batch_takes_no_developer_in_bulk_that_a_submission_judged_alone_names():
    """A submission of the batch's others that was never read ahead still parses when judged, so its developer is
    judged in order with it: a nonce it shares with one of that developer's tasks is a replay, as one by one."""
    first, again = read_ahead(Submission("a", signed(nonce=5)), CHAIN), Submission("b", signed(nonce=5, prompt="again"))
    result = collect(SubmissionBatch(SubmissionBatch.of([first]).tasks, [again]), context())
    assert result.taken.height == 0 and [t.submission_id for t in result.accepted] == ["a"]
    assert [(r.submission_id, r.reason) for r in result.rejected] == [("b", RejectReason.REPLAYED_NONCE)]
    one = collect([first, again], context())
    assert [t.submission_id for t in one.accepted] == ["a"] and one.rejected == result.rejected


def test_a_task_may_name_a_model_version_of_its_model():
    """`version` is optional: absent, the task runs on the served version (stored ''); present, it must be a version of
    the task's model on the chain; an empty or non-string version is malformed, not 'the served one'."""
    from gonka_pipelines.protocol.intake import TrainingLimits

    def ctx() -> IntakeContext:  # collect() spends the nonce, so each submission gets a fresh context
        fresh = context()
        fresh.training = TrainingLimits(frozenset(), {"a" * 64: "llm-tiny", "b" * 64: "llm-other"}, {"llm-tiny": 256}, 8, 8, 0.1)
        return fresh

    assert judge(signed(), ctx()).accepted[0].version == ""
    assert judge(signed(version="a" * 64), ctx()).accepted[0].version == "a" * 64
    assert reason_of(signed(version="b" * 64), ctx()) == RejectReason.UNKNOWN_MODEL_VERSION, "a version of another model"
    assert reason_of(signed(version="c" * 64), ctx()) == RejectReason.UNKNOWN_MODEL_VERSION
    for bad in ("", 7):
        raw = document(body(version=bad), DEV.sign(CHAIN, MessageKind.TASK, body(version=bad)))
        assert reason_of(raw, ctx()) == RejectReason.MALFORMED, bad
    # the version is signed: the same task with the version stripped no longer verifies
    pinned = json.loads(signed(version="a" * 64))
    raw = document({k: v for k, v in pinned["body"].items() if k != "version"}, pinned["signature"])
    assert reason_of(raw, ctx()) == RejectReason.BAD_SIGNATURE


@settings(max_examples=300, deadline=None)
@given(text=st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=12), ascii_only=st.booleans(),
       encoding=st.sampled_from(["utf-8", "utf-16", "utf-32"]))
def test_a_document_cleared_of_lone_surrogates_holds_none(text, ascii_only, encoding):
    """may_hold_lone_surrogates is False only where re-encoding the decoded document as UTF-8 succeeds (the check it
    spares parse_submission), whatever the text (surrogates, escaped or not) and the bytes' encoding."""
    raw = json.dumps({"a": text}, ensure_ascii=ascii_only).encode(encoding, "surrogatepass")
    if not may_hold_lone_surrogates(raw):
        json.dumps(json.loads(raw), ensure_ascii=False).encode("utf-8")
    if any(0xD800 <= ord(c) <= 0xDFFF for c in text):
        assert may_hold_lone_surrogates(raw)


def test_only_text_that_could_hold_a_surrogate_is_re_encoded():
    assert not may_hold_lone_surrogates(rb'{"body":{"prompt":"caf\u00e9 \u2603"},"signature":"00"}')
    assert not may_hold_lone_surrogates('{"prompt":"café ☃ 😀"}'.encode())
    assert may_hold_lone_surrogates(b'{"prompt":"\\udc80"}') and may_hold_lone_surrogates(b'{"prompt":"\\uD83D\\uDE00"}')
    assert may_hold_lone_surrogates(b'{"prompt":"\\\\ud800 is text"}'), "an escaped backslash before ud800 is re-checked (harmless)"
    assert may_hold_lone_surrogates('{"a":1}'.encode("utf-16")) and may_hold_lone_surrogates(b'{"a":"\xed\xa0\x80"}')


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4), max_leaves=12)


@settings(max_examples=400, deadline=None)
@given(value=JSON_VALUES, ascii_only=st.booleans())
def test_submissions_are_read_as_json_reads_them(value, ascii_only):
    """The orjson fast path gives json's document, types included (integers past 64 bits, -0.0, infinities written as
    1e999, surrogates), so intake accepts and rejects exactly as before."""
    raw = json.dumps(value, ensure_ascii=ascii_only).replace("Infinity", "1e999").encode("utf-8", "surrogatepass")
    assert repr(_json_document(raw)) == repr(json.loads(raw))


@pytest.mark.parametrize("raw", [b'{"a":1,"a":2}', b'{"a":-0}', b'{"a":123456789012345678901234567890}', b'{"a":NaN}',
                                 b'\xef\xbb\xbf{"a":1}', b'{"a":"\\ud800"}', b'{"a":1E400}', b'{"a":-9223372036854775809}'])
def test_edge_documents_read_as_json_reads_them(raw):
    assert repr(_json_document(raw)) == repr(json.loads(raw))


@pytest.mark.parametrize("raw", [b'{"a":"\t"}', b'[1,]', b'{"a":01}', b'{"a":1}x', b"{'a':1}"])
def test_broken_documents_raise_json_errors(raw):
    with pytest.raises(json.JSONDecodeError):
        _json_document(raw)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=12), st.text("0123456789", min_size=15, max_size=22).map(str.encode),
                          st.sampled_from([b"\xd9\xa0" * 20, "\u0663".encode() * 20])), max_size=6))
def test_a_long_number_is_a_run_of_19_ascii_digits(parts):
    """The collector's test for a run of 19 digits (orjson would read such an integer as a float) is the regex's."""
    raw = b"".join(parts)
    assert _holds_a_long_number(raw) == (re.search(rb"\d{19}", raw) is not None)
