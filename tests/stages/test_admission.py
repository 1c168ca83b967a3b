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
    assert {name.removesuffix(".json"): remembered.verdicts for name, remembered in memory.items()} == {
        **dict.fromkeys(good, (True,)), forged: (False,), junk: (None,)}
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


def kept_bytes(layout, genesis) -> dict[str, str]:
    return {name: remembered.kept for name, remembered in admission.load_admitted(layout.admitted, genesis.chain_id).items()}


def counted(function, calls: list):
    def wrapper(*args, **kwargs):
        calls.append(args)
        return function(*args, **kwargs)
    return wrapper


def never_read(*args, **kwargs):
    raise AssertionError("an unchanged entry was read from the inbox again")


def test_the_epoch_takes_kept_bytes_without_reading_the_inbox_again(genesis_layout, submit, genesis, other_chain,
                                                                   settled, monkeypatch):
    from support.chains import opened

    twin, twin_submit = other_chain("twin")
    for target in (submit, twin_submit):
        target(4, "dev-ada", start_nonce=10)
        target.raw(one_rejection_case("bad_signature", submit, genesis))
        target.raw(one_rejection_case("malformed", submit, genesis))
    settled(genesis_layout)
    assert admit(genesis_layout, genesis) == (6, 6)
    kept = kept_bytes(genesis_layout, genesis)
    assert len(kept) == 6 and all(place.count(":") == 1 for place in kept.values()), kept
    assert len(list(admission.spool_of(genesis_layout.admitted).iterdir())) == 1, "one segment per work item"
    with opened(twin) as store:
        expected = (run_stages(store, twin, 1, through="epoch_tasks")["epoch_tasks"], epoch_rows(store))
    monkeypatch.setattr(admission, "read_stamped_entry", never_read)
    monkeypatch.setattr(intake, "verify", never_verified)
    with opened(genesis_layout) as store:
        assert (run_stages(store, genesis_layout, 1, through="epoch_tasks")["epoch_tasks"], epoch_rows(store)) == expected


@pytest.mark.parametrize("change", ["rewritten in place", "replaced by a new file", "replaced by a link"])
def test_an_entry_changed_after_its_bytes_were_kept_is_read_again(genesis_store, genesis_layout, submit, genesis,
                                                                  settled, change):
    """A change of the same size, right after the check (within one tick of the clock), still changes the entry's
    stamp: its change time moves past the clock probe, which postdates the kept bytes' last change."""
    [good] = submit(1, "dev-ada")
    path = genesis_layout.inbox / f"{good}.json"
    original = path.read_bytes()
    forged = original.replace(b'"prompt":"task', b'"prompt":"TASK')
    assert len(forged) == len(original) and forged != original
    settled(genesis_layout)
    admit(genesis_layout, genesis)
    assert kept_bytes(genesis_layout, genesis)[path.name].count(":") == 1
    if change == "rewritten in place":
        with path.open("r+b") as entry:
            entry.write(forged)
    elif change == "replaced by a new file":
        (genesis_layout.inbox / "new").write_bytes(forged)
        (genesis_layout.inbox / "new").replace(path)
    else:
        (genesis_layout.root / "elsewhere").write_bytes(forged)
        path.unlink()
        path.symlink_to(genesis_layout.root / "elsewhere")
    expected = {"rewritten in place": "bad_signature", "replaced by a new file": "bad_signature",
                "replaced by a link": "not_a_file"}[change]
    summary = run_stages(genesis_store, genesis_layout, 1, through="epoch_tasks")["epoch_tasks"]
    assert (summary.accepted, summary.rejected_by_reason) == (0, {expected: 1})


@pytest.mark.parametrize("damage", ["kept bytes altered", "a column altered, the bytes not", "segment removed",
                                    "memory points out of the spool", "memory swaps two rows"])
def test_a_damaged_spool_costs_a_read_not_a_verdict(genesis_store, genesis_layout, submit, genesis, settled, damage,
                                                    monkeypatch):
    """The spool is a cache: a segment that no longer hashes to its name (any byte of it altered, the parsed columns
    included), a missing segment, or a row that is not the entry's send the collector back to the inbox entry, whose
    unchanged bytes keep their remembered verdict."""
    import polars as pl

    ids = submit(2, "dev-ada")
    settled(genesis_layout)
    admit(genesis_layout, genesis)
    [segment] = admission.spool_of(genesis_layout.admitted).iterdir()
    memory = genesis_layout.admitted.read_text()
    if damage == "kept bytes altered":
        segment.write_bytes(segment.read_bytes().replace(b'"prompt":"task', b'"prompt":"TASK'))
    elif damage == "a column altered, the bytes not":
        pl.read_ipc(segment.read_bytes()).with_columns(prompt=pl.lit("forged")).write_ipc(segment)
    elif damage == "segment removed":
        segment.unlink()
    elif damage == "memory points out of the spool":  # the segment copied outside the spool, the memory pointing there
        (genesis_layout.root / "outside").write_bytes(segment.read_bytes())
        segment.unlink()
        genesis_layout.admitted.write_text(memory.replace(f"\t{segment.name}:", "\t../outside:"))
    else:
        genesis_layout.admitted.write_text(memory.replace(f"{segment.name}:0", "@").replace(f"{segment.name}:1", f"{segment.name}:0")
                                           .replace("@", f"{segment.name}:1"))
    monkeypatch.setattr(admission, "read_stamped_entry", counted(admission.read_stamped_entry, reads := []))
    monkeypatch.setattr(intake, "verify", never_verified)
    summary = run_stages(genesis_store, genesis_layout, 1, through="epoch_tasks")["epoch_tasks"]
    assert (summary.accepted, summary.rejected_by_reason) == (len(ids), {})
    assert len(reads) == len(ids), "each entry read from the inbox"
    assert genesis_store._scalar("SELECT count(*) FROM tasks WHERE prompt LIKE 'task%'") == len(ids)


def test_an_entry_kept_as_bytes_only_is_read_ahead_again_with_its_verdict(genesis_store, genesis_layout, submit, genesis,
                                                                          settled, monkeypatch):
    """A training order is kept as its bytes only (not as a task's columns): the collector reads it ahead again from
    the spool under the chain's id, with the remembered verdict, and takes it as the order it is."""
    (version,) = genesis_store.model_versions()
    order = submit.train(nonce=7, base_version=version, shards=sorted(genesis_store.training_shards())[:1])
    [task] = submit(1, "dev-ada")
    settled(genesis_layout)
    admit(genesis_layout, genesis)
    assert all(place.count(":") == 1 for place in kept_bytes(genesis_layout, genesis).values())
    monkeypatch.setattr(admission, "read_stamped_entry", never_read)
    monkeypatch.setattr(intake, "verify", never_verified)
    summary = run_stages(genesis_store, genesis_layout, 1, through="epoch_tasks")["epoch_tasks"]
    assert (summary.accepted, summary.rejected_by_reason) == (1, {})
    assert genesis_store._query("SELECT submission_id FROM training_tasks") == [(order,)]
    assert genesis_store._query("SELECT submission_id FROM tasks") == [(task,)]


def test_a_recent_entry_is_kept_by_the_next_check_without_checking_it_again(genesis_layout, submit, genesis, settled,
                                                                          monkeypatch):
    submit(2, "dev-ada")
    monkeypatch.setattr(admission, "SETTLED_NS", 3_600 * 10**9)  # an hour: every entry is too recent to keep
    assert admit(genesis_layout, genesis) == (2, 2)
    assert set(kept_bytes(genesis_layout, genesis).values()) == {admission.KEEP_LATER}
    monkeypatch.setattr(admission, "SETTLED_NS", 0)
    settled(genesis_layout)
    monkeypatch.setattr(intake, "verify", never_verified)
    assert admit(genesis_layout, genesis) == (0, 2), "read again to keep the bytes: no new signature checked"
    remembered = admission.load_admitted(genesis_layout.admitted, genesis.chain_id)
    assert all(r.verdicts == (True,) and r.kept.count(":") == 1 for r in remembered.values())
    assert admit(genesis_layout, genesis) == (0, 2)


def test_compaction_drops_the_segments_of_taken_entries(genesis_layout, submit, genesis, settled):
    first = submit(3, "dev-ada")
    settled(genesis_layout)
    admit(genesis_layout, genesis)
    [old_segment] = admission.spool_of(genesis_layout.admitted).iterdir()
    for taken in first:
        (genesis_layout.inbox / f"{taken}.json").unlink()
    submit(1, "dev-ada", start_nonce=3)
    settled(genesis_layout)
    assert admit(genesis_layout, genesis) == (1, 1)
    assert not old_segment.exists()
    assert len(list(admission.spool_of(genesis_layout.admitted).iterdir())) == 1


def test_an_entry_last_changed_within_the_probes_tick_is_not_kept(genesis_layout, submit, genesis, monkeypatch):
    """A write after the probe in the same clock tick stamps the same change time: only an older one proves anything."""
    [good] = submit(1, "dev-ada")
    changed = (genesis_layout.inbox / f"{good}.json").lstat().st_ctime_ns
    monkeypatch.setattr(admission, "SETTLED_NS", 0)
    monkeypatch.setattr(admission, "clock_probe", lambda inbox: changed)
    admit(genesis_layout, genesis)
    assert kept_bytes(genesis_layout, genesis) == {f"{good}.json": admission.KEEP_LATER}
    monkeypatch.setattr(admission, "clock_probe", lambda inbox: changed + 1)
    admit(genesis_layout, genesis)
    assert kept_bytes(genesis_layout, genesis)[f"{good}.json"].count(":") == 1


def test_segments_read_ahead_come_in_order_each_as_its_own_read_says(tmp_path):
    """Collect reads the spool a segment ahead on a thread: the segments come in the order asked, a missing or altered
    one as None at its own turn (its entries are read from the inbox again), and a reader closed half-way stops its
    thread."""
    import io
    import threading

    import polars as pl

    from gonka_pipelines.protocol.crypto import sha256_hex

    def segment(rows: int) -> str:
        buffer = io.BytesIO()
        pl.DataFrame({"row": list(range(rows))}).write_ipc(buffer)
        name = sha256_hex(buffer.getvalue())[:admission.SEGMENT_NAME_LENGTH]
        (tmp_path / name).write_bytes(buffer.getvalue())
        return name

    names = [segment(rows) for rows in (1, 2, 3, 4, 5)]
    (tmp_path / names[1]).unlink()
    (tmp_path / names[3]).write_bytes((tmp_path / names[3]).read_bytes() + b"\0")
    frames = list(admission._read_segments(tmp_path, names))
    assert [None if frame is None else frame.height for frame in frames] == [1, None, 3, None, 5]
    assert list(admission._read_segments(tmp_path, [])) == []
    before = set(threading.enumerate())
    reader = admission._read_segments(tmp_path, names)
    assert next(reader).height == 1
    assert set(threading.enumerate()) - before, "the next segment is read on a thread"
    reader.close()
    assert not set(threading.enumerate()) - before, "closed, the reader leaves no thread behind"
