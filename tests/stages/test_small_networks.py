"""Networks of one and two honest hosts finalize blocks: a host's own sprint vote counts (PROTOCOL section 3), so a lone
host accepts its own sprint and two hosts together pass more than half of the weight."""

from __future__ import annotations

import pytest

from gonka_pipelines.chain.verify import verify_chain

from support.chains import create_chain, opened, run_stages, submit_tasks
from support.config import fast_genesis, small_network

EPOCHS = 3


@pytest.mark.parametrize("hosts", [[("solo", 2)], [("left", 2), ("right", 1)]], ids=["1 host", "2 hosts"])
def test_a_network_of_one_or_two_hosts_finalizes_blocks(tmp_path, hosts):
    genesis = fast_genesis(tmp_path / "config")
    layout = create_chain(tmp_path / "chain", genesis, small_network(tmp_path / "config", hosts))
    network = small_network(tmp_path / "config", hosts)
    with opened(layout) as store:
        for epoch in range(1, EPOCHS + 1):
            submit_tasks(store, layout, network, 3, tag=f"e{epoch} ")
            run_stages(store, layout, epoch)
            weights = store.weights(epoch)
            assert len(weights) == len(hosts) and all(w > 0 for w in weights.values()), "every sprint was accepted"
            assert store.signer_count(epoch) == len(hosts)
        report = verify_chain(store)
        assert (report.head, report.first_problem) == (EPOCHS, None)
        accepted = store._query("SELECT count(*) FILTER (sprint_accepted), count(*) FROM epoch_weights")
        assert accepted == [(EPOCHS * len(hosts), EPOCHS * len(hosts))]
