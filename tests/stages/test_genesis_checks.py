"""A chain that starts can always run: init refuses, before writing anything, a configuration its epochs would fail on,
and config loading never coerces or overflows an integer silently."""

from __future__ import annotations

import pytest

from gonka_pipelines import cli
from gonka_pipelines.chain.store import ChainStore
from gonka_pipelines.local.config import ConfigError, load_genesis, load_network
from gonka_pipelines.local.paths import DataLayout
from gonka_pipelines.stages.genesis import init_chain

from support.config import write_genesis, write_network

HOSTS = [{"name": "host-alpha", "capacity": 2, "models": ["llm-tiny"]}, {"name": "host-bravo", "capacity": 1, "models": ["llm-tiny"]}]
DEVELOPERS = [{"name": "dev-ada", "balance": 10**12}]


def init(tmp_path, overrides=None, hosts=HOSTS, developers=DEVELOPERS):
    genesis = load_genesis(path=write_genesis(tmp_path / "config", overrides or {}))
    network = load_network(write_network(tmp_path / "config", hosts, developers))
    layout = DataLayout(tmp_path / "chain")
    with ChainStore.open(layout.database) as store:
        try:
            return init_chain(store, layout, genesis, network)
        finally:
            if not store.initialized:
                assert not layout.keys.exists(), "a refused configuration writes no key file"


@pytest.mark.parametrize("overrides, hosts, message", [
    ({"sprint.model": "poc-nope"}, HOSTS, "field 'sprint.model': poc-nope.yaml: no such model profile"),
    ({"sprint.model": "llm-tiny"}, HOSTS, "field 'sprint.model': llm-tiny is a llm model, the sprint needs a poc model"),
    ({}, [{"name": "host-alpha", "capacity": 1, "models": ["llm-nope"]}], "network: host 'host-alpha' serves 'llm-nope': llm-nope.yaml"),
    ({}, [{"name": "host-alpha", "capacity": 1, "models": ["poc-tiny"]}], "serves 'poc-tiny', a poc model, not a language model"),
    ({"tasks.max_prompt_bytes": 224}, HOSTS,
     "field 'tasks.max_prompt_bytes': max_prompt_bytes 224 + BOS + max_tokens_limit 32 exceed llm-tiny's context of 256"),
    ({"tasks.price_per_token": 2**60}, HOSTS, "field 'tasks.price_per_token': the largest task's escrow exceeds"),
    ({"emission.supply_cap": 2**63 - 1}, HOSTS, "field 'emission.supply_cap': genesis supply plus everything"),
    ({"sprint.nonces_per_capacity": 9}, HOSTS, "field 'sprint.nonces_per_capacity': the largest host mines 18 nonces"),
    ({"sprint.mode": "real", "sprint.duration_seconds": 1e-9}, HOSTS,
     "field 'sprint.duration_seconds': a real-mode sprint of 1e-09 s mines about"),
    ({"tasks.max_submission_bytes": 5295}, HOSTS,
     "field 'tasks.max_submission_bytes': 5295 bytes would refuse a valid task: a 200-byte prompt may need 5296"),
])
def test_init_refuses_a_configuration_its_epochs_would_fail_on(tmp_path, overrides, hosts, message):
    with pytest.raises(ConfigError) as error:
        init(tmp_path, overrides, hosts)
    assert message in str(error.value)
    with ChainStore.open(DataLayout(tmp_path / "chain").database) as store:
        assert not store.initialized


def test_the_edge_of_each_check_still_starts(tmp_path):
    head = init(tmp_path, {"tasks.max_prompt_bytes": 223, "sprint.nonces_per_capacity": 10, "tasks.max_submission_bytes": 5434})
    assert head.height == 0, ("223 + 1 + 32 = 256 fits llm-tiny's context; 2 × 10 nonces at 5 % expect one hit; a 223-byte "
                              "prompt's submission fits 6 × 223 + 4096 = 5434 bytes")


@pytest.mark.parametrize("overrides, field", [
    ({"tasks.max_tokens_limit": True}, "profiles.local.tasks.max_tokens_limit"),
    ({"tasks.max_tokens_limit": "32"}, "profiles.local.tasks.max_tokens_limit"),
    ({"emission.initial_reward": 2**63}, "profiles.local.emission.initial_reward"),
])
def test_integers_are_never_coerced_or_beyond_the_chains_columns(tmp_path, overrides, field):
    path = write_genesis(tmp_path, overrides)
    with pytest.raises(ConfigError, match=rf"field '{field}'"):
        load_genesis(path=path)


def test_a_host_capacity_beyond_its_column_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"field 'hosts.0.capacity'"):
        load_network(write_network(tmp_path, [{"name": "h", "capacity": 2**31, "models": ["llm-tiny"]}], DEVELOPERS))


def test_gonka_init_says_what_is_wrong_without_a_traceback(tmp_path, capsys):
    genesis = write_genesis(tmp_path / "config", {"sprint.model": "poc-nope"})
    code = cli.main(["--data-dir", str(tmp_path / "chain"), "init", "--genesis", str(genesis)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: genesis profile 'local': field 'sprint.model'") and "Traceback" not in err


def test_a_real_mode_sprint_model_that_does_not_fit_this_machine_is_refused(tmp_path, monkeypatch):
    """Real mode builds the sprint model here: weights beyond the free memory (poc-mainnet's 17.7 B parameters take
    66 GiB in float32) mean no host could mine, so init refuses, naming the sizes."""
    from gonka_pipelines.stages import genesis as genesis_stage

    monkeypatch.setattr(genesis_stage.os, "sysconf", lambda name: {"SC_PAGE_SIZE": 4096, "SC_AVPHYS_PAGES": 100}[name])
    with pytest.raises(ConfigError, match=r"field 'sprint.model': poc-tiny's float32 weights take 0.0 GiB and this machine has "
                                          r"0.0 GiB free"):
        init(tmp_path, {"sprint.mode": "real", "sprint.duration_seconds": 5})
