"""sprint_verdicts (PROTOCOL section 3, Validation): every validator with weight samples min(200, n) of each other host's
accepted nonces, recomputes them and counts mismatches; fraud iff P(X >= k | n, 5e-4) < 1e-7 (k >= 5 at n = 200)."""

from __future__ import annotations

import pytest

from gonka_pipelines.protocol.crypto import MessageKind, verify
from gonka_pipelines.protocol.messages import poc_verdicts_body
from gonka_pipelines.protocol.sprint import binomial_tail, is_fraud, sample_nonces

from stage_kit import STAGE_EPOCH, StageRun, assert_idempotent


@pytest.fixture(scope="module")
def verdicts(tmp_path_factory):
    run = StageRun.prepare(tmp_path_factory, "sprint_verdicts")
    result = run.run()
    with run.store() as store:
        rows = store._records(
            """SELECT v.*, vh.name AS validator_name, th.name AS host_name FROM poc_verdicts v
               JOIN hosts vh ON vh.address = v.validator JOIN hosts th ON th.address = v.host
               WHERE v.epoch = ? ORDER BY th.name, vh.name""", [STAGE_EPOCH])
        claims = dict(store.accepted_claims(STAGE_EPOCH))
        signatures = store._records("SELECT * FROM poc_verdict_sets WHERE epoch = ? ORDER BY validator", [STAGE_EPOCH])
    return run, result, rows, claims, signatures


def test_every_validator_with_weight_votes_on_every_host_its_own_included(verdicts):
    run, result, rows, claims, _ = verdicts
    validators = {a for a, w in run.env.weights.items() if w > 0}
    names = {h.address: h.name for h in run.env.hosts}
    assert names[next(a for a, w in run.env.weights.items() if w == 0)] == "host-fake", "weight 0 after its rejected sprint"
    expected = {(v, h) for h in claims for v in validators}
    assert {(r["validator"], r["host"]) for r in rows} == expected
    assert len(rows) == len(expected) == len(claims) * len(validators)
    own = {r["host"]: r for r in rows if r["validator"] == r["host"]}
    assert set(own) == set(claims) & validators and all(r["valid"] for r in own.values())
    assert {names[h] for h, r in own.items() if not r["recomputed"]} == {"host-lazy"}, \
        "an honest host checks its own sprint like any other (the lazy one checks nothing)"
    assert result == {"verdicts": len(rows), "invalid_votes": sum(not r["valid"] for r in rows), "validators": len(validators)}


def test_each_validator_samples_min_200_nonces_and_counts_mismatches_exactly(verdicts):
    """Re-derive every recomputing validator's sample (keyed by its key, the block hash and the epoch) and its count of
    recomputed distances above r_target."""
    run, _, rows, claims, _ = verdicts
    env = run.env
    recomputed: dict[str, dict[int, float]] = {}
    for row in rows:
        nonces = claims[row["host"]]
        sample = sample_nonces(env.keys[row["validator"]].public_key, env.prev_hash, STAGE_EPOCH, nonces, 200)
        assert row["sampled"] == len(sample) == min(200, len(nonces))
        if not row["recomputed"]:
            continue
        known = recomputed.setdefault(row["host"], {})
        missing = [n for n in sample if n not in known]
        known.update(zip(missing, env.compute.inner.distances(env.keys[row["host"]].public_key, missing)))
        assert row["mismatches"] == sum(known[n] > env.params.r_target for n in sample)
        assert row["valid"] is (binomial_tail(row["mismatches"], row["sampled"], 5e-4) >= 1e-7)


def test_the_fake_hosts_sprint_is_voted_fraud_with_n_200(verdicts):
    _, _, rows, _, _ = verdicts
    fake = [r for r in rows if r["host_name"] == "host-fake"]
    assert fake
    for vote in fake:
        assert vote["sampled"] == 200
        if vote["validator_name"] == "host-lazy":
            assert (vote["recomputed"], vote["mismatches"], vote["valid"]) == (False, 0, True)
        else:
            assert vote["recomputed"] is True and vote["valid"] is False
            assert vote["mismatches"] >= 5 and is_fraud(vote["mismatches"], 200)
    # the threshold of PROTOCOL.md: at n = 200, k = 4 is honest noise, k = 5 is fraud
    assert not is_fraud(4, 200, 5e-4, 1e-7) and is_fraud(5, 200, 5e-4, 1e-7)


def test_honest_sprints_reproduce_without_a_mismatch(verdicts):
    _, _, rows, _, _ = verdicts
    honest = [r for r in rows if r["host_name"] != "host-fake"]
    assert honest and all(r["valid"] and r["mismatches"] == 0 for r in honest)
    assert all(r["recomputed"] is (r["validator_name"] != "host-lazy") for r in rows), "only the lazy validator skips"


def test_one_signed_record_per_validator_packs_all_its_verdicts(verdicts):
    """The record's vectors run over the hosts it checked in ascending order; the poc_verdicts view unpacks them."""
    run, _, rows, _, records = verdicts
    env = run.env
    assert [s["validator"] for s in records] == sorted({r["validator"] for r in rows})
    for record in records:
        own = sorted((r for r in rows if r["validator"] == record["validator"]), key=lambda r: r["host"])
        assert record["hosts"] == [r["host"] for r in own] == sorted(record["hosts"])
        assert (record["sampled"], record["mismatches"], record["valid"], record["recomputed"]) == \
            tuple([r[f] for r in own] for f in ("sampled", "mismatches", "valid", "recomputed"))
        body = poc_verdicts_body(STAGE_EPOCH, record["validator"], record["hosts"], record["sampled"], record["mismatches"],
                                 record["valid"])
        assert verify(env.keys[record["validator"]].public_key, env.chain_id, MessageKind.POC_VERDICT, body,
                      record["signature"])


def test_recomputing_runs_with_the_chain_closed(verdicts):
    run, _, _, claims, _ = verdicts
    assert run.opener.opens == 2, "one read of the claims, one write of the verdicts"
    assert dict(run.compute.calls) == {"distances": len(claims)}, "each host's sampled nonces are recomputed once"


def test_rerunning_the_stage_is_idempotent(tmp_path_factory):
    assert_idempotent(tmp_path_factory, "sprint_verdicts")
