"""Task intake (PROTOCOL section 4, Submission): every submission accepted with escrow or rejected with a reason."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gonka_pipelines.chain.store import ChainStore
from gonka_pipelines.protocol.crypto import (
    KeyPair,
    canonical_bytes,
    hash_value,
    sha256_hex,
)
from gonka_pipelines.protocol.intake import (
    IntakeContext,
    RejectReason,
    Submission,
    collect,
    parse_submission,
    prompt_token_count,
)
from gonka_pipelines.simulation.client import sign_task
from gonka_pipelines.stages.collect import run_collect

# -- the checks, on a hand-made context -----------------------------------------------------------

CHAIN = "gonka-test-1"
DEV = KeyPair.from_seed(b"\x01" * 32)
POOR = KeyPair.from_seed(b"\x02" * 32)
STRANGER = KeyPair.from_seed(b"\x03" * 32)
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


# -- through the chain: the collect stage ---------------------------------------------------------


def rejected_rows(store: ChainStore, epoch: int) -> dict[str, tuple]:
    return {sid: (reason, bytes(raw)) for sid, reason, raw in store.query(
        "SELECT submission_id, reason, raw_payload FROM rejected_tasks WHERE epoch = ?", [epoch])}


def epoch_price(genesis, epoch: int) -> int:
    price = genesis.tasks.price(epoch)
    assert price > 0, "the default profile must charge for tasks in epoch 1 for these tests"
    return price


def one_rejection_case(reason: str, submit, genesis) -> bytes:
    limits = genesis.tasks.model_dump()
    return {
        "malformed": lambda: b'{"body": {"prompt": "no fields"}, "signature": "00"}',
        "wrong_chain": lambda: submit.sign(nonce=0, chain_id="gonka-elsewhere-1"),
        "bad_signature": lambda: submit.sign(nonce=0).replace(b'"prompt":"task', b'"prompt":"TASK'),
        "unknown_account": lambda: submit.sign("host-alpha", nonce=0),  # a host key is no developer account
        "unknown_model": lambda: submit.sign(nonce=0, model="llm-does-not-exist"),
        "prompt_too_long": lambda: submit.sign(nonce=0, prompt="x" * (limits["max_prompt_bytes"] + 1)),
        "max_tokens_out_of_range": lambda: submit.sign(nonce=0, max_tokens=limits["max_tokens_limit"] + 1),
        "price_too_low": lambda: submit.sign(nonce=0, max_price=epoch_price(genesis, 1) - 1),
    }[reason]()


@pytest.mark.parametrize("reason", ["malformed", "wrong_chain", "bad_signature", "unknown_account", "unknown_model",
                                    "prompt_too_long", "max_tokens_out_of_range", "price_too_low"])
def test_collect_stores_reason_and_exact_raw_payload(chain, initialized_layout, submit, genesis, reason):
    raw = one_rejection_case(reason, submit, genesis)
    submission_id = submit.raw(raw)
    balances = chain.balances(1)
    summary = run_collect(chain, initialized_layout, 1)
    assert (summary.submitted, summary.accepted, summary.rejected_by_reason, summary.escrowed) == (1, 0, {reason: 1}, 0)
    assert rejected_rows(chain, 1) == {submission_id: (reason, raw)}
    assert chain.scalar("SELECT detail FROM rejected_tasks WHERE submission_id = ?", [submission_id])
    assert chain.query("SELECT submission_id, outcome FROM submissions") == [(submission_id, "rejected")]
    assert chain.scalar("SELECT count(*) FROM tasks") == 0
    assert chain.scalar("SELECT count(*) FROM transfers") == 0
    assert chain.balances(1) == balances


def test_collect_insufficient_balance(chain, initialized_layout, submit, genesis, network):
    price = epoch_price(genesis, 1)
    poorest = min(network.developers, key=lambda d: d.balance)
    address = submit.key(poorest.name).address
    balance = chain.balances(1)[address]
    prompt = "p" * min(100, genesis.tasks.max_prompt_bytes)
    max_tokens = genesis.tasks.max_tokens_limit
    escrow = (max_tokens + len(prompt)) * price
    affordable = balance // escrow
    assert 0 < affordable < 40, "the poorest developer should afford a few tasks, not none or hundreds"
    ids = submit(affordable + 2, poorest.name, prompt=prompt, max_tokens=max_tokens)
    summary = run_collect(chain, initialized_layout, 1)
    assert summary.accepted == affordable and summary.rejected_by_reason == {"insufficient_balance": 2}
    accepted_nonces = [n for (n,) in chain.query("SELECT nonce FROM tasks ORDER BY nonce")]
    assert accepted_nonces == list(range(affordable))  # the lowest nonces win, whatever the file order
    rejected = rejected_rows(chain, 1)
    assert {json.loads(raw)["body"]["nonce"] for _, raw in rejected.values()} == {affordable, affordable + 1}
    assert set(rejected) <= set(ids)
    assert chain.balances(1)[address] == balance - affordable * escrow


def test_collect_escrow_and_conservation(chain, initialized_layout, submit, genesis, network):
    price = epoch_price(genesis, 1)
    before = chain.balances(1)
    ids = submit(4, "dev-ada", max_tokens=3) + submit(3, "dev-grace", prompt="é" * 7, max_tokens=5)
    bad = [submit.raw(b"not json at all"), submit.raw(submit.sign(nonce=99, model="nope"))]
    summary = run_collect(chain, initialized_layout, 1)
    files = len(list(initialized_layout.inbox.glob("*.json")))
    assert summary.submitted == len(ids) + len(bad) == files == 9
    assert summary.accepted + sum(summary.rejected_by_reason.values()) == summary.submitted
    assert chain.scalar("SELECT count(*) FROM tasks WHERE epoch = 1") == summary.accepted == 7
    assert chain.scalar("SELECT count(*) FROM rejected_tasks WHERE epoch = 1") == 2
    assert sorted(sid for (sid,) in chain.query("SELECT submission_id FROM submissions")) == sorted(ids + bad)
    ada, grace = submit.key("dev-ada").address, submit.key("dev-grace").address
    ada_escrow = sum((3 + len(f"task {n} of dev-ada")) * price for n in range(4))
    grace_escrow = 3 * (5 + 14) * price  # "é" * 7 is 14 bytes
    assert summary.escrowed == ada_escrow + grace_escrow
    assert chain.query("SELECT developer, sum(escrow) FROM tasks GROUP BY 1 ORDER BY 1") == sorted(
        [(ada, ada_escrow), (grace, grace_escrow)])
    assert chain.query("SELECT count(*) FROM tasks WHERE escrow != (max_tokens + prompt_tokens) * ?", [price]) == [(0,)]
    after = chain.balances(1)
    assert after[ada] == before[ada] - ada_escrow and after[grace] == before[grace] - grace_escrow
    assert {a: b for a, b in after.items() if a not in (ada, grace)} == {a: b for a, b in before.items() if a not in (ada, grace)}
    # every escrow is one transfer: balance down, escrow up, by the same amount
    assert chain.query("""SELECT count(*), sum(balance_delta), sum(escrow_delta) FROM transfers
                          WHERE epoch = 1 AND kind = 'escrow'""") == [(7, -(ada_escrow + grace_escrow), ada_escrow + grace_escrow)]
    assert chain.query("""SELECT count(*) FROM transfers r JOIN tasks t ON t.task_id = r.ref
                          WHERE r.account = t.developer AND r.escrow_delta = t.escrow""") == [(7,)]


def test_replay_of_a_nonce_within_one_epoch(chain, initialized_layout, submit):
    ids = [submit.raw(submit.sign(nonce=0, prompt="first")), submit.raw(submit.sign(nonce=0, prompt="second"))]
    summary = run_collect(chain, initialized_layout, 1)
    assert (summary.accepted, summary.rejected_by_reason) == (1, {"replayed_nonce": 1})
    winner, loser = sorted(ids)
    assert chain.query("SELECT submission_id FROM tasks") == [(winner,)]
    assert list(rejected_rows(chain, 1)) == [loser]


def test_byte_identical_resubmission_is_kept_as_a_copy_and_rejected(chain, initialized_layout, submit):
    raw = submit.sign(nonce=0)
    first, second = submit.raw(raw), submit.raw(raw)
    assert second == f"{first}-1" and first == sha256_hex(raw)
    assert (initialized_layout.inbox / f"{second}.json").read_bytes() == raw
    summary = run_collect(chain, initialized_layout, 1)
    assert (summary.submitted, summary.accepted, summary.rejected_by_reason) == (2, 1, {"replayed_nonce": 1})
    assert chain.query("SELECT submission_id FROM tasks") == [(first,)]
    assert rejected_rows(chain, 1) == {second: ("replayed_nonce", raw)}


def test_replay_across_epochs(finalized_layout, submit):
    """Epoch 1 took dev-ada's nonces 0..2; resubmitting one byte for byte, or reusing its nonce, is a replay."""
    raw = submit.sign(nonce=0)  # ed25519 is deterministic: the very bytes epoch 1 accepted
    processed = finalized_layout.inbox / "processed"
    original = next(p.stem for p in processed.glob("*.json") if p.read_bytes() == raw)
    copy = submit.raw(raw)
    reuse = submit.raw(submit.sign(nonce=0, prompt="another prompt, same nonce"))
    fresh = submit.raw(submit.sign(nonce=3))
    assert copy == f"{original}-1"  # the original's name is taken in processed/, so the copy is kept beside it
    with ChainStore.open(finalized_layout.database) as store:
        assert store.query("SELECT epoch FROM tasks WHERE submission_id = ?", [original]) == [(1,)]
        summary = run_collect(store, finalized_layout, 2)
        assert (summary.submitted, summary.accepted, summary.rejected_by_reason) == (3, 1, {"replayed_nonce": 2})
        assert store.query("SELECT submission_id FROM tasks WHERE epoch = 2") == [(fresh,)]
        rejected = rejected_rows(store, 2)
    assert set(rejected) == {copy, reuse} and rejected[copy] == ("replayed_nonce", raw)


@pytest.mark.parametrize("field", ["nonce", "max_price"])
def test_out_of_range_integers_are_rejected_not_fatal(chain, initialized_layout, submit, field):
    bad = submit.raw(submit.sign(**({"nonce": 0} | {field: 2**64})))
    good = submit(1, "dev-grace")
    summary = run_collect(chain, initialized_layout, 1)
    assert summary.accepted == 1 and chain.query("SELECT submission_id FROM tasks") == [(good[0],)]
    assert list(rejected_rows(chain, 1)) == [bad] and rejected_rows(chain, 1)[bad][0] == "malformed"
    assert "outside 0.." in chain.scalar("SELECT detail FROM rejected_tasks WHERE submission_id = ?", [bad])


def test_collect_is_deterministic_across_chains(new_chain):
    """Two copies of the same chain given the same files in different write orders collect identically."""
    results = []
    for name, order in (("a", 1), ("b", -1)):
        layout, submitter = new_chain(name)
        raws = [submitter.sign(dev, nonce=n) for dev in ("dev-ada", "dev-grace") for n in range(5)] + [b"junk"]
        for raw in raws[::order]:
            submitter.raw(raw)
        with ChainStore.open(layout.database) as store:
            run_collect(store, layout, 1)
            results.append((store.query("SELECT * FROM tasks ORDER BY task_id"),
                            store.query("SELECT * FROM rejected_tasks ORDER BY submission_id"),
                            store.query("SELECT * FROM transfers ORDER BY transfer_id")))
    assert results[0] == results[1] and len(results[0][0]) == 10
