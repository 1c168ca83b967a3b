"""rewards (PROTOCOL section 5): R(e) = floor(R0 · exp(−0.000475 · (e − 1))) minted under the supply cap, split by final
weight among non-INVALID hosts with the remainder to the first address, work coins from fee shares, slashes, claims
against the seed commitments, vesting over V epochs (remainder in the first tranche), and the supply invariant."""

from __future__ import annotations

import dataclasses
import math

import pytest

from gonka_pipelines.chain.invariants import check_epoch_supply, lineage_mismatches
from gonka_pipelines.protocol.crypto import hash_value

from stage_kit import STAGE_EPOCH, StageRun, assert_idempotent


@pytest.fixture(scope="module")
def rewards(tmp_path_factory):
    run = StageRun.prepare(tmp_path_factory, "rewards")
    with run.store() as store:
        before = {"supply": check_epoch_supply(store, STAGE_EPOCH), "minted_before": store.minted_before(STAGE_EPOCH),
              "unclaimed_held": store.unclaimed_held(STAGE_EPOCH - 1),
                  "accounts": {a["address"]: a for a in store.running_accounts(STAGE_EPOCH)},
                  "vesting_due": store.vesting_due(STAGE_EPOCH)}
    hosts, emission = run.run()
    with run.store() as store:
        data = {
            "rows": {r["address"]: r for r in store._records("SELECT * FROM rewards WHERE epoch = ?", [STAGE_EPOCH])},
            "emission": store.emission(STAGE_EPOCH),
            "weights": {r["address"]: r for r in store.epoch_weight_rows(STAGE_EPOCH)},
            "host_epochs": {r["address"]: r for r in store._records("SELECT * FROM host_epochs WHERE epoch = ?", [STAGE_EPOCH])},
            "fees": dict(store._query("SELECT host, sum(amount) FROM fee_shares WHERE epoch = ? GROUP BY host", [STAGE_EPOCH])),
            "vesting": store._records("SELECT * FROM vesting WHERE epoch = ? ORDER BY address, unlock_epoch", [STAGE_EPOCH]),
            "transfers": store._records("SELECT * FROM transfers WHERE epoch = ? AND stage = 'rewards' ORDER BY ALL", [STAGE_EPOCH]),
            "settlements": store.fee_settlements(STAGE_EPOCH).to_pylist(),
            "supply": check_epoch_supply(store, STAGE_EPOCH),
            "accounts": store.running_accounts(STAGE_EPOCH),
            "lineage_mismatches": lineage_mismatches(store, STAGE_EPOCH),
            "lineage": store._query("SELECT child_id, parent_kind, parent_id, relation FROM lineage WHERE epoch = ? "
                                    "AND relation LIKE 'rewards:%' ORDER BY ALL", [STAGE_EPOCH]),
            "shares": store._query("SELECT host, task_id FROM fee_shares WHERE epoch = ?", [STAGE_EPOCH]),
        }
    return run, before, hosts, emission, data


def by_name(run, rows):
    names = {h.address: h.name for h in run.env.hosts}
    return {names[a]: r for a, r in rows.items()}


def test_the_epoch_mints_its_scheduled_reward(rewards):
    run, _, _, emission, data = rewards
    r0 = run.env.params.emission.initial_reward
    assert r0 == 10**12 and run.env.params.emission.decay_rate == 0.000475
    scheduled = math.floor(r0 * math.exp(-0.000475 * (STAGE_EPOCH - 1)))
    assert data["emission"]["scheduled"] == data["emission"]["minted"] == scheduled == 999_525_112_794
    assert emission == data["emission"]


def test_the_reward_is_split_by_final_weight_with_the_remainder_to_the_first_address(rewards):
    run, _, _, _, data = rewards
    rows, minted = data["rows"], data["emission"]["minted"]
    for address, row in rows.items():
        invalid = data["host_epochs"][address]["status"] == "INVALID"
        assert row["weight"] == (0 if invalid else data["weights"][address]["weight"])
    total = sum(r["weight"] for r in rows.values())
    assert all(r["total_weight"] == total for r in rows.values()) and total > 0
    floors = {a: minted * r["weight"] // total for a, r in rows.items()}
    first = min(a for a, r in rows.items() if r["weight"] > 0)
    remainder = minted - sum(floors.values())
    assert remainder > 0, "this split does not divide evenly"
    assert {a: r["reward"] for a, r in rows.items()} == {a: f + (remainder if a == first else 0) for a, f in floors.items()}
    assert sum(r["reward"] for r in rows.values()) == minted
    assert by_name(run, rows)["host-fake"]["reward"] == 0, "no weight, no reward"


def test_claims_need_the_revealed_seed_and_every_required_validation_done_honestly(rewards):
    run, _, _, _, data = rewards
    for address, row in data["rows"].items():
        work = data["host_epochs"][address]
        assert row["claimed"] is (work["done_validations"] >= work["required_validations"] and work["contradicted_votes"] == 0)
        assert row["payout"] == ((row["reward"] + row["work_coins"]) if row["claimed"] else 0)
    named = by_name(run, data["rows"])
    assert named["host-lazy"]["claimed"] is False and named["host-lazy"]["reward"] > 0 and named["host-lazy"]["payout"] == 0
    assert all(r["claimed"] for n, r in named.items() if n != "host-lazy")


def test_work_coins_slashes_and_burns(rewards):
    run, before, _, _, data = rewards
    forfeits = 0
    for address, row in data["rows"].items():
        work = data["host_epochs"][address]
        invalid = work["status"] == "INVALID"
        fees = data["fees"].get(address, 0)
        assert (row["work_coins"], row["withheld"]) == ((0, fees) if invalid else (fees, 0))
        collateral = before["accounts"][address]["collateral"]
        after_miss = collateral - (collateral // 10 if work["assigned"] and work["missed"] / work["assigned"] > 0.05 else 0)
        assert row["slashed"] == collateral - after_miss + (after_miss // 5 if invalid else 0), "10 % for misses, then 20 %"
        if not row["claimed"]:
            forfeits += row["reward"] + row["work_coins"]
    garbled = next(h.address for h in run.env.hosts if h.name == "host-garbled")
    assert data["rows"][garbled]["slashed"] == before["accounts"][garbled]["collateral"] // 10 > 0, \
        "it missed more than 5 % of its tasks: 10 % of its collateral"
    assert forfeits > 0, "host-lazy's payout is refused"
    assert data["emission"]["unclaimed"] == forfeits, "refused payouts are held one epoch (PROTOCOL section 5)"
    assert before["unclaimed_held"] > 0, "epoch 1 refused host-lazy's payout too"
    burned = sum(r["withheld"] + r["slashed"] for r in data["rows"].values()) + before["unclaimed_held"]
    assert data["emission"]["burned"] == burned, "this epoch burns what it withheld and slashed, and epoch 1's refusals"


def test_payouts_vest_over_three_epochs_with_the_remainder_first(rewards):
    run, before, _, _, data = rewards
    epochs = run.env.params.rewards.vesting_epochs
    assert epochs == 3
    expected = []
    for address, row in sorted(data["rows"].items()):
        if row["claimed"] and row["payout"]:  # reward and work coins vest alike (PROTOCOL section 5)
            tranche, remainder = divmod(row["payout"], epochs)
            expected += [{"epoch": STAGE_EPOCH, "address": address, "unlock_epoch": STAGE_EPOCH + i, "amount": tranche + (remainder if i == 0 else 0)}
                         for i in range(epochs)]
    assert data["vesting"] == expected
    assert any(divmod(r["payout"], 3)[1] for r in data["rows"].values() if r["claimed"]), "some payout leaves a remainder"
    unlocks = sorted((t["account"], t["ref"], t["balance_delta"], -t["locked_delta"]) for t in data["transfers"] if t["kind"] == "vesting_unlock")
    due_now = [(v["address"], f"granted:{STAGE_EPOCH}", v["amount"], v["amount"]) for v in expected if v["unlock_epoch"] == STAGE_EPOCH]
    due_before = [(v["address"], f"granted:{v['epoch']}", v["amount"], v["amount"]) for v in before["vesting_due"]]
    assert before["vesting_due"], "epoch 1's second tranches unlock now"
    assert unlocks == sorted(due_now + due_before)


def test_fee_reward_and_slash_transfers(rewards):
    run, _, _, _, data = rewards
    transfers = data["transfers"]
    fees = sorted((t["ref"], t["account"], t["kind"], t["balance_delta"], t["escrow_delta"]) for t in transfers if t["kind"] in ("fee", "fee_refund"))
    assert fees == sorted((task, developer, "fee_refund" if outcome == "invalidated" else "fee", cost if outcome == "invalidated" else 0, -cost)
                          for task, developer, cost, outcome in (s.values() for s in data["settlements"]))
    assert all(t["transfer_id"] == hash_value([t["kind"], STAGE_EPOCH, t["account"], t["ref"]]) for t in transfers)
    assert any(kind == "fee_refund" for _, _, kind, _, _ in fees), "the garbled executor's invalidated fees go back to the developer"
    for kind in ("reward", "work_coins"):  # both vest: locked now, unlocked tranche by tranche
        assert {t["account"]: (t["locked_delta"], t["balance_delta"]) for t in transfers if t["kind"] == kind} == \
            {a: (r[kind], 0) for a, r in data["rows"].items() if r["claimed"] and r[kind]}
    assert {t["account"]: -t["collateral_delta"] for t in transfers if t["kind"] == "slash"} == \
        {a: r["slashed"] for a, r in data["rows"].items() if r["slashed"]}


def test_supply_is_conserved_and_every_payout_traces_to_its_sources(rewards):
    _, before, _, _, data = rewards
    assert data["supply"] == before["supply"] + data["emission"]["minted"] - data["emission"]["burned"]
    assert data["supply"] == sum(a["balance"] + a["escrow"] + a["locked"] + a["collateral"] for a in data["accounts"]) \
        + data["emission"]["unclaimed"], "the refused payouts are held outside every account until they burn"
    assert data["lineage_mismatches"] == []
    expected = sorted([(a, "weight", a, "rewards:reward") for a, r in data["rows"].items() if r["reward"] > 0]
                      + [(h, "fee_share", t, "rewards:work_coins") for h, t in data["shares"] if data["rows"][h]["work_coins"] > 0])
    assert data["lineage"] == expected


def test_the_supply_cap_mints_only_the_remainder_then_nothing(tmp_path_factory):
    """The environment's parameters are what the stage uses: a cap 123 units above what was minted mints 123."""
    for headroom in (123, 0):
        run = StageRun.prepare(tmp_path_factory, "rewards")
        with run.store() as store:
            minted_before = store.minted_before(STAGE_EPOCH)
        params = run.env.params
        emission = params.emission.model_copy(update={"supply_cap": minted_before + headroom})
        run.env = dataclasses.replace(run.env, params=params.model_copy(update={"emission": emission}))
        hosts, result = run.run()
        assert (result["scheduled"], result["minted"]) == (999_525_112_794, headroom)
        assert int(hosts["reward"].sum()) == headroom
        with run.store() as store:
            assert store.emission(STAGE_EPOCH)["minted"] == headroom
            minted, burned = store.minted_and_burned(STAGE_EPOCH - 1)
            assert check_epoch_supply(store, STAGE_EPOCH) == store.genesis_supply() + minted - burned + headroom - result["burned"]
            rewarded = int((hosts["claimed"] & (hosts["reward"] > 0)).sum())
            assert rewarded == (0 if headroom == 0 else rewarded) and (rewarded > 0) is (headroom > 0)
            assert store._scalar("SELECT count(*) FROM transfers WHERE epoch = ? AND kind = 'reward'", [STAGE_EPOCH]) == rewarded


def test_the_stage_opens_the_chain_once_and_computes_nothing(rewards):
    run = rewards[0]
    assert run.opener.opens == 1 and dict(run.compute.calls) == {}


def test_rerunning_the_stage_is_idempotent(tmp_path_factory):
    assert_idempotent(tmp_path_factory, "rewards")
