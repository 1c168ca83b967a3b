"""Downtime (PROTOCOL section 7, missed tasks): a host whose inference is offline executes none of the tasks assigned
to it (it still mines its sprint and validates others' work). They expire and the developers get their escrow back.
The host's missed share is counted, and past validation.miss_tolerance its collateral is slashed by
validation.miss_slash_fraction. Its sprint weight, and so its reward, is untouched: the protocol charges downtime only
through collateral (and reputation), so a host without collateral loses nothing but the fees it did not earn."""

from __future__ import annotations

import pytest

from gonka_pipelines.chain.verify import verify_chain
from gonka_pipelines.local.config import load_network

from support.chains import create_chain, opened, run_stages, submit_tasks
from support.config import fast_genesis, write_network

COLLATERAL = 1_000_000


@pytest.fixture(scope="module")
def epoch_with_downtime(tmp_path_factory):
    root = tmp_path_factory.mktemp("downtime")
    hosts = [{"name": "host-alpha", "capacity": 2, "models": ["llm-tiny"]},
             {"name": "host-bravo", "capacity": 2, "models": ["llm-tiny"]},
             {"name": "host-down", "capacity": 2, "models": ["llm-tiny"], "behaviour": "downtime", "collateral": COLLATERAL}]
    network = load_network(write_network(root / "config", hosts, [{"name": "dev-ada", "balance": 10**12}]))
    # room for every task on the two honest hosts, so only the offline host's tasks expire whatever the executor draw
    layout = create_chain(root / "chain", fast_genesis(root / "config", tasks__tasks_per_capacity=12), network)
    with opened(layout) as store:
        submit_tasks(store, layout, network, 24)
        run_stages(store, layout, 1)
        yield store


def rows_by_host(store, sql: str) -> dict[str, dict]:
    return {r["name"]: r for r in store._records(sql, [1])}


def test_every_task_of_the_offline_host_expires_and_is_refunded(epoch_with_downtime):
    store = epoch_with_downtime
    results = store._records("""SELECT h.name, r.status, r.refund, t.escrow FROM task_results r JOIN tasks t USING (task_id)
                                JOIN hosts h ON h.address = r.executor WHERE r.epoch = 1""")
    down = [r for r in results if r["name"] == "host-down"]
    assert down and all(r["status"] == "expired" and r["refund"] == r["escrow"] for r in down)
    assert all(r["status"] == "completed" for r in results if r["name"] != "host-down")
    refunds = store._scalar("SELECT count(*) FROM transfers WHERE epoch = 1 AND kind = 'expiry_refund'")
    assert refunds == len(down)


def test_its_misses_are_counted_and_its_collateral_slashed(epoch_with_downtime):
    store = epoch_with_downtime
    hosts = rows_by_host(store, """SELECT h.name, e.assigned, e.missed, r.slashed, r.reward, r.work_coins, s.collateral
                                   FROM host_epochs e JOIN hosts h USING (address) JOIN rewards r USING (epoch, address)
                                   JOIN account_states s USING (epoch, address) WHERE e.epoch = ?""")
    down = hosts["host-down"]
    assert down["assigned"] > 0 and down["missed"] == down["assigned"]
    assert down["slashed"] == COLLATERAL // 10 and down["collateral"] == COLLATERAL - COLLATERAL // 10, "10 % (miss_slash_fraction)"
    assert down["reward"] > 0, "its sprint weight still pays"
    assert store._scalar("SELECT count(*) FROM fee_shares f JOIN hosts h ON h.address = f.host WHERE h.name = 'host-down' "
                         "AND f.role = 'executor'") == 0, "no executor fees: it executed nothing (it still validates others)"
    assert all(hosts[h]["missed"] == 0 and hosts[h]["slashed"] == 0 for h in ("host-alpha", "host-bravo"))
    assert verify_chain(store).first_problem is None
