"""inflated_hits (PROTOCOL section 7, fake hits mixed into honest work): the host mines honestly, then pads its claims
with random nonces so that 10 % of its claimed hits are fake. Validators who recompute enough of its nonces find the
fakes and the weighted vote rejects its sprint; with a tiny validation sample most validators see none and it passes
(the detection-power sweep, resources/sweeps/detection-vs-sample.yaml, measures the curve in between)."""

from __future__ import annotations

import pytest

from gonka_pipelines.local.config import changed_params
from gonka_pipelines.simulation.behaviours import INFLATED_SHARE

from support.chains import create_chain, opened, run_stages
from support.config import fast_genesis, small_network

HOSTS = [("host-alpha", 3), ("host-bravo", 3), ("host-charlie", 3), ("host-padder", 10, "inflated_hits")]
"""The padder is large enough for its 10 % to be several fakes: the binomial test (mismatch probability 5e-4, fraud
below 1e-7) needs at least 3 mismatches to call fraud, so a host can pad up to 2 fakes per sprint unseen."""


def sprint_of(tmp_path, sample: int, padder_capacity: int = 10) -> dict[str, dict]:
    hosts = [*HOSTS[:-1], ("host-padder", padder_capacity, "inflated_hits")]
    genesis = changed_params(fast_genesis(tmp_path / "config"), [f"sprint.validation_sample={sample}"])
    layout = create_chain(tmp_path / "chain", genesis, small_network(tmp_path / "config", hosts))
    with opened(layout) as store:
        run_stages(store, layout, 1, through="epoch_weights")
        return {r["name"]: r for r in store._records(
            """SELECT h.name, w.hits, w.sprint_accepted, w.weight,
                      (SELECT sum(v.mismatches) FROM poc_verdicts v WHERE v.epoch = 1 AND v.host = w.address) AS mismatches
               FROM epoch_weights w JOIN hosts h USING (address) WHERE w.epoch = 1""")}


@pytest.mark.parametrize("sample, caught", [(200, True), (1, False)])
def test_padded_hits_are_caught_when_validators_sample_enough(tmp_path, sample, caught):
    hosts = sprint_of(tmp_path, sample)
    padder, honest = hosts["host-padder"], [hosts[h] for h in ("host-alpha", "host-bravo", "host-charlie")]
    assert all(h["sprint_accepted"] and h["mismatches"] == 0 for h in honest)
    fakes = padder["hits"] - round(padder["hits"] * (1 - INFLATED_SHARE))
    assert fakes >= 4, "about a tenth of its claims are fake"
    assert padder["sprint_accepted"] is (not caught) and (padder["weight"] == 0) is caught
    if caught:
        assert padder["mismatches"] >= fakes, "every validator recomputes every claim and finds the fakes"


def test_a_small_padder_is_below_the_fraud_test_floor(tmp_path):
    """Capacity 3: about 20 hits, so 10 % is 2 fakes; every validator recomputes every claim, finds them, and still
    votes valid (2 mismatches in ~20 are not improbable enough at p = 5e-4). The floor is what the protocol concedes."""
    padder = sprint_of(tmp_path, 200, padder_capacity=3)["host-padder"]
    assert 1 <= padder["hits"] - round(padder["hits"] * (1 - INFLATED_SHARE)) <= 2
    assert padder["mismatches"] > 0 and padder["sprint_accepted"] is True
