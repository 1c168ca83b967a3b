"""No single inbox entry can fail, hang or leak into an epoch: each poison entry is rejected with a reason (and its bytes,
when it has any) while the valid submissions beside it are accepted, and the epoch finalizes and verifies."""

from __future__ import annotations

import os
import threading

import pytest

from gonka_pipelines.chain.verify import verify_chain
from gonka_pipelines.local.config import load_genesis
from gonka_pipelines.local.inbox import ESCAPED_NAME

from support.chains import opened, run_stages

CAP = load_genesis().tasks.max_submission_bytes
"""The shipped local profile's limit on an inbox file: 8,192 bytes."""


def signed_like(submit, **body_extra) -> bytes:
    """A well-formed signed submission's bytes with its body changed (so it parses, then fails a check)."""
    raw = submit.sign(nonce=99).decode()
    return raw.replace('"body":{', '"body":{' + "".join(f'"{k}":{v},' for k, v in body_extra.items()), 1).encode()


def poison_entries(inbox, layout, submit) -> dict[str, tuple[str, bytes | None]]:
    """Write every kind of poison entry; returns {submission id: (expected reason, expected raw payload or None)}."""
    inbox.mkdir(parents=True, exist_ok=True)
    key_file = layout.key_file("host-alpha")
    expected: dict[str, tuple[str, bytes | None]] = {}

    def file(name: str, raw: bytes, reason: str, kept: bytes | None = None) -> None:
        (inbox / f"{name}.json").write_bytes(raw)
        expected[name] = (reason, raw if kept is None else kept)

    file("deep", b"[" * 2_600 + b"]" * 2_600, "malformed")
    file("huge-int", b'{"body": {"nonce": ' + b"9" * 4_400 + b'}, "signature": ""}', "malformed")
    file("surrogate-key", signed_like(submit, **{"\\ud800": 1}), "malformed")
    file("surrogate-prompt", submit.sign(nonce=98).replace(b'"prompt":"', b'"prompt":"\\udc80', 1), "malformed")
    big = b'{"body": {"prompt": "' + b"x" * 10_000_000 + b'"}}'
    file("oversized", big, "too_large", big[:CAP])
    (inbox / "directory.json").mkdir()
    expected["directory"] = ("not_a_file", b"")
    os.symlink(inbox / "directory.json", inbox / "link-to-directory.json")
    expected["link-to-directory"] = ("not_a_file", b"")
    os.symlink(inbox / "nothing-here", inbox / "dangling.json")
    expected["dangling"] = ("not_a_file", b"")
    os.symlink(key_file, inbox / "leak.json")
    expected["leak"] = ("not_a_file", b"")
    os.mkfifo(inbox / "pipe.json")
    expected["pipe"] = ("not_a_file", b"")
    odd_name = os.fsencode(str(inbox)) + b"/\xff\xfe-odd.json"
    with open(odd_name, "wb") as handle:
        handle.write(b"{}")
    expected[ESCAPED_NAME + b"\xff\xfe-odd".hex()] = ("bad_file_name", b"{}")
    return expected


@pytest.fixture
def poisoned_epoch(genesis_layout, submit):
    valid = submit(2)
    expected = poison_entries(genesis_layout.inbox, genesis_layout, submit)
    outcome: dict = {}

    def run() -> None:
        try:
            with opened(genesis_layout) as store:
                outcome["results"] = run_stages(store, genesis_layout, 1)
        except BaseException as error:  # re-raised in the test's thread
            outcome["error"] = error

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout=120)
    assert not worker.is_alive(), "an inbox entry hung the epoch (a FIFO opened for reading blocks without O_NONBLOCK)"
    if "error" in outcome:
        raise outcome["error"]
    return genesis_layout, valid, expected, outcome["results"]


def test_the_epoch_takes_every_entry_and_finalizes(poisoned_epoch):
    layout, valid, expected, results = poisoned_epoch
    summary = results["epoch_tasks"]
    assert (summary.submitted, summary.accepted) == (len(valid) + len(expected), len(valid))
    with opened(layout, read_only=True) as store:
        assert store.head().height == 1
        assert verify_chain(store).first_problem is None
        rejected = {row["submission_id"]: row for row in store._records("SELECT * FROM rejected_tasks WHERE epoch = 1")}
        assert {sid: (row["reason"], bytes(row["raw_payload"])) for sid, row in rejected.items()} == expected
        assert set(store.submission_ids(1)) == set(valid) | set(expected), "nothing in the inbox was skipped"


def test_no_key_material_reaches_the_chain(poisoned_epoch):
    layout, _, _, _ = poisoned_epoch
    seed = layout.key_file("host-alpha").read_text().strip()
    with opened(layout, read_only=True) as store:
        rows = store._query("SELECT detail, raw_payload FROM rejected_tasks")
    assert all(seed not in detail and seed.encode() not in bytes(raw) for detail, raw in rows)
    assert layout.key_file("host-alpha").read_text().strip() == seed


def test_rejections_say_what_was_wrong(poisoned_epoch):
    layout, _, _, _ = poisoned_epoch
    with opened(layout, read_only=True) as store:
        detail = dict(store._query("SELECT submission_id, detail FROM rejected_tasks"))
    assert detail["deep"] == "JSON nested too deep"
    assert "digit" in detail["huge-int"]
    assert "lone surrogate" in detail["surrogate-key"] and "lone surrogate" in detail["surrogate-prompt"]
    assert detail["oversized"] == f"larger than {CAP} bytes (only the first {CAP} are kept)"
    assert detail["directory"] == "the inbox entry is a directory, not a regular file"
    assert detail["pipe"] == "the inbox entry is a FIFO, not a regular file"
    assert {detail[k] for k in ("leak", "dangling", "link-to-directory")} == {
        "the inbox entry is a symbolic link (links are never followed)"}


def test_every_entry_is_archived_once_the_block_is_final(poisoned_epoch):
    layout, valid, expected, _ = poisoned_epoch
    assert [name for name in os.listdir(layout.inbox) if name.endswith(".json")] == []
    archived = os.listdir(os.fsencode(layout.inbox / "processed"))
    assert len(archived) == len(valid) + len(expected)
    assert os.path.islink(layout.inbox / "processed" / "leak.json"), "the link itself moved; its target was never read"


def test_an_entry_named_like_an_archived_submission_never_replaces_it(finalized_layout):
    processed = finalized_layout.inbox / "processed"
    original = sorted(processed.glob("*.json"))[0]
    kept = original.read_bytes()
    (finalized_layout.inbox / original.name).write_bytes(b"an impostor with a consumed submission's name")
    with opened(finalized_layout) as store:
        run_stages(store, finalized_layout, 2, through="epoch_tasks")
    assert original.read_bytes() == kept
    assert (processed / f"{original.name}~1").read_bytes() == b"an impostor with a consumed submission's name"


@pytest.mark.parametrize("renameat2", [True, False], ids=["one rename that refuses to replace", "probe, then rename"])
def test_archiving_keeps_every_copy_and_skips_entries_already_moved(tmp_path, monkeypatch, renameat2):
    """Both ways of moving an entry (renameat2 RENAME_NOREPLACE, or a probe and a rename where the system lacks it)
    keep an archived entry of the same name and file the newcomer as NAME~N, and count an entry no longer in the
    inbox (moved by an interrupted attempt) as not moved."""
    from gonka_pipelines.local import inbox

    if not renameat2:
        monkeypatch.setattr(inbox, "_renameat2", None)
    elif inbox._renameat2 is None:
        pytest.skip("this C library has no renameat2")
    box = tmp_path / "inbox"
    (box / "processed").mkdir(parents=True)
    for name, content in (("a.json", b"new a"), ("b.json", b"new b")):
        (box / name).write_bytes(content)
    (box / "processed" / "a.json").write_bytes(b"old a")
    (box / "processed" / "a.json~1").write_bytes(b"older copy")
    assert inbox.archive_submissions(box, ["a", "b", "gone"]) == 2
    assert {p.name: p.read_bytes() for p in (box / "processed").iterdir()} == {
        "a.json": b"old a", "a.json~1": b"older copy", "a.json~2": b"new a", "b.json": b"new b"}
    assert sorted(os.listdir(box)) == ["processed"]
