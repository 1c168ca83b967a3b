"""`explain_payout` and `gonka explain`: every payout is derived, amount by amount, from the rows behind it, and the
lineage table links each payout to its weight (and on to the accepted batches) and to its fee shares."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gonka_pipelines.chain.store import ChainError
from gonka_pipelines.local.paths import DataLayout
from gonka_pipelines.reports.explain import explain_payout, render_markdown
from gonka_pipelines.reports.units import TABLE_PLACES, gnk

from support.chains import DEMO_EPOCHS, opened, small_template
from support.config import SMALL_EPOCHS

REMAINDER_LABEL = "rounding remainder (first paid address)"


@pytest.fixture(scope="module")
def small_dir(tmp_path_factory) -> Path:
    """The session's small adversarial chain (3 honest hosts, host-fake, host-lazy) after SMALL_EPOCHS epochs."""
    return small_template(tmp_path_factory)[0].root


@pytest.fixture(scope="module")
def small_store(small_dir):
    """The small small_store, open read-only."""
    with opened(DataLayout(small_dir), read_only=True) as store:
        yield store


def hosts(store) -> list[tuple[str, str]]:
    return store._query("SELECT name, address FROM hosts ORDER BY name")


def check_explanations(store, epoch: int) -> dict[str, object]:
    """Explain every host of the epoch and check each derivation; returns the explanations by host name."""
    minted = store._scalar("SELECT minted FROM emissions WHERE epoch = ?", [epoch])
    rewards = {r["address"]: r for r in store._records("SELECT * FROM rewards WHERE epoch = ?", [epoch])}
    paid = sorted(a for a, r in rewards.items() if r["weight"] > 0)
    first_paid = paid[0] if paid else None
    total_weight = sum(r["weight"] for r in rewards.values())
    shares = {a: minted * r["weight"] // total_weight if total_weight else 0 for a, r in rewards.items()}
    remainder = minted - sum(shares.values())
    assert sum(r["reward"] for r in rewards.values()) == minted
    assert 0 <= remainder < max(len(paid), 1)
    for address, row in rewards.items():
        assert row["total_weight"] == total_weight
        assert row["reward"] == shares[address] + (remainder if address == first_paid else 0)
    out = {}
    for name, address in hosts(store):
        row = rewards[address]
        e = explain_payout(store, name, epoch)
        out[name] = e
        assert (e.host, e.address, e.epoch) == (name, address, epoch)
        assert e.balanced, (name, e.lines, e.payout)
        assert sum(amount for _, amount in e.lines) == e.payout == row["payout"]
        assert (e.reward, e.work_coins, e.status, e.claimed) == (row["reward"], row["work_coins"], row["status"], row["claimed"])
        if not row["claimed"]:
            assert e.lines == [] and e.payout == 0
            assert any(note.startswith("claim refused") for note in e.notes)
            continue
        assert e.payout == row["reward"] + row["work_coins"]
        share_lines = [(label, amount) for label, amount in e.lines if label.startswith("reward share")]
        remainder_lines = [(label, amount) for label, amount in e.lines if label == REMAINDER_LABEL]
        work_lines = [(label, amount) for label, amount in e.lines if label.startswith("work coins:")]
        assert len(share_lines) + len(remainder_lines) + len(work_lines) == len(e.lines), e.lines
        if row["reward"]:
            assert share_lines == [(f"reward share floor({minted} · {row['weight']} / {total_weight})", shares[address])]
        else:
            assert share_lines == []
        if address == first_paid and remainder and row["reward"]:
            assert remainder_lines == [(REMAINDER_LABEL, remainder)]
        else:
            assert remainder_lines == []
        fee_shares = store._query("SELECT amount FROM fee_shares WHERE epoch = ? AND host = ?", [epoch, address])
        assert sum(amount for _, amount in work_lines) == row["work_coins"]
        if row["work_coins"]:
            assert len(work_lines) == len(fee_shares)
        if row["withheld"]:
            assert any(note.startswith(f"fees withheld (INVALID) and burned: {row['withheld']}") for note in e.notes)
    return out


@pytest.mark.parametrize("epoch", range(1, SMALL_EPOCHS + 1))
def test_every_payout_is_explained_and_balanced(small_store, epoch):
    explained = check_explanations(small_store, epoch)
    # the small network covers: honest with reward + work coins, a rejected sprint, a refused claim
    assert explained["host-lazy"].claimed is False and explained["host-lazy"].reward > 0
    assert explained["host-fake"].reward == 0
    assert explained["host-alpha"].reward > 0 and explained["host-alpha"].work_coins >= 0
    assert any("REJECTED" in note for note in explained["host-fake"].notes)


def test_the_rounding_remainder_goes_to_the_first_paid_address(small_store):
    """At least one epoch has a remainder, and the first address with weight gets it (whether or not it claims)."""
    remainders = {}
    for epoch in range(1, SMALL_EPOCHS + 1):
        minted = small_store._scalar("SELECT minted FROM emissions WHERE epoch = ?", [epoch])
        rows = small_store._records("SELECT address, weight, total_weight, reward FROM rewards WHERE epoch = ? ORDER BY address", [epoch])
        first = next(r for r in rows if r["weight"] > 0)
        remainders[epoch] = minted - sum(minted * r["weight"] // r["total_weight"] for r in rows)
        assert first["reward"] == minted * first["weight"] // first["total_weight"] + remainders[epoch]
    assert any(remainders.values())


def test_markdown_ends_in_the_payout(small_store):
    e = explain_payout(small_store, "host-alpha", 1)
    text = render_markdown(e)
    assert text.splitlines()[0] == f"### host-alpha — epoch 1: payout {e.payout:,}"
    assert text.splitlines()[-1] == f"| **payout** | **{e.payout:,}** |"
    for label, amount in e.lines:
        assert f"| {label} | {amount:,} |" in text


def test_explain_by_address_is_the_same(small_store):
    address = dict(hosts(small_store))["host-bravo"]
    assert explain_payout(small_store, address, 1) == explain_payout(small_store, "host-bravo", 1)


def test_explain_refuses_unknown_hosts_and_unrewarded_epochs(small_store):
    with pytest.raises(ChainError, match=r"no host named 'host-nope'; hosts: host-alpha, host-bravo, host-charlie, host-fake, host-lazy"):
        explain_payout(small_store, "host-nope", 1)
    with pytest.raises(ChainError, match=f"epoch {SMALL_EPOCHS + 5} has no rewards yet"):
        explain_payout(small_store, "host-alpha", SMALL_EPOCHS + 5)


# -- the CLI --------------------------------------------------------------------------------------------------------


def gonka(*args: str) -> subprocess.CompletedProcess:
    script = Path(sys.executable).with_name("gonka")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "gonka_pipelines.cli"]
    return subprocess.run([*command, *args], check=False, capture_output=True, text=True, timeout=120)


def test_cli_explain_prints_the_payout(small_store, small_dir):
    payout = small_store._scalar("SELECT payout FROM rewards r JOIN hosts h USING (address) WHERE h.name = 'host-alpha' AND r.epoch = 1")
    assert payout > 0
    result = gonka("--data-dir", str(small_dir), "explain", "host-alpha", "1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"host-alpha, epoch 1: payout {gnk(payout, 10**9)} GNK\n")
    assert result.stdout.rstrip().splitlines()[-1].split()[1:] == [gnk(payout, 10**9, TABLE_PLACES), f"{payout:,}"]
    markdown = gonka("explain", "host-alpha", "1", "--markdown", "--data-dir", str(small_dir))
    assert f"### host-alpha — epoch 1: payout {payout:,}" in markdown.stdout
    assert f"| **payout** | **{payout:,}** |" in markdown.stdout


def test_cli_explain_unknown_host_exits_2_listing_hosts(small_dir):
    result = gonka("--data-dir", str(small_dir), "explain", "host-nope", "1")
    assert result.returncode == 2
    assert result.stdout == ""
    assert "no host named 'host-nope'" in result.stderr
    assert "hosts: host-alpha, host-bravo, host-charlie, host-fake, host-lazy" in result.stderr


# -- lineage ------------------------------------------------------------------------------------------------------


def check_lineage(store, epoch: int) -> None:
    def parents(child_kind: str, child_id: str, relation: str) -> list[tuple[str, str]]:
        return store._query("SELECT parent_kind, parent_id FROM lineage WHERE epoch = ? AND child_kind = ? AND child_id = ? "
                            "AND relation = ? ORDER BY parent_id", [epoch, child_kind, child_id, relation])

    rewards = store._records("SELECT * FROM rewards WHERE epoch = ? ORDER BY address", [epoch])
    assert rewards
    for row in rewards:
        address = row["address"]
        reward_parents = parents("payout", address, "rewards:reward")
        if row["reward"] > 0:
            assert reward_parents == [("weight", address)]
            weight = store._records("SELECT * FROM epoch_weights WHERE epoch = ? AND address = ?", [epoch, address])[0]
            assert weight["weight"] > 0
            batches = parents("weight", address, "sprint_weights:hits")
            assert batches and {kind for kind, _ in batches} == {"poc_batch"}
            rows = store._query(
                "SELECT batch_id, epoch, host, status, len(nonces) FROM poc_batches WHERE list_contains(?, batch_id) ORDER BY batch_id",
                [[b for _, b in batches]])
            assert [r[0] for r in rows] == [b for _, b in batches], "every parent is a stored batch"
            assert all((e, h, s) == (epoch, address, "accepted") for _, e, h, s, _ in rows)
            assert sum(n for *_, n in rows) == weight["hits"]
            accepted = store._query("SELECT batch_id FROM poc_batches WHERE epoch = ? AND host = ? AND status = 'accepted' "
                                    "ORDER BY batch_id", [epoch, address])
            assert [b for (b,) in accepted] == [b for _, b in batches], "no accepted batch is left out"
        else:
            assert reward_parents == []
        fee_parents = parents("payout", address, "rewards:work_coins")
        if row["work_coins"] > 0:
            assert fee_parents and {kind for kind, _ in fee_parents} == {"fee_share"}
            amounts = store._query("SELECT task_id, amount FROM fee_shares WHERE epoch = ? AND host = ? AND list_contains(?, task_id) "
                                   "ORDER BY task_id", [epoch, address, [t for _, t in fee_parents]])
            assert [t for t, _ in amounts] == [t for _, t in fee_parents]
            assert sum(a for _, a in amounts) == row["work_coins"]
        else:
            assert fee_parents == []


@pytest.mark.parametrize("epoch", range(1, SMALL_EPOCHS + 1))
def test_lineage_links_payouts_to_weights_batches_and_fee_shares(small_store, epoch):
    check_lineage(small_store, epoch)
    relations = dict(small_store._query("SELECT relation, count(*) FROM lineage WHERE epoch = ? GROUP BY 1", [epoch]))
    assert relations["rewards:reward"] == small_store._scalar("SELECT count(*) FROM rewards WHERE epoch = ? AND reward > 0", [epoch])
    assert relations["sprint_weights:hits"] == small_store._scalar(
        "SELECT count(*) FROM poc_batches WHERE epoch = ? AND status = 'accepted'", [epoch])


# -- the demo network: every host, every epoch, INVALID included --------------------------------------------------


@pytest.mark.slow
def test_demo_network_payouts_explained_and_linked(demo_template):
    with opened(demo_template, read_only=True) as store:
        statuses = set()
        for epoch in range(1, DEMO_EPOCHS + 1):
            explained = check_explanations(store, epoch)
            check_lineage(store, epoch)
            statuses |= {e.status for e in explained.values()}
        assert "INVALID" in statuses


@pytest.mark.slow
def test_training_fees_are_explained_as_training(demo_template):
    """A training task's fee share names it a training task, with its steps and the version it produced."""
    with opened(demo_template, read_only=True) as store:
        (task_id, executor, steps, version, share), *_ = store._query(
            """SELECT f.task_id, h.name, t.steps, r.version, f.amount FROM fee_shares f JOIN training_tasks t USING (task_id)
               JOIN training_results r USING (task_id) JOIN hosts h ON h.address = f.host
               JOIN rewards p ON p.epoch = f.epoch AND p.address = f.host
               WHERE f.role = 'executor' AND f.epoch = 1 AND p.claimed AND p.work_coins > 0 ORDER BY f.task_id""")
        explained = explain_payout(store, executor, 1)
    label = f"work coins: executor share of training task {task_id[:12]}… ({steps} steps → version {version[:12]})"
    assert (label, share) in explained.lines and explained.balanced
