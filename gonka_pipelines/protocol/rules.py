"""Rule sets: the protocol's decisions, bound to an epoch's parameters and selected by the name the params record.

Stages decide only through `rules_for(params)`, never by calling rule functions themselves, so a second rule set
(Gonka's current one, with proof of compute on the served model, say) is one more class registered in RULE_SETS:
no stage and no store changes. `gonka-pipelines/1` is today's rules (PROTOCOL.md with the deviations marked ours).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

import numpy as np
import polars as pl

from gonka_pipelines.protocol.assignment import assign_executors
from gonka_pipelines.protocol.block import choose_proposer, quorum_reached
from gonka_pipelines.protocol.host_status import host_statuses, reputation
from gonka_pipelines.protocol.inference_validation import (
    Comparison,
    ComparisonReason,
    Comparisons,
    MinAvg,
    OutputBatch,
    ValidatorPool,
    invalidated,
    judge_outputs,
    select_validations,
)
from gonka_pipelines.protocol.intake import IntakeContext, IntakeResult, Submissions, collect
from gonka_pipelines.protocol.params import EpochParams
from gonka_pipelines.protocol.poc_batches import BatchReject, PocBatch, admit_batches
from gonka_pipelines.protocol.rewards import collateral_slash, epoch_reward, mint_amount, split_reward_frame, vesting_tranches
from gonka_pipelines.protocol.sprint import (
    cap_fraction,
    collateral_adjust,
    drawn_committees,
    is_fraud,
    mismatches_each,
    power_cap,
    sample_nonces,
    sample_nonces_each,
    sprint_accepted,
)

TopK = tuple[Sequence[Sequence[int]], Sequence[Sequence[float]]]
"""(top ids, top log-probs) per position of an output, as a forced re-run scores it."""


class RuleSet(Protocol):
    """Every decision a stage takes, for one epoch's parameters."""

    name: str
    params: EpochParams

    def collect(self, submissions: Submissions, context: IntakeContext) -> IntakeResult: ...
    def admit_batches(self, batches: Sequence[PocBatch], chain_id: str, prev_hash: str) -> list[BatchReject | None]: ...
    def validation_sample(self, validator_key: str, prev_hash: str, nonces: Sequence[int]) -> list[int]: ...
    def validation_samples(self, validator_keys: Sequence[str], prev_hash: str, nonces: Sequence[int]) -> list[list[int]]: ...
    def sprint_committees(self, prev_hash: str, hosts: Sequence[str], weights: Mapping[str, int]) -> dict[str, Sequence[str]]: ...
    def committee_weights(self, prev_hash: str, hosts: Sequence[str], weights: Mapping[str, int]) -> dict[str, int]: ...
    def sprint_vote(self, recomputed_distances: Sequence[float] | np.ndarray) -> tuple[int, bool]: ...
    def sprint_votes(self, recomputed_distances: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...
    def epoch_weights(self, rows: list[dict], prev_hash: str, weights_in_force: Mapping[str, int]) -> list[dict]: ...
    def assign_executors(self, prev_hash: str, task_ids: Sequence[str], hosts: Sequence[str], weights: Sequence[int]) -> list[str]: ...
    def select_validations(self, executors: Sequence[str] | pl.Series, pool: ValidatorPool,
                           traffic: float) -> tuple[np.ndarray, np.ndarray]: ...
    def judge(self, output: Sequence[int], max_tokens: int, eos: int, executor: TopK, rescore: Callable[[], TopK]) -> Comparison: ...
    def judge_batch(self, batch: OutputBatch) -> Comparisons: ...
    def needs_rescore(self, lengths: np.ndarray, max_tokens: np.ndarray, last_tokens: np.ndarray, eos: int) -> np.ndarray: ...
    def task_invalidated(self, invalid_weight: int, total_weight: int) -> bool: ...
    def host_statuses(self, hosts: pl.DataFrame) -> pl.DataFrame: ...
    def reputation(self, epochs_served: int, miss_rates: Sequence[float]) -> int: ...
    def scheduled_reward(self) -> int: ...
    def mint_amount(self, reward: int, minted_so_far: int) -> int: ...
    def split_reward(self, total: int, weights: pl.DataFrame) -> pl.DataFrame: ...
    def collateral_slash(self, collateral: pl.Expr, invalid: pl.Expr, missed_too_much: pl.Expr) -> pl.Expr: ...
    def vesting_tranches(self, amount: int) -> list[int]: ...
    def choose_proposer(self, prev_hash: str, weights: dict[str, int]) -> str: ...
    @staticmethod
    def quorum_reached(signed_weight: int, total_weight: int) -> bool: ...


class GonkaPipelinesV1:
    """Today's rules: PROTOCOL.md sections 3 to 6 as this project runs them."""

    name = "gonka-pipelines/1"

    def __init__(self, params: EpochParams):
        self.params = params

    # -- intake ---------------------------------------------------------------------------------

    def collect(self, submissions: Submissions, context: IntakeContext) -> IntakeResult:
        return collect(submissions, context)

    # -- sprint ---------------------------------------------------------------------------------

    def admit_batches(self, batches: Sequence[PocBatch], chain_id: str, prev_hash: str) -> list[BatchReject | None]:
        """ours: the chain refuses duplicate nonces and batches after duration + grace."""
        sprint = self.params.sprint
        return admit_batches(batches, chain_id, self.params.epoch, prev_hash, sprint.duration_seconds + sprint.late_grace_seconds)

    def validation_sample(self, validator_key: str, prev_hash: str, nonces: Sequence[int]) -> list[int]:
        return sample_nonces(validator_key, prev_hash, self.params.epoch, nonces, self.params.sprint.validation_sample)

    def validation_samples(self, validator_keys: Sequence[str], prev_hash: str, nonces: Sequence[int]) -> list[list[int]]:
        """validation_sample of each validator (one list shared by all when every nonce is sampled)."""
        return sample_nonces_each(validator_keys, prev_hash, self.params.epoch, nonces, self.params.sprint.validation_sample)

    def sprint_committees(self, prev_hash: str, hosts: Sequence[str], weights: Mapping[str, int]) -> dict[str, Sequence[str]]:
        """Who checks each host's sprint: every host with weight (full, one shared list), or a committee per host drawn
        by weight (committee)."""
        sprint = self.params.sprint
        if sprint.validation == "full":
            everyone = sorted(address for address, weight in weights.items() if weight > 0)
            return {host: everyone for host in hosts}
        return drawn_committees(prev_hash, self.params.epoch, hosts, weights, sprint.committee_size)

    def committee_weights(self, prev_hash: str, hosts: Sequence[str], weights: Mapping[str, int]) -> dict[str, int]:
        """Per host, the weight in force of the validators asked to check its sprint (the acceptance vote's denominator)."""
        if self.params.sprint.validation == "full":
            total = sum(weight for weight in weights.values() if weight > 0)
            return dict.fromkeys(hosts, total)
        return {host: sum(weights[v] for v in committee)
                for host, committee in self.sprint_committees(prev_hash, hosts, weights).items()}

    def sprint_vote(self, recomputed_distances: Sequence[float] | np.ndarray) -> tuple[int, bool]:
        """(mismatches, valid) of a validator's recomputation: fraud iff the binomial tail of k mismatches is too small."""
        mismatches, valid = self.sprint_votes(np.asarray(recomputed_distances, dtype=np.float64), np.array([len(recomputed_distances)]))
        return int(mismatches[0]), bool(valid[0])

    def sprint_votes(self, recomputed_distances: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """sprint_vote of each of several recomputations given end to end (`sizes` their lengths): mismatches counted in
        one pass, the fraud test made once per distinct (mismatches, sampled) pair (a round's samples share a few)."""
        sprint = self.params.sprint
        mismatches = mismatches_each(recomputed_distances, sizes, self.params.r_target)
        pairs = list(zip(mismatches.tolist(), np.asarray(sizes).tolist()))
        valid = {pair: not is_fraud(*pair, sprint.mismatch_probability, sprint.fraud_threshold) for pair in set(pairs)}
        return mismatches, np.array([valid[pair] for pair in pairs], dtype=bool)

    def epoch_weights(self, rows: list[dict], prev_hash: str, weights_in_force: Mapping[str, int]) -> list[dict]:
        """Per host row (hits, valid_vote_weight, collateral): vote_weight, the weight in force asked to check its sprint;
        acceptance by weighted vote within it, collateral adjustment after the grace period, then the power cap; returns
        the rows with vote_weight, sprint_accepted, adjusted_weight and weight."""
        sprint, epoch = self.params.sprint, self.params.epoch
        asked = self.committee_weights(prev_hash, [row["address"] for row in rows], weights_in_force)
        out = [{**row, "vote_weight": asked[row["address"]]} for row in rows]
        for row in out:
            row["sprint_accepted"] = row["hits"] > 0 and sprint_accepted(row["valid_vote_weight"], row["vote_weight"])
            row["adjusted_weight"] = collateral_adjust(
                row["hits"] if row["sprint_accepted"] else 0, row.pop("collateral"), sprint.price_per_weight_unit,
                epoch, sprint.collateral_grace_epochs, sprint.collateral_base_fraction)
        eligible = sum(1 for row in out if row["adjusted_weight"] > 0)
        capped = power_cap([row["adjusted_weight"] for row in out], cap_fraction(eligible, sprint.power_cap, sprint.small_network_caps))
        return [{**row, "epoch": epoch, "weight": weight} for row, weight in zip(out, capped)]

    # -- tasks ----------------------------------------------------------------------------------

    def assign_executors(self, prev_hash: str, task_ids: Sequence[str], hosts: Sequence[str], weights: Sequence[int]) -> list[str]:
        """ours: executors drawn ∝ weight from (previous block hash, task id), replayable."""
        return assign_executors(prev_hash, list(task_ids), list(hosts), list(weights))

    def select_validations(self, executors: Sequence[str] | pl.Series, pool: ValidatorPool,
                           traffic: float) -> tuple[np.ndarray, np.ndarray]:
        validation = self.params.validation
        return select_validations(executors, pool, traffic, MinAvg(validation.min_avg_traffic, validation.min_avg_values))

    def judge(self, output: Sequence[int], max_tokens: int, eos: int, executor: TopK, rescore: Callable[[], TopK]) -> Comparison:
        """An honest validator's verdict on one output: one cut short of EOS and max_tokens fails unseen; otherwise the
        validator re-runs forcing the executor's tokens (rescore) and judges as judge_batch does."""
        if not self.needs_rescore(np.array([len(output)]), np.array([max_tokens]), np.array(list(output[-1:]) or [-1]), eos)[0]:
            return Comparison(False, 0.0, ComparisonReason.LENGTH_DIFFERS)
        top_ids, top_logprobs = rescore()
        if len(top_ids) != len(output):
            return Comparison(False, 0.0, ComparisonReason.LENGTH_DIFFERS)
        return self.judge_batch(OutputBatch.of_one(output, executor[0], executor[1], top_ids, top_logprobs)).one(0)

    def judge_batch(self, batch: OutputBatch) -> Comparisons:
        """Honest verdicts on re-run outputs of one length: the validator's token at each position is the executor's where
        the re-run ranks it within tie_tolerance of its best, and an output passes iff every token matches and the top-k
        log-probs are similar above the threshold."""
        validation = self.params.validation
        return judge_outputs(batch, tie_tolerance=validation.tie_tolerance, threshold=validation.similarity_threshold,
                             epsilon=validation.logprob_epsilon, min_positions=validation.min_normalising_positions)

    def needs_rescore(self, lengths: np.ndarray, max_tokens: np.ndarray, last_tokens: np.ndarray, eos: int) -> np.ndarray:
        """Per output, whether judging it takes a re-run: one that stops short of both EOS and max_tokens fails unseen."""
        return (lengths >= max_tokens) | ((lengths > 0) & (last_tokens == eos))

    def task_invalidated(self, invalid_weight: int, total_weight: int) -> bool:
        return invalidated(invalid_weight, total_weight, self.params.validation.invalidation_quorum)

    def host_statuses(self, hosts: pl.DataFrame) -> pl.DataFrame:
        validation = self.params.validation
        return host_statuses(hosts, false_positive_rate=validation.false_positive_rate, ramping_tasks=validation.ramping_tasks,
                             invalid_streak_probability=validation.invalid_streak_probability, z_threshold=validation.z_threshold)

    def reputation(self, epochs_served: int, miss_rates: Sequence[float]) -> int:
        rewards = self.params.rewards
        return reputation(epochs_served, miss_rates, epochs_to_max=rewards.epochs_to_full_reputation,
                          miss_rate_cutoff=rewards.miss_rate_cutoff)

    # -- rewards --------------------------------------------------------------------------------

    def scheduled_reward(self) -> int:
        emission = self.params.emission
        return epoch_reward(self.params.epoch, emission.initial_reward, emission.decay_rate)

    def mint_amount(self, reward: int, minted_so_far: int) -> int:
        return mint_amount(reward, minted_so_far, self.params.emission.supply_cap)

    def split_reward(self, total: int, weights: pl.DataFrame) -> pl.DataFrame:
        return split_reward_frame(total, weights)

    def vesting_tranches(self, amount: int) -> list[int]:
        return vesting_tranches(amount, self.params.rewards.vesting_epochs)

    def collateral_slash(self, collateral: pl.Expr, invalid: pl.Expr, missed_too_much: pl.Expr) -> pl.Expr:
        validation = self.params.validation
        return collateral_slash(collateral, invalid, missed_too_much, invalid_fraction=validation.invalid_slash_fraction,
                                miss_fraction=validation.miss_slash_fraction)

    # -- blocks ---------------------------------------------------------------------------------

    def choose_proposer(self, prev_hash: str, weights: dict[str, int]) -> str:
        return choose_proposer(prev_hash, weights)

    @staticmethod
    def quorum_reached(signed_weight: int, total_weight: int) -> bool:
        """Final above 2/3 of the weight; needs no params, so a verifier can ask it of any block."""
        return quorum_reached(signed_weight, total_weight)


RULE_SETS: dict[str, type[GonkaPipelinesV1]] = {GonkaPipelinesV1.name: GonkaPipelinesV1}
"""Every rule set a chain may name in its params, by name."""


def rules_for(params: EpochParams) -> RuleSet:
    """The rule set the epoch's params name, bound to them; an unknown name is an error listing the known ones."""
    if params.rules not in RULE_SETS:
        raise ValueError(f"unknown rule set {params.rules!r}; known: {', '.join(sorted(RULE_SETS))}")
    return RULE_SETS[params.rules](params)
