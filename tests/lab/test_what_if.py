"""`gonka what-if`: a fork of the demo chain re-runs its stored epochs with changed parameters in a scratch chain and
compares every host's outcome; with no change it reproduces the chain exactly; bad settings are refused naming the key;
the original chain is only read. Also the Dagster `what_if` job with run config."""

from __future__ import annotations

import dagster as dg
import polars as pl
import pytest

from gonka_pipelines import cli
from gonka_pipelines.chain.store import ChainError
from gonka_pipelines.lab.fork import what_if
from gonka_pipelines.local.config import ConfigError, changed_params, load_genesis

from support.chains import DEMO_EPOCHS, opened

pytestmark = pytest.mark.slow


def block_hashes(layout) -> list[tuple]:
    with opened(layout, read_only=True) as store:
        return store._query("SELECT height, hash FROM blocks ORDER BY height")


def test_a_fork_without_changes_reproduces_every_host_and_every_block(demo_template, tmp_path):
    fork = what_if(demo_template, 1, [], tmp_path / "fork")
    assert list(fork.epochs) == list(range(2, DEMO_EPOCHS + 1))
    assert block_hashes(fork.scratch) == block_hashes(demo_template), "no change: the same blocks"
    for column in ("weight", "status", "reward", "work_coins", "slashed", "payout"):
        assert fork.hosts[f"{column}_before"].to_list() == fork.hosts[f"{column}_after"].to_list(), column
    assert fork.hosts["payout_change"].to_list() == [0] * fork.hosts.height == [0] * 9
    assert all(before == after for before, after in fork.totals.values())


def test_a_tighter_power_cap_caps_the_largest_host_and_the_diff_says_who_lost(demo_template, tmp_path):
    before = block_hashes(demo_template)
    fork = what_if(demo_template, 1, ["sprint.power_cap=0.15"], tmp_path / "fork", epochs=1)
    assert block_hashes(demo_template) == before, "the original chain is never touched"
    assert list(fork.epochs) == [2]
    with opened(fork.scratch, read_only=True) as store:
        assert store.epoch_params(2).sprint.power_cap == 0.15, "the forked epoch records what it ran under"
        weights = dict(store._query("SELECT address, weight FROM epoch_weights WHERE epoch = 2"))
    assert max(weights.values()) <= 0.15 * sum(weights.values()) + 1, "no host holds more than the cap"
    hosts = {r["host"]: r for r in fork.hosts.iter_rows(named=True)}
    largest = max(hosts.values(), key=lambda r: r["weight_before"])
    assert largest["weight_after"] < largest["weight_before"] and largest["payout_change"] < 0
    minted = fork.totals["minted"]
    assert minted[0] == minted[1], "the emission does not depend on who holds the weight"
    parquet, csv = fork.write(tmp_path / "out")
    assert pl.read_parquet(parquet).equals(fork.hosts) and pl.read_csv(csv)["host"].to_list() == sorted(hosts)


def test_a_fork_may_switch_the_record_encoding_and_its_chain_verifies(demo_template, tmp_path):
    """tasks.record_encoding, left out of the shipped params' hash, is still a setting a fork may change: the forked
    epoch records it, and its results' and verdicts' roots re-derive from columns-encoded leaves."""
    from gonka_pipelines.chain.record_roots import record_encoding
    from gonka_pipelines.chain.verify import verify_chain

    fork = what_if(demo_template, 1, ["tasks.record_encoding=columns"], tmp_path / "fork", epochs=1)
    with opened(fork.scratch, read_only=True) as store:
        assert store.epoch_params(2).tasks.record_encoding == "columns"
        assert [record_encoding(store._connection, epoch) for epoch in (1, 2)] == ["json", "columns"]
        assert verify_chain(store).first_problem is None
    assert block_hashes(fork.scratch)[:2] == block_hashes(demo_template)[:2]
    assert block_hashes(fork.scratch)[2] != block_hashes(demo_template)[2]


@pytest.mark.parametrize("setting, message", [
    ("sprint.power_kap=0.1", "'power_kap' is not a parameter of sprint (known: "),
    ("sprints.power_cap=0.1", "'sprints' is not a parameter of the parameters"),
    ("sprint=0.1", "--set sprint: a section; set one of its keys"),
    ("sprint.power_cap", "expected section.key=value"),
    ("sprint.power_cap=2", "field 'sprint.power_cap': Input should be less than or equal to 1"),
    ("validation.min_avg_values=[1, 2]", "field 'validation.min_avg_values.2': Field required"),
    ("training.served_rule=best", "field 'training.served_rule'"),
    ("chain_id=other", "a fork keeps the chain's chain_id"),
    ("rules=no-such-rules", "unknown rule set 'no-such-rules'"),
])
def test_bad_settings_are_refused_naming_the_key(setting, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        changed_params(load_genesis(), [setting])


def test_settings_are_read_as_yaml():
    changed = changed_params(load_genesis(), ["sprint.power_cap=0.3", "sprint.small_network_caps=[1.0, 0.6, 0.5]",
                                              "training.served_rule=latest", "tasks.price_per_token=7"])
    assert (changed.sprint.power_cap, changed.sprint.small_network_caps) == (0.3, (1.0, 0.6, 0.5))
    assert (changed.training.served_rule, changed.tasks.price_per_token) == ("latest", 7)


def test_cli_what_if_prints_the_diff_and_refuses_heights_without_stored_epochs(demo_layout, tmp_path, capsys):
    args = ["--data-dir", str(demo_layout.root), "what-if", "--from", "2", "--set", "sprint.power_cap=0.15",
            "--out", str(tmp_path / "out")]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"what-if: epochs 3..{DEMO_EPOCHS} re-run from block 2 with sprint.power_cap=0.15\n")
    assert "host-alpha" in out and "network: minted " in out and str(tmp_path / "out" / "what-if-hosts.csv") in out
    assert cli.main(["--data-dir", str(demo_layout.root), "what-if", "--from", str(DEMO_EPOCHS)]) == 2
    assert f"--from {DEMO_EPOCHS}: a fork re-runs stored epochs after it" in capsys.readouterr().err
    assert cli.main(["--data-dir", str(demo_layout.root), "what-if", "--from", "1", "--set", "sprint.power_kap=1"]) == 2
    assert "'power_kap' is not a parameter of sprint" in capsys.readouterr().err
    with pytest.raises(ChainError, match="--epochs 9: the chain stores 2 epoch"):
        what_if(demo_layout, 1, [], tmp_path / "never", epochs=9)


def test_the_what_if_job_materializes_the_diff_with_run_config(demo_layout):
    from gonka_pipelines.definitions import defs
    from gonka_pipelines.defs.resources import ChainResource

    with dg.DagsterInstance.ephemeral() as instance:
        result = defs.resolve_job_def("what_if").execute_in_process(
            instance=instance, resources={"chain": ChainResource(data_dir=str(demo_layout.root))},
            run_config={"ops": {"what_if_fork": {"config": {"from_height": 2, "settings": ["sprint.power_cap=0.15"]}}}})
        assert result.success
        (materialization,) = result.asset_materializations_for_node("what_if_fork")
    metadata = materialization.metadata
    assert metadata["forked_from"].value == 2 and metadata["epochs"].value == f"3..{DEMO_EPOCHS}"
    assert metadata["minted_before"].value == metadata["minted_after"].value > 0
    rows = metadata["hosts"].records
    assert len(rows) == 9 and {"host", "payout_before", "payout_after", "payout_change"} <= set(rows[0].data)
    assert pl.read_parquet(metadata["parquet"].value)["host"].to_list() == sorted(r.data["host"] for r in rows)
