"""Bundles (`NAME.jsonl`, a submission per line): each line is judged as the submission `NAME/LINE`, a bundle is
refused whole only when it cannot be read as lines at all, counts its lines against the epoch's limit, is taken from
admission's spool like any entry, archived whole, and put back whole by a replay."""

from __future__ import annotations

import os

import polars as pl
import pytest
from test_admission import admit, counted, epoch_rows, never_read, never_verified

from gonka_pipelines.lab.replay import replay_epoch
from gonka_pipelines.local import admission
from gonka_pipelines.local.config import load_genesis
from gonka_pipelines.local.inbox import (
    MAX_BUNDLE_BYTES,
    MAX_BUNDLE_LINES,
    read_entry,
    restore_entries,
    waiting_names,
    write_bundle,
)
from gonka_pipelines.protocol import intake

from support.chains import opened, run_stages
from test_collect_stage import one_rejection_case

CAP = load_genesis().tasks.max_submission_bytes
"""The shipped local profile's limit on a submission (a bundle's line): 8,192 bytes."""


def drop(layout, name: str, raw: bytes) -> None:
    layout.inbox.mkdir(parents=True, exist_ok=True)
    (layout.inbox / name).write_bytes(raw)


def mixed_bundle(submit, genesis) -> tuple[bytes, dict[int, str]]:
    """A bundle's bytes: two good tasks, a forged one, junk, an empty line, a line over the limit and a good task on
    an unterminated last line; with the reason expected for each refused line."""
    lines = [submit.sign(nonce=0), submit.sign(nonce=1), one_rejection_case("bad_signature", submit, genesis),
             b"not json", b"", b"x" * (CAP + 5), submit.sign(nonce=2)]
    return b"\n".join(lines), {2: "bad_signature", 3: "malformed", 4: "malformed", 5: "too_large"}


def test_each_line_is_judged_on_its_own_and_the_bundle_is_archived_whole(genesis_store, genesis_layout, submit, genesis):
    raw, refused = mixed_bundle(submit, genesis)
    drop(genesis_layout, "batch.jsonl", raw)
    [single] = submit(1, start_nonce=3)
    summary = run_stages(genesis_store, genesis_layout, 1)["epoch_tasks"]
    assert (summary.submitted, summary.accepted) == (8, 4)
    assert genesis_store._query("SELECT submission_id, nonce FROM tasks ORDER BY nonce") == [
        ("batch/0", 0), ("batch/1", 1), ("batch/6", 2), (single, 3)]
    rows = genesis_store._query("SELECT submission_id, reason, raw_payload FROM rejected_tasks ORDER BY submission_id")
    assert [(sid, reason) for sid, reason, _ in rows] == [(f"batch/{line}", reason) for line, reason in sorted(refused.items())]
    assert [bytes(payload) for *_, payload in rows] == [raw.split(b"\n")[line][:CAP] for line in sorted(refused)]
    assert waiting_names(genesis_layout.inbox) == []
    assert sorted(os.listdir(genesis_layout.inbox / "processed")) == sorted(["batch.jsonl", f"{single}.json"])


def test_a_bundle_that_cannot_be_read_as_lines_is_refused_whole(genesis_store, genesis_layout, submit):
    inbox = genesis_layout.inbox
    inbox.mkdir(parents=True, exist_ok=True)
    (inbox / "empty.jsonl").write_bytes(b"")
    (inbox / "long.jsonl").write_bytes(submit.sign(nonce=0) + b"\n" * (MAX_BUNDLE_LINES + 1))
    (inbox / "folder.jsonl").mkdir()
    run_stages(genesis_store, genesis_layout, 1, through="epoch_tasks")
    assert genesis_store._query("SELECT submission_id, reason, detail FROM rejected_tasks ORDER BY submission_id") == [
        ("empty/", "malformed", "an empty bundle (no line)"),
        ("folder/", "not_a_file", "the inbox entry is a directory, not a regular file"),
        ("long/", "too_large", f"a bundle of more than {MAX_BUNDLE_LINES} lines or {MAX_BUNDLE_BYTES} bytes "
                               f"(only the first {CAP} are kept)")]
    assert genesis_store._scalar("SELECT count(*) FROM tasks") == 0
    assert MAX_BUNDLE_BYTES < (CAP + 1) * MAX_BUNDLE_LINES, "the local profile's bundles are capped by bytes, not lines"


def test_writing_a_bundle_refuses_what_would_not_read_back_as_its_lines(tmp_path, submit):
    for raws in ([], [b"a\nb"], [b"{}"] * (MAX_BUNDLE_LINES + 1)):
        with pytest.raises(ValueError, match="a bundle holds"):
            write_bundle(tmp_path, raws)
    first, second = write_bundle(tmp_path, [b"{}"]), write_bundle(tmp_path, [b"{}"])
    assert second == f"{first}-1", "the same bytes again are a replay, kept and judged"
    assert [s.submission_id for s in read_entry(tmp_path, f"{first}.jsonl", CAP)] == [f"{first}/0"]


def test_the_epoch_counts_a_bundles_lines_against_its_limit_and_takes_a_bundle_whole(tmp_path):
    inbox = tmp_path
    for name, lines in (("a.json", 1), ("b.jsonl", 3), ("c.json", 1), ("d.jsonl", 2)):
        (inbox / name).write_bytes(b"{}\n" * lines)
    taken = {limit: admission.taken_names(inbox, {}, CAP, limit) for limit in (1, 3, 4, 5, 7, 100)}
    a, b, c, d = "a.json", "b.jsonl", "c.json", "d.jsonl"
    assert taken == {1: [a], 3: [a], 4: [a, b], 5: [a, b, c], 7: [a, b, c, d], 100: [a, b, c, d]}
    (inbox / "a.json").unlink()
    assert admission.taken_names(inbox, {}, CAP, 1) == [b], "a bundle over the limit on its own is taken alone"


def test_an_admitted_bundle_is_taken_from_the_spool_with_its_verdicts(genesis_layout, submit, genesis, other_chain,
                                                                      settled, monkeypatch):
    """Every line kept whole: a line over the limit is kept cut short, so its bundle is read again in the epoch."""
    raw, _ = mixed_bundle(submit, genesis)
    raw = raw.replace(b"x" * (CAP + 5), b"x" * 5)
    twin, twin_submit = other_chain("twin")
    for target in (genesis_layout, twin):
        drop(target, "batch.jsonl", raw)
    submit(2, start_nonce=3)
    twin_submit(2, start_nonce=3)
    settled(genesis_layout)
    assert admit(genesis_layout, genesis) == (9, 9), "signatures checked and submissions waiting: a line each"
    remembered = admission.load_admitted(genesis_layout.admitted, genesis.chain_id)["batch.jsonl"]
    assert remembered.verdicts == (True, True, False, None, None, None, True)  # a verdict for each line
    assert remembered.kept.count(":") == 1
    with opened(twin) as store:
        run_stages(store, twin, 1, through="epoch_tasks")
        expected = epoch_rows(store)
    monkeypatch.setattr(admission, "read_stamped_entry", never_read)
    monkeypatch.setattr(intake, "verify", never_verified)
    with opened(genesis_layout) as store:
        run_stages(store, genesis_layout, 1, through="epoch_tasks")
        assert epoch_rows(store) == expected


def test_a_bundle_rewritten_after_admission_is_read_and_checked_again(genesis_store, genesis_layout, submit, genesis,
                                                                      settled, monkeypatch):
    submit.bundle([submit.sign(nonce=0), submit.sign(nonce=1)])
    [name] = waiting_names(genesis_layout.inbox)
    settled(genesis_layout)
    admit(genesis_layout, genesis)
    path = genesis_layout.inbox / name
    path.write_bytes(path.read_bytes().replace(b'"prompt":"task 1', b'"prompt":"TASK 1'))
    monkeypatch.setattr(admission, "read_stamped_entry", counted(admission.read_stamped_entry, reads := []))
    summary = run_stages(genesis_store, genesis_layout, 1, through="epoch_tasks")["epoch_tasks"]
    assert (summary.accepted, summary.rejected_by_reason) == (1, {"bad_signature": 1})
    assert len(reads) == 1


def test_restored_bundles_read_back_as_the_same_submissions(tmp_path, genesis_layout, submit, genesis):
    raw, _ = mixed_bundle(submit, genesis)
    original = tmp_path / "original"
    original.mkdir()
    (original / "batch.jsonl").write_bytes(raw)
    (original / "long.jsonl").write_bytes(b"{}\n" * (MAX_BUNDLE_LINES + 1))
    taken = [s for name in ("batch.jsonl", "long.jsonl") for s in read_entry(original, name, CAP)]
    stored = sorted(taken, key=lambda s: s.submission_id)  # the chain's order: batch/10 would come before batch/2
    restored = tmp_path / "restored"
    restore_entries(restored, [(s.submission_id, s.raw, s.unreadable.reason if s.unreadable else "",
                                s.unreadable.detail if s.unreadable else "") for s in stored])
    assert sorted(os.listdir(restored)) == ["batch.jsonl", "long.jsonl"]
    again = [s for name in ("batch.jsonl", "long.jsonl") for s in read_entry(restored, name, CAP)]
    assert [(s.submission_id, s.raw, repr(s.unreadable)) for s in again] == [
        (s.submission_id, s.raw, repr(s.unreadable)) for s in taken]


def test_an_epoch_that_took_bundles_replays_to_its_block(genesis_layout, submit, genesis, tmp_path):
    raw, _ = mixed_bundle(submit, genesis)
    drop(genesis_layout, "batch.jsonl", raw)
    submit.bundle([submit.sign(nonce=n, developer="dev-grace") for n in range(3)])
    with opened(genesis_layout) as store:
        block = run_stages(store, genesis_layout, 1)["block"]
    replay = replay_epoch(genesis_layout, 1, tmp_path / "replay")
    assert replay.identical and replay.replayed_hash == block


def test_bundles_are_shared_out_by_their_submissions_on_every_core(genesis_layout, submit, genesis, other_chain, settled,
                                                                   monkeypatch):
    """With the pool forced on and work items of 3 submissions, three bundles of 4 are checked in separate work items
    (a spool segment each), and the epoch's rows, read in the pool too, are those of the one-core collector."""
    twin, twin_submit = other_chain("twin")
    for target in (submit, twin_submit):
        for first in (0, 4, 8):
            target.bundle([submit.sign(nonce=n) for n in range(first, first + 4)])
        target(2, "dev-grace")
    with opened(twin) as store:
        run_stages(store, twin, 1, through="epoch_tasks")
        expected = epoch_rows(store)
    monkeypatch.setattr(admission, "PARALLEL_FROM", 1)
    monkeypatch.setattr(admission, "CHUNK", 3)
    monkeypatch.setattr(admission, "TYPICAL_SUBMISSION_BYTES", 1)  # every bundle weighs more than a work item
    settled(genesis_layout)
    assert admit(genesis_layout, genesis) == (14, 14)
    segments = [pl.read_ipc(segment)["submission_id"].to_list() for segment in admission.spool_of(genesis_layout.admitted).iterdir()]
    assert sorted(sum(i.endswith(("/0", "/1", "/2", "/3")) for i in ids) for ids in segments) == [0, 4, 4, 4][-len(segments):] \
        and len(segments) >= 3, "a work item (and a segment) for each bundle"
    monkeypatch.setattr(intake, "verify", never_verified)
    with opened(genesis_layout) as store:
        summary = run_stages(store, genesis_layout, 1, through="epoch_tasks")["epoch_tasks"]
        assert epoch_rows(store) == expected
    assert (summary.submitted, summary.accepted) == (14, 14)
