"""Committee validation on a real chain (sprint.validation = committee): each host's sprint is checked only by the
committee drawn for it, acceptance is decided within the committee's weight, and the block verifies."""

from __future__ import annotations

from collections import defaultdict

import pytest

from gonka_pipelines.chain.verify import verify_chain
from gonka_pipelines.local.config import changed_params
from gonka_pipelines.stages.environment import build_environment

from support.chains import create_chain, opened, run_stages
from support.config import fast_genesis, small_network

HOSTS = [("host-alpha", 2), ("host-bravo", 2), ("host-charlie", 1), ("host-delta", 1), ("host-echo", 1),
         ("host-fake", 1, "fake_hits")]
SIZE = 3


@pytest.fixture(scope="module")
def committee_epoch(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("committee")
    genesis = changed_params(fast_genesis(tmp_path / "config"), ["sprint.validation=committee", f"sprint.committee_size={SIZE}"])
    layout = create_chain(tmp_path / "chain", genesis, small_network(tmp_path / "config", HOSTS))
    with opened(layout) as store:
        env = build_environment(store, layout, 1)
        run_stages(store, layout, 1)
        yield store, env


def test_each_sprint_is_checked_by_its_committee_only(committee_epoch):
    store, env = committee_epoch
    names = {h.address: h.name for h in env.hosts}
    votes = defaultdict(set)
    for validator, host in store._query("SELECT validator, host FROM poc_verdicts WHERE epoch = 1"):
        votes[host].add(validator)
    committees = env.rules.sprint_committees(env.prev_hash, sorted(votes), env.weights)
    assert len(votes) == len(HOSTS)
    for host, validators in votes.items():
        assert validators == set(committees[host]) and len(validators) == SIZE and host not in validators, names[host]
    assert store._scalar("SELECT count(*) FROM poc_verdict_sets WHERE epoch = 1") <= len(HOSTS), "one record per validator"


def test_acceptance_is_decided_within_the_committee_weight(committee_epoch):
    store, env = committee_epoch
    rows = {r["name"]: r for r in store._records(
        "SELECT h.name, w.* FROM epoch_weights w JOIN hosts h USING (address) WHERE w.epoch = 1")}
    asked = env.rules.committee_weights(env.prev_hash, [h.address for h in env.hosts], env.weights)
    for host in env.hosts:
        row = rows[host.name]
        assert row["vote_weight"] == asked[host.address] == SIZE, "genesis weights are 1 each"
        assert row["sprint_accepted"] is (row["valid_vote_weight"] > SIZE // 2)
    assert not rows["host-fake"]["sprint_accepted"] and rows["host-fake"]["valid_vote_weight"] == 0
    assert all(rows[name]["sprint_accepted"] and rows[name]["valid_vote_weight"] == SIZE for name, *_ in HOSTS[:-1])


def test_a_committee_epoch_verifies(committee_epoch):
    store, _ = committee_epoch
    report = verify_chain(store)
    assert report.first_problem is None and store.head().height == 1
