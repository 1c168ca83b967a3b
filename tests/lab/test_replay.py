"""`gonka replay`: every epoch of the demo chain rebuilt into a scratch chain from what the chain stores seals the same
block; a stored row that no longer matches what was signed makes the replay diverge, and the report names the first
committed table and row that differ. The original chain is only read."""

from __future__ import annotations

import pytest

from gonka_pipelines import cli
from gonka_pipelines.chain.store import ChainError
from gonka_pipelines.lab.replay import replay_epoch
from gonka_pipelines.local.inbox import restore_entry, waiting_names
from gonka_pipelines.local.paths import DataLayout

from support.chains import DEMO_EPOCHS, opened

pytestmark = pytest.mark.slow


def test_every_epoch_of_the_demo_chain_replays_to_its_block(demo_template, tmp_path):
    with opened(demo_template, read_only=True) as store:
        before = store._query("SELECT height, hash FROM blocks ORDER BY height")
    for epoch in range(1, DEMO_EPOCHS + 1):
        replay = replay_epoch(demo_template, epoch, tmp_path / f"replay-{epoch}")
        assert replay.identical and replay.divergence is None, (epoch, str(replay.divergence))
        assert replay.replayed_hash == before[epoch][1]
        with opened(DataLayout(tmp_path / f"replay-{epoch}"), read_only=True) as scratch:
            assert scratch.head().height == epoch, "the scratch chain holds the replayed epoch and nothing after it"
    with opened(demo_template, read_only=True) as store:
        assert store._query("SELECT height, hash FROM blocks ORDER BY height") == before, "the original is untouched"


def test_a_changed_stored_row_makes_the_replay_name_the_first_diverging_row(demo_layout, tmp_path, capsys):
    """A task's prompt edited after the fact: its signature no longer verifies over the rebuilt submission, so the
    replay rejects it, and the first committed difference is that submission's outcome."""
    with opened(demo_layout) as store:
        task_id, submission_id = store._query("SELECT task_id, submission_id FROM tasks WHERE epoch = 2 ORDER BY task_id")[0]
        store._execute("UPDATE tasks SET prompt = prompt || '!' WHERE task_id = ?", [task_id])
    replay = replay_epoch(demo_layout, 2, tmp_path / "scratch")
    assert not replay.identical and replay.divergence is not None
    assert replay.divergence.table == "submissions" and replay.divergence.key == submission_id
    assert replay.divergence.columns == {"outcome": ("accepted", "rejected")}
    assert cli.main(["--data-dir", str(demo_layout.root), "replay", "2", "--scratch", str(tmp_path / "cli")]) == 1
    out = capsys.readouterr().out
    assert f"DIVERGED: first difference in table submissions, row {submission_id[:40]}: outcome: 'accepted' vs 'rejected'" in out


def test_cli_replay_reports_a_match_and_refuses_unfinalized_epochs(demo_layout, tmp_path, capsys):
    assert cli.main(["--data-dir", str(demo_layout.root), "replay", "1"]) == 0
    out = capsys.readouterr().out
    assert "epoch 1 replayed: block" in out and "identical to the stored block" in out
    assert cli.main(["--data-dir", str(demo_layout.root), "replay", str(DEMO_EPOCHS + 1)]) == 2
    assert f"epoch {DEMO_EPOCHS + 1} has no finalized block to replay" in capsys.readouterr().err
    with pytest.raises(ChainError, match="no finalized block"):
        replay_epoch(demo_layout, 0, tmp_path / "genesis")


def test_entries_refused_before_they_were_read_are_made_again_of_the_same_kind(tmp_path):
    inbox = tmp_path / "inbox"
    restore_entry(inbox, "a" * 64, b"{}")
    restore_entry(inbox, "b" * 64, b"", "not_a_file", "the inbox entry is a directory, not a regular file")
    restore_entry(inbox, "c" * 64, b"", "not_a_file", "the inbox entry is a FIFO, not a regular file")
    restore_entry(inbox, "d" * 64, b"x" * 10, "too_large", "larger than 10 bytes (only the first 10 are kept)")
    assert waiting_names(inbox) == [f"{c * 64}.json" for c in "abcd"]
    assert (inbox / f"{'b' * 64}.json").is_dir() and (inbox / f"{'d' * 64}.json").stat().st_size == 11
    with pytest.raises(ValueError, match="cannot be made again"):
        restore_entry(inbox, "e" * 64, b"", "not_a_file", "the inbox entry is a character device, not a regular file")
