"""Real mode: hosts mine for a wall-clock sprint instead of a nonce budget; the deadline still binds."""

from __future__ import annotations

from gonka_pipelines.stages.collect import run_collect
from gonka_pipelines.stages.environment import build_environment, holding, quiet
from gonka_pipelines.stages.sprint import run_sprint

from support.chains import create_chain, opened
from support.config import fast_genesis, small_network

DURATION = 0.4
GRACE = 2.0  # a batch finished within the grace after the sprint (one model batch: milliseconds) is on time


def test_real_mode_mines_for_the_sprint_duration_and_refuses_late_batches(tmp_path):
    genesis = fast_genesis(tmp_path / "config", sprint__mode="real", sprint__duration_seconds=DURATION,
                           sprint__late_grace_seconds=GRACE)
    network = small_network(tmp_path / "config", [("host-alpha", 1), ("host-bravo", 1), ("host-fake", 1, "fake_hits")])
    layout = create_chain(tmp_path / "chain", genesis, network)
    with opened(layout) as store:
        env = build_environment(store, layout, 1)
        assert env.params.sprint.mode == "real"
        run_collect(env, holding(store), quiet)
        summary = run_sprint(env, holding(store), quiet)
        batches = store._records(
            """SELECT h.name, b.sequence, b.submitted_at, b.status, b.reason, len(b.nonces) AS hits
               FROM poc_batches b JOIN hosts h ON h.address = b.host ORDER BY h.name, b.sequence""")
    honest = [b for b in batches if b["name"] != "host-fake"]
    assert {b["name"] for b in honest} == {"host-alpha", "host-bravo"}, "each honest host found hits within the sprint"
    assert all(b["status"] == "accepted" for b in honest)
    # a batch is cut when the wall clock passes the duration: the last one ends at most one model batch later
    assert all(0 < b["submitted_at"] <= DURATION + GRACE for b in honest)
    assert sum(b["hits"] for b in honest) == summary["claimed_hits"] - sum(
        b["hits"] for b in batches if b["name"] == "host-fake" and b["status"] == "accepted")
    fake = {b["reason"] for b in batches if b["name"] == "host-fake" and b["status"] == "rejected"}
    assert fake == {"late", "duplicate_nonce"}
