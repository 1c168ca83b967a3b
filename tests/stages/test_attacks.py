"""The attacks of PROTOCOL section 7 that are not covered by their own module (fake_hits, inflated_hits, garbled_output,
lazy_validator, the training cheats and downtime are), each in a small network with one epoch, and the protocol's
response pinned: what is caught, by which rule, and what the cheat costs itself and the network. In epoch 1 every host
holds the genesis weight 1, so vote shares are host counts."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gonka_pipelines.chain.store import ChainStore
from gonka_pipelines.chain.verify import verify_chain

from support.chains import create_chain, opened, run_stages, submit_tasks
from support.config import fast_genesis, small_network

HONEST = [("host-alpha", 3), ("host-bravo", 3), ("host-charlie", 3)]


@contextmanager
def epoch_of(root, hosts, tasks: int = 0, through: str = "block") -> Iterator[ChainStore]:
    """A chain of these hosts with `tasks` inference tasks, run through one epoch; the open store."""
    network = small_network(root / "config", hosts)
    layout = create_chain(root / "chain", fast_genesis(root / "config"), network)
    with opened(layout) as store:
        if tasks:
            submit_tasks(store, layout, network, tasks)
        run_stages(store, layout, 1, through=through)
        yield store


@pytest.fixture(scope="module")
def sprint_cheats(tmp_path_factory):
    with epoch_of(tmp_path_factory.mktemp("sprint-cheats"),
                  [*HONEST, ("host-copier", 3, "copied_nonces"), ("host-reuser", 3, "reused_nonces"),
                   ("host-late", 3, "late_batches")], through="epoch_weights") as store:
        yield store


def batches_of(store, name: str) -> list[dict]:
    return store._records("""SELECT b.sequence, b.nonces, b.status, b.reason FROM poc_batches b JOIN hosts h ON h.address = b.host
                             WHERE b.epoch = 1 AND h.name = ? ORDER BY b.sequence""", [name])


def weights_by_name(store) -> dict[str, dict]:
    return {r["name"]: r for r in store._records(
        """SELECT h.name, w.hits, w.sprint_accepted, w.weight,
                  (SELECT sum(v.mismatches) FROM poc_verdicts v WHERE v.epoch = 1 AND v.host = w.address) AS mismatches
           FROM epoch_weights w JOIN hosts h USING (address) WHERE w.epoch = 1""")}


def test_copied_nonces_fail_recomputation_under_the_copiers_key(sprint_cheats):
    """Nonce inputs are keyed by the miner's public key, so another host's hits are random draws under the copier's key:
    its batches are admitted (well-formed and signed) but validators recompute them as misses and reject its sprint."""
    store = sprint_cheats
    copied, source = batches_of(store, "host-copier"), batches_of(store, "host-alpha")
    assert [b["nonces"] for b in copied] == [b["nonces"] for b in source], "the largest other miner (ties: name order)"
    assert all(b["status"] == "accepted" for b in copied)
    weights = weights_by_name(store)
    assert weights["host-copier"]["sprint_accepted"] is False and weights["host-copier"]["weight"] == 0
    assert weights["host-copier"]["mismatches"] >= 4 * weights["host-copier"]["hits"] * 0.9, "4 honest validators see misses"
    assert weights["host-alpha"]["sprint_accepted"] is True and weights["host-alpha"]["weight"] > 0, "the source loses nothing"


def test_reused_nonces_are_refused_at_admission_and_count_once(sprint_cheats):
    store = sprint_cheats
    batches = batches_of(store, "host-reuser")
    half = len(batches) // 2
    assert half > 0 and [b["nonces"] for b in batches[:half]] == [b["nonces"] for b in batches[half:]]
    assert all(b["status"] == "accepted" for b in batches[:half])
    assert all(b["status"] == "rejected" and b["reason"] == "duplicate_nonce" for b in batches[half:])
    weights = weights_by_name(store)["host-reuser"]
    assert weights["sprint_accepted"] is True and weights["hits"] == sum(len(b["nonces"]) for b in batches[:half])


def test_late_batches_are_refused_and_only_the_on_time_hits_count(sprint_cheats):
    store = sprint_cheats
    batches = batches_of(store, "host-late")
    late = [b for b in batches if b["reason"] == "late"]
    on_time = [b for b in batches if b["status"] == "accepted"]
    assert late and on_time and len(late) + len(on_time) == len(batches)
    assert not set().union(*(b["nonces"] for b in late)) & set().union(*(b["nonces"] for b in on_time)), "mined past its budget"
    weights = weights_by_name(store)["host-late"]
    assert weights["sprint_accepted"] is True and weights["hits"] == sum(len(b["nonces"]) for b in on_time)


@pytest.fixture(scope="module")
def validator_cheats(tmp_path_factory):
    with epoch_of(tmp_path_factory.mktemp("validator-cheats"),
                  [*HONEST, ("host-silent", 3, "silent_validator"), ("host-skipper", 3, "skipped_validations")], tasks=30) as store:
        yield store


def payouts_by_name(store) -> dict[str, dict]:
    return {r["name"]: r for r in store._records(
        """SELECT h.name, e.required_validations, e.done_validations, r.reward, r.work_coins, r.claimed, r.payout,
                  (SELECT count(*) FROM poc_verdicts v WHERE v.epoch = 1 AND v.validator = e.address) AS sprint_votes,
                  (SELECT count(*) FROM task_verdicts v WHERE v.epoch = 1 AND v.validator = e.address) AS task_votes
           FROM host_epochs e JOIN hosts h USING (address) JOIN rewards r USING (epoch, address) WHERE e.epoch = 1""")}


def test_validators_that_skip_required_validations_forfeit_their_payout(validator_cheats):
    """PROTOCOL section 4: a host that skipped a validation its seed required forfeits its epoch payout when it claims
    (the claim reveals the seed, and the chain re-derives what it was drawn for)."""
    hosts = payouts_by_name(validator_cheats)
    for name in ("host-silent", "host-skipper"):
        cheat = hosts[name]
        assert cheat["required_validations"] > 0 and cheat["done_validations"] == 0 and cheat["task_votes"] == 0, name
        assert cheat["claimed"] is False and cheat["payout"] == 0 and cheat["reward"] > 0, name
    assert hosts["host-silent"]["sprint_votes"] == 0 and hosts["host-skipper"]["sprint_votes"] == 5, "silent sends no verdicts"
    for name, _ in HONEST:
        assert hosts[name]["done_validations"] == hosts[name]["required_validations"] > 0 and hosts[name]["claimed"], name
    assert verify_chain(validator_cheats).first_problem is None


def test_silent_validators_count_against_every_sprint(tmp_path):
    """Non-voters count against acceptance: a silent minority changes nothing, a silent majority (3 of 5 weight) leaves
    no sprint accepted, so no host holds weight in the next epoch (the protocol cannot tell silence from an outage), and
    the honest validators' votes are contradicted by the outcome."""
    with epoch_of(tmp_path / "minority", [*HONEST, ("host-silent", 3, "silent_validator")], through="epoch_weights") as store:
        assert all(w["sprint_accepted"] for w in weights_by_name(store).values())
    with epoch_of(tmp_path / "majority", [*HONEST[:2], *(("host-silent-" + c, 3, "silent_validator") for c in "xyz")],
                  through="task_verdicts") as store:
        weights = weights_by_name(store)
        contradicted = dict(store._query("""SELECT h.name, e.contradicted_votes FROM host_epochs e JOIN hosts h USING (address)
                                            WHERE e.epoch = 1"""))
    assert len(weights) == 5 and not any(w["sprint_accepted"] for w in weights.values())
    assert sum(w["weight"] for w in weights.values()) == 0
    assert contradicted == {"host-alpha": 5, "host-bravo": 5, "host-silent-x": 0, "host-silent-y": 0, "host-silent-z": 0}, \
        "the honest validators' valid votes on the rejected sprints count against their claims"


@pytest.fixture(scope="module")
def executor_cheats(tmp_path_factory):
    with epoch_of(tmp_path_factory.mktemp("executor-cheats"),
                  [*HONEST, ("host-cheap", 3, "cheaper_model"), ("host-truncated", 3, "truncated_output")], tasks=40) as store:
        yield store


def outcomes_of(store, name: str) -> list[dict]:
    return store._records(
        """SELECT o.outcome, o.validations, o.failures, r.completion_tokens, t.max_tokens,
                  (SELECT list(v.reason) FROM task_verdicts v WHERE v.task_id = o.task_id AND NOT v.passed) AS reasons,
                  (SELECT coalesce(sum(f.amount), 0) FROM fee_shares f WHERE f.task_id = o.task_id) AS fees,
                  (SELECT coalesce(sum(x.balance_delta), 0) FROM transfers x WHERE x.ref = o.task_id
                     AND x.kind = 'fee_refund') AS refunded
           FROM task_outcomes o JOIN hosts h ON h.address = o.executor JOIN task_results r USING (task_id)
           JOIN tasks t USING (task_id) WHERE o.epoch = 1 AND h.name = ?""", [name])


def test_a_truncating_executor_returns_half_its_tokens_and_at_least_one():
    """delivered_lengths over columns: a truncated_output host returns generated // 2, at least 1 of any, 0 of none;
    every other host all it generated."""
    import polars as pl

    from gonka_pipelines.protocol.params import Behaviour
    from gonka_pipelines.protocol.records import Host
    from gonka_pipelines.simulation.behaviours import delivered_lengths

    hosts = [Host("a-honest", "honest", "", 1, (), Behaviour.HONEST), Host("a-cut", "cut", "", 1, (), Behaviour.TRUNCATED_OUTPUT)]
    frame = pl.DataFrame({"executor": ["a-cut"] * 5 + ["a-honest"] * 3, "generated": [0, 1, 2, 3, 9, 0, 1, 9]})
    lengths = frame.select(delivered_lengths(hosts, pl.col("executor"), pl.col("generated")))
    assert lengths.to_series().to_list() == [0, 1, 1, 1, 4, 0, 1, 9]


KINDS = st.sampled_from(["honest", "lazy", "abstaining", "colluder", "lazy colluder", "abstaining colluder"])


@settings(max_examples=200, deadline=None)
@given(hosts=st.lists(st.tuples(KINDS, st.integers(0, 50)), min_size=1, max_size=12),
       failed=st.lists(st.tuples(st.integers(0, 13), st.booleans()), max_size=20), target=st.integers(0, 13))
def test_invalid_vote_weights_by_kind_are_the_sum_over_every_voter(hosts, failed, target):
    """invalid_weights sums each kind of voter once; the same weights as a pass over every host, executor excluded:
    abstaining hosts never vote, colluders vote "invalid" on their target's work, the rest but the lazy when an honest
    re-run fails it (executors and the target may be hosts without weight, or not hosts at all)."""
    from gonka_pipelines.simulation.behaviours import Voters

    names = [f"host-{i}" for i in range(len(hosts))]
    weights = {name: weight for name, (_, weight) in zip(names, hosts)}
    kinds = dict(zip(names, (kind for kind, _ in hosts)))
    voters = Voters(frozenset(n for n in names if "lazy" in kinds[n]), frozenset(n for n in names if "abstaining" in kinds[n]),
                    frozenset(n for n in names if "colluder" in kinds[n]), f"host-{target}")
    cases = [(f"host-{executor}", passes) for executor, passes in failed]
    expected = [sum(weight for name, weight in weights.items() if name != executor and "abstaining" not in kinds[name]
                    and (("colluder" in kinds[name] and executor == voters.target) or ("lazy" not in kinds[name] and not passes)))
                for executor, passes in cases]
    assert voters.invalid_weights(weights, cases) == expected


@pytest.mark.parametrize("name, reason", [("host-cheap", "tokens_differ"), ("host-truncated", "length_differs")])
def test_a_cheaper_model_or_truncated_output_is_invalidated_when_checked(executor_cheats, name, reason):
    outcomes = outcomes_of(executor_cheats, name)
    checked = [o for o in outcomes if o["validations"]]
    assert checked, "traffic below 100 tasks: every task is validated about once (minAvg = 1)"
    assert all(o["outcome"] == "invalidated" and o["fees"] == 0 for o in checked), name
    assert {r for o in checked for r in o["reasons"]} <= {reason, "dissimilar"} and reason in {r for o in checked for r in o["reasons"]}
    if name == "host-truncated":
        assert all(o["completion_tokens"] == o["max_tokens"] // 2 for o in outcomes)
    honest = [o for h, _ in HONEST for o in outcomes_of(executor_cheats, h)]
    assert honest and all(o["outcome"] != "invalidated" for o in honest)


def test_an_unchecked_cheat_keeps_its_fee(executor_cheats):
    """What the protocol concedes: a task no validator drew is paid as served (the validation rate is the price)."""
    unchecked = [o for o in outcomes_of(executor_cheats, "host-cheap") if not o["validations"]]
    assert unchecked and all(o["outcome"] == "unvalidated" and o["fees"] > 0 for o in unchecked)


def collusion(root, colluders: int) -> AbstractContextManager[ChainStore]:
    hosts = [("host-alpha", 4), ("host-bravo", 3), ("host-charlie", 3), ("host-delta", 3)][: 5 - colluders]
    return epoch_of(root, [*hosts, *((f"host-colluder-{i}", 2, "colluding") for i in range(colluders))], tasks=80)


def votes_on(store, name: str) -> dict:
    sprint = store._records("""SELECT v.valid, c.name AS validator FROM poc_verdicts v JOIN hosts h ON h.address = v.host
                              JOIN hosts c ON c.address = v.validator WHERE v.epoch = 1 AND h.name = ?""", [name])
    weight = weights_by_name(store)[name]
    return {"sprint": sprint, "accepted": weight["sprint_accepted"], "tasks": outcomes_of(store, name)}


def test_a_colluding_minority_cannot_invalidate_an_honest_host(tmp_path):
    """2 of 5 weight vote against the largest honest host (host-alpha) on its sprint and on every task of it they
    check: its sprint stands and every failed task passes the weighted vote (2/5 < the 1/2 quorum). The colluders lose
    only the validator fee share of those tasks; nothing in the protocol punishes a false "invalid" vote."""
    with collusion(tmp_path, 2) as store:
        alpha, bravo = votes_on(store, "host-alpha"), votes_on(store, "host-bravo")
        assert verify_chain(store).first_problem is None
        colluder_shares = store._scalar(
            """SELECT count(*) FROM fee_shares f JOIN task_verdicts v ON v.task_id = f.task_id AND v.validator = f.host
               WHERE NOT v.passed""")
    assert colluder_shares == 0, "a failing vote earns no validator share"
    assert {v["validator"] for v in alpha["sprint"] if not v["valid"]} == {"host-colluder-0", "host-colluder-1"}
    assert alpha["accepted"] is True
    attacked = [o for o in alpha["tasks"] if o["failures"]]
    assert attacked and all(o["outcome"] == "passed" and o["fees"] > 0 for o in attacked)
    assert all(o["outcome"] != "invalidated" for o in alpha["tasks"])
    assert all(v["valid"] for v in bravo["sprint"]) and not any(o["failures"] for o in bravo["tasks"]), "only the target"


def test_a_colluding_majority_does(tmp_path):
    """The bound is the quorum: with 3 of 5 weight the same votes reject the target's sprint and invalidate its checked
    tasks (refunding their developers)."""
    with collusion(tmp_path, 3) as store:
        alpha = votes_on(store, "host-alpha")
    assert alpha["accepted"] is False
    attacked = [o for o in alpha["tasks"] if o["failures"]]
    assert attacked and all(o["outcome"] == "invalidated" and o["fees"] == 0 and o["refunded"] > 0 for o in attacked)
