"""sprint_batches (PROTOCOL section 3, Sprint/Batches): every host mines its nonce budget on the model seeded from the
previous block and signs its hit batches; the chain refuses duplicates and late batches."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gonka_pipelines.compute.profiles import load_profile
from gonka_pipelines.protocol.crypto import MessageKind, hash_value, verify
from gonka_pipelines.protocol.messages import poc_batch_body
from gonka_pipelines.protocol.sprint import calibrate_r_target

from stage_kit import STAGE_EPOCH, STAGE_HOSTS, StageRun, assert_idempotent, template_snapshot

CAPACITY = {h["name"]: h["capacity"] for h in STAGE_HOSTS}


@pytest.fixture(scope="module")
def sprint(tmp_path_factory):
    run = StageRun.prepare(tmp_path_factory, "sprint_batches")
    result = run.run()
    with run.store() as store:
        rows = store._records(
            """SELECT b.*, h.name, h.public_key, h.behaviour FROM poc_batches b JOIN hosts h ON h.address = b.host
               WHERE b.epoch = ? ORDER BY h.name, b.sequence""", [STAGE_EPOCH])
    return run, result, rows


def by_host(rows):
    hosts: dict[str, list[dict]] = {}
    for row in rows:
        hosts.setdefault(row["name"], []).append(row)
    return hosts


def test_the_result_counts_the_rows_written(sprint):
    _, result, rows = sprint
    accepted = [r for r in rows if r["status"] == "accepted"]
    assert result == {"batches": len(rows), "rejected": len(rows) - len(accepted),
                      "claimed_hits": sum(len(r["nonces"]) for r in accepted)}
    assert result["rejected"] == 2, "host-fake's resent batch and its late batch"
    assert {r["name"] for r in rows} == set(CAPACITY), "every host submitted (the fake one too)"


def test_r_target_is_calibrated_for_a_5_percent_hit_rate(sprint):
    run, _, _ = sprint
    params = run.env.params
    assert params.sprint.wanted_hit_rate == 0.05
    assert params.r_target == calibrate_r_target(load_profile(params.sprint.model).vocab, 0.05)
    with run.store() as store:
        assert store.epoch_params(STAGE_EPOCH).r_target == params.r_target, "the collect stage recorded the same r_target"


def test_honest_hosts_submit_exactly_the_hits_of_their_nonce_budget(sprint):
    """A host's budget is capacity · nonces_per_capacity nonces 0..budget-1, one ML node per capacity unit, node i of n
    on the stream i, i + n, ... (PROTOCOL section 3); it submits every nonce whose recomputed distance is below r_target,
    with that distance bit for bit, and nothing else. Each batch is one node's."""
    run, _, rows = sprint
    sprint_params, r_target = run.env.params.sprint, run.env.params.r_target
    compute = run.compute.inner  # not the guarded one: this check holds no chain open but should not be counted
    total_hits = total_budget = 0
    for name, batches in by_host(rows).items():
        if name == "host-fake":
            continue
        budget = CAPACITY[name] * sprint_params.nonces_per_capacity
        distances = np.asarray(compute.distances(batches[0]["public_key"], list(range(budget))), dtype=np.float64)
        hits = [n for n in range(budget) if distances[n] < r_target]
        assert hits, name
        assert sorted(n for b in batches for n in b["nonces"]) == hits, name
        submitted = [n for b in batches for n in b["nonces"]]
        stored = np.asarray([d for b in batches for d in b["distances"]], dtype=np.float64)
        assert stored.tobytes() == distances[submitted].tobytes(), name
        for batch in batches:
            assert len({n % CAPACITY[name] for n in batch["nonces"]}) == 1 and batch["nonces"] == sorted(batch["nonces"])
        assert all(b["status"] == "accepted" and b["reason"] is None for b in batches), name
        assert [b["sequence"] for b in batches] == list(range(len(batches))), name
        total_hits, total_budget = total_hits + len(hits), total_budget + budget
    assert 0.025 < total_hits / total_budget < 0.1, "about the wanted 1 in 20 nonces is a hit"


def test_honest_batches_are_submitted_in_virtual_sprint_time(sprint):
    """Simulation mode: a node's batch covering its stream up to position end is submitted at end / per_node · duration
    (the nodes mine side by side)."""
    run, _, rows = sprint
    sprint_params, chunk = run.env.params.sprint, run.compute.sprint_batch_size
    per_node = sprint_params.nonces_per_capacity
    for name, batches in by_host(rows).items():
        if name == "host-fake":
            continue
        for batch in batches:
            positions = [n // CAPACITY[name] for n in batch["nonces"]]
            end = min(per_node, (max(positions) // chunk + 1) * chunk)
            assert min(positions) >= end - chunk, "one batch per model batch of a node's nonces"
            assert batch["submitted_at"] == end / per_node * sprint_params.duration_seconds
        assert batches[-1]["submitted_at"] <= sprint_params.duration_seconds


def test_the_fake_host_claims_its_whole_budget_then_resends_and_is_late(sprint):
    run, _, rows = sprint
    sprint_params, r_target = run.env.params.sprint, run.env.params.r_target
    fake = by_host(rows)["host-fake"]
    budget = CAPACITY["host-fake"] * sprint_params.nonces_per_capacity
    assert [(b["sequence"], b["status"], b["reason"], len(b["nonces"])) for b in fake] == [
        (0, "accepted", None, budget // 2), (1, "accepted", None, budget // 2),
        (2, "rejected", "duplicate_nonce", 1), (3, "rejected", "late", 1)]
    assert fake[2]["nonces"][0] in fake[0]["nonces"], "the resent nonce was already submitted"
    assert fake[3]["submitted_at"] > sprint_params.duration_seconds + sprint_params.late_grace_seconds
    assert all(0.5 * r_target <= d < r_target for b in fake for d in b["distances"]), "claimed as hits"
    assert len({n for b in fake[:2] for n in b["nonces"]}) == budget == 256, "256 distinct claims: validators sample 200"


def test_every_batch_is_signed_by_its_host_over_the_previous_block_hash(sprint):
    run, _, rows = sprint
    env = run.env
    for row in rows:
        body = poc_batch_body(STAGE_EPOCH, row["public_key"], env.prev_hash, row["sequence"], row["nonces"], row["distances"])
        assert verify(row["public_key"], env.chain_id, MessageKind.POC_BATCH, body, row["signature"]), row["batch_id"]
        assert row["batch_id"] == hash_value([STAGE_EPOCH, row["host"], row["sequence"], row["signature"]])


def test_mining_runs_with_the_chain_closed_and_one_write(sprint):
    run, _, rows = sprint
    sprint_params, chunk = run.env.params.sprint, run.compute.sprint_batch_size
    chunks = sum(CAPACITY[name] * math.ceil(sprint_params.nonces_per_capacity / chunk) for name in CAPACITY if name != "host-fake")
    assert run.opener.opens == 1, "the stage opens the chain once, to write its batches"
    assert dict(run.compute.calls) == {"mine": chunks}, "one mine call per model batch of every ML node of every honest host"


def test_rerunning_the_stage_is_idempotent(tmp_path_factory):
    assert_idempotent(tmp_path_factory, "sprint_batches")


def test_hosts_mined_a_few_per_work_item_submit_the_same_batches(tmp_path_factory, monkeypatch):
    """Past WORK_ITEMS hosts a work item mines a few hosts (10,000 hosts: about ten each), and each batch comes back
    to its host: the stage writes the rows it writes with a host per work item."""
    from gonka_pipelines.simulation.behaviours import mines_honestly
    from gonka_pipelines.stages import environment
    from gonka_pipelines.stages import sprint as sprint_stage

    items: list[int] = []
    mine_hosts = sprint_stage.mine_hosts

    def counted(compute, orders):
        items.append(len(orders))
        return mine_hosts(compute, orders)

    monkeypatch.setattr(environment, "WORK_ITEMS", 2)
    monkeypatch.setattr(sprint_stage, "mine_hosts", counted)
    run = StageRun.prepare(tmp_path_factory, "sprint_batches")
    run.run()
    miners = sum(1 for host in run.env.hosts if mines_honestly(host))
    assert items == [math.ceil(miners / 2), miners // 2] and miners > 2
    assert run.snapshot() == template_snapshot(tmp_path_factory, "sprint_batches")
