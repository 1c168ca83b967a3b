"""Genesis and network files: shipped profiles carry PROTOCOL's figures; bad files are refused naming file and field."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from gonka_pipelines.local.config import (
    GENESIS_FILE,
    NETWORK_FILE,
    ConfigError,
    load_genesis,
    load_network,
)
from gonka_pipelines.protocol.crypto import hash_value

GNK = 10**9


def test_default_profile_is_local_and_loads():
    params = load_genesis()
    assert params.profile == yaml.safe_load(GENESIS_FILE.read_text())["default_profile"] == "local"
    assert params.chain_id == "gonka-local-1"
    assert params.token.base_units == GNK
    assert params.emission.decay_rate == 0.000475
    assert params.sprint.power_cap == 0.25


MAINNET = {
    # field: (value, where it comes from) -- "ours" marks a number Gonka does not have (or has in another form)
    "profile": ("mainnet", "ours: the profile's name"),
    "rules": ("gonka-pipelines/1", "ours: the rule set"),
    "chain_id": ("gonka-mainnet", "ours"),
    "genesis_time": ("2025-08-22T00:00:00Z", "Gonka mainnet genesis"),
    "epoch_seconds": (86_400, "17,280 blocks of ~5 s"),
    "token.denom": ("GNK", "Gonka"), "token.base_units": (GNK, "1 GNK = 1e9 base units"),
    "emission.initial_reward": (323_000 * GNK, "R0 = 323,000 GNK"), "emission.decay_rate": (0.000475, "half-life ~1,459 epochs"),
    "emission.supply_cap": (680_000_000 * GNK, "680 M GNK"),
    "sprint.model": ("poc-mainnet", "dim 1792, 64 layers, vocab 8196"), "sprint.mode": ("real", "wall-clock sprints"),
    "sprint.duration_seconds": (300.0, "PoC generation [H, H+60) of ~5 s blocks"),
    "sprint.late_grace_seconds": (25.0, "batches accepted until H+65"), "sprint.wanted_hit_rate": (0.05, "r_target 1.40136 ~ 1 in 20"),
    "sprint.nonces_per_capacity": (64, "ours: simulation mode only"), "sprint.validation_sample": (200, "n = min(200, #nonces)"),
    "sprint.validation": ("full", "every validator with weight checks every host"),
    "sprint.committee_size": (16, "ours: only under committee validation"),
    "sprint.mismatch_probability": (5e-4, "binomial p"), "sprint.fraud_threshold": (1e-7, "binomial tail"),
    "sprint.power_cap": (0.25, "MaxIndividualPowerPercentage"), "sprint.collateral_grace_epochs": (180, "collateral grace"),
    "sprint.collateral_base_fraction": (0.2, "w' = 0.2 w + min(0.8 w, collateral / price)"),
    "sprint.price_per_weight_unit": (1, "ours: one base unit of collateral backs one weight unit"),
    "sprint.small_network_caps": ([1.0, 0.5, 0.4], "cap raised for 1, 2, 3 hosts"), "sprint.genesis_weight": (1, "PROTOCOL section 2"),
    "tasks.max_prompt_bytes": (32_768, "ours"), "tasks.max_tokens_limit": (4_096, "ours"),
    "tasks.price_per_token": (100, "BasePerTokenPrice"), "tasks.free_epochs": (90, "GracePeriodEndEpoch"),
    "tasks.tasks_per_capacity": (1_000, "ours: simulation mode only"),
    "tasks.max_submission_bytes": (262_144, "ours"), "tasks.max_submissions_per_epoch": (1_000_000, "ours"),
    "training.max_steps": (10_000, "ours: Gonka has no training tasks yet"), "training.max_batch_size": (1_024, "ours"),
    "training.max_learning_rate": (0.1, "ours"), "training.checkpoint_every": (100, "ours"), "training.eval_windows": (512, "ours"),
    "training.weight_tolerance": (5e-3, "ours: unmeasured on GPUs yet"), "training.loss_tolerance": (2e-2, "ours"),
    "training.served_rule": ("lowest_eval_loss", "ours"),
    "validation.false_positive_rate": (0.05, "FPR"), "validation.similarity_threshold": (0.98, "pass iff similarity > 0.98"),
    "validation.ramping_tasks": (10, "RAMPING under 10 executed tasks"), "validation.invalid_streak_probability": (1e-6, "FPR^k < 1e-6"),
    "validation.invalid_slash_fraction": (0.2, "INVALID slash"), "validation.miss_slash_fraction": (0.1, "downtime slash"),
    "validation.miss_tolerance": (0.05, "missing > 5 % of tasks"), "validation.z_threshold": (1.0, "z > 1"),
    "validation.invalidation_quorum": (0.5, ">= 50 % of weight invalidates"),
    "validation.tie_tolerance": (1e-4, "ours: near-ties count as the same token"),
    "validation.logprob_epsilon": (1e-6, "|lp_v - lp_o| / (1e-6 + |lp_v| + |lp_o|)"),
    "validation.min_normalising_positions": (100, "max(100, positions)"),
    "validation.min_avg_traffic": ([100.0, 5_000.0, 10_000.0], "minAvg breakpoints"),
    "validation.min_avg_values": ([1.0, 0.05, 0.01], "minAvg values"),
    "rewards.vesting_epochs": (180, "vesting"), "rewards.epochs_to_full_reputation": (30, "rep = 100 past x = 30"),
    "rewards.miss_rate_cutoff": (0.01, "miss rates above 1 % count"),
}
"""Every field of the mainnet profile with its value and source (PROTOCOL.md, Gonka's parameters)."""


def _flat(values: dict, prefix: str = "") -> dict:
    return {key: value for name, child in values.items()
            for key, value in (_flat(child, f"{prefix}{name}.") if isinstance(child, dict) else {f"{prefix}{name}": child}).items()}


def test_every_field_of_the_mainnet_profile_has_gonkas_value_or_says_it_is_ours():
    """A new parameter fails here until it is given its mainnet value and source."""
    profile = _flat(load_genesis("mainnet").as_dict())
    assert set(profile) == set(MAINNET), "every field, and only those, has an entry"
    assert {field: value for field, value in profile.items()} == {field: value for field, (value, _) in MAINNET.items()}


def test_mainnet_price_is_free_below_epoch_90():
    """Gonka's grace period: free while the epoch is below GracePeriodEndEpoch (90), the base price from epoch 90 on."""
    tasks = load_genesis("mainnet").tasks
    assert [tasks.price(e) for e in (1, 89, 90, 91)] == [0, 0, 100, 100]


def test_block_timestamps_come_from_genesis_time_not_the_clock():
    params = load_genesis()
    assert params.genesis_time == datetime(2026, 1, 1, tzinfo=UTC)
    assert params.block_timestamp(0) == "2026-01-01T00:00:00+00:00"
    assert params.block_timestamp(3) == datetime.fromtimestamp(
        params.genesis_time.timestamp() + 3 * params.epoch_seconds, tz=UTC).isoformat()


def test_params_hash_is_stable_and_profile_specific():
    assert load_genesis().params_hash == load_genesis().params_hash == hash_value(load_genesis().as_dict())
    assert load_genesis("local").params_hash != load_genesis("mainnet").params_hash


def test_shipped_network_loads():
    network = load_network()
    names = [h.name for h in network.hosts] + [d.name for d in network.developers]
    assert len(names) == len(set(names)) and network.hosts
    assert network.genesis_supply == sum(d.balance for d in network.developers) + sum(h.collateral for h in network.hosts)


# -- bad files ----------------------------------------------------------------------------------


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def shipped_genesis(tmp_path: Path, edit) -> Path:
    data = yaml.safe_load(GENESIS_FILE.read_text())
    edit(data)
    path = tmp_path / "genesis.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


NETWORK_OK = """\
    hosts:
      - {name: a, capacity: 1, models: [m]}
    developers:
      - {name: d, balance: 5}
"""


@pytest.mark.parametrize("text, field", [
    ("hosts:\n  - {name: a, capacity: -1, models: [m]}\n", "hosts.0.capacity"),
    ("hosts:\n  - {name: a, capacity: 1, models: [m]}\n  - {name: b, capacity: 0, models: [m]}\n", "hosts.1.capacity"),
    ("hosts:\n  - {name: a, capacity: 1, models: []}\n", "hosts.0.models"),
    ("hosts:\n  - {name: 'a b', capacity: 1, models: [m]}\n", "hosts.0.name"),
    ("hosts:\n  - {name: '..', capacity: 1, models: [m]}\n", "hosts.0.name"),  # a path segment that climbs
    ("hosts:\n  - {name: a, capacity: 1, models: [m]}\ndevelopers:\n  - {name: .d, balance: 5}\n", "developers.0.name"),
    ("hosts:\n  - {name: a, capacity: 1, models: [m], behaviour: evil}\n", "hosts.0.behaviour"),
    ("hosts:\n  - {name: a, capacity: 1, models: [m], colour: red}\n", "hosts.0.colour"),
    ("hosts:\n  - {name: a, capacity: 1, models: [m]}\ndevelopers:\n  - {name: d, balance: -5}\n", "developers.0.balance"),
    ("hosts: []\n", "hosts"),
    ("developers: []\n", "hosts"),
])
def test_bad_network_names_file_and_field(tmp_path, text, field):
    path = write(tmp_path, "network.yaml", text)
    with pytest.raises(ConfigError) as error:
        load_network(path)
    message = str(error.value)
    assert message.startswith(f"{path}: field '{field}'"), message


def test_negative_capacity_message(tmp_path):
    path = write(tmp_path, "network.yaml", "hosts:\n  - {name: a, capacity: -1, models: [m]}\n")
    with pytest.raises(ConfigError, match=r"field 'hosts\.0\.capacity': Input should be greater than 0") as error:
        load_network(path)
    assert str(path) in str(error.value)


def test_duplicate_names_across_hosts_and_developers(tmp_path):
    path = write(tmp_path, "network.yaml", """\
        hosts:
          - {name: a, capacity: 1, models: [m]}
        developers:
          - {name: a, balance: 1}
          - {name: d, balance: 1}
          - {name: d, balance: 2}
    """)
    with pytest.raises(ConfigError) as error:
        load_network(path)
    assert str(error.value) == (f"{path}: field '(root)': Value error, names must be unique across hosts and developers; "
                                "repeated: a, d")


def test_duplicate_host_names_without_developers(tmp_path):
    path = write(tmp_path, "network.yaml", """\
        hosts:
          - {name: a, capacity: 1, models: [m]}
          - {name: a, capacity: 2, models: [m]}
    """)
    with pytest.raises(ConfigError, match="names must be unique across hosts and developers; repeated: a$") as error:
        load_network(path)
    assert str(path) in str(error.value)


def test_valid_minimal_network(tmp_path):
    network = load_network(write(tmp_path, "network.yaml", NETWORK_OK))
    assert [h.name for h in network.hosts] == ["a"] and network.genesis_supply == 5


@pytest.mark.parametrize("text", ["hosts: [\n", "hosts:\n  - {name: a\n", "\tbad: indentation\n  x"])
def test_invalid_yaml_names_the_file(tmp_path, text):
    path = write(tmp_path, "network.yaml", text)
    with pytest.raises(ConfigError, match="not valid YAML") as error:
        load_network(path)
    assert str(error.value).startswith(f"{path}: ")


def test_missing_file_names_the_file(tmp_path):
    with pytest.raises(ConfigError, match="file not found") as error:
        load_genesis(path=tmp_path / "nope.yaml")
    assert str(tmp_path / "nope.yaml") in str(error.value)


def test_unknown_profile_names_file_and_known_profiles():
    with pytest.raises(ConfigError) as error:
        load_genesis("testnet-9")
    assert str(error.value) == f"{GENESIS_FILE}: profile 'testnet-9' not found (known: local, mainnet)"


def test_genesis_without_profiles_mapping(tmp_path):
    path = write(tmp_path, "genesis.yaml", "default_profile: local\nprofiles: [local]\n")
    with pytest.raises(ConfigError, match=r"field 'profiles'") as error:
        load_genesis(path=path)
    assert str(path) in str(error.value)


@pytest.mark.parametrize("edit, field", [
    (lambda d: d["profiles"]["local"]["sprint"].update(power_cap=1.5), "profiles.local.sprint.power_cap"),
    (lambda d: d["profiles"]["local"]["emission"].update(initial_reward=-1), "profiles.local.emission.initial_reward"),
    (lambda d: d["profiles"]["local"]["tasks"].update(max_prompt_bytes=0), "profiles.local.tasks.max_prompt_bytes"),
    (lambda d: d["profiles"]["local"]["rewards"].update(vesting_epochs=0), "profiles.local.rewards.vesting_epochs"),
    (lambda d: d["profiles"]["local"].update(chain_id="bad chain|id"), "profiles.local.chain_id"),
    (lambda d: d["profiles"]["local"].pop("tasks"), "profiles.local.tasks"),
    (lambda d: d["profiles"]["local"].update(surprise=1), "profiles.local.surprise"),
    (lambda d: d["profiles"]["mainnet"]["validation"].update(similarity_threshold=2), "profiles.mainnet.validation.similarity_threshold"),
    (lambda d: d["profiles"]["local"]["validation"].pop("tie_tolerance"), "profiles.local.validation.tie_tolerance"),
    (lambda d: d["profiles"]["local"]["validation"].update(invalidation_quorum=0), "profiles.local.validation.invalidation_quorum"),
    (lambda d: d["profiles"]["local"].pop("rules"), "profiles.local.rules"),
    (lambda d: d["profiles"]["local"].update(rules="gonka/99"), "profiles.local.rules"),
])
def test_bad_genesis_field_names_file_and_field(tmp_path, edit, field):
    path = shipped_genesis(tmp_path, edit)
    profile = field.split(".")[1]
    with pytest.raises(ConfigError) as error:
        load_genesis(profile, path=path)
    assert str(error.value).startswith(f"{path}: field '{field}'"), str(error.value)


def test_readme_example_message(tmp_path):
    path = shipped_genesis(tmp_path, lambda d: d["profiles"]["local"]["sprint"].update(power_cap=1.5))
    with pytest.raises(ConfigError) as error:
        load_genesis(path=path)
    assert str(error.value) == f"{path}: field 'profiles.local.sprint.power_cap': Input should be less than or equal to 1"


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


def test_shipped_files_are_the_ones_loaded_by_default():
    assert GENESIS_FILE.name == "genesis.yaml" and NETWORK_FILE.name == "network.yaml"
    assert load_network() == load_network(NETWORK_FILE)
