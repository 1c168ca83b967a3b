"""Crash safety of intake: a kill between reading the inbox and committing leaves the chain as it was, and every
submission is taken exactly once whatever happens between collecting, finalizing and archiving."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from gonka_pipelines.chain.store import ChainStore, EpochOrderError
from gonka_pipelines.chain.verify import verify_chain
from gonka_pipelines.local.failpoints import CRASH_EXIT_CODE, FAILPOINT_ENV
from gonka_pipelines.stages import block as block_stage
from gonka_pipelines.stages.block import finalize_block
from gonka_pipelines.stages.collect import CollectSummary, run_collect
from gonka_pipelines.stages.environment import build_environment, holding, quiet

EPOCH_TABLES = ("tasks", "rejected_tasks", "transfers", "submissions", "lineage", "epochs")


def collect(store: ChainStore, layout, epoch: int) -> CollectSummary:
    """The epoch's collect stage on an open store (its environment built from the head, which refuses a wrong epoch)."""
    return run_collect(build_environment(store, layout, epoch), holding(store), quiet)


def collect_in_subprocess(layout, epoch: int, failpoint: str | None) -> subprocess.CompletedProcess:
    code = textwrap.dedent(f"""
        from pathlib import Path
        from gonka_pipelines.chain.store import ChainStore
        from gonka_pipelines.local.paths import DataLayout
        from gonka_pipelines.stages.collect import run_collect
        from gonka_pipelines.stages.environment import build_environment, holding, quiet
        layout = DataLayout(Path({str(layout.root)!r}))
        with ChainStore.open(layout.database) as store:
            print(run_collect(build_environment(store, layout, {epoch}), holding(store), quiet))
    """)
    env = {k: v for k, v in os.environ.items() if k != FAILPOINT_ENV} | ({FAILPOINT_ENV: failpoint} if failpoint else {})
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


def epoch_row_counts(store: ChainStore, epoch: int) -> dict[str, int]:
    return {table: store._scalar(f"SELECT count(*) FROM {table} WHERE epoch = ?", [epoch]) for table in EPOCH_TABLES}


def inbox_ids(layout) -> set[str]:
    return {path.stem for path in layout.inbox.glob("*.json")}


def submit_mix(submit) -> list[str]:
    return submit(5, "dev-ada") + submit(3, "dev-grace") + [submit.raw(b"malformed"), submit.raw(submit.sign(nonce=0))]


def test_kill_between_read_and_commit_changes_nothing(genesis_layout, submit):
    ids = submit_mix(submit)
    with ChainStore.open(genesis_layout.database, read_only=True) as store:
        balances, head = store.balances(1), store.head()

    crashed = collect_in_subprocess(genesis_layout, 1, "collect.before_commit")
    assert crashed.returncode == CRASH_EXIT_CODE == 137, crashed.stderr
    assert "CollectSummary" not in crashed.stdout  # it died before returning

    with ChainStore.open(genesis_layout.database) as store:
        assert epoch_row_counts(store, 1) == dict.fromkeys(EPOCH_TABLES, 0)
        assert store.balances(1) == balances and store.head() == head
        assert verify_chain(store).first_problem is None
        assert inbox_ids(genesis_layout) == set(ids)
        assert not (genesis_layout.inbox / "processed").exists() or not any((genesis_layout.inbox / "processed").iterdir())

        summary = collect(store, genesis_layout, 1)
        assert summary.submitted == len(ids) == 10
        assert summary.accepted + sum(summary.rejected_by_reason.values()) == summary.submitted
        assert (summary.accepted, summary.rejected_by_reason) == (8, {"malformed": 1, "replayed_nonce": 1})
        taken = [sid for (sid,) in store._query("SELECT submission_id FROM tasks UNION ALL SELECT submission_id FROM rejected_tasks")]
        assert sorted(taken) == sorted(ids)


def test_collect_in_a_subprocess_without_failpoint_commits(genesis_layout, submit):
    ids = submit(2)
    done = collect_in_subprocess(genesis_layout, 1, None)
    assert done.returncode == 0, done.stderr
    with ChainStore.open(genesis_layout.database) as store:
        assert sorted(sid for (sid,) in store._query("SELECT submission_id FROM tasks")) == sorted(ids)


def test_an_unnamed_failpoint_does_nothing(genesis_store, genesis_layout, submit, monkeypatch):
    monkeypatch.setenv(FAILPOINT_ENV, "some.other.point")
    submit(1)
    assert collect(genesis_store, genesis_layout, 1).accepted == 1


def test_an_error_inside_collect_rolls_back(genesis_store, genesis_layout, submit, monkeypatch):
    from gonka_pipelines.stages import collect as collect_stage

    submit(3)

    def boom(name: str) -> None:
        raise RuntimeError(f"injected at {name}")

    monkeypatch.setattr(collect_stage, "failpoint", boom)
    with pytest.raises(RuntimeError, match="injected at collect.before_commit"):
        collect(genesis_store, genesis_layout, 1)
    assert epoch_row_counts(genesis_store, 1) == dict.fromkeys(EPOCH_TABLES, 0)
    assert len(inbox_ids(genesis_layout)) == 3


def test_rerunning_collect_replaces_rows(genesis_store, genesis_layout, submit):
    ids = submit_mix(submit)
    first = collect(genesis_store, genesis_layout, 1)
    snapshot = {t: genesis_store._query(f"SELECT * FROM {t} WHERE epoch = 1 ORDER BY ALL") for t in EPOCH_TABLES if t != "epochs"}
    balances = genesis_store.balances(1)
    second = collect(genesis_store, genesis_layout, 1)
    assert second == first
    assert {t: genesis_store._query(f"SELECT * FROM {t} WHERE epoch = 1 ORDER BY ALL") for t in snapshot} == snapshot
    assert epoch_row_counts(genesis_store, 1) == {"tasks": 8, "rejected_tasks": 2, "transfers": 8, "submissions": 10,
                                          "lineage": 8, "epochs": 1}
    assert genesis_store.balances(1) == balances  # escrow debited once, not twice
    assert sorted(sid for (sid,) in genesis_store._query("SELECT submission_id FROM submissions")) == sorted(ids)


def test_rerunning_collect_drops_a_stale_proposal_and_takes_new_submissions(proposed_layout, submit):
    submit(1, "dev-grace", start_nonce=2)
    with ChainStore.open(proposed_layout.database) as store:
        assert store.epoch_status(1) == "proposed" and store.block(1) is not None
        before = store._scalar("SELECT count(*) FROM submissions WHERE epoch = 1")
        summary = collect(store, proposed_layout, 1)
        assert summary.submitted == before + 1 and summary.accepted == 6
        assert store.epoch_status(1) == "open" and store.block(1) is None
        assert store._scalar("SELECT count(*) FROM block_signatures WHERE height = 1") == 0
        assert store._scalar("SELECT count(*) FROM tasks WHERE epoch = 1") == 6
        assert store.head().height == 0


def processed_ids(layout) -> set[str]:
    return {path.stem for path in (layout.inbox / "processed").glob("*.json")}


def test_a_leftover_processed_file_is_not_taken_twice(finalized_layout, submit):
    ids = sorted(processed_ids(finalized_layout))
    assert len(ids) == 6 and not inbox_ids(finalized_layout)
    processed = finalized_layout.inbox / "processed"
    # a crash after finalize but before archiving leaves a consumed file in the inbox
    (finalized_layout.inbox / f"{ids[0]}.json").write_bytes((processed / f"{ids[0]}.json").read_bytes())
    new = submit(1, "dev-grace", start_nonce=2)
    with ChainStore.open(finalized_layout.database) as store:
        summary = collect(store, finalized_layout, 2)
        assert (summary.submitted, summary.accepted, summary.rejected_by_reason) == (1, 1, {})
        assert store._query("SELECT submission_id FROM submissions WHERE epoch = 2") == [(new[0],)]
        assert store._query("SELECT epoch FROM submissions WHERE submission_id = ?", [ids[0]]) == [(1,)]
    assert inbox_ids(finalized_layout) == set(new)  # the leftover was archived, not judged again
    assert (processed / f"{ids[0]}.json").exists()


def test_a_crash_between_finalize_and_archiving(proposed_layout, monkeypatch):
    waiting = inbox_ids(proposed_layout)
    assert len(waiting) == 6

    def power_cut(*args, **kwargs):
        raise SystemExit(CRASH_EXIT_CODE)

    with ChainStore.open(proposed_layout.database) as store:
        with monkeypatch.context() as patch, pytest.raises(SystemExit):
            patch.setattr(block_stage, "archive_submissions", power_cut)
            finalize_block(build_environment(store, proposed_layout, 1), holding(store), quiet)
        assert store.head().height == 1 and inbox_ids(proposed_layout) == waiting  # final, files still waiting
        summary = collect(store, proposed_layout, 2)
        assert summary.submitted == 0 and store._scalar("SELECT count(*) FROM submissions WHERE epoch = 2") == 0
        assert store._scalar("SELECT count(*) FROM submissions WHERE epoch = 1") == 6
    assert not inbox_ids(proposed_layout) and processed_ids(proposed_layout) == waiting


def test_an_out_of_order_collect_does_not_lose_the_open_epochs_submissions(genesis_store, genesis_layout, submit):
    ids = submit(2)
    assert collect(genesis_store, genesis_layout, 1).accepted == 2
    with pytest.raises(EpochOrderError):
        collect(genesis_store, genesis_layout, 2)  # head is block 0: epoch 2 cannot run yet
    assert inbox_ids(genesis_layout) == set(ids)  # nothing archived by the refused call
    assert collect(genesis_store, genesis_layout, 1).accepted == 2
