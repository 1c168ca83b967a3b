"""Genesis and network configuration as typed, validated models, hashed into every epoch's parameters."""

from __future__ import annotations

import enum
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, model_validator

from gonka_pipelines.protocol.crypto import hash_value

MAX_INT64 = 2**63 - 1
"""The largest amount or count a chain column (BIGINT) holds."""
Int64 = Annotated[int, Strict(), Field(le=MAX_INT64)]
"""An integer as the chain stores it: never coerced from true or '32', never beyond 2**63 - 1."""


NAME_PATTERN = r"^[A-Za-z0-9_-][A-Za-z0-9._-]*$"
"""Names of chains, hosts, developers and sweeps: letters, digits, '.', '_', '-', not first a dot (names become file
names and URL path segments, where '.', '..' and hidden files would point elsewhere)."""


class StrictConfig(BaseModel):
    """Base of every config section: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class TokenParams(StrictConfig):
    denom: str
    base_units: Int64 = Field(gt=0)


class EmissionParams(StrictConfig):
    initial_reward: Int64 = Field(ge=0, description="R0 in base units")
    decay_rate: float = Field(ge=0)
    supply_cap: Int64 = Field(ge=0, description="most base units ever minted")


class SprintParams(StrictConfig):
    model: str
    mode: Literal["simulation", "real"] = "simulation"
    duration_seconds: float = Field(gt=0, description="sprint length: wall clock in real mode, virtual in simulation")
    late_grace_seconds: float = Field(ge=0, description="batches later than duration + grace are refused")
    wanted_hit_rate: float = Field(gt=0, lt=1)
    nonces_per_capacity: Int64 = Field(gt=0)
    validation_sample: Int64 = Field(gt=0)
    validation: Literal["full", "committee"] = Field(
        default="full", description="who checks a host's sprint: every validator with weight (full), or a committee of "
                                    "committee_size drawn by weight from the block hash (committee; ours, after Gonka's slots)")
    committee_size: Int64 = Field(default=16, gt=0, description="validators per host's sprint under committee validation")
    mismatch_probability: float = Field(gt=0, lt=1)
    fraud_threshold: float = Field(gt=0, lt=1)
    power_cap: float = Field(ge=0, le=1, description="no host above this fraction of total weight; 0 means no cap")
    collateral_grace_epochs: Int64 = Field(ge=0)
    collateral_base_fraction: float = Field(ge=0, le=1, description="share of a weight that needs no collateral after the grace")
    price_per_weight_unit: Int64 = Field(gt=0)
    small_network_caps: tuple[float, ...] = Field(description="power-cap floor for networks of 1, 2, 3, ... hosts")
    genesis_weight: Int64 = Field(gt=0, description="weight of every genesis host (epoch 0 has no sprint)")


class TaskParams(StrictConfig):
    max_prompt_bytes: Int64 = Field(gt=0)
    max_tokens_limit: Int64 = Field(gt=0)
    price_per_token: Int64 = Field(ge=0)
    free_epochs: Int64 = Field(ge=0)
    tasks_per_capacity: Int64 = Field(gt=0)
    max_submission_bytes: Int64 = Field(gt=0, description="an inbox file (a bundle's line) larger than this is refused "
                                                          "unread (its first bytes kept as the rejection's payload)")
    max_submissions_per_epoch: Int64 = Field(gt=0, description="an epoch takes at most this many submissions (a bundle's "
                                                               "lines each count; a bundle is taken whole), entries in "
                                                               "name order; the rest wait for the next epoch")
    record_encoding: Literal["json", "columns"] = Field(
        default="json", description="how a result's or verdict's body is encoded in its record leaf (protocol/record_roots"
                                    ".py): json, the canonical JSON a lone signature covers; columns (ours), a binary "
                                    "layout hashed straight from Arrow columns. Chains whose params predate it used json")

    def price(self, epoch: int) -> int:
        """Per-token price in an epoch: zero while the epoch is below free_epochs (Gonka's grace period uses `<`)."""
        return 0 if epoch < self.free_epochs else self.price_per_token


class TrainingParams(StrictConfig):
    """Training tasks (PROTOCOL section 4, ours): the limits intake checks and how executors checkpoint."""

    max_steps: Int64 = Field(gt=0, description="most optimizer steps one task may ask")
    max_batch_size: Int64 = Field(gt=0, description="most windows per step")
    max_learning_rate: float = Field(gt=0, le=1)
    checkpoint_every: Int64 = Field(gt=0, description="steps between intermediate checkpoints (validators re-run one interval)")
    eval_windows: Int64 = Field(gt=0, description="held-out windows a validator scores a new version on")
    weight_tolerance: float = Field(ge=0, description="where re-runs are not bit-identical (CUDA): the largest weight "
                                                      "difference a re-run interval may show against the signed checkpoint")
    loss_tolerance: float = Field(ge=0, description="likewise, the largest difference of one step's loss")
    served_rule: Literal["lowest_eval_loss", "latest"] = Field(
        description="which version of each model the network serves (protocol/training.py served_version)")


class ValidationParams(StrictConfig):
    false_positive_rate: float = Field(gt=0, lt=1)
    similarity_threshold: float = Field(gt=0, le=1)
    ramping_tasks: Int64 = Field(ge=0)
    invalid_streak_probability: float = Field(gt=0, lt=1)
    invalid_slash_fraction: float = Field(ge=0, le=1)
    miss_slash_fraction: float = Field(ge=0, le=1)
    miss_tolerance: float = Field(ge=0, le=1)
    z_threshold: float = Field(description="INVALID when the invalidated fraction's z-score exceeds this")
    invalidation_quorum: float = Field(gt=0, le=1, description="share of all weight whose invalid votes invalidate a task")
    tie_tolerance: float = Field(ge=0, description="an executor token this close to the validator's best log-prob is the same choice")
    logprob_epsilon: float = Field(gt=0, description="keeps the log-prob distance finite where both are 0")
    min_normalising_positions: Int64 = Field(gt=0, description="the log-prob distance divides by at least this many positions")
    min_avg_traffic: tuple[float, float, float] = Field(description="minAvg breakpoints: traffic T")
    min_avg_values: tuple[float, float, float] = Field(description="minAvg breakpoints: the validation rate at each T")


class RewardParams(StrictConfig):
    vesting_epochs: Int64 = Field(gt=0)
    epochs_to_full_reputation: Int64 = Field(gt=0)
    miss_rate_cutoff: float = Field(ge=0, lt=1, description="epochs missing more than this share of tasks lower reputation")


class GenesisParams(StrictConfig):
    """One profile of genesis.yaml: every number the protocol uses."""

    profile: str
    rules: str = Field(min_length=1, description="the named rule set the chain's epochs run (protocol/rules.py)")
    chain_id: str = Field(min_length=1, pattern=NAME_PATTERN)
    genesis_time: datetime
    epoch_seconds: Int64 = Field(gt=0)
    token: TokenParams
    emission: EmissionParams
    sprint: SprintParams
    tasks: TaskParams
    training: TrainingParams
    validation: ValidationParams
    rewards: RewardParams

    def as_dict(self) -> dict[str, Any]:
        """The params as JSON values; a record encoding left at json is left out, so the params (and blocks) of chains
        from before the choice keep their hashes."""
        values = self.model_dump(mode="json")
        if values["tasks"]["record_encoding"] == "json":
            del values["tasks"]["record_encoding"]
        return values

    @property
    def params_hash(self) -> str:
        return hash_value(self.as_dict())

    def block_timestamp(self, height: int) -> str:
        """Deterministic block time: genesis time plus height nominal epochs (never the wall clock)."""
        seconds = int(self.genesis_time.timestamp()) + height * self.epoch_seconds
        return datetime.fromtimestamp(seconds, tz=self.genesis_time.tzinfo).isoformat()


class EpochParams(GenesisParams):
    """What one epoch runs under: the genesis profile plus what is derived for the epoch; its hash is in the header."""

    epoch: Int64 = Field(ge=0)
    price_per_token: Int64 = Field(ge=0, description="the genesis price, or zero during the free epochs")
    r_target: float = Field(gt=0, description="sprint hit radius, calibrated from the model's vocab and the wanted hit rate")

    @classmethod
    def derive(cls, genesis: GenesisParams, epoch: int, r_target: float) -> EpochParams:
        return cls(**dict(genesis), epoch=epoch, price_per_token=genesis.tasks.price(epoch), r_target=r_target)


class Behaviour(enum.StrEnum):
    """How a simulated host acts; honest unless network.yaml says otherwise."""

    HONEST = "honest"
    FAKE_HITS = "fake_hits"
    INFLATED_HITS = "inflated_hits"
    GARBLED_OUTPUT = "garbled_output"
    LAZY_VALIDATOR = "lazy_validator"
    LAZY_TRAINER = "lazy_trainer"
    FABRICATED_LOSS = "fabricated_loss"
    WRONG_SHARDS = "wrong_shards"
    DOWNTIME = "downtime"
    COPIED_NONCES = "copied_nonces"
    REUSED_NONCES = "reused_nonces"
    LATE_BATCHES = "late_batches"
    SILENT_VALIDATOR = "silent_validator"
    SKIPPED_VALIDATIONS = "skipped_validations"
    CHEAPER_MODEL = "cheaper_model"
    TRUNCATED_OUTPUT = "truncated_output"
    COLLUDING = "colluding"


class HostConfig(StrictConfig):
    name: str = Field(min_length=1, pattern=NAME_PATTERN)
    key: Path | None = None
    capacity: int = Field(strict=True, gt=0, le=2**31 - 1, description="stored as INTEGER")
    models: tuple[str, ...] = Field(min_length=1)
    behaviour: Behaviour = Behaviour.HONEST
    collateral: Int64 = Field(default=0, ge=0)


class DeveloperConfig(StrictConfig):
    name: str = Field(min_length=1, pattern=NAME_PATTERN)
    key: Path | None = None
    balance: Int64 = Field(ge=0)


class NetworkConfig(StrictConfig):
    """network.yaml: the hosts and developer accounts that exist at genesis."""

    key_seed: str | None = None
    hosts: tuple[HostConfig, ...] = Field(min_length=1)
    developers: tuple[DeveloperConfig, ...] = ()

    @model_validator(mode="after")
    def _unique_names(self) -> NetworkConfig:
        names = [h.name for h in self.hosts] + [d.name for d in self.developers]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"names must be unique across hosts and developers; repeated: {', '.join(duplicates)}")
        return self

    @property
    def genesis_supply(self) -> int:
        return sum(d.balance for d in self.developers) + sum(h.collateral for h in self.hosts)
