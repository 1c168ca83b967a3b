"""The collect stage (`epoch_tasks`, PROTOCOL section 4) on a chain: every inbox submission is stored, accepted with
escrow or rejected with its reason and exact raw payload; escrow is conserved, replays are refused across epochs, and
the result does not depend on the order the files arrived in."""

from __future__ import annotations

import json

import pytest

from gonka_pipelines.chain.store import ChainStore
from gonka_pipelines.protocol.crypto import sha256_hex
from gonka_pipelines.protocol.intake import claims_frame
from gonka_pipelines.stages.collect import CollectSummary

from support.chains import run_stages


def run_collect(store: ChainStore, layout, epoch: int) -> CollectSummary:
    """The epoch's collect stage (`epoch_tasks`) on an open store, its environment built from the head."""
    return run_stages(store, layout, epoch, through="epoch_tasks")["epoch_tasks"]


def rejected_rows(store: ChainStore, epoch: int) -> dict[str, tuple]:
    return {sid: (reason, bytes(raw)) for sid, reason, raw in store._query(
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
def test_collect_stores_reason_and_exact_raw_payload(genesis_store, genesis_layout, submit, genesis, reason):
    raw = one_rejection_case(reason, submit, genesis)
    submission_id = submit.raw(raw)
    balances = genesis_store.balances(1)
    summary = run_collect(genesis_store, genesis_layout, 1)
    assert (summary.submitted, summary.accepted, summary.rejected_by_reason, summary.escrowed) == (1, 0, {reason: 1}, 0)
    assert rejected_rows(genesis_store, 1) == {submission_id: (reason, raw)}
    assert genesis_store._scalar("SELECT detail FROM rejected_tasks WHERE submission_id = ?", [submission_id])
    assert genesis_store._query("SELECT submission_id, outcome FROM submissions") == [(submission_id, "rejected")]
    assert genesis_store._scalar("SELECT count(*) FROM tasks") == 0
    assert genesis_store._scalar("SELECT count(*) FROM transfers") == 0
    assert genesis_store.balances(1) == balances


def test_collect_insufficient_balance(genesis_store, genesis_layout, submit, genesis, network):
    price = epoch_price(genesis, 1)
    poorest = min(network.developers, key=lambda d: d.balance)
    address = submit.key(poorest.name).address
    balance = genesis_store.balances(1)[address]
    prompt = "p" * min(100, genesis.tasks.max_prompt_bytes)
    max_tokens = genesis.tasks.max_tokens_limit
    escrow = (max_tokens + len(prompt)) * price
    affordable = balance // escrow
    assert 0 < affordable < 40, "the poorest developer should afford a few tasks, not none or hundreds"
    ids = submit(affordable + 2, poorest.name, prompt=prompt, max_tokens=max_tokens)
    summary = run_collect(genesis_store, genesis_layout, 1)
    assert summary.accepted == affordable and summary.rejected_by_reason == {"insufficient_balance": 2}
    accepted_nonces = [n for (n,) in genesis_store._query("SELECT nonce FROM tasks ORDER BY nonce")]
    assert accepted_nonces == list(range(affordable))  # the lowest nonces win, whatever the file order
    rejected = rejected_rows(genesis_store, 1)
    assert {json.loads(raw)["body"]["nonce"] for _, raw in rejected.values()} == {affordable, affordable + 1}
    assert set(rejected) <= set(ids)
    assert genesis_store.balances(1)[address] == balance - affordable * escrow


def test_collect_escrow_and_conservation(genesis_store, genesis_layout, submit, genesis, network):
    price = epoch_price(genesis, 1)
    before = genesis_store.balances(1)
    ids = submit(4, "dev-ada", max_tokens=3) + submit(3, "dev-grace", prompt="é" * 7, max_tokens=5)
    bad = [submit.raw(b"not json at all"), submit.raw(submit.sign(nonce=99, model="nope"))]
    summary = run_collect(genesis_store, genesis_layout, 1)
    files = len(list(genesis_layout.inbox.glob("*.json")))
    assert summary.submitted == len(ids) + len(bad) == files == 9
    assert summary.accepted + sum(summary.rejected_by_reason.values()) == summary.submitted
    assert genesis_store._scalar("SELECT count(*) FROM tasks WHERE epoch = 1") == summary.accepted == 7
    assert genesis_store._scalar("SELECT count(*) FROM rejected_tasks WHERE epoch = 1") == 2
    assert sorted(sid for (sid,) in genesis_store._query("SELECT submission_id FROM submissions")) == sorted(ids + bad)
    ada, grace = submit.key("dev-ada").address, submit.key("dev-grace").address
    ada_escrow = sum((3 + len(f"task {n} of dev-ada")) * price for n in range(4))
    grace_escrow = 3 * (5 + 14) * price  # "é" * 7 is 14 bytes
    assert summary.escrowed == ada_escrow + grace_escrow
    assert genesis_store._query("SELECT developer, sum(escrow) FROM tasks GROUP BY 1 ORDER BY 1") == sorted(
        [(ada, ada_escrow), (grace, grace_escrow)])
    assert genesis_store._query("SELECT count(*) FROM tasks WHERE escrow != (max_tokens + prompt_tokens) * ?", [price]) == [(0,)]
    after = genesis_store.balances(1)
    assert after[ada] == before[ada] - ada_escrow and after[grace] == before[grace] - grace_escrow
    assert {a: b for a, b in after.items() if a not in (ada, grace)} == {a: b for a, b in before.items() if a not in (ada, grace)}
    # every escrow is one transfer: balance down, escrow up, by the same amount
    assert genesis_store._query("""SELECT count(*), sum(balance_delta), sum(escrow_delta) FROM transfers
                          WHERE epoch = 1 AND kind = 'escrow'""") == [(7, -(ada_escrow + grace_escrow), ada_escrow + grace_escrow)]
    assert genesis_store._query("""SELECT count(*) FROM transfers r JOIN tasks t ON t.task_id = r.ref
                          WHERE r.account = t.developer AND r.escrow_delta = t.escrow""") == [(7,)]


def test_replay_of_a_nonce_within_one_epoch(genesis_store, genesis_layout, submit):
    ids = [submit.raw(submit.sign(nonce=0, prompt="first")), submit.raw(submit.sign(nonce=0, prompt="second"))]
    summary = run_collect(genesis_store, genesis_layout, 1)
    assert (summary.accepted, summary.rejected_by_reason) == (1, {"replayed_nonce": 1})
    winner, loser = sorted(ids)
    assert genesis_store._query("SELECT submission_id FROM tasks") == [(winner,)]
    assert list(rejected_rows(genesis_store, 1)) == [loser]


def test_byte_identical_resubmission_is_kept_as_a_copy_and_rejected(genesis_store, genesis_layout, submit):
    raw = submit.sign(nonce=0)
    first, second = submit.raw(raw), submit.raw(raw)
    assert second == f"{first}-1" and first == sha256_hex(raw)
    assert (genesis_layout.inbox / f"{second}.json").read_bytes() == raw
    summary = run_collect(genesis_store, genesis_layout, 1)
    assert (summary.submitted, summary.accepted, summary.rejected_by_reason) == (2, 1, {"replayed_nonce": 1})
    assert genesis_store._query("SELECT submission_id FROM tasks") == [(first,)]
    assert rejected_rows(genesis_store, 1) == {second: ("replayed_nonce", raw)}


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
        assert store._query("SELECT epoch FROM tasks WHERE submission_id = ?", [original]) == [(1,)]
        summary = run_collect(store, finalized_layout, 2)
        assert (summary.submitted, summary.accepted, summary.rejected_by_reason) == (3, 1, {"replayed_nonce": 2})
        assert store._query("SELECT submission_id FROM tasks WHERE epoch = 2") == [(fresh,)]
        rejected = rejected_rows(store, 2)
    assert set(rejected) == {copy, reuse} and rejected[copy] == ("replayed_nonce", raw)


def test_intake_reads_only_the_used_nonces_its_submissions_claim(finalized_layout):
    """The chain answers which claimed (developer, nonce) pairs earlier epochs used, not every nonce it ever took."""
    with ChainStore.open(finalized_layout.database, read_only=True) as store:
        used = store._query("SELECT developer, nonce FROM tasks WHERE epoch = 1 ORDER BY ALL")
        (ada, first), (other, second) = used[0], used[-1]
        assert len(used) > 2
        keys = dict(store._query("SELECT address, public_key FROM accounts"))
        claims = [(keys[ada], first), (keys[ada], 10**6), ("00" * 32, first), (keys[other], second)]
        assert store.used_task_nonces(2, claims_frame(claims)) == {(ada, first), (other, second)}
        assert store.used_task_nonces(2, claims_frame([])) == set()
        assert store.used_task_nonces(1, claims_frame([(keys[ada], first)])) == set(), "before epoch 1 no nonce was used"


@pytest.mark.parametrize("field", ["nonce", "max_price"])
def test_out_of_range_integers_are_rejected_not_fatal(genesis_store, genesis_layout, submit, field):
    bad = submit.raw(submit.sign(**({"nonce": 0} | {field: 2**64})))
    good = submit(1, "dev-grace")
    summary = run_collect(genesis_store, genesis_layout, 1)
    assert summary.accepted == 1 and genesis_store._query("SELECT submission_id FROM tasks") == [(good[0],)]
    assert list(rejected_rows(genesis_store, 1)) == [bad] and rejected_rows(genesis_store, 1)[bad][0] == "malformed"
    assert "outside 0.." in genesis_store._scalar("SELECT detail FROM rejected_tasks WHERE submission_id = ?", [bad])


def test_collect_is_deterministic_across_chains(other_chain):
    """Two copies of the same chain given the same files in different write orders collect identically."""
    results = []
    for name, order in (("a", 1), ("b", -1)):
        layout, submitter = other_chain(name)
        raws = [submitter.sign(dev, nonce=n) for dev in ("dev-ada", "dev-grace") for n in range(5)] + [b"junk"]
        for raw in raws[::order]:
            submitter.raw(raw)
        with ChainStore.open(layout.database) as store:
            run_collect(store, layout, 1)
            results.append((store._query("SELECT * FROM tasks ORDER BY task_id"),
                            store._query("SELECT * FROM rejected_tasks ORDER BY submission_id"),
                            store._query("SELECT * FROM transfers ORDER BY transfer_id")))
    assert results[0] == results[1] and len(results[0][0]) == 10


def test_an_epoch_takes_at_most_its_limit_of_entries_and_the_rest_wait(tmp_path, network):
    """tasks.max_submissions_per_epoch bounds what one intake reads: the first entries in name order are taken, the
    others stay in the inbox, untouched, for the next epoch (nothing is lost)."""
    from gonka_pipelines.local.inbox import waiting_names

    from support.chains import create_chain, opened
    from support.config import fast_genesis
    from support.submitter import TaskSubmitter

    genesis = fast_genesis(tmp_path / "config", tasks__max_submissions_per_epoch=3)
    layout = create_chain(tmp_path / "chain", genesis, network)
    ids = sorted(TaskSubmitter(layout, genesis, network)(5, "dev-ada"))
    with opened(layout) as store:
        assert run_stages(store, layout, 1)["epoch_tasks"].submitted == 3
        assert sorted(s for (s,) in store._query("SELECT submission_id FROM submissions WHERE epoch = 1")) == ids[:3]
        assert waiting_names(layout.inbox) == [f"{i}.json" for i in ids[3:]]
        summary = run_stages(store, layout, 2)["epoch_tasks"]
        assert (summary.submitted, summary.accepted) == (2, 2)
        assert store._scalar("SELECT count(*) FROM tasks") == 5 and waiting_names(layout.inbox) == []


def test_entries_read_on_every_core_decide_as_intake_would(genesis_store, genesis_layout, submit, genesis, monkeypatch):
    """With the pool forced on (PARALLEL_FROM 1) and work items of two entries, every entry is read once, every
    well-formed task comes back as a row of columns with the verdict intake's own check gives, junk comes back
    unreadable with intake's reason, and the epoch's rows are those of the one-core collector."""
    from gonka_pipelines.local import admission
    from gonka_pipelines.local.inbox import waiting_names
    from gonka_pipelines.protocol.intake import RejectReason

    ids = submit(3, "dev-ada")
    forged = submit.raw(one_rejection_case("bad_signature", submit, genesis))
    junk = submit.raw(one_rejection_case("malformed", submit, genesis))
    wrong_chain = submit.raw(one_rejection_case("wrong_chain", submit, genesis))
    tasks = genesis.tasks
    monkeypatch.setattr(admission, "PARALLEL_FROM", 1)
    monkeypatch.setattr(admission, "CHUNK", 2)
    pending = admission.read_inbox(genesis_layout.inbox, genesis_layout.admitted, tasks.max_submission_bytes,
                                   tasks.max_submissions_per_epoch, genesis.chain_id)
    assert sorted(i + ".json" for i in pending.id_column().to_list()) == waiting_names(genesis_layout.inbox)
    assert sorted(pending.tasks["submission_id"]) == sorted([*ids, forged, wrong_chain]), "well-formed tasks, as columns"
    assert [s.submission_id for s in pending.others] == [junk]
    by_id = {s.submission_id: s for s in pending.one_by_one(genesis.chain_id)}
    assert {i: s.verified for i, s in by_id.items() if i != junk} == {**dict.fromkeys(ids, True), forged: False, wrong_chain: False}
    assert all(by_id[i].document is not None and by_id[i].document[0]["nonce"] >= 0 for i in ids)
    assert by_id[junk].document is None and by_id[junk].unreadable.reason == RejectReason.MALFORMED
    summary = run_collect(genesis_store, genesis_layout, 1)
    assert (summary.accepted, summary.rejected_by_reason) == (3, {"bad_signature": 1, "malformed": 1, "wrong_chain": 1})
