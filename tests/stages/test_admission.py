"""Signatures checked as submissions arrive (local/admission.py, `gonka admit`, the inbox sensor): each new entry is
checked once and remembered; the collector takes a remembered verdict only for bytes that still hash the same, and
the epoch's rows are those of a collector that checks everything itself."""

from __future__ import annotations

import pytest

from gonka_pipelines.chain.verify import signed_row_problem
from gonka_pipelines.local import admission
from gonka_pipelines.protocol import intake

from support.chains import run_stages
from test_collect_stage import one_rejection_case


def admit(layout, genesis, limit: int = 1_000):
    return admission.admit(layout.inbox, layout.admitted, genesis.chain_id, genesis.tasks.max_submission_bytes, limit)


def epoch_rows(store) -> tuple:
    return (store._query("SELECT * FROM tasks ORDER BY task_id"),
            store._query("SELECT submission_id, reason, detail FROM rejected_tasks ORDER BY submission_id"),
            store._query("SELECT * FROM transfers ORDER BY transfer_id"))


def never_verified(*args):
    raise AssertionError("a remembered verdict was checked again")


def test_each_new_entry_is_checked_once_and_remembered(genesis_layout, submit, genesis):
    good = submit(3, "dev-ada")
    forged = submit.raw(one_rejection_case("bad_signature", submit, genesis))
    junk = submit.raw(one_rejection_case("malformed", submit, genesis))
    assert admit(genesis_layout, genesis, limit=2) == (2, 5), "at most `limit` entries a call, in name order"
    assert admit(genesis_layout, genesis) == (3, 5)
    assert admit(genesis_layout, genesis) == (0, 5), "junk too is read once (no verdict: the collector rejects it)"
    memory = admission.load_admitted(genesis_layout.admitted, genesis.chain_id)
    assert {name.removesuffix(".json"): ok for name, (_, ok) in memory.items()} == {
        **dict.fromkeys(good, True), forged: False, junk: None}
    assert admission.load_admitted(genesis_layout.admitted, "another-chain") == {}, "verdicts hold under one chain id"


def test_the_epoch_uses_remembered_verdicts_and_writes_the_same_rows(tmp_path, genesis_layout, submit, genesis,
                                                                     other_chain, monkeypatch):
    from support.chains import opened

    cases = ["bad_signature", "wrong_chain", "unknown_model", "malformed"]
    twin, twin_submit = other_chain("twin")
    for target in (submit, twin_submit):  # the same submissions on two copies of the chain
        target(4, "dev-ada", start_nonce=10)
        for case in cases:
            target.raw(one_rejection_case(case, submit, genesis))
    admit(genesis_layout, genesis)
    with opened(twin) as store:
        run_stages(store, twin, 1, through="epoch_tasks")  # checks every signature in the epoch
        expected = epoch_rows(store)
    monkeypatch.setattr(intake, "verify", never_verified)
    with opened(genesis_layout) as store:
        summary = run_stages(store, genesis_layout, 1, through="epoch_tasks")["epoch_tasks"]
        assert epoch_rows(store) == expected
    assert (summary.accepted, summary.rejected_by_reason) == (4, {case: 1 for case in cases})


def test_an_entry_changed_after_its_check_is_checked_again(genesis_store, genesis_layout, submit, genesis):
    [good] = submit(1, "dev-ada")
    admit(genesis_layout, genesis)
    forged = one_rejection_case("bad_signature", submit, genesis)
    (genesis_layout.inbox / f"{good}.json").write_bytes(forged)  # same name, other bytes: the verdict does not apply
    summary = run_stages(genesis_store, genesis_layout, 1, through="epoch_tasks")["epoch_tasks"]
    assert (summary.accepted, summary.rejected_by_reason) == (0, {"bad_signature": 1})


def test_a_forged_memory_is_caught_by_verify_chain(genesis_store, genesis_layout, submit, genesis):
    """The memory is a convenience, not a trust anchor: a verdict forged for a forged task's exact bytes lets the
    collector take it, and verify-chain names the task's row."""
    forged = submit.raw(one_rejection_case("bad_signature", submit, genesis))
    admit(genesis_layout, genesis)
    text = genesis_layout.admitted.read_text()
    genesis_layout.admitted.write_text(text.replace(f"{forged}.json\t{forged}\t0", f"{forged}.json\t{forged}\t1"))
    summary = run_stages(genesis_store, genesis_layout, 1, through="epoch_tasks")["epoch_tasks"]
    assert summary.accepted == 1
    problem = signed_row_problem(genesis_store, 1)
    assert problem is not None and problem.message.startswith("tasks row ") and "does not verify" in problem.message


def test_the_memory_forgets_taken_entries_and_survives_a_torn_line(genesis_layout, submit, genesis):
    ids = submit(4, "dev-ada")
    admit(genesis_layout, genesis)
    with genesis_layout.admitted.open("a") as memory:
        memory.write(f"{'f' * 64}.json\t{'0' * 30}")  # a writer killed mid-line
    assert len(admission.load_admitted(genesis_layout.admitted, genesis.chain_id)) == 4
    for taken in ids[:3]:  # an epoch took three: they leave the inbox
        (genesis_layout.inbox / f"{taken}.json").unlink()
    [late] = submit(1, "dev-ada", start_nonce=4)
    assert admit(genesis_layout, genesis) == (1, 2)
    assert sorted(admission.load_admitted(genesis_layout.admitted, genesis.chain_id)) == sorted([f"{ids[3]}.json", f"{late}.json"])


@pytest.mark.parametrize("content", ["", "gonka-admitted/1\tsome-other-chain\nx.json\t" + "a" * 64 + "\t1\n", "\x00\xff"])
def test_a_missing_foreign_or_garbled_memory_is_empty_and_replaced(genesis_layout, submit, genesis, content):
    [good] = submit(1, "dev-ada")
    genesis_layout.admitted.write_text(content, errors="surrogateescape")
    assert admission.load_admitted(genesis_layout.admitted, genesis.chain_id) == {}
    assert admit(genesis_layout, genesis) == (1, 1)
    assert list(admission.load_admitted(genesis_layout.admitted, genesis.chain_id)) == [f"{good}.json"]
